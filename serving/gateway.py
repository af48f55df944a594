"""The gateway's state: which public model names exist, which version and engine serve each, and metrics.

A base version owns an engine; adapter versions ride on their base's engine (multi-LoRA) under their own
name (`name:tag`) and can be loaded and unloaded while it serves. Bases come from the config (`model`, `versions:`)
or on demand: a route that names a registered base/merged version nobody serves starts an engine for it (the route
change waits for its warm-up), and an on-demand engine no route uses any more is retired once its requests finished."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from serving.backends.factory import create_backend, max_model_len, ports_needed, supervision_settings
from serving.backends.ports import free_port_block
from serving.backends.supervisor import EngineStartError, EngineSupervisor
from serving.errors import (
    ConflictError,
    EngineStartFailedError,
    EngineUnavailableError,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
)
from serving.faults import FaultProfile
from serving.metrics.access_log import write_access_log
from serving.metrics.prometheus import GatewayMetrics
from serving.metrics.stats import RequestStats
from serving.protocol import EngineStatus, ModelCard, ModelList
from serving.registry.adapters import adapter_rank, unserved_modules
from serving.registry.store import ModelMissingError, RegisteredModel, get_model_by_tag
from serving.router.breaker import Breakers
from serving.router.router import Router
from serving.router.routes import Route, RouteMember
from serving.settings import OnDemandSettings, Settings, VersionSettings
from serving.state import connect

logger = logging.getLogger(__name__)

BASE_KINDS = ("base", "merged")
"""Registry kinds that need an engine of their own (everything else must ride on one as an adapter)."""


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


EngineFactory = Callable[[str, RegisteredModel], ServedVersion]
"""Builds the (not yet started) engine for an on-demand base: served name, registry version."""


def on_demand_engine(settings: Settings, name: str, model: RegisteredModel) -> ServedVersion:
    """An engine like the configured base's (same engine args), on free ports picked now."""
    engine = settings.on_demand.engine or settings.model.engine
    port = free_port_block(ports_needed(engine), settings.engine.host)
    backend = create_backend(settings, engine, model.path, name, port)
    supervisor = EngineSupervisor(backend, supervision_settings(settings, engine), settings.warmup)
    return ServedVersion(name, model, supervisor, max_model_len(settings, engine), name)


class Gateway:
    def __init__(
        self,
        bases: list[ServedVersion],
        max_lora_rank: int,
        router: Router,
        engine_factory: EngineFactory | None = None,
        on_demand: OnDemandSettings | None = None,
        lora_target_modules: frozenset[str] | None = None,
    ) -> None:
        self.bases: dict[str, ServedVersion] = {}
        self.configured = frozenset(base.name for base in bases)
        """Bases from the config: never retired, and always part of /ready."""
        self.engine_factory = engine_factory
        self.on_demand = on_demand or OnDemandSettings()
        self.max_lora_rank = max_lora_rank
        self.lora_target_modules = lora_target_modules
        """Layers the engines carry adapters on (None: every layer)."""
        self.router = router
        self.versions: dict[str, ServedVersion] = {}
        """Served versions by their served name (a configured base's public name; the registry tag otherwise):
        the one identity routes and rollouts store."""
        self.faults: dict[str, FaultProfile] = {}
        self.breakers = Breakers(0, 1.0)
        self.fallbacks: dict[str, str] = {}
        """Route -> version taking its traffic while the chosen version's breaker is open."""
        self.metrics = GatewayMetrics()
        self.access_log = True
        self.max_in_flight_per_engine = 0
        self.in_flight: collections.Counter[str] = collections.Counter()
        self._held: collections.Counter[str] = collections.Counter()
        self._preparing: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._retiring: dict[str, asyncio.Task[None]] = {}
        self._idle: dict[str, asyncio.Event] = {}
        for base in bases:
            self._add_base(base)

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
        gateway = cls(
            bases,
            settings.engine.max_lora_rank if settings.engine.enable_lora else 0,
            router,
            functools.partial(on_demand_engine, settings),
            settings.on_demand,
            None if settings.engine.lora_target_modules is None else frozenset(settings.engine.lora_target_modules),
        )
        gateway.access_log = settings.access_log.enabled
        gateway.breakers = Breakers(settings.breaker.consecutive_failures, settings.breaker.open_s)
        gateway.fallbacks = dict(settings.fallbacks)
        gateway.max_in_flight_per_engine = settings.limits.max_in_flight_per_engine
        for adapter in adapters or ():
            gateway._admit_adapter(adapter)
        gateway._restore_routed_versions()
        for route in gateway.router.routes.values():
            for version in route.versions:
                gateway.expect_traffic(version, route.name)
        return gateway

    def _restore_routed_versions(self) -> None:
        """Route members (config or state file) not served yet: bases get their on-demand engine back (started
        with the others by `start`), then adapters are admitted, possibly onto those bases."""
        missing = {v for route in self.router.routes.values() for v in route.versions if self.find(v) is None}
        models = {m.tag: m for m in (_registered(version, sorted(self.versions)) for version in sorted(missing))}
        for tag, model in models.items():
            if model.labels.get("kind") in BASE_KINDS and self.find(tag) is None:
                self._add_base(self._build_engine(tag, model))
        for tag, model in models.items():
            if self.find(tag) is None:
                self._admit_adapter(model)
        for route in list(self.router.routes.values()):
            members = [m.model_copy(update={"version": self.identify(m.version)}) for m in route.members]
            self.router.adopt(_route(route.name, members))

    @property
    def ready(self) -> bool:
        """Every configured engine up and warm, and every on-demand one a route sends traffic to (one down engine
        turns /ready red while the others keep serving). An engine still starting for a route change is not
        routed to yet, so it does not count."""
        routed = self._in_use(held=False)
        return all(
            base.supervisor.ready for name, base in self.bases.items() if name in self.configured or name in routed
        )

    def engine_states(self) -> dict[str, str]:
        return {name: str(base.supervisor.state) for name, base in self.bases.items()}

    def engine_report(self) -> list[EngineStatus]:
        now = time.monotonic()
        return [
            EngineStatus(
                name=name,
                version=base.version,
                state=str(base.supervisor.state),
                state_for_s=round(now - base.supervisor.state_since, 1),
                restarts=base.supervisor.restarts,
                on_demand=name not in self.configured,
                last_error=base.supervisor.last_error,
            )
            for name, base in self.bases.items()
        ]

    def start(self) -> None:
        for base in self.bases.values():
            base.supervisor.start()

    async def stop(self) -> None:
        for idle in self._idle.values():
            idle.set()  # shutting down: retiring engines need not wait for their requests
        await asyncio.gather(*(base.supervisor.stop() for base in self.bases.values()), *self._retiring.values())

    def find(self, name: str) -> ServedVersion | None:
        """The served version `name` means: its served name, else its registry tag (the first one served, when
        one registry version is served by several engines)."""
        return self.versions.get(name) or next((s for s in self.versions.values() if s.version == name), None)

    def resolve(self, name: str) -> ServedVersion:
        served = self.find(name)
        if served is None:
            raise ModelNotFoundError(name, sorted(self.versions))
        return served

    def route(self, name: str) -> Route | None:
        return self.router.routes.get(name)

    def route_names(self) -> list[str]:
        return sorted(self.router.routes)

    def registry_version(self, name: str) -> str:
        return self.resolve(name).version

    def identify(self, name: str) -> str:
        """The served name `name` stands for, served yet or not (a version not served yet will be served under
        its registry tag): a version given by its public name or its tag is one version everywhere."""
        served = self.find(name)
        return served.name if served is not None else _registered(name, sorted(self.versions)).tag

    def serving_version(self, model: str, sticky_key: str | None, pinned: str | None) -> tuple[ServedVersion, bool]:
        """The version that serves a request for `model` (a route or a version name), and whether it is the
        route's fallback because the chosen version's circuit breaker is open."""
        served = self.resolve(self.router.resolve(model, sticky_key, pinned))
        if self.breakers.allow(served.name):
            return served, False
        fallback = self.fallbacks.get(model)
        if fallback is not None and (spare := self.find(fallback)) is not None and self.breakers.allow(spare.name):
            return spare, True
        breaker = self.breakers.get(served.name)
        raise EngineUnavailableError(
            f"`{served.name}` is failing (circuit breaker open) and `{model}` has no healthy fallback; retry shortly.",
            retry_after_s=max(1, math.ceil(breaker.retry_after_s() if breaker else 1)),
        )

    async def set_route(self, route: Route) -> Route:
        """Create or change a route. Members not served yet are made servable first (adapters loaded, bases
        started and warmed up on engines of their own), so the route never sends a request to a cold engine;
        on-demand engines it no longer uses are retired. Members are stored by their served names, whichever name
        (public name or registry tag) they were given by."""
        async with self.holding(route.versions):
            members = []
            for member in route.members:
                served = await self.prepare(member.version)
                self.expect_traffic(served.name, route.name)
                members.append(member.model_copy(update={"version": served.name}))
            resolved = _route(route.name, members)
            self.router.set(resolved)
        return resolved

    async def delete_route(self, name: str) -> None:
        if name not in self.router.routes:
            raise ModelNotFoundError(name, sorted(self.router.routes))
        self.router.delete(name)
        self.retire_unused()

    @contextlib.asynccontextmanager
    async def holding(self, versions: Iterable[str]) -> AsyncIterator[None]:
        """Keep `versions` from being retired while a change that needs them is under way (a route change, a
        rollout start); afterwards retire the on-demand engines that nothing uses, also when the change failed."""
        versions = list(versions)
        self._held.update(versions)
        try:
            yield
        finally:
            self._held.subtract(versions)
            self.retire_unused()

    async def prepare(self, name: str) -> ServedVersion:
        """Make `name` servable (idempotent): load an adapter, or start an engine for a base/merged version,
        served under its registry tag."""
        if (served := self.find(name)) is not None:
            return served
        model = _registered(name, sorted(self.versions))
        tag = model.tag
        async with self._preparing[tag]:
            if (retiring := self._retiring.get(tag)) is not None:
                await retiring
            if (served := self.find(tag)) is not None:
                return served
            if model.labels.get("kind") not in BASE_KINDS:
                return await self._load_adapter(model)
            return await self._start_on_demand(tag, model)

    async def _start_on_demand(self, tag: str, model: RegisteredModel) -> ServedVersion:
        """Start an engine for `model` under the name `tag` and wait for its warm-up; on failure, stop it again."""
        served = self._build_engine(tag, model)
        self._add_base(served)
        logger.info("starting on-demand engine %s for %s", tag, model.tag)
        served.supervisor.start()
        timeout_s = self.on_demand.ready_timeout_s
        self._held[tag] += 1  # not retired while it starts, whoever asked for it
        try:
            await served.supervisor.wait_started(timeout_s)
        except BaseException as exc:
            tail = _summary(served.supervisor.backend.log_tail())
            self._drop_base(tag)
            await served.supervisor.stop()
            if isinstance(exc, EngineStartError):
                message = (
                    f"The engine for `{tag}` failed to start ({exc}); the route was left unchanged. Log tail: {tail}"
                )
                raise EngineStartFailedError(message) from exc
            if isinstance(exc, TimeoutError):
                raise EngineStartFailedError(
                    f"The engine for `{tag}` was not warm after {timeout_s:g}s (on_demand.ready_timeout_s); "
                    f"it was stopped and the route left unchanged. Log tail: {tail}"
                ) from exc
            raise
        finally:
            self._held[tag] -= 1
        logger.info("on-demand engine %s ready", tag)
        return served

    def retire_unused(self) -> None:
        """Retire every on-demand engine that no route (and no change under way) uses: it leaves the served set
        at once and is stopped in the background once its in-flight requests finished."""
        in_use = self._in_use(held=True)
        for name in [n for n in self.bases if n not in self.configured and n not in in_use]:
            served = self._drop_base(name)
            self._retiring[name] = asyncio.create_task(self._retire(served), name=f"retire-{name}")

    async def _retire(self, served: ServedVersion) -> None:
        name = served.name
        try:
            if self.in_flight[name] > 0:
                idle = self._idle[name] = asyncio.Event()
                logger.info("retiring on-demand engine %s after %d requests in flight", name, self.in_flight[name])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(idle.wait(), self.on_demand.drain_timeout_s)
            await served.supervisor.stop()
            logger.info("retired on-demand engine %s", name)
        finally:
            self._idle.pop(name, None)
            self._retiring.pop(name, None)

    def _in_use(self, held: bool) -> set[str]:
        """Versions that routes (and, with `held`, changes under way) use, with the bases their adapters ride on."""
        names = {v for route in self.router.routes.values() for v in route.versions}
        if held:
            names |= {v for v, count in self._held.items() if count > 0}
        served = [s for name in names if (s := self.find(name)) is not None]
        return names | {s.name for s in served} | {s.parent for s in served if s.parent}

    def _build_engine(self, tag: str, model: RegisteredModel) -> ServedVersion:
        if self.engine_factory is None:
            raise InvalidRequestError(f"`{tag}` is a base version and this gateway starts no engines.", param="version")
        return self.engine_factory(tag, model)

    def _add_base(self, served: ServedVersion) -> None:
        served.supervisor.ready_hooks.append(functools.partial(self._reload_adapters, served))
        self.bases[served.name] = served
        self._serve(served)

    def _drop_base(self, name: str) -> ServedVersion:
        """Take a base and the adapters riding on it out of the served set."""
        for adapter in [v for v in self.versions.values() if v.parent == name]:
            self._unserve(adapter)
        self._unserve(self.bases[name])
        return self.bases.pop(name)

    def _serve(self, served: ServedVersion) -> None:
        self.versions[served.name] = served
        self.expect_traffic(served.name, served.name)

    def _unserve(self, served: ServedVersion) -> None:
        del self.versions[served.name]

    async def load_adapter(self, tag: str) -> ServedVersion:
        """Load a registered adapter onto its base engine (idempotent)."""
        if (served := self.find(tag)) is not None:
            return served
        model = _registered(tag, sorted(self.versions))
        return self.find(model.tag) or await self._load_adapter(model)

    async def _load_adapter(self, model: RegisteredModel) -> ServedVersion:
        """Admit `model` (not served yet) and load it onto its base engine; nothing is left served on failure."""
        served = self._admit_adapter(model)
        if not served.supervisor.ready:
            self._unserve(served)
            raise served.supervisor.unavailable()
        try:
            await served.supervisor.backend.load_adapter(served.engine_model, str(served.model.path))
        except Exception:
            self._unserve(served)
            raise
        logger.info("loaded adapter %s on %s", served.name, served.parent)
        return served

    async def unload_adapter(self, tag: str) -> None:
        served = self.resolve(tag)
        if served.parent is None:
            raise InvalidRequestError(f"`{tag}` is a base version; only adapters can be unloaded.", param="version")
        if routes := self.router.referencing(served.name):
            raise ConflictError(f"`{tag}` still receives traffic from route(s) {', '.join(routes)}; change them first.")
        self._unserve(served)
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
        if unserved := unserved_modules(model.path, self.lora_target_modules):
            raise InvalidRequestError(
                f"Adapter `{model.tag}` trains {', '.join(f'`{m}`' for m in unserved)}, but the engine carries "
                f"adapters on {', '.join(sorted(self.lora_target_modules or ()))} only "
                "(engine.lora_target_modules; null for every layer, at a cost on every token).",
                param="version",
                code="adapter_modules_not_served",
            )
        served = ServedVersion(model.tag, model, base.supervisor, base.max_model_len, model.tag, parent=base.name)
        self._serve(served)
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
                on_demand=(served.parent or served.name) not in self.configured,
            )
            for served in self.versions.values()
        ]
        for route in self.router.routes.values():
            members = [s for v in route.versions if (s := self.find(v)) is not None]
            primary = self.find(route.primary)
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
        if self.in_flight[engine] == 0 and (idle := self._idle.get(engine)) is not None:
            idle.set()
        self.metrics.in_flight.labels(served.model.name, served.version).dec()

    def expect_traffic(self, version: str, route: str) -> None:
        """`version` is about to get requests for `route` (its own name, a route, a rollout's canary): its series
        start at zero now, so Prometheus counts the very first ones."""
        served = self.resolve(version)
        self.metrics.expect(served.model.name, served.version, route)

    def record(self, stats: RequestStats) -> None:
        self.metrics.record(stats)
        if self.access_log:
            write_access_log(stats)

    def set_fault(self, version: str, profile: FaultProfile | None) -> None:
        name = self.resolve(version).name
        if profile is None:
            self.faults.pop(name, None)
        else:
            self.faults[name] = profile

    async def engine_metrics(self) -> list[str]:
        return list(await asyncio.gather(*(b.supervisor.backend.metrics_text() for b in self.bases.values())))


def _route(name: str, members: list[RouteMember]) -> Route:
    """A route of resolved members; two names of one version are refused like a version named twice."""
    try:
        return Route(name=name, members=members)
    except ValidationError as exc:
        raise InvalidRequestError(f"Invalid route: {exc.errors()[0]['msg']}", param="members") from exc


VERSION_NAME = re.compile(r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?(:[a-z0-9]([-._a-z0-9]*[a-z0-9])?)?$")


def _registered(tag: str, served: list[str]) -> RegisteredModel:
    """The registry version for `tag`; names that could never be a version (paths, `..`) are refused first."""
    if not VERSION_NAME.match(tag) or ".." in tag:
        raise InvalidRequestError(f"`{tag}` is not a valid version name (`name` or `name:tag`).", param="version")
    try:
        return get_model_by_tag(tag)
    except ModelMissingError as exc:
        raise ModelNotFoundError(tag, served) from exc


EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception)\b")


def _summary(log_tail: str, width: int = 300) -> str:
    """The gist of an engine log for an admin's error message: the last exception line and the line after it
    (where vLLM and pydantic put the reason), else the last lines."""
    lines = [line.strip()[:width] for line in log_tail.splitlines() if line.strip()]
    last = max((i for i, line in enumerate(lines) if EXCEPTION_LINE.match(line)), default=None)
    kept = lines[last : last + 2] if last is not None else lines[-3:]
    return " | ".join(kept) or "(empty log)"
