"""Which replica recently served which prompt prefix: a bounded, approximate map from block hash to replicas.

One LRU-ordered entry per block hash (see `prefix_blocks`), holding a bitmask of the replicas that were sent a
prompt with that prefix. Recording a prompt touches its blocks from the last to the first, so a block is always at
least as recent as any block after it: eviction takes the ends of prefixes first, the index stays prefix-closed
(if block i is present, so are blocks 0..i-1, and their masks include block i's), and the longest match is found
by bisection, in a handful of lookups whatever the prompt's length.

Approximate by design: it predicts the engines' caches from our own routing, never asks them; an engine that
evicted a prefix still shows here until our LRU drops it, and another gateway's traffic is unseen.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

MIB = 1 << 20
ENTRY_BYTES = 400
"""Peak bytes one entry costs in CPython 3.12 (an int key, a small-int mask, the OrderedDict's slot and link),
measured at ~120-350 with insert/touch/evict churn; used to turn the MiB bound into an entry count."""


class PrefixIndex:
    def __init__(self, max_entries: int, max_mib: float) -> None:
        self.capacity = max(1, min(max_entries, int(max_mib * MIB) // ENTRY_BYTES))
        self._entries: OrderedDict[int, int] = OrderedDict()
        self._bits: dict[str, int] = {}
        """Replica id -> its bit in the masks."""

    def __len__(self) -> int:
        return len(self._entries)

    def mask(self, replica_ids: Iterable[str]) -> int:
        """The bits of those replicas the index has seen (others can match nothing)."""
        bits = self._bits
        mask = 0
        for replica_id in replica_ids:
            mask |= bits.get(replica_id, 0)
        return mask

    def holders(self, mask: int, replica_ids: Iterable[str]) -> list[str]:
        """Which of `replica_ids` are in `mask`."""
        bits = self._bits
        return [replica_id for replica_id in replica_ids if bits.get(replica_id, 0) & mask]

    def longest_match(self, blocks: Sequence[int], allowed: int) -> tuple[int, int]:
        """(number of leading blocks matched, mask of the `allowed` replicas holding all of them); (0, 0) when
        none of the allowed replicas holds even the first block."""
        entries = self._entries
        low, high, found = 0, len(blocks), 0
        while low < high:
            middle = (low + high) // 2
            held = entries.get(blocks[middle], 0) & allowed
            if held:
                low, found = middle + 1, held
            else:
                high = middle
        return low, found

    def record(self, blocks: Sequence[int], replica_id: str) -> None:
        """The replica was sent a prompt with these blocks: it now holds them (most recently used)."""
        bit = self._bits.get(replica_id) or self._new_bit(replica_id)
        entries = self._entries
        for block in reversed(blocks):
            entries[block] = entries.pop(block, 0) | bit
        while len(entries) > self.capacity:
            entries.popitem(last=False)

    def forget(self, replica_id: str) -> None:
        """Drop a replica from every entry (it left, or restarted with an empty cache). Walks the whole index
        once, which is why it is for failures and departures only."""
        bit = self._bits.pop(replica_id, 0)
        if not bit:
            return
        keep = ~bit
        entries = self._entries
        for block, mask in list(entries.items()):
            if mask & bit:
                if mask & keep:
                    entries[block] = mask & keep
                else:
                    del entries[block]

    def _new_bit(self, replica_id: str) -> int:
        taken = 0
        for bit in self._bits.values():
            taken |= bit
        bit = (taken + 1) & ~taken
        self._bits[replica_id] = bit
        return bit
