import random
from collections import Counter

from serving.pool.policies.least_loaded import LeastLoaded
from serving.pool.policy import Reason, RequestContext
from serving.pool.replica import Replica


def replicas(*loads: tuple[int, int]) -> list[Replica]:
    return [Replica(f"r{i}", url=f"http://r{i}", in_flight=f, waiting=w) for i, (f, w) in enumerate(loads)]


def test_of_two_it_always_takes_the_less_loaded() -> None:
    pair = replicas((5, 0), (1, 0))
    policy = LeastLoaded(random.Random(1))
    choices = [policy.choose(pair, RequestContext()) for _ in range(50)]
    assert {c.replica.id for c in choices} == {"r1"}
    assert {c.reason for c in choices} == {Reason.least_loaded}


def test_the_engine_queue_counts_against_a_replica() -> None:
    pair = replicas((1, 6), (4, 0))
    assert LeastLoaded(random.Random(1)).pick(pair).id == "r1"


def test_never_takes_the_most_loaded_of_many_and_favours_the_idle_one() -> None:
    many = replicas(*[(9, 0)] + [(4, 0)] * 6 + [(0, 0)])
    policy = LeastLoaded(random.Random(7))
    counts = Counter(policy.pick(many).id for _ in range(4000))
    assert counts["r0"] == 0
    assert counts["r7"] > 1.5 * 4000 / len(many)
    assert counts["r7"] > max(counts[f"r{i}"] for i in range(1, 7))


def test_a_single_replica_is_chosen() -> None:
    assert LeastLoaded().pick(replicas((3, 3))).id == "r0"
