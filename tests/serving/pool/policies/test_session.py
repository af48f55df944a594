import random

from serving.pool.policies.least_loaded import LeastLoaded
from serving.pool.policies.session import Session
from serving.pool.policy import Reason, RequestContext
from serving.pool.replica import Replica

REPLICAS = [Replica(f"http://10.0.0.{i}:8000", url=f"http://10.0.0.{i}:8000") for i in range(4)]


def test_a_key_always_lands_on_the_same_replica_whatever_the_order() -> None:
    policy = Session()
    first = policy.choose(REPLICAS, RequestContext(sticky_key="user-1"))
    assert first.reason is Reason.session
    again = policy.choose(list(reversed(REPLICAS)), RequestContext(sticky_key="user-1"))
    assert again.replica is first.replica


def test_keys_spread_and_only_the_departed_replicas_keys_move() -> None:
    policy = Session()
    keys = [f"user-{i}" for i in range(400)]
    before = {key: policy.choose(REPLICAS, RequestContext(sticky_key=key)).replica.id for key in keys}
    assert len(set(before.values())) == 4
    gone = REPLICAS[0].id
    after = {key: policy.choose(REPLICAS[1:], RequestContext(sticky_key=key)).replica.id for key in keys}
    moved = {key for key in keys if before[key] != after[key]}
    assert moved == {key for key in keys if before[key] == gone}


def test_without_a_key_it_chooses_by_load() -> None:
    busy = Replica("busy", url="http://busy", in_flight=9)
    idle = Replica("idle", url="http://idle")
    choice = Session(LeastLoaded(random.Random(0))).choose([busy, idle], RequestContext())
    assert (choice.replica, choice.reason) == (idle, Reason.no_key)
