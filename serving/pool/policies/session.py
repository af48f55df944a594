"""The same sticky key always lands on the same replica: rendezvous hashing of (key, replica id).

Rendezvous rather than a ring: with a handful of replicas it needs no virtual nodes to stay even, and when a
replica leaves only its keys move (each to its second-best replica); the others stay where their cache is. The
hash is keyed, not salted per process, so every gateway and every restart agrees."""

from __future__ import annotations

from collections.abc import Sequence

from serving.pool.policies.least_loaded import LeastLoaded
from serving.pool.policy import Choice, Reason, RequestContext
from serving.pool.replica import Replica
from serving.router.assign import unit_hash


class Session:
    name = "session"

    def __init__(self, fallback: LeastLoaded | None = None) -> None:
        self._fallback = fallback or LeastLoaded()

    def choose(self, replicas: Sequence[Replica], ctx: RequestContext) -> Choice:
        if ctx.sticky_key is None:
            return Choice(self._fallback.pick(replicas), Reason.no_key)
        key = ctx.sticky_key
        return Choice(max(replicas, key=lambda replica: unit_hash(key, replica.id)), Reason.session)

    def forget(self, replica_id: str) -> None:
        """The hash needs no state: a missing replica simply is not among the candidates."""
