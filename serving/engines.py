"""The engines behind the served versions: start and stop, readiness, in-flight slots, on-demand engines.

Bases from the config are started with the gateway; on-demand ones (`serving.on_demand`) join and leave while
it serves. Adapters ride on their base's engine and are loaded onto it again whenever it restarts.

A base version may run on several replicas (`serving.replica_sets`, and those DNS discovery finds while it serves:
they join under their own supervisor, so they take traffic after their warm-up, and leave when the name stops
resolving to them). `admit` picks the replica that takes a request through the version's `EnginePool` (by load,
prefix and adapter), `backend` hands it out, `failed` takes a replica that refused it out until a probe brings it
back. An adapter rides on a few replicas of its base (`serving.pool.placement`), which `carry` places before its
requests are admitted."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from serving.backends.base import Backend
from serving.errors import EngineUnavailableError, ModelNotFoundError, OverloadedError
from serving.metrics.prometheus import GatewayMetrics
from serving.pool.discovery import follow
from serving.pool.factory import make_policy
from serving.pool.placement import AdapterPlacement, carried
from serving.pool.policy import Reason, RequestContext
from serving.pool.pool import EnginePool
from serving.pool.prefix_blocks import prefix_blocks, request_text
from serving.pool.replica import Replica
from serving.registry.capacity import in_flight_cap
from serving.settings import PoolSettings
from serving.versions import ServedVersion, ServedVersions

logger = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 256
"""An engine's in-flight cap when none is set and its version was never profiled."""


class Engines:
    def __init__(
        self,
        versions: ServedVersions,
        configured: Iterable[ServedVersion],
        metrics: GatewayMetrics,
        max_in_flight: int | None = None,
        capacity_margin: float = 0.9,
        pool: PoolSettings | None = None,
        max_loras: int = 4,
    ) -> None:
        """`max_loras`: adapters one replica keeps loaded before it unloads its least recently used one."""
        self.versions = versions
        self.metrics = metrics
        self.pool_settings = s = pool or PoolSettings()
        self.placement = AdapterPlacement(s.adapter_replicas, s.load_bound, max_loras)
        self.pools: dict[str, EnginePool] = {}
        self.choices = Counter(
            "servekit_replica_choice", "Replica choices by policy and why (prefix hit, load fallback, failover...).",
            ("policy", "reason"), registry=metrics.registry,
        )  # fmt: skip
        self._maintaining: list[asyncio.Task[None]] = []
        self.max_in_flight = max_in_flight
        """Requests one engine takes at once before the next is shed (0: no cap; None: from its profile)."""
        self.capacity_margin = capacity_margin
        self.caps: dict[str, int] = {}
        """Each engine's cap: the explicit one, else its base's capacity knee x margin, else DEFAULT_MAX_IN_FLIGHT."""
        self.bases: dict[str, ServedVersion] = {}
        self.in_flight: collections.Counter[str] = collections.Counter()
        self._idle: dict[str, asyncio.Event] = {}
        configured = list(configured)
        self.configured = frozenset(base.name for base in configured)
        """Bases from the config: never retired, and always part of /ready."""
        for base in configured:
            self.add(base)

    def start(self) -> None:
        for base in self.bases.values():
            self.start_base(base)

    def start_base(self, base: ServedVersion) -> None:
        for replica in base.replicas:
            replica.start()
        loop = asyncio.get_running_loop()
        if self.pooled(base):  # one replica needs no queue scraping nor probing: its supervisor watches it
            maintain = self.pools[base.name].maintain(self.pool_settings.probe_interval_s)
            self._maintaining.append(loop.create_task(maintain, name=f"pool-{base.name}"))
        if base.discovery is not None:
            join, leave = functools.partial(self._join, base), functools.partial(self._leave, base)
            following = follow(base.discovery.dns, join, leave)
            self._maintaining.append(loop.create_task(following, name=f"discovery-{base.name}"))

    def _join(self, base: ServedVersion, url: str) -> None:
        """A replica found at `url` joins the pool; it takes traffic once its supervisor has warmed it up."""
        assert base.discovery is not None
        supervisor = base.discovery.supervise(url)
        replica = Replica(_found_id(base, url), supervisor=supervisor)
        supervisor.name = replica.id
        supervisor.ready_hooks.append(functools.partial(self._reload_adapters, base, replica))
        self.pools[base.name].add(replica)
        base.replicas.append(supervisor)
        supervisor.start()
        logger.info("pool %s: found replica %s, warming it up", base.name, url)

    async def _leave(self, base: ServedVersion, url: str) -> None:
        """The name no longer resolves to `url`: out of the pool at once (requests on it finish), then stopped."""
        replica = self.pools[base.name].remove(_found_id(base, url))
        assert replica.supervisor is not None and base.discovery is not None
        base.replicas.remove(replica.supervisor)
        logger.info(
            "pool %s: replica %s left (%s no longer resolves to it)", base.name, url, base.discovery.dns.settings.host
        )
        await replica.supervisor.stop()

    async def stop(self) -> None:
        for idle in self._idle.values():
            idle.set()  # shutting down: engines being retired need not wait for their requests
        for task in self._maintaining:
            task.cancel()
        await asyncio.gather(*self._maintaining, return_exceptions=True)
        await self.placement.stop()
        await asyncio.gather(*(stop_replicas(base) for base in self.bases.values()))
        await asyncio.gather(*(pool.aclose() for pool in self.pools.values()))

    def ready(self, routed: set[str]) -> bool:
        """Every configured engine up and warm (a pool: one replica is enough), and every on-demand one in
        `routed`."""
        return all(self.pools[name].ready for name in self.bases if name in self.configured or name in routed)

    def named_replicas(self) -> list[tuple[str, ServedVersion, Replica]]:
        """Every engine by name: a base's own name, its replica's id (`name/i`, `name/host:port`) in a pool."""
        return [
            (replica.id if self.pooled(base) else base.name, base, replica)
            for base in self.bases.values()
            for replica in self.pools[base.name].replicas.values()
        ]

    def pooled(self, base: ServedVersion) -> bool:
        """Served by more than one replica, or may be (discovery): its replicas are told apart by their ids."""
        return len(self.pools[base.name].replicas) > 1 or base.discovery is not None

    def admit(
        self,
        served: ServedVersion,
        sticky_key: str | None = None,
        payload: Mapping[str, Any] | None = None,
        exclude: Collection[str] = (),
    ) -> Slot:
        """Count a request against its engine and pick the replica that takes it (by the pool's policy: load,
        the prompt's prefix, the sticky key, the adapter); refused at once when no replica is ready or the
        engine is full."""
        pool = self.pools[served.engine]
        if not pool.ready:
            raise self._unavailable(served)
        engine = served.engine
        if (cap := self.caps.get(engine, 0)) and self.in_flight[engine] >= cap:
            raise OverloadedError(
                f"Engine `{engine}` is at its limit of {cap} requests in flight; retry shortly.", retry_after_s=1
            )
        if len(pool.replicas) == 1 and not exclude and served.parent is None:
            replica, reason = next(iter(pool.replicas.values())), "only"
        else:
            choice = pool.choose(self._context(served, sticky_key, payload), exclude)
            replica, reason = choice.replica, str(choice.reason)
            self.choices.labels(pool.policy.name, reason).inc()
        self.in_flight[engine] += 1
        self.metrics.in_flight.labels(served.model.name, served.version).inc()
        self.metrics.replica_in_flight.labels(replica.id).inc()
        return Slot(engine, replica, pool.take(replica))

    def _context(
        self, served: ServedVersion, sticky_key: str | None, payload: Mapping[str, Any] | None
    ) -> RequestContext:
        s = self.pool_settings
        prompt = request_text(payload) if payload is not None else ""
        salt = served.engine_model  # an engine's prefix cache is per adapter
        blocks = prefix_blocks(prompt, s.block_chars, s.max_prefix_blocks, salt) if prompt else ()
        return RequestContext(sticky_key, served.engine_model if served.parent else None, blocks)

    def release(self, served: ServedVersion, slot: Slot) -> None:
        if slot.released:
            return
        slot.released = True
        slot.give_back()
        engine = slot.engine
        self.in_flight[engine] -= 1
        if self.in_flight[engine] == 0 and (idle := self._idle.get(engine)) is not None:
            idle.set()
        self.metrics.in_flight.labels(served.model.name, served.version).dec()
        self.metrics.replica_in_flight.labels(slot.replica.id).dec()

    def backend(self, served: ServedVersion, slot: Slot) -> Backend:
        """The replica admitted for the request."""
        assert slot.replica.supervisor is not None, "managed and remote replicas run under a supervisor"
        return slot.replica.supervisor.backend

    def failed(self, served: ServedVersion, slot: Slot) -> bool:
        """The slot's replica refused the request before answering: give the slot back and take the replica out
        of its pool until a probe passes; True when another replica could take the request."""
        pool = self.pools[slot.engine]
        self.release(served, slot)
        if len(pool.replicas) == 1:
            return False
        pool.mark_failed(slot.replica)
        self.choices.labels(pool.policy.name, str(Reason.failover)).inc()
        return pool.ready

    def add(self, base: ServedVersion) -> None:
        replicas = [Replica(f"{base.name}/{i}", supervisor=s) for i, s in enumerate(base.replicas)]
        for replica in replicas:
            assert replica.supervisor is not None
            replica.supervisor.ready_hooks.append(functools.partial(self._reload_adapters, base, replica))
        self.pools[base.name] = EnginePool(base.name, replicas, make_policy(self.pool_settings))
        if self.pooled(base):  # its supervisors' log lines name the replica, as /admin/engines and /ready do
            for replica in replicas:
                replica.supervisor.name = replica.id
        self.bases[base.name] = base
        profiled = in_flight_cap(base.capacity, self.capacity_margin)
        self.caps[base.name] = next(c for c in (self.max_in_flight, profiled, DEFAULT_MAX_IN_FLIGHT) if c is not None)
        self.versions.add(base)

    def drop(self, name: str) -> ServedVersion:
        """Take a base and the adapters riding on it out of the served set."""
        for adapter in self.versions.riding_on(name):
            self.versions.remove(adapter.name)
        self.versions.remove(name)
        self.caps.pop(name, None)
        self.pools.pop(name, None)
        return self.bases.pop(name)

    async def drained(self, name: str, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until `name`'s engine has no request in flight, or the gateway stops."""
        if self.in_flight[name] == 0:
            return
        idle = self._idle[name] = asyncio.Event()
        logger.info("engine %s waits for %d requests in flight", name, self.in_flight[name])
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle.wait(), timeout_s)
        finally:
            self._idle.pop(name, None)

    async def carry(self, served: ServedVersion) -> None:
        """Before admitting a request for an adapter: have it loaded on its replicas (waits only when no ready
        one carries it yet; one more is added in the background while its carriers are over the load bound). An
        adapter unloaded since the request found it is not loaded again: 404, as its engine would answer."""
        if served.parent is None:
            return
        if served.name not in self.versions:
            raise ModelNotFoundError(served.name, sorted(self.versions))
        await self.placement.carry(self.pools[served.engine], served.engine_model, str(served.model.path))

    async def load_adapter(self, served: ServedVersion) -> None:
        """Serve the admitted adapter `served` on `pool.adapter_replicas` of its base's ready replicas (chosen by
        load); nothing is left served on failure."""
        self.versions.add(served)
        pool = self.pools[served.engine]
        try:
            await self.carry(served)
            if not carried(pool, served.engine_model):
                raise self._unavailable(served)
        except Exception:
            self.versions.remove(served.name)
            raise
        carriers = [r.id for r in pool.replicas.values() if served.engine_model in r.adapters]
        logger.info("loaded adapter %s on %s (%s)", served.name, served.parent, ", ".join(carriers))

    async def unload_adapter(self, served: ServedVersion) -> None:
        self.versions.remove(served.name)
        pool = self.pools[served.engine]
        await self.placement.settled(pool, served.engine_model)  # a load under way lands before the unload
        for replica in pool.replicas.values():
            if replica.adapters.pop(served.engine_model, None) is not None and replica.routable:
                assert replica.supervisor is not None
                await replica.supervisor.backend.unload_adapter(served.engine_model)
        logger.info("unloaded adapter %s", served.name)

    async def _reload_adapters(self, base: ServedVersion, replica: Replica) -> None:
        """A (re)started engine knows no adapters: before traffic comes back it loads those it carried, and
        those fewer than `pool.adapter_replicas` other replicas carry (a pool's first replicas at start)."""
        pool = self.pools[base.name]
        assert replica.supervisor is not None
        for served in self.versions.riding_on(base.name):
            name = served.engine_model
            if self.placement.wanted_on(pool, replica, name):
                pool.stamp(replica, name)  # claimed before the load: replicas coming up together share the work
                await replica.supervisor.backend.load_adapter(name, str(served.model.path))

    def _unavailable(self, served: ServedVersion) -> EngineUnavailableError:
        """503 for a version none of whose replicas is ready: its engine's own reason when it has one engine."""
        pool = self.pools[served.engine]
        if len(pool.replicas) == 1 and served.supervisor is not None:
            return served.supervisor.unavailable()
        return pool.unavailable()


@dataclass(eq=False)
class Slot:
    """A request's place on an engine: which replica took it, and how its slot there is given back (once)."""

    engine: str
    replica: Replica
    give_back: Callable[[], None]
    released: bool = False


def _found_id(base: ServedVersion, url: str) -> str:
    """A discovered replica's id: `name/10.0.0.7:8000`."""
    return f"{base.name}/{url.partition('://')[2]}"


async def stop_replicas(base: ServedVersion) -> None:
    await asyncio.gather(*(replica.stop() for replica in base.replicas))
