"""Send a prompt where its prefix was sent before, so the engine's prefix cache skips most of the prefill.

The replica holding the longest indexed prefix wins (the least loaded of them on a tie), unless its load exceeds
the least-loaded replica's by more than `load_bound` requests: then the prefill saved is worth less than the queue
ahead of it, and `least_loaded` decides among the others. No match also goes to `least_loaded`. Either way the
chosen replica is recorded as holding the prompt's blocks, so a conversation's next turn, and other prompts
sharing its system prompt, follow it. A hot shared prefix spreads by itself: once its holder is over the bound,
the fallback replica gets the prefix recorded too, and the tie-break shares the traffic between them.

Like vllm-router's `cache_aware` (an approximate tree of what was routed where, a balance threshold that switches
to shortest queue) and llm-d's prefix scorer (chained block hashes, LRU per server), but one bounded structure
for all replicas and a bound on the chosen replica's load rather than on the fleet's imbalance: a hot replica is
avoided even while the others are evenly loaded.
"""

from __future__ import annotations

from collections.abc import Sequence

from serving.pool.policies.least_loaded import LeastLoaded
from serving.pool.policy import Choice, Reason, RequestContext
from serving.pool.prefix_index import PrefixIndex
from serving.pool.replica import Replica


class PrefixAffinity:
    name = "prefix_affinity"

    def __init__(self, index: PrefixIndex, load_bound: int, fallback: LeastLoaded | None = None) -> None:
        self.index = index
        self.load_bound = load_bound
        self._fallback = fallback or LeastLoaded()

    def choose(self, replicas: Sequence[Replica], ctx: RequestContext) -> Choice:
        choice = self._decide(replicas, ctx)
        self.index.record(ctx.prefix_blocks, choice.replica.id)
        return choice

    def _decide(self, replicas: Sequence[Replica], ctx: RequestContext) -> Choice:
        if not ctx.prefix_blocks:
            return Choice(self._fallback.pick(replicas), Reason.no_match)
        bits = self.index.bits(replica.id for replica in replicas)
        allowed = 0
        for bit in bits:
            allowed |= bit
        matched, mask = self.index.longest_match(ctx.prefix_blocks, allowed)
        if not matched:
            return Choice(self._fallback.pick(replicas), Reason.no_match)
        best, best_load, least = None, 0, None
        for replica, bit in zip(replicas, bits, strict=True):
            load = replica.in_flight + replica.waiting
            if least is None or load < least:
                least = load
            if bit & mask and (best is None or load < best_load):
                best, best_load = replica, load
        assert best is not None and least is not None  # matched: some allowed replica holds the prefix
        if best_load > least + self.load_bound:
            others = [replica for replica in replicas if replica is not best]
            return Choice(self._fallback.pick(others), Reason.load_fallback)
        return Choice(best, Reason.prefix_hit)

    def forget(self, replica_id: str) -> None:
        self.index.forget(replica_id)
