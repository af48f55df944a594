"""What serves what: the served versions, the engines under them and the routes over them.

Routes and rollouts reach it through `serving.rollout.route_table.RouteTable`: a route change makes its members
servable first (adapters loaded, on-demand bases started and warm), then stores them by served name; on-demand
engines that nothing uses any more are retired. With a shared state (`state.url`) a route changed through another
replica arrives through `apply_routes` (the route watcher), its members made servable here first too. The request
path reads it through `serving.pipeline`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable

from pydantic import ValidationError

from serving.engines import Engines
from serving.errors import ConflictError, InvalidRequestError, ModelNotFoundError
from serving.metrics.prometheus import GatewayMetrics
from serving.model_cards import model_cards
from serving.on_demand import EngineFactory, OnDemandEngines
from serving.protocol import ModelList
from serving.registry.store import RegisteredModel
from serving.replica_sets import free_ports, managed_engine, on_demand_engine
from serving.router.router import Router, embedded_router
from serving.router.routes import Route, RouteMember
from serving.settings import OnDemandSettings, PoolSettings, Settings, VersionSettings
from serving.state import connect
from serving.state.records import Definition
from serving.state.redis_records import RouteWatcher
from serving.state.shared import SharedState
from serving.versions import BASE_KINDS, LoraCapacity, ServedVersion, ServedVersions, adapter_version

logger = logging.getLogger(__name__)


class Gateway:
    def __init__(
        self,
        bases: Iterable[ServedVersion],
        router: Router,
        *,
        adapters: Iterable[RegisteredModel] = (),
        lora: LoraCapacity = LoraCapacity(0),
        engine_factory: EngineFactory | None = None,
        on_demand: OnDemandSettings | None = None,
        max_in_flight: int | None = 0,
        capacity_margin: float = 0.9,
        pool: PoolSettings | None = None,
        shared: SharedState | None = None,
    ) -> None:
        """Configured `bases` (each on an engine of its own) and `adapters` on them; route members not served
        yet (from the config or the state file) are made servable again: bases get their on-demand engine back
        (started with the others by `start`), then adapters are admitted, possibly onto those bases."""
        self.router = router
        self.lora = lora
        self.kept_by: list[Callable[[], Iterable[str]]] = []
        """Other users of versions (a shadow run's candidate): what they name is never retired."""
        self.metrics = GatewayMetrics()
        self.shared = shared
        """The shared state (`state.url`) the router's records live in, if any; its error counter is exported."""
        if shared is not None:
            self.metrics.registry.register(shared.health.errors)
        self._watching: asyncio.Task[None] | None = None
        self.versions = ServedVersions()
        self.engines = Engines(self.versions, bases, self.metrics, max_in_flight, capacity_margin, pool, lora.max_loras)
        self.on_demand = OnDemandEngines(self.engines, engine_factory, on_demand or OnDemandSettings())
        for adapter in adapters:
            self.versions.add(adapter_version(adapter, self.engines.bases.values(), lora))
        self._restore_routed_versions()
        for name in self.versions:
            self.expect_traffic(name, name)
        for route in self.router.routes.values():
            for version in route.versions:
                self.expect_traffic(version, route.name)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        model: RegisteredModel,
        adapters: Iterable[RegisteredModel] = (),
        more_bases: Iterable[tuple[VersionSettings, RegisteredModel]] = (),
    ) -> Gateway:
        """The configured base (`model`), more base versions on engines of their own, and adapters; routes in the
        SQLite state file, or in Redis with `state.url`."""
        model_settings = settings.model
        bases = [managed_engine(settings, model_settings.name, model_settings.engine, model, None, settings.engine)]
        bases += [
            managed_engine(
                settings,
                v.name,
                v.engine,
                registered,
                v.port or free_ports(settings, v.engine),
                v,
                f"versions[{v.name}]",
            )
            for v, registered in more_bases
        ]
        defaults = {
            name: Route(name=name, members=[RouteMember(version=v, weight=w) for v, w in members.items()])
            for name, members in settings.routes.items()
        }
        lora_modules = settings.engine.lora_target_modules
        shared = SharedState.open(settings.state) if settings.state.url else None
        router = (
            Router(shared.records(), defaults, shared.stored_routes())
            if shared is not None
            else embedded_router(connect(settings.state_path), defaults)
        )
        return cls(
            bases,
            router,
            adapters=adapters,
            lora=LoraCapacity(
                settings.engine.max_lora_rank if settings.engine.enable_lora else 0,
                None if lora_modules is None else frozenset(lora_modules),
                settings.engine.max_loras,
            ),
            engine_factory=functools.partial(on_demand_engine, settings),
            on_demand=settings.on_demand,
            max_in_flight=settings.limits.max_in_flight_per_engine,
            capacity_margin=settings.limits.capacity_margin,
            pool=settings.pool,
            shared=shared,
        )

    def _restore_routed_versions(self) -> None:
        missing = {v for route in self.router.routes.values() for v in route.versions if self.versions.find(v) is None}
        models = {m.tag: m for m in map(self.versions.registered, sorted(missing))}
        for tag, model in models.items():
            if model.labels.get("kind") in BASE_KINDS and self.versions.find(tag) is None:
                self.engines.add(self.on_demand.build(tag, model))
        for tag, model in models.items():
            if self.versions.find(tag) is None:
                self.versions.add(adapter_version(model, self.engines.bases.values(), self.lora))
        for route in list(self.router.routes.values()):
            members = [m.model_copy(update={"version": self.identify(m.version)}) for m in route.members]
            self.router.adopt(_route(route.name, members))

    @property
    def ready(self) -> bool:
        """Every configured engine up and warm, and every on-demand one a route sends traffic to (one down engine
        turns /ready red while the others keep serving). An engine still starting for a route change is not
        routed to yet, so it does not count."""
        return self.engines.ready(self._in_use(held=False))

    def start(self) -> None:
        """Start the engines and, with a shared state, the route watcher (in the running event loop)."""
        self.engines.start()
        if self.shared is not None:
            watcher = RouteWatcher(self.router.records, self.apply_routes, self.shared.settings.routes_poll_s)
            self._watching = asyncio.create_task(watcher.run(), name="route-watcher")

    async def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
            self._watching = None
        await asyncio.gather(self.engines.stop(), self.on_demand.stop())

    def route(self, name: str) -> Route | None:
        return self.router.routes.get(name)

    def route_names(self) -> list[str]:
        return sorted(self.router.routes)

    def identify(self, name: str) -> str:
        return self.versions.identify(name)

    def registry_version(self, name: str) -> str:
        return self.versions.resolve(name).version

    def expect_traffic(self, version: str, route: str) -> None:
        """`version` is about to get requests for `route` (its own name, a route, a rollout's canary): its series
        start at zero now, so Prometheus counts the very first ones."""
        served = self.versions.resolve(version)
        self.metrics.expect(served.model.name, served.version, route)

    async def set_route(self, route: Route, token: int | None = None) -> Route:
        """Create or change a route. Members not served yet are made servable first, so the route never sends a
        request to a cold engine. Members are stored by their served names, whichever name (public name or
        registry tag) they were given by. `token`: the rollout controller's lease token (fenced), None for an
        admin's change."""
        async with self.holding(route.versions):
            resolved = await self._servable(route)
            await self.router.set(resolved, token)
        return resolved

    async def _servable(self, route: Route) -> Route:
        """`route` with every member servable, named by its served name."""
        members = []
        for member in route.members:
            served = await self.prepare(member.version)
            self.expect_traffic(served.name, route.name)
            members.append(member.model_copy(update={"version": served.name}))
        return _route(route.name, members)

    async def delete_route(self, name: str) -> None:
        if name not in self.router.routes:
            raise ModelNotFoundError(name, sorted(self.router.routes))
        await self.router.delete(name)
        self.on_demand.retire_unused(self._in_use(held=True))

    async def apply_routes(self, table: dict[str, Definition]) -> None:
        """Route by a stored table that another replica changed: changed routes' members are made servable here
        first (a route this replica cannot serve yet keeps its old definition and is tried again at the next
        change), then every change is applied at once."""
        changed, deleted = self.router.changes(table)
        adopted: list[Route] = []
        async with self.holding([v for route in changed.values() for v in route.versions]):
            for route in changed.values():
                try:
                    adopted.append(await self._servable(route))
                except Exception:
                    logger.exception("route %s changed by another replica cannot be served here", route.name)
            self.router.applied(table, adopted, deleted)

    @contextlib.asynccontextmanager
    async def holding(self, versions: Iterable[str]) -> AsyncIterator[None]:
        """Keep `versions` from being retired while a change that needs them is under way (a route change, a
        rollout start); afterwards retire the on-demand engines that nothing uses, also when the change failed."""
        try:
            with self.on_demand.holding(versions):
                yield
        finally:
            self.on_demand.retire_unused(self._in_use(held=True))

    async def prepare(self, name: str) -> ServedVersion:
        """Make `name` servable (idempotent): load an adapter, or start an engine for a base/merged version,
        served under its registry tag."""
        if (served := self.versions.find(name)) is not None:
            return served
        model = self.versions.registered(name)
        async with self.on_demand.preparing(model.tag):
            if (served := self.versions.find(model.tag)) is not None:
                return served
            if model.labels.get("kind") in BASE_KINDS:
                served = await self.on_demand.start(model.tag, model)
            else:
                served = adapter_version(model, self.engines.bases.values(), self.lora)
                await self.engines.load_adapter(served)
        self.expect_traffic(served.name, served.name)
        return served

    async def load_adapter(self, name: str) -> ServedVersion:
        """Load a registered adapter onto its base engine (idempotent)."""
        if (served := self.versions.find(name)) is not None:
            return served
        model = self.versions.registered(name)
        adapter_version(model, self.engines.bases.values(), self.lora)  # refuses what cannot be loaded, bases too
        return await self.prepare(model.tag)

    async def unload_adapter(self, name: str) -> None:
        served = self.versions.resolve(name)
        if served.parent is None:
            raise InvalidRequestError(f"`{name}` is a base version; only adapters can be unloaded.", param="version")
        if routes := self.router.referencing(served.name):
            raise ConflictError(
                f"`{name}` still receives traffic from route(s) {', '.join(routes)}; change them first."
            )
        await self.engines.unload_adapter(served)

    def _in_use(self, held: bool) -> set[str]:
        """Versions that routes (and, with `held`, changes under way) use, with the bases their adapters ride on."""
        names = {v for route in self.router.routes.values() for v in route.versions}
        if held:
            names |= self.on_demand.held() | {name for kept in self.kept_by for name in kept()}
        served = [s for name in names if (s := self.versions.find(name)) is not None]
        return names | {s.engine for s in served}

    def model_list(self) -> ModelList:
        """Every callable name: served versions, then routes."""
        return model_cards(self.versions, self.router.routes.values(), self.engines)


def _route(name: str, members: list[RouteMember]) -> Route:
    """A route of resolved members; two names of one version are refused like a version named twice."""
    try:
        return Route(name=name, members=members)
    except ValidationError as exc:
        raise InvalidRequestError(f"Invalid route: {exc.errors()[0]['msg']}", param="members") from exc
