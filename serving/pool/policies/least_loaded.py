"""Power of two choices on load: sample two replicas, take the less loaded.

Load is the gateway's exact in-flight count plus the engine's scraped queue (`Replica.load`). Sampling two instead
of scanning all keeps a burst from piling onto whichever replica looked emptiest at the last scrape (the queue
figure is seconds old), while still avoiding the busy ones almost as well as a full scan."""

from __future__ import annotations

import random
from collections.abc import Sequence

from serving.pool.policy import Choice, Reason, RequestContext
from serving.pool.replica import Replica


class LeastLoaded:
    name = "least_loaded"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, replicas: Sequence[Replica]) -> Replica:
        """The less loaded of two distinct random replicas (the first of them on a tie)."""
        count = len(replicas)
        if count == 1:
            return replicas[0]
        first = self._rng.randrange(count)
        second = self._rng.randrange(count - 1)
        second += second >= first
        a, b = replicas[first], replicas[second]
        return a if a.load <= b.load else b

    def choose(self, replicas: Sequence[Replica], ctx: RequestContext) -> Choice:
        return Choice(self.pick(replicas), Reason.least_loaded)

    def forget(self, replica_id: str) -> None:
        """Load lives on the replicas themselves; nothing is kept here."""
