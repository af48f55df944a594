"""The one interface every replica policy implements, and what a request tells it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from serving.pool.replica import Replica


class Reason(StrEnum):
    """Why a replica was chosen: the `reason` label of `servekit_replica_choice_total{policy,reason}`."""

    round_robin = "round_robin"
    least_loaded = "least_loaded"
    session = "session"
    no_key = "no_key"
    """`session` without a sticky key: chosen by load instead."""
    prefix_hit = "prefix_hit"
    load_fallback = "load_fallback"
    """`prefix_affinity` had a match but that replica was over the load bound."""
    no_match = "no_match"
    adapter_affinity = "adapter_affinity"
    """The request names an adapter: the choice was made among the replicas carrying it."""
    failover = "failover"
    """Another replica refused the request before answering: this one takes its second try."""


@dataclass(frozen=True)
class RequestContext:
    """What a policy may know about a request."""

    sticky_key: str | None = None
    """The key A/B assignment already uses (user / session), for `session`."""
    adapter: str | None = None
    prefix_blocks: Sequence[int] = field(default=())
    """Chained hashes of the prompt's fixed-size blocks (`serving.pool.prefix_blocks.prefix_blocks`)."""


@dataclass(frozen=True)
class Choice:
    replica: Replica
    reason: Reason


class ReplicaPolicy(Protocol):
    """Picks one of a non-empty list of routable replicas. Policies that keep state (an index of served prefixes)
    update it in `choose`: choosing a replica is what makes it hold the prompt's cache."""

    name: str

    def choose(self, replicas: Sequence[Replica], ctx: RequestContext) -> Choice:
        """The replica for this request; `replicas` is never empty."""
        ...

    def forget(self, replica_id: str) -> None:
        """The replica left or lost its engine (and so its cache): drop what the policy knows about it."""
        ...
