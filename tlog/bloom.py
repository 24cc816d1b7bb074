"""A Bloom filter over leaf hashes, for deduplication without touching the disk.

A raw log refuses to append a leaf it already holds (it answers with the earlier
index). Looking every new leaf up in the on-disk hash index would cost a random B-tree
read per leaf, and that grows with the tree. Instead the writer asks this filter
first: "no" is certain, and only a "maybe" (about 0.04% of new leaves at 10^7 entries
with the default 2^28 bits, 32 MiB, and 4 probes) costs an exact lookup.

Leaf hashes are SHA-256 outputs, so the low bits of four disjoint 8-byte words of the
hash are four independent uniform probes; no further hashing is needed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

__all__ = ["Bloom"]


class Bloom:
    """A fixed-size Bloom filter of 32-byte hashes. Any number of threads may add and
    query: adds hold a lock, since setting a bit is a read-modify-write of its byte that
    another thread's add could otherwise undo; queries need none, since bits are only
    ever set, never cleared."""

    def __init__(self, bits_log2: int = 28) -> None:
        self._mask = (1 << bits_log2) - 1
        self._bits = bytearray(1 << (bits_log2 - 3))
        self._lock = threading.Lock()

    def add(self, digest: bytes) -> None:
        """Add a 32-byte hash."""
        self.add_many((digest,))

    def add_many(self, digests: Iterable[bytes]) -> None:
        """Add many 32-byte hashes, under the lock once for all of them."""
        bits, mask = self._bits, self._mask
        with self._lock:
            for digest in digests:
                v = int.from_bytes(digest, "little")
                for shift in (0, 64, 128, 192):
                    p = (v >> shift) & mask
                    bits[p >> 3] |= 1 << (p & 7)

    def __contains__(self, digest: bytes) -> bool:
        """Return False if the hash was certainly never added, True if it may have been."""
        bits, mask = self._bits, self._mask
        v = int.from_bytes(digest, "little")
        for shift in (0, 64, 128, 192):
            p = (v >> shift) & mask
            if not bits[p >> 3] & (1 << (p & 7)):
                return False
        return True
