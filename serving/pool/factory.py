"""The one place `pool.policy` names map to policy classes."""

from __future__ import annotations

import random

from serving.pool.policies.least_loaded import LeastLoaded
from serving.pool.policies.prefix_affinity import PrefixAffinity
from serving.pool.policies.round_robin import RoundRobin
from serving.pool.policies.session import Session
from serving.pool.policy import ReplicaPolicy
from serving.pool.prefix_index import PrefixIndex
from serving.settings import PoolSettings


def make_policy(settings: PoolSettings, rng: random.Random | None = None) -> ReplicaPolicy:
    """A fresh policy (one per pool: `prefix_affinity` owns its index) as `settings` configure it."""
    least_loaded = LeastLoaded(rng)
    match settings.policy:
        case "round_robin":
            return RoundRobin()
        case "least_loaded":
            return least_loaded
        case "session":
            return Session(least_loaded)
        case "prefix_affinity":
            index = PrefixIndex(settings.index_max_entries, settings.index_max_mib)
            return PrefixAffinity(index, settings.load_bound, least_loaded)
