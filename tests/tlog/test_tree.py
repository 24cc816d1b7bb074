"""Tests for tlog.tree: hash-index maths and proof planning, differential against the
naive RFC 6962 reference in ``tests/reference.py``.

The tree is built in memory with :func:`tlog.tree.append_hashes` (the same code the log
runs inside its LMDB transaction), in several random chunkings, and read back through a
:class:`HashReader` that refuses any node that is not a complete subtree of the tree.
Roots, inclusion proofs and consistency proofs from :class:`ProofBuilder` must equal the
reference's and verify with ``verifier.proof``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reference import (
    consistency_proof_of_hashes,
    inclusion_path_of_hashes,
    mth_of_hashes,
)
from tlog.errors import NotFound
from tlog.tree import (
    RECORD_SIZE,
    ROW_OFFSETS,
    TILE_HEIGHT,
    TILE_WIDTH,
    Node,
    ProofBuilder,
    append_hashes,
    consistency_ranges,
    fold_range,
    inclusion_plans,
    inclusion_ranges,
    locate,
    range_nodes,
    split_point,
)
from verifier.errors import VerificationError
from verifier.hashing import EMPTY_ROOT, HASH_SIZE
from verifier.proof import verify_consistency, verify_inclusion

# -- helpers ------------------------------------------------------------------------------


def leaf_hashes(n: int, salt: int = 0) -> list[bytes]:
    """Return n distinct 32-byte stand-ins for leaf hashes (cheap; the maths never looks)."""
    return [hashlib.sha256(f"{salt}/{i}".encode()).digest() for i in range(n)]


class MemTree:
    """An in-memory tree of tile records, written by append_hashes, read as a HashReader.

    ``read_hashes`` raises AssertionError for a node that is not complete in the tree
    (such a node's slot is zero or stale, so reading it would be a planning bug) and
    counts batched reads, so tests can see that each plan is read in one batch.
    """

    def __init__(self) -> None:
        self.records: dict[tuple[int, int], bytearray] = {}
        self.size = 0
        self.reads = 0

    def record(self, tile_level: int, tile_index: int) -> bytearray:
        rec = self.records.get((tile_level, tile_index))
        if rec is None:
            rec = self.records[(tile_level, tile_index)] = bytearray(RECORD_SIZE)
        return rec

    def append(self, hashes: Sequence[bytes]) -> None:
        self.size = append_hashes(self.record, self.size, hashes)

    def read_hashes(self, nodes: Sequence[Node]) -> list[bytes]:
        self.reads += 1
        out = []
        for level, index in nodes:
            if (index + 1) << level > self.size:
                raise AssertionError(f"read of incomplete node {(level, index)} at {self.size}")
            tile_level, tile_index, offset = locate(level, index)
            rec = self.records.get((tile_level, tile_index))
            if rec is None:
                raise NotFound(f"tile record {tile_level}/{tile_index} is missing")
            out.append(bytes(rec[offset : offset + HASH_SIZE]))
        return out


def build(hashes: Sequence[bytes], cuts: Sequence[int]) -> MemTree:
    """Return a MemTree holding ``hashes``, appended in chunks ending at each cut."""
    tree = MemTree()
    start = 0
    for cut in [*sorted(set(cuts)), len(hashes)]:
        if start < cut <= len(hashes):
            tree.append(hashes[start:cut])
            start = cut
    assert tree.size == len(hashes)
    return tree


def chunkings(rng: random.Random, n: int) -> list[list[int]]:
    """Return several ways to cut n leaves into batches: one, singles-ish, and random."""
    out: list[list[int]] = [[], [n // 2]]
    for _ in range(2):
        cuts = sorted(rng.sample(range(1, n), k=min(n - 1, rng.randint(1, 40)))) if n > 1 else []
        out.append(cuts)
    if n <= 600:
        out.append(list(range(1, n)))  # one leaf at a time
    return out


def complete_nodes(size: int) -> list[Node]:
    """Return every complete subtree (level, index) of a tree of ``size`` leaves."""
    nodes: list[Node] = []
    level = 0
    while (1 << level) <= size:
        nodes.extend((level, i) for i in range(size >> level))
        level += 1
    return nodes


# -- locate, split_point ------------------------------------------------------------------


def test_locate_examples() -> None:
    # Leaf 1000: tile 0/3, row 0, position 232 (the module's doctest).
    assert locate(0, 1000) == (0, 3, 232 * HASH_SIZE)
    # Level 7 (row 7, two hashes per record): node 5 is the right one of tile 0/2.
    assert locate(7, 5) == (0, 2, ROW_OFFSETS[7] + HASH_SIZE)
    # Level 8 starts tile level 1 at row 0: node 300 is position 44 of tile 1/1.
    assert locate(8, 300) == (1, 1, 44 * HASH_SIZE)
    assert locate(16, 0) == (2, 0, 0)
    assert ROW_OFFSETS[0] == 0
    assert RECORD_SIZE == 510 * HASH_SIZE


def test_locate_is_injective_and_stays_in_its_row() -> None:
    seen: dict[tuple[int, int, int], Node] = {}
    for level in range(3 * TILE_HEIGHT):
        row = level % TILE_HEIGHT
        row_width = TILE_WIDTH >> row
        for index in range(0, 3 * row_width + 5):
            tile_level, tile_index, offset = locate(level, index)
            assert tile_level == level // TILE_HEIGHT
            assert ROW_OFFSETS[row] <= offset < ROW_OFFSETS[row + 1]
            assert offset % HASH_SIZE == 0
            # The node's leaves lie inside the tile's leaves.
            tile_span = TILE_WIDTH ** (tile_level + 1)
            assert tile_index * tile_span <= index << level
            assert (index + 1) << level <= (tile_index + 1) * tile_span
            key = (tile_level, tile_index, offset)
            assert key not in seen, (seen.get(key), (level, index))
            seen[key] = (level, index)


@pytest.mark.parametrize(("n", "k"), [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (257, 256)])
def test_split_point(n: int, k: int) -> None:
    assert split_point(n) == k


# -- planning: range_nodes, fold_range, inclusion_ranges, consistency_ranges --------------


def planned_ranges(size: int) -> list[tuple[int, int]]:
    """Return every range any inclusion or consistency plan in a tree of size asks for."""
    out: set[tuple[int, int]] = {(0, size)}
    for index in range(size):
        out.update(inclusion_ranges(index, size))
    for old in range(size + 1):
        out.update(consistency_ranges(old, size))
    return sorted(out)


@pytest.mark.parametrize("size", [*range(1, 40), 63, 64, 65, 255, 256, 257, 300])
def test_range_nodes_tile_each_planned_range_with_aligned_subtrees(size: int) -> None:
    for lo, hi in planned_ranges(size):
        nodes = range_nodes(lo, hi)
        assert nodes, (lo, hi)
        pos = lo
        levels = []
        for level, index in nodes:
            assert index << level == pos, "nodes must be contiguous and aligned"
            pos += 1 << level
            levels.append(level)
        assert pos == hi
        assert levels == sorted(levels, reverse=True), "largest first"
        assert len(set(levels)) == len(levels), "a binary decomposition: each size at most once"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 13, 31, 64, 100, 255, 256, 257, 513])
def test_inclusion_and_consistency_ranges_match_reference(size: int) -> None:
    hashes = leaf_hashes(size)
    for index in range(size):
        got = [mth_of_hashes(hashes[lo:hi]) for lo, hi in inclusion_ranges(index, size)]
        assert got == inclusion_path_of_hashes(index, hashes), index
    for old in range(size + 1):
        got = [mth_of_hashes(hashes[lo:hi]) for lo, hi in consistency_ranges(old, size)]
        assert got == consistency_proof_of_hashes(old, hashes), old


def test_fold_range_is_the_mth_of_the_range() -> None:
    hashes = leaf_hashes(700)
    tree = build(hashes, [100, 333])
    for lo, hi in planned_ranges(700)[::7]:
        nodes = range_nodes(lo, hi)
        assert fold_range(tree.read_hashes(nodes)) == mth_of_hashes(hashes[lo:hi]), (lo, hi)
    with pytest.raises(AssertionError, match="bad math"):
        fold_range([])


@pytest.mark.parametrize(("index", "size"), [(0, 0), (5, 5), (-1, 3), (7, 2)])
def test_inclusion_ranges_refuse_impossible_requests(index: int, size: int) -> None:
    with pytest.raises(AssertionError, match="bad math"):
        inclusion_ranges(index, size)


@pytest.mark.parametrize(("old", "new"), [(3, 2), (-1, 4), (1, 0)])
def test_consistency_ranges_refuse_impossible_requests(old: int, new: int) -> None:
    with pytest.raises(AssertionError, match="bad math"):
        consistency_ranges(old, new)


def test_consistency_ranges_trivial_cases_are_empty() -> None:
    assert consistency_ranges(0, 0) == []
    assert consistency_ranges(0, 17) == []
    assert consistency_ranges(17, 17) == []


# -- append_hashes ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 255, 256, 257, 511, 512, 1000, 2048, 2049])
def test_every_complete_node_equals_the_reference_mth(size: int) -> None:
    hashes = leaf_hashes(size)
    tree = build(hashes, [size // 3, size // 3 + 1])
    for level, index in complete_nodes(size):
        got = tree.read_hashes([(level, index)])[0]
        want = mth_of_hashes(hashes[index << level : (index + 1) << level])
        assert got == want, (level, index)


def test_append_hashes_returns_the_new_size_and_writes_nothing_for_an_empty_batch() -> None:
    tree = MemTree()
    assert append_hashes(tree.record, 0, []) == 0
    assert tree.records == {}
    assert append_hashes(tree.record, 0, leaf_hashes(3)) == 3


def test_a_full_level_two_tile_boundary() -> None:
    """65,536 leaves complete tile 1/0 and the first level-16 node (tile level 2)."""
    size = TILE_WIDTH**2 + 3
    hashes = leaf_hashes(size, salt=7)
    tree = build(hashes, [1000, TILE_WIDTH**2 - 1, TILE_WIDTH**2])
    root = mth_of_hashes(hashes)
    pb = ProofBuilder(tree)
    assert pb.root(size) == root
    assert pb.root(TILE_WIDTH**2) == tree.read_hashes([(16, 0)])[0]
    assert pb.root(TILE_WIDTH**2) == mth_of_hashes(hashes[: TILE_WIDTH**2])
    for index in (0, 255, 256, 65535, 65536, size - 1):
        verify_inclusion(index, size, hashes[index], pb.inclusion_proof(index, size), root)
    assert pb.inclusion_proof(65535, size) == inclusion_path_of_hashes(65535, hashes)
    for old in (1, 256, 257, 65535, 65536, size - 1):
        old_root = mth_of_hashes(hashes[:old])
        verify_consistency(old, size, pb.consistency_proof(old, size), old_root, root)
    assert pb.consistency_proof(65535, size) == consistency_proof_of_hashes(65535, hashes)


# -- ProofBuilder, differential (hypothesis) ----------------------------------------------


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 3000), seed=st.integers(0, 2**32 - 1))
def test_proof_builder_matches_reference(size: int, seed: int) -> None:
    rng = random.Random(seed)
    hashes = leaf_hashes(size, salt=seed)
    trees = [build(hashes, cuts) for cuts in chunkings(rng, size)]
    # Every chunking stores byte-identical records: only complete nodes are ever written.
    for other in trees[1:]:
        assert other.records == trees[0].records
    tree = trees[rng.randrange(len(trees))]
    pb = ProofBuilder(tree)
    sizes = sorted({size, 1, rng.randint(1, size), rng.randint(1, size)})
    roots = {n: mth_of_hashes(hashes[:n]) for n in sizes}
    for n in sizes:
        assert pb.root(n) == roots[n]
        for index in {0, n - 1, rng.randrange(n), rng.randrange(n)}:
            proof = pb.inclusion_proof(index, n)
            assert proof == inclusion_path_of_hashes(index, hashes[:n])
            verify_inclusion(index, n, hashes[index], proof, roots[n])
    for old in sizes:
        for new in sizes:
            if old <= new:
                proof = pb.consistency_proof(old, new)
                assert proof == consistency_proof_of_hashes(old, hashes[:new])
                verify_consistency(old, new, proof, roots[old], roots[new])


def test_proof_builder_on_every_small_tree_exhaustively() -> None:
    """Sizes 1..40: every root, every inclusion proof and every consistency proof."""
    hashes = leaf_hashes(40, salt=1)
    tree = build(hashes, [1, 2, 5, 17, 32])
    pb = ProofBuilder(tree)
    for n in range(1, 41):
        root = mth_of_hashes(hashes[:n])
        assert pb.root(n) == root
        for index in range(n):
            proof = pb.inclusion_proof(index, n)
            assert proof == inclusion_path_of_hashes(index, hashes[:n]), (index, n)
            verify_inclusion(index, n, hashes[index], proof, root)
        for old in range(n + 1):
            proof = pb.consistency_proof(old, n)
            assert proof == consistency_proof_of_hashes(old, hashes[:n]), (old, n)
            old_root = mth_of_hashes(hashes[:old])
            verify_consistency(old, n, proof, old_root, root)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 3000), data=st.data())
def test_inclusion_proofs_for_many_indexes_match_one_at_a_time(
    size: int, data: st.DataObject
) -> None:
    """The one-walk plans of many indexes (a batch's receipts) equal the single plans."""
    first = data.draw(st.integers(0, size - 1))
    block = list(range(first, min(size, first + data.draw(st.integers(1, 300)))))
    scattered = data.draw(st.lists(st.integers(0, size - 1), max_size=20))
    indexes = sorted(set(block + scattered))
    plans = inclusion_plans(indexes, size)
    assert sorted(plans) == indexes
    for index in indexes:
        assert plans[index] == inclusion_ranges(index, size), (index, size)
    hashes = leaf_hashes(size, salt=size)
    pb = ProofBuilder(build(hashes, [size // 3]))
    proofs = pb.inclusion_proofs(reversed(indexes), size)
    root = mth_of_hashes(hashes)
    for index in indexes:
        assert proofs[index] == inclusion_path_of_hashes(index, hashes)
        verify_inclusion(index, size, hashes[index], proofs[index], root)


def test_inclusion_plans_refuse_indexes_outside_the_tree() -> None:
    assert inclusion_plans([], 5) == {}
    with pytest.raises(AssertionError):
        inclusion_plans([2, 5], 5)


def test_proof_builder_empty_tree_and_memoisation() -> None:
    tree = build(leaf_hashes(300), [])
    pb = ProofBuilder(tree)
    assert pb.root(0) == EMPTY_ROOT
    assert tree.reads == 0, "the empty root needs no reads"
    pb.inclusion_proof(5, 299)
    assert tree.reads == 1, "one plan is read in one batch"
    pb.inclusion_proof(5, 299)  # complete siblings are single stored nodes: read again
    assert tree.reads == 2
    pb.root(299)  # (0, 299) is ragged and not in the plan of index 5 ...
    assert tree.reads == 3
    pb.root(299)  # ... but is memoised now: no read at all
    assert tree.reads == 3
    shared = ProofBuilder(tree, pb._memo)  # a builder sharing the memo reuses it
    shared.root(299)
    assert tree.reads == 3


def test_proof_builder_raises_not_found_for_a_missing_record() -> None:
    tree = build(leaf_hashes(300), [])
    del tree.records[(0, 1)]
    with pytest.raises(NotFound):
        ProofBuilder(tree).inclusion_proof(260, 300)


@settings(max_examples=20, deadline=None)
@given(size=st.integers(2, 600), data=st.data())
def test_any_bit_flip_in_a_proof_fails_verification(size: int, data: st.DataObject) -> None:
    hashes = leaf_hashes(size, salt=3)
    pb = ProofBuilder(build(hashes, [size // 2]))
    root = mth_of_hashes(hashes)
    index = data.draw(st.integers(0, size - 1))
    proof = pb.inclusion_proof(index, size)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[i] = bytes(b ^ (1 << (bit % 8)) if j == bit // 8 else b for j, b in enumerate(bad[i]))
        with pytest.raises(VerificationError):
            verify_inclusion(index, size, hashes[index], bad, root)
    old = data.draw(st.integers(1, size - 1))
    cproof = pb.consistency_proof(old, size)
    i = data.draw(st.integers(0, len(cproof) - 1))
    bit = data.draw(st.integers(0, 255))
    bad = list(cproof)
    bad[i] = bytes(b ^ (1 << (bit % 8)) if j == bit // 8 else b for j, b in enumerate(bad[i]))
    with pytest.raises(VerificationError):
        verify_consistency(old, size, bad, mth_of_hashes(hashes[:old]), root)


def _naive_append(records: Any, size: int, hashes: list[bytes]) -> None:
    """append_hashes one parent at a time (its loop until 2026-11-29), as a reference."""
    lo, hi = size, size + len(hashes)
    for i, h in enumerate(hashes, size):
        records(0, i >> 8)[(i & 255) * 32 : (i & 255) * 32 + 32] = h
    level = 0
    while hi > lo and (hi >> 1) > (lo >> 1):
        lo, hi, level = lo >> 1, hi >> 1, level + 1
        ctl, crow = divmod(level - 1, TILE_HEIGHT)
        ptl, prow = divmod(level, TILE_HEIGHT)
        for j in range(lo, hi):
            c = 2 * j
            src = records(ctl, c >> (8 - crow))
            s = ROW_OFFSETS[crow] + (c & ((1 << (8 - crow)) - 1)) * 32
            d = ROW_OFFSETS[prow] + (j & ((1 << (8 - prow)) - 1)) * 32
            records(ptl, j >> (8 - prow))[d : d + 32] = hashlib.sha256(
                b"\x01" + src[s : s + 64]
            ).digest()


def _records() -> tuple[dict[tuple[int, int], bytearray], Any]:
    store: dict[tuple[int, int], bytearray] = {}

    def rec(level: int, index: int) -> bytearray:
        if (level, index) not in store:  # random, not zero: a wrong offset shows
            seed = hashlib.sha256(f"{level}/{index}".encode()).digest()
            store[level, index] = bytearray((seed * (RECORD_SIZE // 32 + 1))[:RECORD_SIZE])
        return store[level, index]

    return store, rec


@pytest.mark.parametrize("boundary", [256, 1 << 16, 1 << 24, 1 << 32])
def test_append_hashes_matches_the_per_parent_loop_across_tile_level_boundaries(
    boundary: int,
) -> None:
    rng = random.Random(boundary)
    for _ in range(40):
        size = max(0, boundary - rng.randint(1, 600))
        hashes = [rng.randbytes(32) for _ in range(rng.randint(0, 900))]
        (got, r1), (want, r2) = _records(), _records()
        assert append_hashes(r1, size, hashes) == size + len(hashes)
        _naive_append(r2, size, hashes)
        assert got == want, (size, len(hashes))
