"""The engines of one base version, each under its own supervisor: managed children (each on its own ports and,
on a CPU, its own cores through vLLM's OpenMP binding: on 2 cores two replicas get one core each), remote
engines at URLs, and those DNS discovery finds while it serves (`serving.engines` follows the name). The request
path picks one per request through the version's `serving.pool.EnginePool`. `managed_engine` builds a configured
base version, `on_demand_engine` one a route asked for."""

from __future__ import annotations

import functools

from serving.backends.factory import create_backend, max_model_len, ports_needed, supervision_settings
from serving.backends.ports import free_port_block
from serving.backends.supervisor import EngineSupervisor
from serving.backends.vllm import is_cpu_build
from serving.pool.cores import parse_cpu_list, replica_core_sets, usable_cores
from serving.pool.discovery import DiscoveredReplicas, DnsDiscovery
from serving.registry.capacity import capacity_profile
from serving.registry.store import RegisteredModel
from serving.settings import ReplicaSources, Settings
from serving.versions import ServedVersion


def build_replicas(
    settings: Settings, name: str, engine: str, model: RegisteredModel, port: int | None, sources: ReplicaSources,
    key: str,
) -> list[EngineSupervisor]:  # fmt: skip
    """`engine.url`'s engine, `sources.replicas` managed children (the first on `port`, None: the configured one;
    the others on free ports), then one replica per URL in `sources.urls`; none when only discovery finds them.
    Explicit core sets are checked against this machine (a one-line error naming `key`)."""
    supervision = supervision_settings(settings, engine)
    managed = sources.managed_replicas
    replicas = []
    if getattr(sources, "url", None) is not None:  # `engine.url`: the remote engine the settings already name
        backend = create_backend(settings, engine, model.path, name, None)
        replicas.append(EngineSupervisor(backend, supervision, settings.warmup))
    cores = []
    if sources.cpu_core_sets or (managed > 1 and engine == "vllm" and is_cpu_build()):
        cores = replica_core_sets(f"{key}.cpu_core_sets", managed, sources.cpu_core_sets, usable_cores())
    check_unshared(settings, key, sources)
    for replica in range(managed):
        replica_port = port if replica == 0 else free_ports(settings, engine)
        own = _with_engine(settings, cpu_threads_bind=cores[replica]) if cores and is_cpu_build() else settings
        backend = create_backend(own, engine, model.path, name, replica_port, replica=replica)
        replicas.append(EngineSupervisor(backend, supervision, settings.warmup))
    replicas += [remote_replica(settings, name, engine, model, str(url)) for url in sources.urls]
    return replicas


def check_unshared(settings: Settings, key: str, sources: ReplicaSources) -> None:
    """No engine URL is a replica of two versions (an engine serves one model), and no core is named in two
    versions' explicit `cpu_core_sets` (two engines on one core halve each other). A one-line error naming `key`."""
    mine = _urls(sources)
    cores = _cores(sources)
    for other_key, other in [("engine", settings.engine), *((f"versions[{v.name}]", v) for v in settings.versions)]:
        if other_key == key:
            continue
        if shared := sorted(mine & _urls(other)):
            raise ValueError(f"{key}.urls: {shared[0]} is also a replica of `{other_key}`")
        if overlap := sorted(cores & _cores(other)):
            raise ValueError(f"{key}.cpu_core_sets: core {overlap[0]} is also in `{other_key}.cpu_core_sets`")


def _cores(sources: ReplicaSources) -> set[int]:
    """The cores named in explicit core sets (one that does not parse is reported by its own version's build)."""
    cores: set[int] = set()
    for text in sources.cpu_core_sets:
        try:
            cores.update(parse_cpu_list(text))
        except ValueError:
            continue
    return cores


def _urls(sources: ReplicaSources) -> set[str]:
    remote = getattr(sources, "url", None)
    return {str(url).rstrip("/") for url in [*sources.urls, *([remote] if remote is not None else [])]}


def remote_replica(settings: Settings, name: str, engine: str, model: RegisteredModel, url: str) -> EngineSupervisor:
    """A supervisor for the engine of kind `engine` at `url` (listed under `urls` or found by discovery)."""
    backend = create_backend(_with_engine(settings, url=url), engine, model.path, name, None)
    return EngineSupervisor(backend, supervision_settings(settings, engine), settings.warmup)


def free_ports(settings: Settings, engine: str) -> int:
    """The first of the free consecutive ports an engine of kind `engine` needs."""
    return free_port_block(ports_needed(engine), settings.engine.host)


def _with_engine(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={"engine": settings.engine.model_copy(update=changes)})


def managed_engine(
    settings: Settings,
    name: str,
    engine: str,
    model: RegisteredModel,
    port: int | None,
    sources: ReplicaSources | None = None,
    key: str = "engine",
) -> ServedVersion:
    """`model` served as `name` by engines of kind `engine` (not started yet): the replicas `sources` asks for
    (one managed engine when None)."""
    sources = sources or ReplicaSources(replicas=1)
    replicas = build_replicas(settings, name, engine, model, port, sources, key)
    discovery = None
    if sources.discovery is not None:
        dns = DnsDiscovery(sources.discovery, key=f"{key}.discovery")
        discovery = DiscoveredReplicas(dns, engine, functools.partial(remote_replica, settings, name, engine, model))
    return ServedVersion(
        name, model, replicas[0] if replicas else None, max_model_len(settings, engine), name, replicas=replicas,
        capacity=capacity_profile(model), discovery=discovery,
    )  # fmt: skip


def on_demand_engine(settings: Settings, name: str, model: RegisteredModel) -> ServedVersion:
    """An engine like the configured base's (same engine args), on free ports picked now."""
    engine = settings.on_demand.engine or settings.model.engine
    return managed_engine(settings, name, engine, model, free_ports(settings, engine))
