"""The gateway: the bento's image behind a Service, configured from a ConfigMap (servekit.yaml) and a Secret
(API keys), pointed at the engines' headless Services and at the shared state."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from serving.deploy.engines import EngineVersion
from serving.deploy.objects import (
    CONFIG,
    GATEWAY,
    GATEWAY_PORT,
    KEYS,
    MODELS_CLAIM,
    MODELS_DIR,
    deployment,
    metadata,
    selector,
    service,
)
from serving.settings import Settings

COMPONENT = "gateway"
CONFIG_DIR = "/etc/servekit"
CONFIG_FILE = "servekit.yaml"
HOME_DIR = "/var/lib/servekit"
KEYS_ENV = "SERVEKIT_AUTH__KEYS"
PRESTOP_S = 10
"""Seconds a stopping gateway keeps serving before it is told to stop: the Service's endpoints and the
cluster's load balancers take a few seconds to drop a terminating pod, and requests sent meanwhile must land."""
CONFIG_HASH = "servekit.dev/config-sha256"


def cluster_config(settings: Settings, engines: list[EngineVersion], namespace: str) -> dict[str, Any]:
    """servekit.yaml as the cluster's gateways read it: the user's values, keys moved to the Secret, the data dir
    on the pod's volume, each engine found by DNS discovery of its headless Service."""
    values = settings.model_dump(mode="json", exclude_unset=True)
    values.pop("auth", None)
    values["home"] = HOME_DIR
    base, *others = engines
    values["engine"] = {**values.get("engine", {}), "discovery": base.discovery(namespace)}
    values["versions"] = [
        {**version.model_dump(mode="json", exclude_unset=True), "discovery": engine.discovery(namespace)}
        for version, engine in zip(settings.versions, others, strict=True)
    ]
    if not values["versions"]:
        del values["versions"]
    return values


def config_map(settings: Settings, engines: list[EngineVersion], namespace: str) -> dict[str, Any]:
    text = yaml.safe_dump(cluster_config(settings, engines, namespace), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(CONFIG, namespace, COMPONENT),
        "data": {CONFIG_FILE: text},
    }


def keys_secret(settings: Settings, namespace: str) -> dict[str, Any]:
    """`auth.keys` (hashes, roles, per-key limits) as one JSON env value the settings loader parses."""
    keys = [key.model_dump(mode="json") for key in settings.auth.keys]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(KEYS, namespace, COMPONENT),
        "type": "Opaque",
        "stringData": {KEYS_ENV: json.dumps(keys)},
    }


def gateway_env(state_url: str, prometheus_url: str) -> list[dict[str, Any]]:
    """The engines are not here: the config names them by DNS discovery of their headless Services."""
    env = {
        "SERVEKIT_CONFIG": f"{CONFIG_DIR}/{CONFIG_FILE}",
        "SERVEKIT_STATE__URL": state_url,
        # Every replica sees only its own share of traffic: rollouts judge versions by the cluster's Prometheus.
        "SERVEKIT_OBSERVE__URL": prometheus_url,
    }
    return [{"name": name, "value": value} for name, value in env.items()]


def gateway_deployment(
    settings: Settings,
    engines: list[EngineVersion],
    namespace: str,
    replicas: int,
    image: str,
    state_url: str,
    prometheus_url: str,
    config_hash: str,
) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/health", "port": "http"}, "timeoutSeconds": 5}
    container = {
        "name": "gateway",
        "image": image,
        "env": gateway_env(state_url, prometheus_url),
        "envFrom": [{"secretRef": {"name": KEYS}}],
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        # Importing the serving stack takes a while; liveness only starts once the process answers.
        "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 60},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        # 503 until every engine it routes to passed its warm-up generation (engines start in minutes).
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 2,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_S)]}}},
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "home", "mountPath": HOME_DIR},
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
        ],
    }
    pod = {
        # The preStop pause, then the longest request the gateway lets run, then a margin.
        "terminationGracePeriodSeconds": PRESTOP_S + settings.server.request_timeout_s + 5,
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": CONFIG}},
            {"name": "home", "emptyDir": {}},
            {"name": "models", "persistentVolumeClaim": {"claimName": MODELS_CLAIM, "readOnly": True}},
        ],
    }
    return deployment(
        GATEWAY,
        namespace,
        COMPONENT,
        pod,
        replicas=replicas,
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        # A changed servekit.yaml or key set rolls the gateways (a ConfigMap change alone would not).
        annotations={CONFIG_HASH: config_hash},
    )


def config_hash(*objects: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(objects, sort_keys=True).encode()).hexdigest()


def gateway_service(namespace: str) -> dict[str, Any]:
    return service(GATEWAY, namespace, COMPONENT, "http", GATEWAY_PORT)


def gateway_disruption_budget(namespace: str) -> dict[str, Any]:
    """One gateway at a time may be evicted: N-1 keep serving, and a single replica can still be drained."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(GATEWAY, namespace, COMPONENT),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(COMPONENT)}},
    }
