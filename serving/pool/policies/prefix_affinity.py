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
        index = self.index
        ids = [replica.id for replica in replicas]
        matched, mask = index.longest_match(ctx.prefix_blocks, index.mask(ids))
        if not matched:
            return Choice(self._fallback.pick(replicas), Reason.no_match)
        holders = set(index.holders(mask, ids))
        best = min((replica for replica in replicas if replica.id in holders), key=lambda replica: replica.load)
        if best.load > min(replica.load for replica in replicas) + self.load_bound:
            others = [replica for replica in replicas if replica is not best]
            return Choice(self._fallback.pick(others), Reason.load_fallback)
        return Choice(best, Reason.prefix_hit)

    def forget(self, replica_id: str) -> None:
        self.index.forget(replica_id)
