import pytest

from serving.pool.factory import make_policy
from serving.pool.prefix_index import ENTRY_BYTES, MIB
from serving.settings import PoolSettings


@pytest.mark.parametrize("name", ["round_robin", "least_loaded", "session", "prefix_affinity"])
def test_every_configurable_policy_is_built_under_its_name(name: str) -> None:
    assert make_policy(PoolSettings(policy=name)).name == name


def test_prefix_affinity_takes_its_bounds_from_the_settings() -> None:
    policy = make_policy(PoolSettings(index_max_mib=1, index_max_entries=10**9, load_bound=3))
    assert policy.index.capacity == MIB // ENTRY_BYTES
    assert policy.load_bound == 3
    assert make_policy(PoolSettings(index_max_entries=100)).index.capacity == 100
