"""A Bloom filter over leaf hashes, for deduplication without touching the disk.

A raw log refuses to append a leaf it already holds (it answers with the earlier
index). Looking every new leaf up in the on-disk hash index would cost a random B-tree
read per leaf, and that grows with the tree. Instead the writer asks this filter
first: "no" is certain, and only a "maybe" costs an exact lookup.

It is a blocked Bloom filter (Putze, Sanders and Singler, "Cache-, Hash- and
Space-Efficient Bloom Filters", 2007): a hash sets 4 bits in one 64-bit word rather than
4 bits anywhere, so adding or testing it touches one word (one cache miss, a few
interpreter steps) instead of four. The price is a higher false-positive rate at the
same size: with the default 2^28 bits (32 MiB), about 0.14% of new leaves at 10^7
entries (measured; a classic filter with 4 probes: 0.04%), each costing one exact
lookup. It was 4 separate probes until 2026-11-29, when the filter was a third of the
writer's time per entry (docs/benchmarks.md).

Leaf hashes are SHA-256 outputs, so their bytes are uniform and independent: bytes 0-7
choose the word, bytes 8-11 the four bits in it; no further hashing is needed.

The words live in an anonymous memory map the kernel is asked to back with transparent
huge pages (``MADV_HUGEPAGE``; where it declines, or the platform has no such advice,
ordinary pages serve). With 4 KiB pages each probe of the 32 MiB filter also misses the
TLB, and in a virtual machine that page walk is two-dimensional: on the reference
machine a probe cost 800-920 ns with 4 KiB pages, 485-525 ns with huge pages and
335-375 ns on a filter that fits in cache (docs/benchmarks.md). The map is also zeroed
by the kernel on first touch, not written by us up front.

A batch is probed or added with NumPy, one vectorised pass over all of its hashes
(:meth:`Bloom.maybe_many`, :meth:`Bloom.add_many`): 56 µs per 1,000 hashes on the
reference machine against about 300 µs one at a time in the interpreter, and the
gathers of a batch can overlap their cache misses, which one-at-a-time probes cannot
(docs/benchmarks.md, 2026-11-29).
"""

from __future__ import annotations

import mmap
import struct
import threading
from collections.abc import Sequence

import numpy as np

__all__ = ["Bloom", "GenerationFilters"]

_PROBE = struct.Struct("<Q4B").unpack_from
"""A 32-byte hash -> (word selector, four bit selectors)."""

_BIT = tuple(1 << (i & 63) for i in range(256))
"""A bit selector byte -> its bit in a 64-bit word."""

_VECTOR_MIN = 32
"""Batches smaller than this are probed and added one hash at a time: a NumPy pass
costs 8-11 µs whatever its size, one hash in the interpreter about 0.35 µs."""


class Bloom:
    """A fixed-size blocked Bloom filter of 32-byte hashes. Any number of threads may
    add and query: adds hold a lock, since setting bits is a read-modify-write of their
    word that another thread's add could otherwise undo; queries need none, since bits
    are only ever set, never cleared.

    ``bits_log2`` (at least 6) sets the size: 2^bits_log2 bits. Raises ValueError below 6.
    """

    def __init__(self, bits_log2: int = 28) -> None:
        if bits_log2 < 6:
            raise ValueError("a blocked Bloom filter needs at least one 64-bit word")
        words = 1 << (bits_log2 - 6)
        self._mask = words - 1
        self._np_mask = np.uint64(words - 1)
        self._words = _zeroed_words(words)
        # The same words as a NumPy array, for the batch operations.
        self._array = np.frombuffer(self._words, dtype=np.uint64)
        self._lock = threading.Lock()

    def add(self, digest: bytes) -> None:
        """Add a 32-byte hash."""
        self.add_many((digest,))

    def add_many(self, digests: Sequence[bytes]) -> None:
        """Add many 32-byte hashes in one vectorised pass, under the lock once."""
        if len(digests) < _VECTOR_MIN:
            _check_sizes(digests)
            words, mask, probe, bit = self._words, self._mask, _PROBE, _BIT
            with self._lock:
                for digest in digests:
                    w, a, b, c, d = probe(digest)
                    words[w & mask] |= bit[a] | bit[b] | bit[c] | bit[d]
            return
        selected, bits = self._probe_many(digests)
        # NumPy may release the GIL while it updates the words, so two threads' adds
        # could interleave their read-modify-writes of one word without the lock.
        with self._lock:
            self._set_bits(selected, bits)

    def _set_bits(self, selected: np.ndarray, bits: np.ndarray) -> None:
        """OR bits[i] into word selected[i], for every i (the caller holds the lock)."""
        # ufunc.at, not words[selected] |= bits: two hashes of one batch may select the
        # same word, and a buffered fancy-index update would keep only one of them.
        np.bitwise_or.at(self._array, selected, bits)

    def maybe_many(self, digests: Sequence[bytes]) -> list[int]:
        """Return the positions in digests of the hashes that may have been added (every
        one that was is among them), ascending."""
        if len(digests) < _VECTOR_MIN:
            _check_sizes(digests)
            return [pos for pos, digest in enumerate(digests) if digest in self]
        selected, bits = self._probe_many(digests)
        return np.flatnonzero((self._array[selected] & bits) == bits).tolist()

    def __contains__(self, digest: bytes) -> bool:
        """Return False if the hash was certainly never added, True if it may have been."""
        w, a, b, c, d = _PROBE(digest)
        bits: int = _BIT[a] | _BIT[b] | _BIT[c] | _BIT[d]
        word: int = self._words[w & self._mask]
        return word & bits == bits

    def _probe_many(self, digests: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Return (word index, four-bit mask) of each hash, as __contains__ computes them
        one at a time: bytes 0-7 little-endian select the word, bytes 8-11 mod 64 the bits.
        Raises ValueError if a digest is not 32 bytes."""
        raw = b"".join(digests)
        if len(raw) != 32 * len(digests) or min(map(len, digests)) != 32:
            # Not 32 bytes each (when the total is, one is shorter); or a buffer whose
            # len() counts items of more than one byte.
            raise ValueError("every digest must be 32 bytes")
        table = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 32)
        selected = np.ascontiguousarray(table[:, :8]).view("<u8").ravel() & self._np_mask
        shifts = (table[:, 8:12] & 63).astype(np.uint64)
        bits = np.bitwise_or.reduce(np.left_shift(np.uint64(1), shifts), axis=1)
        return selected, bits


class GenerationFilters:
    """One small Bloom filter per generation of the leaf-hash index (``tlog.storage``:
    generation g holds leaves ``[g << generation_bits, (g + 1) << generation_bits)``).

    A lookup of a hash the log does not hold (a false positive of the log's main filter)
    would otherwise seek every generation; these say which generations may hold it, as
    the per-run filters of a log-structured merge tree do. Each is 2^``bits_log2`` bits
    (default 2^21, 256 KiB: about 8 bits per leaf of a full 2^18-leaf generation, a few
    per cent false positives). Thread-safe like :class:`Bloom`; generations are created
    as leaves reach them. The price grows with the log: 256 KiB and one probe per
    generation (39 at 10^7 leaves: 10 MiB; about 1 GiB at 10^9).
    """

    def __init__(self, generation_bits: int, bits_log2: int = 21) -> None:
        self._shift = generation_bits
        self._bits_log2 = bits_log2
        self._filters: list[Bloom] = []
        self._lock = threading.Lock()

    def add_many(self, first_index: int, digests: Sequence[bytes]) -> None:
        """Add the hashes of the consecutive leaves first_index, first_index + 1, ..."""
        pos = 0
        while pos < len(digests):
            index = first_index + pos
            gen = index >> self._shift
            take = min(len(digests) - pos, ((gen + 1) << self._shift) - index)
            self._filter(gen).add_many(digests[pos : pos + take])
            pos += take

    def _filter(self, gen: int) -> Bloom:
        with self._lock:
            while len(self._filters) <= gen:
                self._filters.append(Bloom(self._bits_log2))
            return self._filters[gen]

    def candidates(self, digest: bytes) -> list[int]:
        """Return, in ascending order, the generations that may hold the hash (every
        generation that does is among them)."""
        return [gen for gen, bloom in enumerate(list(self._filters)) if digest in bloom]


def _check_sizes(digests: Sequence[bytes]) -> None:
    """Raise ValueError unless every digest is 32 bytes."""
    for digest in digests:
        size = memoryview(digest).nbytes
        if size != 32:
            raise ValueError(f"a digest must be 32 bytes, not {size}")


def _zeroed_words(count: int) -> memoryview:
    """Return ``count`` zeroed 64-bit words in an anonymous private map, advised to use
    transparent huge pages where the platform knows the advice (Linux ``madvise(2)``;
    its answer is not checked: advice that is refused leaves ordinary pages)."""
    area = mmap.mmap(-1, count * 8, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        try:
            area.madvise(advice)
        except OSError:
            pass  # e.g. a kernel built without THP: ordinary pages it is
    return memoryview(area).cast("Q")
