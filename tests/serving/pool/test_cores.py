import pytest

from serving.pool.cores import core_sets, format_cpu_list, parse_cpu_list, replica_core_sets, usable_cores


def test_two_replicas_on_two_cores_get_one_core_each() -> None:
    assert core_sets(2, [0, 1]) == ["0", "1"]


def test_uneven_splits_give_the_first_replicas_the_extra_core() -> None:
    assert core_sets(3, list(range(8))) == ["0-2", "3-5", "6-7"]
    assert core_sets(1, [0, 1, 2, 3]) == ["0-3"]


def test_gaps_in_the_usable_cores_are_kept() -> None:
    assert core_sets(2, [0, 2, 4, 5]) == ["0,2", "4-5"]


def test_more_replicas_than_cores_is_refused() -> None:
    with pytest.raises(ValueError, match="3 replicas"):
        core_sets(3, [0, 1])


def test_cpu_lists_round_trip() -> None:
    assert parse_cpu_list("0-3,6") == [0, 1, 2, 3, 6]
    assert format_cpu_list([6, 0, 1, 2, 3]) == "0-3,6"


def test_explicit_sets_are_checked_and_errors_name_the_key() -> None:
    key = "engine.cpu_core_sets"
    assert replica_core_sets(key, 2, ["0", "1"], [0, 1]) == ["0", "1"]
    with pytest.raises(ValueError, match=r"^engine.cpu_core_sets: `0-1` and `1` overlap on core 1$"):
        replica_core_sets(key, 2, ["1", "0-1"], [0, 1])
    with pytest.raises(ValueError, match=r"^engine.cpu_core_sets: `2-3` names cores 2-3 this machine"):
        replica_core_sets(key, 2, ["0-1", "2-3"], [0, 1])
    with pytest.raises(ValueError, match=r"^engine.cpu_core_sets: `a-b` is not a core list"):
        replica_core_sets(key, 1, ["a-b"], [0, 1])
    with pytest.raises(ValueError, match=r"^engine.cpu_core_sets: 3 replicas cannot"):
        replica_core_sets(key, 3, [], [0, 1])


def test_usable_cores_are_this_process_affinity() -> None:
    cores = usable_cores()
    assert cores and core_sets(len(cores), cores) == [str(core) for core in cores]
