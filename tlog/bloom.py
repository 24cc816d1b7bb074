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

__all__ = ["Bloom"]


class Bloom:
    """A fixed-size Bloom filter of 32-byte hashes. Not thread-safe for writers: one
    thread adds, any thread may query."""

    def __init__(self, bits_log2: int = 28) -> None:
        self._mask = (1 << bits_log2) - 1
        self._bits = bytearray(1 << (bits_log2 - 3))

    def add(self, digest: bytes) -> None:
        """Add a 32-byte hash."""
        bits, mask = self._bits, self._mask
        v = int.from_bytes(digest, "little")
        for shift in (0, 64, 128, 192):
            p = (v >> shift) & mask
            bits[p >> 3] |= 1 << (p & 7)

    def merge(self, other: Bloom) -> None:
        """Add every hash of another filter of the same size (bitwise OR)."""
        if len(other._bits) != len(self._bits):
            raise AssertionError("bad math: merging Bloom filters of different sizes")
        merged = int.from_bytes(self._bits, "little") | int.from_bytes(other._bits, "little")
        self._bits[:] = merged.to_bytes(len(self._bits), "little")

    def add_many(self, digests: list[bytes]) -> None:
        """Add many 32-byte hashes."""
        for digest in digests:
            self.add(digest)

    def __contains__(self, digest: bytes) -> bool:
        """Return False if the hash was certainly never added, True if it may have been."""
        bits, mask = self._bits, self._mask
        v = int.from_bytes(digest, "little")
        for shift in (0, 64, 128, 192):
            p = (v >> shift) & mask
            if not bits[p >> 3] & (1 << (p & 7)):
                return False
        return True
