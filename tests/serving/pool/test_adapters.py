from serving.pool.adapters import lru_victim, plan_adapter
from serving.pool.replica import Replica


def replicas(*loads: int) -> list[Replica]:
    return [Replica(f"r{i}", url=f"http://r{i}", in_flight=load) for i, load in enumerate(loads)]


def ids(plan: list) -> list[str]:
    return [step.replica.id for step in plan]


def test_first_placement_takes_the_k_least_loaded() -> None:
    pool = replicas(5, 0, 3, 1)
    assert ids(plan_adapter("a", pool, k=2, load_bound=4, max_loras=4)) == ["r1", "r3"]


def test_k_larger_than_the_pool_means_every_replica() -> None:
    assert ids(plan_adapter("a", replicas(1, 0), k=3, load_bound=4, max_loras=4)) == ["r1", "r0"]


def test_carriers_within_the_bound_are_enough() -> None:
    pool = replicas(5, 0, 3)
    pool[0].adapters["a"] = 1
    pool[2].adapters["a"] = 1
    assert plan_adapter("a", pool, k=2, load_bound=5, max_loras=4) == []


def test_one_more_replica_when_every_carrier_is_over_the_bound() -> None:
    pool = replicas(9, 8, 0, 1)
    pool[0].adapters["a"] = 1
    pool[1].adapters["a"] = 1
    assert ids(plan_adapter("a", pool, k=2, load_bound=4, max_loras=4)) == ["r2"]
    pool[1].in_flight = 3
    assert plan_adapter("a", pool, k=2, load_bound=4, max_loras=4) == []


def test_a_full_replica_unloads_its_least_recently_used_adapter_first() -> None:
    pool = replicas(0)
    pool[0].adapters.update({"old": 3, "older": 1, "recent": 9})
    (step,) = plan_adapter("a", pool, k=1, load_bound=4, max_loras=3)
    assert step.unload == "older"
    assert lru_victim(pool[0], max_loras=4) is None


def test_nothing_to_do_when_every_replica_carries_it() -> None:
    pool = replicas(9, 9)
    for replica in pool:
        replica.adapters["a"] = 1
    assert plan_adapter("a", pool, k=1, load_bound=0, max_loras=4) == []
