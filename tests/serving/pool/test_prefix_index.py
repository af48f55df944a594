import tracemalloc

from serving.pool.prefix_index import PrefixIndex


def chain(prefix: str, length: int) -> list[int]:
    return [hash((prefix, i)) for i in range(length)]


def test_longest_match_finds_the_deepest_block_and_who_holds_it() -> None:
    index = PrefixIndex(max_entries=1000, max_mib=1)
    shared = chain("system", 4)
    index.record([*shared, *chain("a", 3)], "r0")
    index.record([*shared, *chain("b", 2)], "r1")
    everyone = index.mask(["r0", "r1"])
    depth, mask = index.longest_match([*shared, *chain("a", 5)], everyone)
    assert depth == 7
    assert index.holders(mask, ["r0", "r1"]) == ["r0"]
    depth, mask = index.longest_match([*shared, *chain("c", 5)], everyone)
    assert depth == 4
    assert index.holders(mask, ["r0", "r1"]) == ["r0", "r1"]
    assert index.longest_match(chain("other", 3), everyone) == (0, 0)


def test_only_allowed_replicas_match() -> None:
    index = PrefixIndex(max_entries=1000, max_mib=1)
    index.record(chain("s", 4), "r0")
    index.record(chain("s", 2), "r1")
    depth, mask = index.longest_match(chain("s", 4), index.mask(["r1"]))
    assert depth == 2
    assert index.holders(mask, ["r0", "r1"]) == ["r1"]


def test_eviction_drops_the_ends_of_prefixes_first() -> None:
    index = PrefixIndex(max_entries=6, max_mib=1)
    index.record(chain("a", 4), "r0")
    index.record(chain("b", 4), "r0")
    assert len(index) == 6
    everyone = index.mask(["r0"])
    assert index.longest_match(chain("b", 4), everyone)[0] == 4
    assert index.longest_match(chain("a", 4), everyone)[0] == 2


def test_forget_removes_a_replica_everywhere_and_frees_its_bit() -> None:
    index = PrefixIndex(max_entries=1000, max_mib=1)
    index.record(chain("s", 3), "r0")
    index.record(chain("s", 3), "r1")
    index.record(chain("only-r1", 3), "r1")
    index.forget("r1")
    assert len(index) == 3
    assert index.mask(["r1"]) == 0
    index.record(chain("new", 2), "r2")
    depth, mask = index.longest_match(chain("s", 3), index.mask(["r0", "r2"]))
    assert (depth, index.holders(mask, ["r0", "r2"])) == (3, ["r0"])


def test_memory_stays_within_the_configured_bound() -> None:
    budget_mib = 2
    tracemalloc.start()
    try:
        index = PrefixIndex(max_entries=10**9, max_mib=budget_mib)
        for conversation in range(3000):
            for turn in range(1, 6):
                index.record(chain(f"c{conversation}", 8 * turn), f"r{conversation % 8}")
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(index) == index.capacity
    assert used <= budget_mib * (1 << 20)
