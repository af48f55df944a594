"""One vLLM OpenAI server workload per served base version, found by the gateway through a headless Service.

A Deployment, not a StatefulSet: an engine keeps no state of its own (weights are read-only on the models
volume, adapters are loaded by the gateway), so pods need no stable identity, and the headless Service's DNS
records list every ready pod, which is what the gateway's DNS discovery resolves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serving.backends.vllm import SERVER_MODULE, server_args, server_env
from serving.deploy.objects import (
    ENGINE_PORT,
    ENGINE_PREFIX,
    MODELS_CLAIM,
    MODELS_DIR,
    deployment,
    dns_label,
    metadata,
    selector,
    service,
)
from serving.settings import EngineSettings, Settings

ENGINE = "engine"
DISCOVERY_INTERVAL_S = 5.0
"""How often the gateway re-resolves an engine Service: CoreDNS serves cluster records with a 5 s TTL, so
resolving more often sees nothing new and less often leaves new replicas idle longer."""
PROBE_PERIOD_S = 10
GPU_RESOURCE = "nvidia.com/gpu"
ENGINE_MEMORY_OVERHEAD_GIB = 4
"""Weights and runtime of a small model on top of the CPU KV cache; raise it for bigger models."""
DRAIN_SCRIPT = """\
import time, urllib.request
time.sleep({settle})
deadline = time.monotonic() + {timeout}
while time.monotonic() < deadline:
    try:
        text = urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5).read().decode()
    except OSError:
        break
    busy = sum(float(line.rsplit(' ', 1)[1]) for line in text.splitlines()
               if line.startswith(('vllm:num_requests_running{{', 'vllm:num_requests_waiting{{')))
    if busy == 0:
        break
    time.sleep(1)
"""
"""The engine's preStop: wait until DNS discovery stopped sending it new requests, then until the ones it holds
finished (vLLM aborts running requests on SIGTERM). An engine that no longer answers has nothing to wait for."""


class DeployError(ValueError):
    """The settings cannot be rendered for a cluster (the CLI exits 2 with this message)."""


@dataclass(frozen=True)
class EngineVersion:
    """A served base version as the cluster runs it: its workload, headless Service and weights directory."""

    served_name: str
    tag: str

    @property
    def workload(self) -> str:
        return dns_label(ENGINE_PREFIX, self.served_name)

    @property
    def model_dir(self) -> str:
        name, version = self.tag.split(":", 1)
        return f"{MODELS_DIR}/{name}/{version}"

    def host(self, namespace: str) -> str:
        """The headless Service's name in cluster DNS: one A record per ready engine pod."""
        return f"{self.workload}.{namespace}.svc.cluster.local"

    def discovery(self, namespace: str) -> dict[str, Any]:
        return {"host": self.host(namespace), "port": ENGINE_PORT, "interval_s": DISCOVERY_INTERVAL_S}


def engine_versions(settings: Settings, resolve_tag: Callable[[str], str]) -> list[EngineVersion]:
    """The base model and every `versions:` entry; `resolve_tag` turns `name` into `name:version` (the registry's
    newest) so each engine loads exactly the weights directory the gateway would."""
    model = settings.model
    wanted = [(model.name, model.engine, f"{model.name}:{model.version}" if model.version else model.name)]
    wanted += [(version.name, version.engine, version.model) for version in settings.versions]
    engines: list[EngineVersion] = []
    for served_name, kind, ref in wanted:
        if kind != "vllm":
            raise DeployError(f"version {served_name!r} runs on {kind}; only vLLM engines are rendered for Kubernetes")
        engines.append(EngineVersion(served_name, resolve_tag(ref)))
    workloads = [engine.workload for engine in engines]
    if len(set(workloads)) != len(workloads):
        raise DeployError(f"two versions map to the same Kubernetes name: {sorted(workloads)}")
    return engines


def cluster_engine_settings(engine: EngineSettings) -> EngineSettings:
    """The engine settings a pod runs with: listening on its own IP, one port for all, and CPU threads bound by
    vLLM inside the pod's cgroup (`all` means this machine's cores, which a pod does not have)."""
    bind = "auto" if engine.cpu_threads_bind == "all" else engine.cpu_threads_bind
    return engine.model_copy(update={"host": "0.0.0.0", "port": ENGINE_PORT, "url": None, "cpu_threads_bind": bind})


def engine_container(settings: Settings, engine: EngineVersion, image: str, gpu: bool) -> dict[str, Any]:
    s = cluster_engine_settings(settings.engine)
    env = server_env(s, None if gpu else s.cpu_threads_bind) | {"HF_HUB_OFFLINE": "1"}
    health = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": PROBE_PERIOD_S, "timeoutSeconds": 5}
    drain = DRAIN_SCRIPT.format(
        settle=2 * DISCOVERY_INTERVAL_S, timeout=settings.server.request_timeout_s, port=ENGINE_PORT
    )
    return {
        "name": "vllm",
        "image": image,
        "command": ["python3", "-m", SERVER_MODULE],
        "args": server_args(s, engine.model_dir, engine.served_name, dtype=s.dtype, gpu=gpu),
        "env": [{"name": key, "value": value} for key, value in sorted(env.items())],
        "ports": [{"name": "http", "containerPort": ENGINE_PORT, "protocol": "TCP"}],
        # Loading weights (and on CUDA capturing graphs) takes minutes: liveness starts only once this passed.
        "startupProbe": {**health, "failureThreshold": math.ceil(s.startup_timeout_s / PROBE_PERIOD_S)},
        "readinessProbe": {**health, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**health, "failureThreshold": 3},
        "lifecycle": {"preStop": {"exec": {"command": ["python3", "-c", drain]}}},
        "resources": engine_resources(s, gpu),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    }


def engine_resources(s: EngineSettings, gpu: bool) -> dict[str, Any]:
    if gpu:
        return {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "32Gi", GPU_RESOURCE: 1}}
    memory = math.ceil(s.kv_cache_space_gib) + ENGINE_MEMORY_OVERHEAD_GIB
    return {"requests": {"cpu": "4", "memory": f"{memory}Gi"}, "limits": {"memory": f"{memory + 4}Gi"}}


def engine_deployment(
    settings: Settings, engine: EngineVersion, namespace: str, replicas: int, image: str, gpu: bool
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": int(2 * DISCOVERY_INTERVAL_S) + settings.server.request_timeout_s + 10,
        "containers": [engine_container(settings, engine, image, gpu)],
        "volumes": [
            {"name": "models", "persistentVolumeClaim": {"claimName": MODELS_CLAIM, "readOnly": True}},
            # vLLM's workers exchange tensors through shared memory; the container runtime's default is 64 MiB.
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
        ],
    }
    if gpu:
        pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    # A new engine must be ready before an old one leaves: capacity never dips during a rollout.
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    return deployment(
        engine.workload, namespace, ENGINE, pod, replicas=replicas, strategy=strategy, version=engine.workload
    )


def headless_service(engine: EngineVersion, namespace: str) -> dict[str, Any]:
    """No cluster IP: DNS answers with every ready engine pod, and the gateway balances over them itself."""
    headless = service(engine.workload, namespace, ENGINE, "http", ENGINE_PORT, engine.workload)
    headless["spec"]["clusterIP"] = "None"
    return headless


def engine_disruption_budget(engine: EngineVersion, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(engine.workload, namespace, ENGINE, engine.workload),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(ENGINE, engine.workload)}},
    }


def models_claim(namespace: str, size: str) -> dict[str, Any]:
    """The model store every engine (and gateway) mounts read-only; filled once with the registry's versions
    (docs/kubernetes.md), so pods start without downloading weights and a new version is a copy, not a rebuild."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(MODELS_CLAIM, namespace, ENGINE),
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}},
    }
