"""Hash-index arithmetic and proof planning for RFC 6962 trees stored as tiles.

No I/O happens here. A tree is stored as *tile records*: one record per C2SP
tlog-tiles tile (height 8), holding not only the tile's 256 hashes (row 0, the
bytes served at ``tile/<L>/<N>``) but also the seven rows of interior nodes above
them inside the tile (rows 1..7: 128, 64, ..., 2 hashes). With those rows any
complete subtree hash is one slice of one record, so an inclusion proof in a tree
of 10^7 leaves reads four records and hashes nothing but the ragged right edge.

Addressing: node ``(level, index)`` is the root of the complete subtree over
leaves ``[index * 2**level, (index + 1) * 2**level)``. It lives in tile level
``L = level // 8``, row ``r = level % 8``, tile ``N = index >> (8 - r)``, at
position ``index & (256 >> r) - 1`` of row ``r``.

>>> locate(0, 1000)          # leaf 1000: tile 0/3, row 0, position 232
(0, 3, 7424)
>>> inclusion_ranges(2, 5)   # RFC 6962 PATH(2, D[5]) needs these subtree roots
[(3, 4), (0, 2), (4, 5)]

Proofs are planned as lists of leaf ranges whose RFC 6962 MTH is needed
(:func:`inclusion_ranges`, :func:`consistency_ranges`); each range decomposes
into complete subtrees (:func:`range_nodes`), which a :class:`HashReader` fetches
in one batch; :func:`fold_range` combines them. The model is Go's
``sumdb/tlog`` (plan with indexes, then read, then hash), written anew for tiles
with interior rows.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol, TypeVar

from verifier.hashing import EMPTY_ROOT, HASH_SIZE

__all__ = [
    "RECORD_SIZE",
    "ROW_OFFSETS",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "HashReader",
    "Node",
    "ProofBuilder",
    "TileRecords",
    "append_hashes",
    "consistency_ranges",
    "fold_range",
    "inclusion_ranges",
    "locate",
    "range_nodes",
    "split_point",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT

ROW_OFFSETS: tuple[int, ...] = tuple(
    HASH_SIZE * (2 * TILE_WIDTH - (2 * TILE_WIDTH >> r)) for r in range(TILE_HEIGHT + 1)
)
"""Byte offset of row r (0..7) in a tile record; ROW_OFFSETS[8] is the record size."""

RECORD_SIZE = ROW_OFFSETS[TILE_HEIGHT]
"""Bytes in one tile record: 510 hashes (rows of 256, 128, ..., 2)."""

Node = tuple[int, int]
"""A complete subtree as ``(level, index)``."""

_NODE = b"\x01"
T = TypeVar("T")
_sha256 = hashlib.sha256


class HashReader(Protocol):
    """Something that returns stored hashes of complete subtrees."""

    def read_hashes(self, nodes: Sequence[Node]) -> list[bytes]:
        """Return the hash of each node, in order. Requires every node to be complete
        in the stored tree; raises tlog.errors.NotFound if storage lacks one."""
        ...


def locate(level: int, index: int) -> tuple[int, int, int]:
    """Return ``(tile_level, tile_index, byte_offset)`` of node (level, index) in its tile record.

    Requires level >= 0 and index >= 0.
    """
    tile_level, row = divmod(level, TILE_HEIGHT)
    shift = TILE_HEIGHT - row
    return (
        tile_level,
        index >> shift,
        ROW_OFFSETS[row] + (index & ((1 << shift) - 1)) * HASH_SIZE,
    )


def split_point(n: int) -> int:
    """Return k, the largest power of two strictly less than n (RFC 6962 §2.1). Requires n > 1."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(lo: int, hi: int) -> list[Node]:
    """Return the complete subtrees covering leaves [lo, hi), left to right, largest first.

    Requires 0 <= lo < hi and that [lo, hi) is a range RFC 6962 takes an MTH of
    (lo a multiple of the first power of two >= hi - lo); every range produced by
    :func:`inclusion_ranges` and :func:`consistency_ranges` is one.
    """
    nodes: list[Node] = []
    while lo < hi:
        # The largest aligned complete subtree starting at lo that fits in [lo, hi).
        level = min((lo & -lo).bit_length() - 1 if lo else 64, (hi - lo).bit_length() - 1)
        nodes.append((level, lo >> level))
        lo += 1 << level
    return nodes


def fold_range(hashes: Sequence[bytes]) -> bytes:
    """Return the RFC 6962 MTH of a range from the hashes of its :func:`range_nodes`.

    The subtrees shrink left to right, so RFC 6962's split at the largest power of
    two nests to the right: MTH = H(h0, H(h1, H(h2, ...))).
    """
    if not hashes:
        raise AssertionError("bad math: fold of an empty range")
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = _sha256(_NODE + h + acc).digest()
    return acc


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Return the leaf ranges whose MTHs form RFC 6962 PATH(index, D[size]), sibling first.

    RFC 6962 §2.1.1, unrolled: walk down from [0, size) to the leaf, recording the
    sibling range at each split. Requires 0 <= index < size.
    """
    if not 0 <= index < size:
        raise AssertionError(f"bad math: inclusion plan for index {index} in size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + split_point(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return ranges


class _Walk(NamedTuple):
    """The subtrees entered by one RFC 6962 §2.1.1 walk for many leaves, parents first."""

    parents: list[int]
    """The slot of each entered subtree's parent (-1: the root)."""
    siblings: list[tuple[int, int]]
    """The leaf range of each entered subtree's sibling: its path's first hash."""
    leaf_slot: dict[int, int]
    """The slot of each wanted leaf (-1 when the tree is that one leaf)."""


def _walk(indexes: Sequence[int], size: int) -> _Walk:
    """Walk down from the root of D[size] into every subtree holding one of the sorted
    distinct indexes. Requires 0 <= index < size for each."""
    if indexes and not 0 <= indexes[0] <= indexes[-1] < size:
        raise AssertionError(f"bad math: inclusion paths for {indexes[0]}..{indexes[-1]} in {size}")
    walk = _Walk([], [], {})
    parents, siblings = walk.parents, walk.siblings
    # (lo, hi, first, last, slot): the subtree [lo, hi) holds indexes[first:last].
    stack = [(0, size, 0, len(indexes), -1)] if indexes else []
    while stack:
        lo, hi, first, last, slot = stack.pop()
        if hi - lo == 1:
            walk.leaf_slot[lo] = slot
            continue
        mid = lo + split_point(hi - lo)
        cut = bisect_left(indexes, mid, first, last)
        if cut > first:
            parents.append(slot)
            siblings.append((mid, hi))
            stack.append((lo, mid, first, cut, len(siblings) - 1))
        if cut < last:
            parents.append(slot)
            siblings.append((lo, mid))
            stack.append((mid, hi, cut, last, len(siblings) - 1))
    return walk


def _paths(walk: _Walk, first_step: Sequence[T]) -> dict[int, list[T]]:
    """Return each wanted leaf's path: ``first_step[slot]`` of each subtree from the leaf
    up. A subtree's path is its own step followed by its parent's path, so building one
    is one list copy, not one Python step per level."""
    paths: list[list[T]] = []
    for parent, step in zip(walk.parents, first_step, strict=True):
        paths.append([step, *paths[parent]] if parent >= 0 else [step])
    return {leaf: (paths[slot] if slot >= 0 else []) for leaf, slot in walk.leaf_slot.items()}


def inclusion_plans(indexes: Sequence[int], size: int) -> dict[int, list[tuple[int, int]]]:
    """Return {index: inclusion_ranges(index, size)} for sorted distinct indexes.

    The same RFC 6962 §2.1.1 walk as inclusion_ranges, done once for all indexes: a
    subtree is entered only if it holds one of them, so the work is about the number
    of proof hashes returned, not indexes times depth.
    """
    walk = _walk(indexes, size)
    return _paths(walk, walk.siblings)


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """Return the leaf ranges whose MTHs form RFC 6962 PROOF(old, D[new]).

    RFC 6962 §2.1.2 SUBPROOF, unrolled. Empty when old == 0 or old == new.
    Requires 0 <= old <= new.
    """
    if not 0 <= old <= new:
        raise AssertionError(f"bad math: consistency plan for {old} -> {new}")
    if old in (0, new):
        return []
    ranges: list[tuple[int, int]] = []
    lo, hi, m, whole = 0, new, old, True
    while m != hi - lo:
        k = split_point(hi - lo)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            m -= k
            whole = False
    if not whole:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


class ProofBuilder:
    """Computes roots and proofs over a :class:`HashReader`, memoising range hashes.

    One builder serves many proofs against one consistent view of a tree (e.g. all
    receipts of one batch), so the ragged right-edge ranges they share are hashed once.
    """

    def __init__(self, reader: HashReader, memo: dict[tuple[int, int], bytes] | None = None):
        """``memo`` may be shared between builders of one log: the MTH of a leaf range
        never changes once the range is in the tree, so it stays valid across sizes."""
        self._reader = reader
        self._memo: dict[tuple[int, int], bytes] = {} if memo is None else memo

    def range_hashes(self, ranges: Iterable[tuple[int, int]]) -> list[bytes]:
        """Return the MTH of each leaf range, reading all missing subtrees in one batch.

        A range of 2**k leaves is one stored node (every range in a proof plan is
        aligned); only ragged ranges at the right edge are folded, and memoised.
        """
        ranges = list(ranges)
        memo = self._memo
        out: list[bytes | None] = []
        nodes: list[Node] = []
        slots: list[int] = []
        ragged: dict[tuple[int, int], list[int]] = {}
        for lo, hi in ranges:
            n = hi - lo
            if n & (n - 1) == 0:
                level = n.bit_length() - 1
                slots.append(len(out))
                nodes.append((level, lo >> level))
                out.append(None)
            else:
                found = memo.get((lo, hi))
                if found is None:
                    ragged.setdefault((lo, hi), []).append(len(out))
                out.append(found)
        plans = [range_nodes(lo, hi) for lo, hi in ragged]
        wanted = [*nodes, *(node for plan in plans for node in plan)]
        hashes = self._reader.read_hashes(wanted) if wanted else []
        for slot, h in zip(slots, hashes, strict=False):
            out[slot] = h
        pos = len(nodes)
        for (rng, places), plan in zip(ragged.items(), plans, strict=True):
            folded = fold_range(hashes[pos : pos + len(plan)])
            pos += len(plan)
            self._remember(rng, folded)
            for slot in places:
                out[slot] = folded
        if any(h is None for h in out):
            raise AssertionError("bad math: a range hash was not computed")
        return [h for h in out if h is not None]

    def _remember(self, rng: tuple[int, int], folded: bytes) -> None:
        """Memoise the MTH of a ragged range, emptying the memo once it holds 65,536
        (about 6 MiB), so that a long-lived log's memo stays bounded."""
        if len(self._memo) >= 65536:
            self._memo.clear()
        self._memo[rng] = folded

    def root(self, size: int) -> bytes:
        """Return MTH(D[size]) (RFC 6962 §2.1); the empty-tree hash for size 0."""
        if size == 0:
            return EMPTY_ROOT
        return self.range_hashes([(0, size)])[0]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Return PATH(index, D[size]) (RFC 6962 §2.1.1). Requires 0 <= index < size.

        The path bottom-up, by bit arithmetic rather than the walk of inclusion_ranges:
        at each level below the root, the sibling of the subtree holding the leaf is
        node ``(level, (index >> level) ^ 1)``, dropped when it starts at or beyond
        size. Every sibling is a complete stored node except at most one, the one
        right of the leaf that holds the tree's last leaf (above it the leaf's subtree
        reaches the end, so every later sibling is left of it and complete); that one
        is a ragged range, folded and memoised like any other.
        """
        if not 0 <= index < size:
            raise AssertionError(f"bad math: inclusion proof of index {index} in size {size}")
        nodes: list[Node] = []
        ragged_at = -1
        ragged_lo = 0
        level = 0
        while (1 << level) < size:
            sibling = (index >> level) ^ 1
            lo = sibling << level
            if lo < size:
                if lo + (1 << level) <= size:
                    nodes.append((level, sibling))
                else:
                    ragged_at, ragged_lo = len(nodes), lo
            level += 1
        if ragged_at < 0:
            return self._reader.read_hashes(nodes) if nodes else []
        # The ragged sibling: memoised, or its subtrees read in the same batch.
        folded = self._memo.get((ragged_lo, size))
        plan = [] if folded is not None else range_nodes(ragged_lo, size)
        proof = self._reader.read_hashes(nodes + plan)
        if folded is None:
            folded = fold_range(proof[len(nodes) :])
            del proof[len(nodes) :]
            self._remember((ragged_lo, size), folded)
        proof.insert(ragged_at, folded)
        return proof

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """Return PROOF(old, D[new]) (RFC 6962 §2.1.2). Requires 0 <= old <= new."""
        return self.range_hashes(consistency_ranges(old, new))

    def inclusion_proofs(self, indexes: Iterable[int], size: int) -> dict[int, list[bytes]]:
        """Return {index: PATH(index, D[size])} (RFC 6962 §2.1.1) for many indexes at once.

        One walk down the tree serves them all (the walk of inclusion_plans): a subtree
        is entered only if it holds one of the indexes, and every distinct sibling range
        is read or folded once. Each entered subtree's path is its sibling's hash followed
        by its parent's path, so a path is one list copy of its parent's, not one Python
        step per hash (a batch of receipts for neighbouring leaves shares most of them).
        Requires 0 <= index < size for each index.
        """
        walk = _walk(sorted(set(indexes)), size)
        distinct = list(dict.fromkeys(walk.siblings))
        hashes = dict(zip(distinct, self.range_hashes(distinct), strict=True))
        return _paths(walk, [hashes[r] for r in walk.siblings])


class TileRecords(Protocol):
    """Tile records being written: returns the mutable record of tile (level, index),
    loading it from storage or creating it zero-filled."""

    def __call__(self, tile_level: int, tile_index: int) -> bytearray: ...


def append_hashes(records: TileRecords, size: int, leaf_hashes: Sequence[bytes]) -> int:
    """Store leaf hashes at indexes size, size+1, ... and every interior node they complete.

    Returns the new tree size. Writes row 0 of level-0 tile records, then, level by
    level, every parent whose right child is new: the new parents at level l+1 are
    exactly ``[lo >> 1, hi >> 1)`` when the new nodes at level l are ``[lo, hi)``.
    Two children always sit side by side in one row of one record, so a parent is one
    SHA-256 over one 64-byte slice (RFC 6962 §2.1 node hash).
    """
    lo, hi = size, size + len(leaf_hashes)
    # Level 0: the leaf hashes themselves, one contiguous copy per tile record.
    pos = 0
    index = lo
    while index < hi:
        tile_index, offset = divmod(index, TILE_WIDTH)
        count = min(TILE_WIDTH - offset, hi - index)
        records(0, tile_index)[offset * HASH_SIZE : (offset + count) * HASH_SIZE] = b"".join(
            leaf_hashes[pos : pos + count]
        )
        pos += count
        index += count
    level = 0
    while hi - lo > 0 and (hi >> 1) > (lo >> 1):
        lo, hi = lo >> 1, hi >> 1
        level += 1
        child_level = level - 1
        child_tile_level, child_row = divmod(child_level, TILE_HEIGHT)
        child_shift = TILE_HEIGHT - child_row
        child_base = ROW_OFFSETS[child_row]
        child_mask = (1 << child_shift) - 1
        parent_tile_level, parent_row = divmod(level, TILE_HEIGHT)
        parent_shift = TILE_HEIGHT - parent_row
        parent_base = ROW_OFFSETS[parent_row]
        parent_mask = (1 << parent_shift) - 1
        # Parents j in [lo, hi) come in runs that share one child record and one parent
        # record: a run ends where either record does (every 2^run_bits parents). Each
        # run is one slice of children in, one slice of parents out.
        run_bits = min(child_shift - 1, parent_shift)
        j = lo
        while j < hi:
            end = min(hi, ((j >> run_bits) + 1) << run_bits)
            src = records(child_tile_level, (j << 1) >> child_shift)
            start = child_base + ((j << 1) & child_mask) * HASH_SIZE
            children = src[start : start + (end - j) * 2 * HASH_SIZE]
            parents = b"".join(
                [
                    _sha256(_NODE + children[k : k + 2 * HASH_SIZE]).digest()
                    for k in range(0, len(children), 2 * HASH_SIZE)
                ]
            )
            dst = records(parent_tile_level, j >> parent_shift)
            start = parent_base + (j & parent_mask) * HASH_SIZE
            dst[start : start + len(parents)] = parents
            j = end
    return size + len(leaf_hashes)
