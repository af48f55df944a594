"""Names, labels and metadata shared by every rendered Kubernetes object."""

from __future__ import annotations

import hashlib
import re
from typing import Any

APP = "servekit"
GATEWAY = "servekit-gateway"
ENGINE_PREFIX = "servekit-engine"
REDIS = "servekit-redis"
CONFIG = "servekit-config"
KEYS = "servekit-keys"
MODELS_CLAIM = "servekit-models"
GATEWAY_PORT = 3000
"""The bento's HTTP port (`bentoml serve` in the image listens there)."""
ENGINE_PORT = 8000
"""vLLM's default OpenAI server port, the same on every engine pod (each pod has its own IP)."""
REDIS_PORT = 6379
MODELS_DIR = "/home/bentoml/models"
"""Where the models volume (a copy of the BentoML model store) is mounted, in gateway and engine pods alike:
the bento image's default store (BENTOML_HOME=/home/bentoml), so the gateway's registry reads the same files
the engines load and an adapter path it sends to `/v1/load_lora_adapter` exists on every engine."""
MAX_LABEL = 63
COMPONENT = "app.kubernetes.io/component"
VERSION_LABEL = "servekit.dev/version"


def dns_label(*parts: str) -> str:
    """A valid DNS-1035 label (Service and workload names) from `parts`; too long ones keep a hash suffix
    so two long version names never collide."""
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    text = re.sub(r"-{2,}", "-", text)
    if len(text) > MAX_LABEL:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        text = f"{text[: MAX_LABEL - 9].rstrip('-')}-{digest}"
    if not text or not text[0].isalpha():
        raise ValueError(f"cannot make a Kubernetes name from {parts!r}")
    return text


def selector(component: str, version: str | None = None) -> dict[str, str]:
    """Labels that pick one component's pods (and one version's, for engines)."""
    labels = {"app.kubernetes.io/name": APP, COMPONENT: component}
    if version is not None:
        labels[VERSION_LABEL] = version
    return labels


def metadata(name: str, namespace: str, component: str, version: str | None = None) -> dict[str, Any]:
    labels = {**selector(component, version), "app.kubernetes.io/part-of": APP, "app.kubernetes.io/managed-by": APP}
    return {"name": name, "namespace": namespace, "labels": labels}


def deployment(
    name: str,
    namespace: str,
    component: str,
    pod: dict[str, Any],
    *,
    replicas: int,
    strategy: dict[str, Any],
    version: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An apps/v1 Deployment whose pods carry (and are selected by) the component's labels."""
    labels = selector(component, version)
    template: dict[str, Any] = {"metadata": {"labels": labels}, "spec": pod}
    if annotations:
        template["metadata"]["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, namespace, component, version),
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "strategy": strategy, "template": template},
    }


def service(
    name: str, namespace: str, component: str, port_name: str, port: int, version: str | None = None
) -> dict[str, Any]:
    """A Service in front of the component's pods, on their named port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, namespace, component, version),
        "spec": {
            "selector": selector(component, version),
            "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}],
        },
    }
