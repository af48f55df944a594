import tracemalloc

from serving.pool.prefix_index import MASK_BITS, PrefixIndex


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


def test_a_forgotten_replica_matches_nothing_and_its_prefixes_pass_to_no_newcomer() -> None:
    index = PrefixIndex(max_entries=1000, max_mib=1)
    index.record(chain("s", 3), "r0")
    index.record(chain("s", 3), "r1")
    index.record(chain("only-r1", 3), "r1")
    index.forget("r1")
    assert index.mask(["r1"]) == 0
    index.record(chain("new", 2), "r2")
    everyone = index.mask(["r0", "r1", "r2"])
    assert index.longest_match(chain("only-r1", 3), everyone) == (0, 0)
    depth, mask = index.longest_match(chain("s", 3), everyone)
    assert (depth, index.holders(mask, ["r0", "r1", "r2"])) == (3, ["r0"])


def test_when_fresh_bits_run_out_the_departed_are_swept_out_and_their_bits_reused() -> None:
    index = PrefixIndex(max_entries=10_000, max_mib=1)
    index.record(chain("kept", 2), "stays")
    for departed in range(MASK_BITS - 1):
        index.record(chain(f"d{departed}", 2), f"d{departed}")
        index.forget(f"d{departed}")
    assert len(index) == 2 * MASK_BITS
    index.record(chain("late", 2), "late")
    assert len(index) == 4
    assert index.mask(["late"]) < 1 << 2
    assert index.longest_match(chain("d1", 2), index.mask(["late", "stays"])) == (0, 0)
    assert index.longest_match(chain("kept", 2), index.mask(["late", "stays"]))[0] == 2


def test_memory_stays_within_the_configured_bound() -> None:
    budget_mib = 2
    tracemalloc.start()
    try:
        index = PrefixIndex(max_entries=10**9, max_mib=budget_mib)
        for conversation in range(3000):
            for turn in range(1, 6):
                index.record(chain(f"c{conversation}", 8 * turn), f"r{conversation % 8}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(index) == index.capacity
    assert peak <= budget_mib * (1 << 20)
