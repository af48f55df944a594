"""LoRA affinity: which replicas carry an adapter, when one more should, and what to unload to make room.

An adapter loaded everywhere costs every replica a LoRA slot and adapter-sized memory; loaded on one replica it
cannot take more traffic than that replica. So it lives on `k` replicas (all of them when fewer), picked by load,
and gains one more only when every carrier is over the load bound relative to the least-loaded replica, i.e. when
its requests are actually queueing. A replica at `max_loras` unloads its least recently used adapter first.

Pure decisions over `Replica` state; the caller performs the loads/unloads and updates `Replica.adapters`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from serving.pool.replica import Replica


@dataclass(frozen=True)
class AdapterLoad:
    """Load the adapter on `replica`, after unloading `unload` from it when that is set."""

    replica: Replica
    unload: str | None = None


def plan_adapter(
    adapter: str, replicas: Sequence[Replica], *, k: int, load_bound: int, max_loras: int
) -> list[AdapterLoad]:
    """The loads needed before serving a request for `adapter` on these (routable) replicas: up to `k` carriers
    at first, then one more while all carriers are over the bound; [] when the carriers suffice."""
    carriers = [replica for replica in replicas if adapter in replica.adapters]
    others = sorted((replica for replica in replicas if adapter not in replica.adapters), key=_load)
    if not others:
        return []
    wanted = min(k, len(replicas)) - len(carriers)
    if wanted <= 0:
        least = min(replica.load for replica in replicas)
        wanted = int(all(carrier.load > least + load_bound for carrier in carriers))
    return [AdapterLoad(replica, lru_victim(replica, max_loras)) for replica in others[:wanted]]


def lru_victim(replica: Replica, max_loras: int) -> str | None:
    """The adapter to unload from a replica before it takes another: its least recently used one, when full."""
    if len(replica.adapters) < max_loras:
        return None
    return min(replica.adapters, key=replica.adapters.__getitem__)


def _load(replica: Replica) -> int:
    return replica.load
