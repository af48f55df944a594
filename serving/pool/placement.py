"""Carries out LoRA affinity (`serving.pool.adapters.plan_adapter`) on a pool's engines: an adapter is loaded on
its first `k` replicas by load, on one more while every carrier is over the load bound, and a replica at
`max_loras` unloads its least recently used adapter first.

A request waits for a load only when no ready replica carries its adapter yet; growing onto one more replica
happens in the background while the carriers keep serving. One placement per adapter and pool runs at a time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

from serving.pool.adapters import AdapterLoad, plan_adapter
from serving.pool.pool import EnginePool
from serving.pool.replica import Replica

logger = logging.getLogger(__name__)


class AdapterPlacement:
    def __init__(self, k: int, load_bound: int, max_loras: int) -> None:
        self.k = k
        self.load_bound = load_bound
        self.max_loras = max_loras
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def carry(self, pool: EnginePool, adapter: str, path: str) -> None:
        """Make `adapter` (its engine name and weights' path) servable on `pool`; raises what the engines
        answered when it had to wait and no load succeeded."""
        key = (pool.version, adapter)
        task = self._running.get(key)
        if task is None:
            plan = plan_adapter(
                adapter, pool.routable(), k=self.k, load_bound=self.load_bound, max_loras=self.max_loras
            )
            if not plan:
                return
            task = self._running[key] = asyncio.create_task(self._load(pool, adapter, path, plan))
            task.add_done_callback(functools.partial(self._done, key))
        if not carried(pool, adapter):
            await asyncio.shield(task)

    async def settled(self, pool: EnginePool, adapter: str) -> None:
        """Wait for a placement of `adapter` under way on `pool` (before unloading it), whatever its outcome."""
        if (task := self._running.get((pool.version, adapter))) is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel the placements under way (the gateway stops)."""
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    def wanted_on(self, pool: EnginePool, replica: Replica, adapter: str) -> bool:
        """Whether a replica coming (back) up loads `adapter`: it carried it before, or fewer than `k` others do."""
        others = sum(adapter in r.adapters for r in pool.replicas.values() if r is not replica)
        return adapter in replica.adapters or others < min(self.k, len(pool.replicas))

    async def _load(self, pool: EnginePool, adapter: str, path: str, plan: Sequence[AdapterLoad]) -> None:
        """Each planned load; a failed one is logged and skipped, and raised when no ready replica carries the
        adapter afterwards."""
        failure: Exception | None = None
        for step in plan:
            replica = step.replica
            assert replica.supervisor is not None, "a pool's replicas run under supervisors"
            backend = replica.supervisor.backend
            try:
                if step.unload is not None:
                    replica.adapters.pop(step.unload, None)
                    await backend.unload_adapter(step.unload)
                await backend.load_adapter(adapter, path)
            except Exception as exc:
                logger.warning("pool %s: adapter %s not loaded on %s: %s", pool.version, adapter, replica.id, exc)
                failure = exc
                continue
            pool.stamp(replica, adapter)
            unloaded = f" after unloading {step.unload} (least recently used)" if step.unload else ""
            logger.info("pool %s: adapter %s loaded on %s%s", pool.version, adapter, replica.id, unloaded)
        if failure is not None and not carried(pool, adapter):
            raise failure

    def _done(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        """Forget a finished placement; its failure was logged (and raised to whoever waited for it)."""
        self._running.pop(key, None)
        if not task.cancelled():
            task.exception()


def carried(pool: EnginePool, adapter: str) -> bool:
    """A ready replica of `pool` carries `adapter`."""
    return any(adapter in replica.adapters for replica in pool.routable())
