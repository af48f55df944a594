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
ENTRY_BYTES = 256
"""Bytes one entry costs at most in CPython (an int key, an int mask, the OrderedDict's slot and link): measured
~155 held and ~220 at the peak of a table resize under insert/touch/evict churn with 64-bit masks. Turns the MiB
bound into an entry count."""
MASK_BITS = 64
"""Replica bits in use or retired before a sweep frees the retired ones: keeps masks machine-word sized."""


class PrefixIndex:
    def __init__(self, max_entries: int, max_mib: float) -> None:
        self.capacity = max(1, min(max_entries, int(max_mib * MIB) // ENTRY_BYTES))
        self._entries: OrderedDict[int, int] = OrderedDict()
        self._bits: dict[str, int] = {}
        """Replica id -> its bit in the masks."""
        self._retired = 0
        """Bits of forgotten replicas, not handed out again until swept from the entries."""

    def __len__(self) -> int:
        return len(self._entries)

    def bits(self, replica_ids: Iterable[str]) -> list[int]:
        """Each replica's bit in the masks; 0 for one the index has not seen (it can match nothing)."""
        bits = self._bits
        return [bits.get(replica_id, 0) for replica_id in replica_ids]

    def mask(self, replica_ids: Iterable[str]) -> int:
        """The bits of those replicas, together."""
        mask = 0
        for bit in self.bits(replica_ids):
            mask |= bit
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
        """The replica was sent a prompt with these blocks: it now holds them (most recently used). Bits of
        forgotten replicas are cleared from the entries it touches on the way."""
        bit = self._bits.get(replica_id) or self._new_bit(replica_id)
        retired = self._retired
        entries = self._entries
        touch = entries.move_to_end
        for block in reversed(blocks):
            mask = entries.get(block)
            if mask is None:
                entries[block] = bit
                continue
            touch(block)
            if mask & bit == 0 or mask & retired:
                entries[block] = (mask & ~retired) | bit
        while len(entries) > self.capacity:
            entries.popitem(last=False)

    def forget(self, replica_id: str) -> None:
        """Drop a replica (it left, or restarted with an empty cache): it stops matching at once; its bit is
        retired, cleared lazily from the entries `record` touches, and swept from the rest only when fresh bits
        run out (once per `MASK_BITS` - replicas departures: a walk over the whole index)."""
        bit = self._bits.pop(replica_id, 0)
        self._retired |= bit

    def _new_bit(self, replica_id: str) -> int:
        taken = self.mask(self._bits) | self._retired
        if taken + 1 >= 1 << MASK_BITS:
            self.sweep()
            taken = self.mask(self._bits)
        bit = (taken + 1) & ~taken
        self._bits[replica_id] = bit
        return bit

    def sweep(self) -> None:
        """Clear the retired bits from every entry (entries left with no replica go), freeing them for reuse."""
        keep = ~self._retired
        entries = self._entries
        empty = []
        for block, mask in entries.items():
            if mask & keep != mask:
                entries[block] = mask & keep
                if not mask & keep:
                    empty.append(block)
        for block in empty:
            del entries[block]
        self._retired = 0
