"""The engines of one base version, each under its own supervisor: managed children (each on its own ports and,
on a CPU, its own cores through vLLM's OpenMP binding: on 2 cores two replicas get one core each) and remote
engines at URLs. The request path picks one per request through the version's `serving.pool.EnginePool`.
`managed_engine` builds a configured base version, `on_demand_engine` one a route asked for."""

from __future__ import annotations

from serving.backends.factory import create_backend, max_model_len, ports_needed, supervision_settings
from serving.backends.ports import free_port_block
from serving.backends.supervisor import EngineSupervisor
from serving.backends.vllm import is_cpu_build
from serving.pool.cores import replica_core_sets, usable_cores
from serving.registry.capacity import capacity_profile
from serving.registry.store import RegisteredModel
from serving.settings import ReplicaSources, Settings
from serving.versions import ServedVersion


def build_replicas(
    settings: Settings, name: str, engine: str, model: RegisteredModel, port: int | None, sources: ReplicaSources,
    key: str,
) -> list[EngineSupervisor]:  # fmt: skip
    """`sources.replicas` managed children (the first on `port`, None: the configured one; the others on free
    ports), then one replica per URL in `sources.urls`. `key` names the settings in error messages."""
    supervision = supervision_settings(settings, engine)
    managed = sources.managed_replicas
    if managed == 0 and not sources.urls:  # `engine.url`: the one remote engine the settings already name
        return [
            EngineSupervisor(create_backend(settings, engine, model.path, name, None), supervision, settings.warmup)
        ]
    bound = managed > 1 and engine == "vllm" and is_cpu_build()
    cores = replica_core_sets(f"{key}.cpu_core_sets", managed, sources.cpu_core_sets, usable_cores()) if bound else []
    replicas = []
    for replica in range(managed):
        replica_port = port if replica == 0 else free_ports(settings, engine)
        own = settings
        if cores:
            own = _with_engine(settings, cpu_threads_bind=cores[replica])
        backend = create_backend(own, engine, model.path, name, replica_port, replica=replica)
        replicas.append(EngineSupervisor(backend, supervision, settings.warmup))
    for url in sources.urls:
        backend = create_backend(_with_engine(settings, url=url), engine, model.path, name, None)
        replicas.append(EngineSupervisor(backend, supervision, settings.warmup))
    return replicas


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
    return ServedVersion(
        name, model, replicas[0], max_model_len(settings, engine), name, replicas=replicas,
        capacity=capacity_profile(model),
    )  # fmt: skip


def on_demand_engine(settings: Settings, name: str, model: RegisteredModel) -> ServedVersion:
    """An engine like the configured base's (same engine args), on free ports picked now."""
    engine = settings.on_demand.engine or settings.model.engine
    return managed_engine(settings, name, engine, model, free_ports(settings, engine))
