"""Each replica in turn: the baseline every load- or cache-aware policy is measured against."""

from __future__ import annotations

from collections.abc import Sequence

from serving.pool.policy import Choice, Reason, RequestContext
from serving.pool.replica import Replica


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, replicas: Sequence[Replica], ctx: RequestContext) -> Choice:
        replica = replicas[self._next % len(replicas)]
        self._next += 1
        return Choice(replica, Reason.round_robin)

    def forget(self, replica_id: str) -> None:
        """Nothing is kept per replica."""
