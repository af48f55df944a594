"""The replicas serving one version, and the one place a request takes and gives back a replica's slot.

A version resolves to an `EnginePool`; per request the caller asks `choose(ctx)` for a replica, holds its slot
with `acquire(replica)` around the engine call or with `take(replica)`'s release callback (so the in-flight count
can never leak), and on a connection refusal, a 503 or an engine dying before the first byte calls
`mark_failed(replica)` and chooses again with that replica excluded. `maintain()` runs in the background: it
scrapes each replica's queue and probes failed replicas back in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterable

import aiohttp

from serving.errors import EngineUnavailableError
from serving.pool.policy import Choice, Reason, ReplicaPolicy, RequestContext
from serving.pool.replica import Replica
from serving.pool.scrape import requests_waiting

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0


class EnginePool:
    def __init__(
        self, version: str, replicas: Iterable[Replica], policy: ReplicaPolicy, *, retry_after_s: int = 5
    ) -> None:
        self.version = version
        self.policy = policy
        self.retry_after_s = retry_after_s
        self.replicas: dict[str, Replica] = {}
        self._tick = 0
        """Counts adapter requests: each carrier's last-use stamp, for LRU unloading."""
        self._http: aiohttp.ClientSession | None = None
        for replica in replicas:
            self.add(replica)

    def add(self, replica: Replica) -> None:
        if replica.id in self.replicas:
            raise ValueError(f"pool {self.version}: replica {replica.id} is already in it")
        self.replicas[replica.id] = replica

    def remove(self, replica_id: str) -> Replica:
        """Take a replica out for good (discovery lost it, or it is being stopped); requests on it finish."""
        self.policy.forget(replica_id)
        return self.replicas.pop(replica_id)

    def routable(self) -> list[Replica]:
        return [replica for replica in self.replicas.values() if replica.routable]

    def snapshot(self) -> list[dict[str, object]]:
        """Each replica's state for an admin view (and `/v1/models`: which replicas carry which adapters)."""
        return [
            {
                "id": replica.id,
                "url": replica.url,
                "routable": replica.routable,
                "in_flight": replica.in_flight,
                "waiting": replica.waiting,
                "adapters": sorted(replica.adapters),
            }
            for replica in self.replicas.values()
        ]

    @property
    def ready(self) -> bool:
        """At least one replica may take traffic (what `/ready` asks of every routed version)."""
        return any(replica.routable for replica in self.replicas.values())

    def choose(self, ctx: RequestContext, exclude: Collection[str] = ()) -> Choice:
        """The replica for a request. `exclude` holds replicas already tried for it (failover). A request naming
        an adapter goes to a replica carrying it (the caller places adapters first, see
        `serving.pool.placement`); none routable is a 503 like no replica at all."""
        candidates = [r for r in self.replicas.values() if r.routable and r.id not in exclude]
        if not candidates:
            raise self.unavailable()
        if ctx.adapter is None:
            return self.policy.choose(candidates, ctx)
        carriers = [replica for replica in candidates if ctx.adapter in replica.adapters]
        if not carriers:
            raise self.unavailable(f"adapter `{ctx.adapter}` is on no ready replica")
        choice = self.policy.choose(carriers, ctx)
        self.stamp(choice.replica, ctx.adapter)
        return Choice(choice.replica, Reason.adapter_affinity)

    def stamp(self, replica: Replica, adapter: str) -> None:
        """The adapter was just loaded on or used by the replica: the last one its LRU would unload."""
        self._tick += 1
        replica.adapters[adapter] = self._tick

    def unavailable(self, why: str = "no ready replica") -> EngineUnavailableError:
        return EngineUnavailableError(f"model `{self.version}`: {why}", retry_after_s=self.retry_after_s)

    def mark_failed(self, replica: Replica) -> None:
        """Take the replica out at once; `probe_failed` brings it back. Its cache is presumed lost."""
        if replica.healthy:
            logger.warning("pool %s: replica %s failed, taken out until a probe passes", self.version, replica.id)
        replica.healthy = False
        self.policy.forget(replica.id)

    @contextlib.asynccontextmanager
    async def acquire(self, replica: Replica) -> AsyncIterator[Replica]:
        """Hold one in-flight slot on the replica for the body of the `async with`, whatever way it ends."""
        release = self.take(replica)
        try:
            yield replica
        finally:
            release()

    def take(self, replica: Replica) -> Callable[[], None]:
        """Take one in-flight slot and return the function that gives it back: for a request pipeline that keeps
        its release callbacks in one place (`acquire` is the `async with` form). Calling it again does nothing,
        so a slot is never given back twice."""
        replica.in_flight += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                replica.in_flight -= 1

        return release

    async def scrape(self) -> None:
        """Refresh every replica's `waiting` from its engine's metrics (left as it was when unreadable)."""
        texts = await asyncio.gather(*(self._metrics_text(r) for r in self.replicas.values()))
        for replica, text in zip(list(self.replicas.values()), texts, strict=True):
            waiting = requests_waiting(text) if text else None
            if waiting is not None:
                replica.waiting = waiting

    async def probe_failed(self) -> list[Replica]:
        """Probe each failed replica once; those that answer healthy are routable again (returned)."""
        failed = [replica for replica in self.replicas.values() if not replica.healthy]
        results = await asyncio.gather(*(self._probe(replica) for replica in failed))
        back = [replica for replica, ok in zip(failed, results, strict=True) if ok]
        for replica in back:
            replica.healthy = True
            logger.info("pool %s: replica %s is back", self.version, replica.id)
        return back

    async def maintain(self, interval_s: float) -> None:
        """Scrape and probe every `interval_s` until cancelled."""
        while True:
            await asyncio.gather(self.scrape(), self.probe_failed())
            await asyncio.sleep(interval_s)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S))
        return self._http

    async def _metrics_text(self, replica: Replica) -> str:
        if replica.supervisor is not None:
            return await replica.supervisor.backend.metrics_text()
        try:
            async with self._session().get(f"{replica.url}/metrics") as response:
                return await response.text() if response.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError):
            return ""

    async def _probe(self, replica: Replica) -> bool:
        if replica.supervisor is not None:
            return replica.supervisor.ready and await replica.supervisor.backend.is_healthy()
        try:
            async with self._session().get(f"{replica.url}/health") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
