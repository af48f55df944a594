"""The gateway's state: which public model names exist, which version and engine serve each, and metrics.

A base version owns an engine; adapter versions ride on their base's engine (multi-LoRA) under their own
name (`name:tag`) and can be loaded and unloaded while it serves."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import re
import time
from dataclasses import dataclass, field

from serving.backends.factory import create_backend, max_model_len, supervision_settings
from serving.backends.supervisor import EngineSupervisor
from serving.errors import ConflictError, InvalidRequestError, ModelNotFoundError, OverloadedError
from serving.faults import FaultProfile
from serving.metrics.access_log import write_access_log
from serving.metrics.prometheus import GatewayMetrics
from serving.metrics.stats import RequestStats
from serving.protocol import ModelCard, ModelList
from serving.registry.adapters import adapter_rank
from serving.registry.store import ModelMissingError, RegisteredModel, get_model
from serving.router.router import Router
from serving.router.routes import Route, RouteMember
from serving.settings import Settings, VersionSettings
from serving.state import connect

logger = logging.getLogger(__name__)


@dataclass
class ServedVersion:
    """A public model name bound to the registry version and the engine that serve it."""

    name: str
    model: RegisteredModel
    supervisor: EngineSupervisor
    max_model_len: int
    engine_model: str
    parent: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def version(self) -> str:
        return self.model.tag


class Gateway:
    def __init__(self, bases: list[ServedVersion], max_lora_rank: int, router: Router) -> None:
        self.bases = {base.name: base for base in bases}
        self.max_lora_rank = max_lora_rank
        self.router = router
        self.versions: dict[str, ServedVersion] = dict(self.bases)
        self.faults: dict[str, FaultProfile] = {}
        self.metrics = GatewayMetrics()
        self.access_log = True
        self.max_in_flight_per_engine = 0
        self.in_flight: collections.Counter[str] = collections.Counter()
        for base in bases:
            base.supervisor.ready_hooks.append(functools.partial(self._reload_adapters, base))

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        model: RegisteredModel,
        adapters: list[RegisteredModel] | None = None,
        more_bases: list[tuple[VersionSettings, RegisteredModel]] = (),
    ) -> Gateway:
        """The configured base (`model`), more base versions on engines of their own, and adapters."""
        specs: list[tuple[str, str, RegisteredModel, int | None]] = [
            (settings.model.name, settings.model.engine, model, None)
        ]
        specs += [(v.name, v.engine, registered, v.port) for v, registered in more_bases]
        bases = []
        for name, engine, registered, port in specs:
            backend = create_backend(settings, engine, registered.path, name, port)
            supervisor = EngineSupervisor(backend, supervision_settings(settings, engine), settings.warmup)
            bases.append(ServedVersion(name, registered, supervisor, max_model_len(settings, engine), name))
        defaults = {
            name: Route(name=name, members=[RouteMember(version=v, weight=w) for v, w in members.items()])
            for name, members in settings.routes.items()
        }
        router = Router(connect(settings.state_path), defaults)
        gateway = cls(bases, settings.engine.max_lora_rank if settings.engine.enable_lora else 0, router)
        gateway.access_log = settings.access_log.enabled
        gateway.max_in_flight_per_engine = settings.limits.max_in_flight_per_engine
        for adapter in adapters or ():
            gateway._admit_adapter(adapter)
        for route in router.routes.values():
            for version in route.versions:
                if version not in gateway.versions:
                    gateway._admit_adapter(_registered(version, sorted(gateway.versions)))
        return gateway

    @property
    def ready(self) -> bool:
        """Every engine up and warm (one down engine turns /ready red while the others keep serving)."""
        return all(base.supervisor.ready for base in self.bases.values())

    def engine_states(self) -> dict[str, str]:
        return {name: str(base.supervisor.state) for name, base in self.bases.items()}

    def start(self) -> None:
        for base in self.bases.values():
            base.supervisor.start()

    async def stop(self) -> None:
        await asyncio.gather(*(base.supervisor.stop() for base in self.bases.values()))

    def resolve(self, name: str) -> ServedVersion:
        served = self.versions.get(name)
        if served is None:
            raise ModelNotFoundError(name, sorted(self.versions))
        return served

    def serving_version(self, model: str, sticky_key: str | None, pinned: str | None) -> ServedVersion:
        """The version that serves a request for `model` (a route or a version name)."""
        return self.resolve(self.router.resolve(model, sticky_key, pinned))

    async def set_route(self, route: Route) -> Route:
        """Create or change a route; adapter members that are registered but not loaded are loaded first."""
        for version in route.versions:
            await self.load_adapter(version)
        self.router.set(route)
        return route

    def delete_route(self, name: str) -> None:
        if name not in self.router.routes:
            raise ModelNotFoundError(name, sorted(self.router.routes))
        self.router.delete(name)

    async def load_adapter(self, tag: str) -> ServedVersion:
        """Load a registered adapter onto its base engine (idempotent)."""
        if tag in self.versions:
            return self.versions[tag]
        served = self._admit_adapter(_registered(tag, sorted(self.versions)))
        if not served.supervisor.ready:
            del self.versions[served.name]
            raise served.supervisor.unavailable()
        try:
            await served.supervisor.backend.load_adapter(served.engine_model, str(served.model.path))
        except Exception:
            del self.versions[served.name]
            raise
        logger.info("loaded adapter %s on %s", served.name, served.parent)
        return served

    async def unload_adapter(self, tag: str) -> None:
        served = self.resolve(tag)
        if served.parent is None:
            raise InvalidRequestError(f"`{tag}` is a base version; only adapters can be unloaded.", param="version")
        if routes := self.router.referencing(tag):
            raise ConflictError(f"`{tag}` still receives traffic from route(s) {', '.join(routes)}; change them first.")
        del self.versions[tag]
        if served.supervisor.ready:
            await served.supervisor.backend.unload_adapter(served.engine_model)
        logger.info("unloaded adapter %s", tag)

    def _admit_adapter(self, model: RegisteredModel) -> ServedVersion:
        """Check that `model` can ride on the engine of the base it was trained for; add it to the served versions."""
        kind = model.labels.get("kind", "unknown")
        if kind != "adapter":
            raise InvalidRequestError(f"`{model.tag}` is a {kind} version, not an adapter.", param="version")
        trained_for = model.labels.get("base")
        base = next((b for b in self.bases.values() if b.version == trained_for), None)
        if base is None:
            served_bases = ", ".join(f"`{b.version}`" for b in self.bases.values())
            raise InvalidRequestError(
                f"Adapter `{model.tag}` was trained for `{trained_for}`, but the engines serve {served_bases}.",
                param="version",
                code="adapter_base_mismatch",
            )
        rank = adapter_rank(model.path)
        if rank > self.max_lora_rank:
            raise InvalidRequestError(
                f"Adapter `{model.tag}` has rank {rank}; the engine accepts ranks up to {self.max_lora_rank} "
                "(engine.max_lora_rank; 0 when engine.enable_lora is off).",
                param="version",
                code="adapter_rank_too_large",
            )
        served = ServedVersion(model.tag, model, base.supervisor, base.max_model_len, model.tag, parent=base.name)
        self.versions[model.tag] = served
        return served

    async def _reload_adapters(self, base: ServedVersion) -> None:
        """A (re)started engine knows no adapters: load every admitted one before traffic comes back."""
        for served in list(self.versions.values()):
            if served.parent == base.name:
                await base.supervisor.backend.load_adapter(served.engine_model, str(served.model.path))

    def model_list(self) -> ModelList:
        """Every callable name: served versions, then routes (`engine: route`, `root` = the heaviest member)."""
        cards = [
            ModelCard(
                id=served.name,
                created=served.created,
                root=served.version,
                parent=served.parent,
                max_model_len=served.max_model_len,
                engine=served.supervisor.backend.engine_name,
                ready=served.supervisor.ready,
            )
            for served in self.versions.values()
        ]
        for route in self.router.routes.values():
            members = [self.versions[v] for v in route.versions if v in self.versions]
            primary = self.versions.get(max(route.members, key=lambda m: m.weight).version)
            cards.append(
                ModelCard(
                    id=route.name,
                    created=min((m.created for m in members), default=0),
                    root=primary.version if primary else "",
                    max_model_len=min((m.max_model_len for m in members), default=None),
                    engine="route",
                    ready=bool(members) and all(m.supervisor.ready for m in members),
                )
            )
        return ModelList(data=cards)

    def admit(self, served: ServedVersion) -> str:
        """Count a request against its engine, or shed it at once when the engine is full."""
        engine = served.parent or served.name
        if self.max_in_flight_per_engine and self.in_flight[engine] >= self.max_in_flight_per_engine:
            raise OverloadedError(
                f"Engine `{engine}` is at its limit of {self.max_in_flight_per_engine} requests in flight; "
                "retry shortly.",
                retry_after_s=1,
            )
        self.in_flight[engine] += 1
        self.metrics.in_flight.labels(served.model.name, served.version).inc()
        return engine

    def release(self, served: ServedVersion, engine: str) -> None:
        self.in_flight[engine] -= 1
        self.metrics.in_flight.labels(served.model.name, served.version).dec()

    def record(self, stats: RequestStats) -> None:
        self.metrics.record(stats)
        if self.access_log:
            write_access_log(stats)

    def set_fault(self, version: str, profile: FaultProfile | None) -> None:
        self.resolve(version)
        if profile is None:
            self.faults.pop(version, None)
        else:
            self.faults[version] = profile

    async def engine_metrics(self) -> list[str]:
        return list(await asyncio.gather(*(b.supervisor.backend.metrics_text() for b in self.bases.values())))


VERSION_NAME = re.compile(r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?(:[a-z0-9]([-._a-z0-9]*[a-z0-9])?)?$")


def _registered(tag: str, served: list[str]) -> RegisteredModel:
    """The registry version for `tag`; names that could never be a version (paths, `..`) are refused first."""
    if not VERSION_NAME.match(tag) or ".." in tag:
        raise InvalidRequestError(f"`{tag}` is not a valid version name (`name` or `name:tag`).", param="version")
    name, _, version = tag.partition(":")
    try:
        return get_model(name, version or None)
    except ModelMissingError as exc:
        raise ModelNotFoundError(tag, served) from exc
