import pytest

from serving.pool.replica import Replica


def test_needs_exactly_one_way_to_reach_the_engine() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Replica("r0")


def test_load_adds_the_engine_queue_to_our_in_flight() -> None:
    replica = Replica("r0", url="http://a:8000", in_flight=3, waiting=2)
    assert replica.load == 5


def test_a_failed_replica_is_not_routable() -> None:
    replica = Replica("r0", url="http://a:8000")
    assert replica.routable
    replica.healthy = False
    assert not replica.routable
