"""Tests for verifier.proof: public vectors, the RFC 6962 reference, properties.

Known answers come from ../shared/vectors (see its README.md for where each
file came from and how it was made): transparency-dev/merkle's proof probes,
the 8-leaf RFC 6962 tree and one real Sigstore Rekor v2 entry. The differential
tests compare against tests/reference.py, the RFC 6962 definitions written
recursively.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import VECTORS
from tests.reference import consistency_proof, inclusion_path, mth
from verifier.errors import (
    BadProofShape,
    InconsistentTrees,
    RootMismatch,
    VerificationError,
)
from verifier.hashing import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash
from verifier.proof import (
    root_from_consistency_proof,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

MERKLE_TESTDATA = VECTORS / "transparency-dev-merkle-testdata"
PROBES = sorted(MERKLE_TESTDATA.rglob("*.json"))


def _b64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _flip(h: bytes, bit: int) -> bytes:
    """Return ``h`` with bit number ``bit`` (0 = lowest bit of byte 0) flipped."""
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


# --- transparency-dev/merkle testdata (196 probes) --------------------------------------


def test_all_merkle_probes_are_present() -> None:
    assert len(PROBES) == 196, f"expected 196 probe files under {MERKLE_TESTDATA}"


def _run_probe(probe: dict[str, Any]) -> None:
    proof = [_b64(h) for h in probe["proof"] or []]
    if "leafIdx" in probe:
        index, size = probe["leafIdx"], probe["treeSize"]
        leaf, root = _b64(probe["leafHash"]), _b64(probe["root"])
        assert verify_inclusion(index, size, leaf, proof, root) == root
        assert root_from_inclusion_proof(index, size, leaf, proof) == root
    else:
        size1, size2 = probe["size1"], probe["size2"]
        root1, root2 = _b64(probe["root1"]), _b64(probe["root2"])
        verify_consistency(size1, size2, proof, root1, root2)
        if size1 > 0:
            assert root_from_consistency_proof(size1, size2, proof, root1) == root2


@pytest.mark.parametrize("path", PROBES, ids=lambda p: str(p.relative_to(MERKLE_TESTDATA)))
def test_merkle_probe(path: Path) -> None:
    probe = _load(path)
    if probe["wantErr"]:
        with pytest.raises(VerificationError):
            _run_probe(probe)
    else:
        _run_probe(probe)


# --- RFC 6962 8-leaf tree ------------------------------------------------------------------

RFC6962 = _load(VECTORS / "rfc6962-8-leaves.json")
LEAVES8 = [bytes.fromhex(h) for h in RFC6962["leaves_hex"]]
ROOTS8 = [bytes.fromhex(h) for h in RFC6962["roots"]]


def test_rfc6962_roots_match_reference() -> None:
    assert len(ROOTS8) == 9
    assert ROOTS8[0] == EMPTY_ROOT
    for n, root in enumerate(ROOTS8):
        assert mth(LEAVES8[:n]) == root, n


def test_rfc6962_node_hashes_match_reference() -> None:
    for level, hashes in enumerate(RFC6962["node_hashes"]):
        width = 1 << level
        for i, h in enumerate(hashes):
            assert mth(LEAVES8[i * width : (i + 1) * width]).hex() == h, (level, i)


def test_rfc6962_hasher_vectors() -> None:
    for case in RFC6962["hasher_vectors"]:
        want = bytes.fromhex(case["want"])
        if "left_text" in case:
            got = node_hash(case["left_text"].encode(), case["right_text"].encode())
        elif "leaf_hex" in case:
            got = leaf_hash(bytes.fromhex(case["leaf_hex"]))
        elif "leaf_text" in case:
            got = leaf_hash(case["leaf_text"].encode())
        else:
            got = EMPTY_ROOT
        assert got == want, case["desc"]


def test_rfc6962_every_proof_of_the_8_leaf_tree() -> None:
    # Every inclusion and consistency proof of every prefix, checked against the
    # published roots rather than the reference's own.
    for n in range(1, 9):
        for i in range(n):
            path = inclusion_path(i, LEAVES8[:n])
            assert verify_inclusion(i, n, leaf_hash(LEAVES8[i]), path, ROOTS8[n]) == ROOTS8[n]
        for m in range(n + 1):
            proof = consistency_proof(m, LEAVES8[:n])
            verify_consistency(m, n, proof, ROOTS8[m], ROOTS8[n])


# --- Sigstore Rekor v2 (staging) -----------------------------------------------------------


def test_rekor_v2_inclusion_proof_verifies_against_its_checkpoint() -> None:
    entry = _load(VECTORS / "sigstore-rekor-v2-staging-entry.json")
    origin, size_line, root_line = entry["checkpoint"].split("\n")[:3]
    root = _b64(root_line)
    assert origin == "log2025-alpha1.rekor.sigstage.dev"
    assert int(size_line) == entry["tree_size"] == 646
    leaf = leaf_hash(_b64(entry["canonicalized_body_b64"]))
    proof = [_b64(h) for h in entry["inclusion_proof_b64"]]
    assert verify_inclusion(entry["log_index"], int(size_line), leaf, proof, root) == root
    with pytest.raises(RootMismatch):
        verify_inclusion(entry["log_index"], int(size_line), _flip(leaf, 0), proof, root)


# --- edge cases ----------------------------------------------------------------------------

A, B, C, D = (leaf_hash(x) for x in (b"a", b"b", b"c", b"d"))
AB = node_hash(A, B)
ROOT3 = node_hash(AB, C)
ROOT4 = node_hash(AB, node_hash(C, D))


@pytest.mark.parametrize(
    ("index", "size", "proof"),
    [
        (0, 0, []),
        (3, 3, [AB]),
        (-1, 3, [AB]),
        (0, -1, []),
        (2, 3, []),
        (2, 3, [AB, AB]),
        (2, 3, [AB[:31]]),
        (2, 3, [AB + b"\x00"]),
    ],
)
def test_inclusion_bad_shape(index: int, size: int, proof: list[bytes]) -> None:
    with pytest.raises(BadProofShape):
        root_from_inclusion_proof(index, size, C, proof)
    with pytest.raises(BadProofShape):
        verify_inclusion(index, size, C, proof, ROOT3)


def test_inclusion_leaf_hash_must_be_32_bytes() -> None:
    with pytest.raises(BadProofShape, match="leaf hash is 3 bytes"):
        root_from_inclusion_proof(0, 1, b"abc", [])


def test_inclusion_mismatch_carries_evidence() -> None:
    with pytest.raises(RootMismatch) as info:
        verify_inclusion(2, 3, D, [AB], ROOT3)
    assert info.value.expected == ROOT3
    assert info.value.computed == node_hash(AB, D)
    assert "index 2" in str(info.value) and "size 3" in str(info.value)


def test_size_is_bound_only_through_the_root() -> None:
    # Index 0 has the same path shape (two right siblings) in trees of size 3 and 4,
    # so the proof of a in the size-3 tree also "verifies" for size 4 against ROOT3.
    # Harmless: size and root come from the same signed checkpoint, and ROOT3 is not
    # the root of any tree of size 4. Against the real size-4 root it fails.
    assert verify_inclusion(0, 4, A, [B, C], ROOT3) == ROOT3
    with pytest.raises(RootMismatch):
        verify_inclusion(0, 4, A, [B, C], ROOT4)


def test_consistency_edge_cases() -> None:
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    verify_consistency(0, 4, [], EMPTY_ROOT, ROOT4)
    verify_consistency(3, 3, [], ROOT3, ROOT3)
    verify_consistency(2, 4, [node_hash(C, D)], AB, ROOT4)
    assert root_from_consistency_proof(0, 0, [], EMPTY_ROOT) == EMPTY_ROOT
    assert root_from_consistency_proof(3, 3, [], ROOT3) == ROOT3
    assert root_from_consistency_proof(3, 4, [C, D, AB], ROOT3) == ROOT4
    with pytest.raises(InconsistentTrees, match=r"size 3 .* size 4"):
        verify_consistency(4, 3, [], ROOT4, ROOT3)
    with pytest.raises(BadProofShape):
        verify_consistency(0, 4, [EMPTY_ROOT], EMPTY_ROOT, ROOT4)
    with pytest.raises(RootMismatch):  # a tree of size 0 has exactly one root
        verify_consistency(0, 4, [], ROOT3, ROOT4)
    with pytest.raises(BadProofShape):  # no tree of size 4 has a 3-byte root
        verify_consistency(0, 4, [], EMPTY_ROOT, b"abc")
    with pytest.raises(BadProofShape):  # nothing to compute root2 from
        root_from_consistency_proof(0, 4, [], EMPTY_ROOT)
    with pytest.raises(BadProofShape):
        verify_consistency(3, 3, [C], ROOT3, ROOT3)
    with pytest.raises(RootMismatch) as info:
        verify_consistency(3, 3, [], ROOT3, ROOT4)
    assert (info.value.expected, info.value.computed) == (ROOT4, ROOT3)
    with pytest.raises(BadProofShape, match="from size 3 to size 4 is empty"):
        verify_consistency(3, 4, [], ROOT3, ROOT4)
    with pytest.raises(RootMismatch) as info:
        verify_consistency(3, 4, [C, D, AB], ROOT4, ROOT4)
    assert info.value.expected == ROOT4 and info.value.computed == ROOT3


# --- sizes up to 2**64 - 1 ----------------------------------------------------------------
# A tree whose leaves are all equal has O(log n) distinct subtrees, so the RFC 6962
# definitions can be evaluated directly even for n near 2**64.

UNIFORM_LEAF = leaf_hash(b"same")


@functools.cache
def _uniform_mth(n: int) -> bytes:
    if n == 1:
        return UNIFORM_LEAF
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(_uniform_mth(k), _uniform_mth(n - k))


def _uniform_path(m: int, n: int) -> list[bytes]:
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*_uniform_path(m, k), _uniform_mth(n - k)]
    return [*_uniform_path(m - k, n - k), _uniform_mth(k)]


def _uniform_subproof(m: int, n: int, b: bool) -> list[bytes]:
    if m == n:
        return [] if b else [_uniform_mth(n)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*_uniform_subproof(m, k, b), _uniform_mth(n - k)]
    return [*_uniform_subproof(m - k, n - k, False), _uniform_mth(k)]


BIG = 2**64 - 1
BIG_SIZES = [BIG, BIG - 1, 2**63, 2**63 + 1, 2**63 - 1, 3 * 2**62 + 5]


@pytest.mark.parametrize("size", BIG_SIZES)
def test_inclusion_near_2_64(size: int) -> None:
    root = _uniform_mth(size)
    for index in {0, 1, size // 2, size - 2, size - 1, 2**62 + 12345}:
        path = _uniform_path(index, size)
        assert len(path) <= 64
        assert verify_inclusion(index, size, UNIFORM_LEAF, path, root) == root
        with pytest.raises(BadProofShape):
            verify_inclusion(index, size, UNIFORM_LEAF, path[:-1], root)


@pytest.mark.parametrize("size2", BIG_SIZES)
def test_consistency_near_2_64(size2: int) -> None:
    root2 = _uniform_mth(size2)
    for size1 in {1, 2**32 + 7, 2**62, size2 // 2 + 1, size2 - 1, size2}:
        proof = _uniform_subproof(size1, size2, True)
        verify_consistency(size1, size2, proof, _uniform_mth(size1), root2)
        assert root_from_consistency_proof(size1, size2, proof, _uniform_mth(size1)) == root2


# --- properties against the reference ------------------------------------------------------

distinct_leaves = st.lists(st.binary(max_size=6), min_size=1, max_size=33, unique=True)
any_leaves = st.one_of(
    distinct_leaves,
    st.lists(st.sampled_from([b"", b"x"]), min_size=1, max_size=33),  # many duplicates
)
hashes32 = st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE)


@given(any_leaves)
def test_every_reference_inclusion_proof_verifies(leaves: list[bytes]) -> None:
    n, root = len(leaves), mth(leaves)
    for i, leaf in enumerate(leaves):
        path = inclusion_path(i, leaves)
        assert root_from_inclusion_proof(i, n, leaf_hash(leaf), path) == root
        assert verify_inclusion(i, n, leaf_hash(leaf), path, root) == root


@given(any_leaves)
def test_every_reference_consistency_proof_verifies(leaves: list[bytes]) -> None:
    n, root = len(leaves), mth(leaves)
    for m in range(n + 1):
        proof = consistency_proof(m, leaves)
        verify_consistency(m, n, proof, mth(leaves[:m]), root)
        if m > 0:
            assert root_from_consistency_proof(m, n, proof, mth(leaves[:m])) == root


@given(any_leaves, st.data())
def test_inclusion_bit_flips_fail(leaves: list[bytes], data: st.DataObject) -> None:
    n, root = len(leaves), mth(leaves)
    i = data.draw(st.integers(0, n - 1), label="index")
    leaf, path = leaf_hash(leaves[i]), inclusion_path(i, leaves)
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="bit")
    for j in range(len(path)):
        bad = [*path[:j], _flip(path[j], bit), *path[j + 1 :]]
        with pytest.raises(RootMismatch):
            verify_inclusion(i, n, leaf, bad, root)
    with pytest.raises(RootMismatch):
        verify_inclusion(i, n, leaf, path, _flip(root, bit))
    with pytest.raises(RootMismatch):
        verify_inclusion(i, n, _flip(leaf, bit), path, root)


@given(any_leaves, st.data())
def test_inclusion_added_or_removed_hash_fails(leaves: list[bytes], data: st.DataObject) -> None:
    n, root = len(leaves), mth(leaves)
    i = data.draw(st.integers(0, n - 1), label="index")
    leaf, path = leaf_hash(leaves[i]), inclusion_path(i, leaves)
    at = data.draw(st.integers(0, len(path)), label="insert at")
    extra = data.draw(hashes32, label="extra hash")
    with pytest.raises(BadProofShape):
        verify_inclusion(i, n, leaf, [*path[:at], extra, *path[at:]], root)
    if path:
        at = data.draw(st.integers(0, len(path) - 1), label="remove at")
        with pytest.raises(BadProofShape):
            verify_inclusion(i, n, leaf, [*path[:at], *path[at + 1 :]], root)


@given(distinct_leaves, st.data())
def test_inclusion_wrong_index_or_size_fails(leaves: list[bytes], data: st.DataObject) -> None:
    # Distinct leaves: with duplicates another index can hold the same leaf.
    n, root = len(leaves), mth(leaves)
    i = data.draw(st.integers(0, n - 1), label="index")
    leaf, path = leaf_hash(leaves[i]), inclusion_path(i, leaves)
    other = data.draw(st.integers(0, 2 * n + 2).filter(lambda x: x != i), label="other index")
    with pytest.raises(VerificationError):
        verify_inclusion(other, n, leaf, path, root)
    # A different size is checked against that size's root (see
    # test_size_is_bound_only_through_the_root); extra leaves are distinct too.
    size = data.draw(st.integers(1, 2 * n + 2).filter(lambda x: x != n), label="other size")
    grown = leaves + [b"extra-%d" % k for k in range(size - n)]
    with pytest.raises(VerificationError):
        verify_inclusion(i, size, leaf, path, mth(grown[:size]))


@given(any_leaves, st.data())
def test_consistency_mutations_fail(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    m = data.draw(st.integers(0, n), label="size1")
    root1, root2 = mth(leaves[:m]), mth(leaves)
    proof = consistency_proof(m, leaves)
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="bit")
    for j in range(len(proof)):
        bad = [*proof[:j], _flip(proof[j], bit), *proof[j + 1 :]]
        with pytest.raises(RootMismatch):
            verify_consistency(m, n, bad, root1, root2)
    with pytest.raises(RootMismatch):
        verify_consistency(m, n, proof, _flip(root1, bit), root2)
    if m > 0 or n == 0:  # from size 0 any 32-byte root2 is consistent
        with pytest.raises(RootMismatch):
            verify_consistency(m, n, proof, root1, _flip(root2, bit))
    at = data.draw(st.integers(0, len(proof)), label="insert at")
    extra = data.draw(hashes32, label="extra hash")
    with pytest.raises(BadProofShape):
        verify_consistency(m, n, [*proof[:at], extra, *proof[at:]], root1, root2)
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1), label="remove at")
        with pytest.raises(BadProofShape):
            verify_consistency(m, n, [*proof[:at], *proof[at + 1 :]], root1, root2)


@given(distinct_leaves, st.data())
def test_consistency_wrong_sizes_fail(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    m = data.draw(st.integers(1, n - 1), label="size1") if n > 1 else 1
    proof = consistency_proof(m, leaves)
    grown = leaves + [b"extra-%d" % k for k in range(n + 3)]
    if proof:
        # Sizes are checked against the roots of the claimed sizes.
        m2 = data.draw(st.integers(1, n).filter(lambda x: x != m), label="other size1")
        with pytest.raises(VerificationError):
            verify_consistency(m2, n, proof, mth(grown[:m2]), mth(leaves))
    n2 = data.draw(st.integers(m, 2 * n + 3).filter(lambda x: x != n), label="other size2")
    with pytest.raises(VerificationError):
        verify_consistency(m, n2, proof, mth(leaves[:m]), mth(grown[:n2]))
    with pytest.raises(InconsistentTrees):
        verify_consistency(n + 1, n, [], mth(grown[: n + 1]), mth(leaves))


# --- garbage in, VerificationError out -----------------------------------------------------

garbage_ints = st.one_of(st.integers(-3, 70), st.integers(-(2**70), 2**70))
garbage_hashes = st.one_of(hashes32, st.binary(max_size=40))


@given(garbage_ints, garbage_ints, garbage_hashes, st.lists(garbage_hashes, max_size=8))
def test_inclusion_garbage_raises_only_verification_errors(
    index: int, size: int, leaf: bytes, proof: list[bytes]
) -> None:
    try:
        assert len(root_from_inclusion_proof(index, size, leaf, proof)) == HASH_SIZE
    except VerificationError:
        pass
    try:
        verify_inclusion(index, size, leaf, proof, leaf)
    except VerificationError:
        pass


@given(
    garbage_ints, garbage_ints, st.lists(garbage_hashes, max_size=8), garbage_hashes, garbage_hashes
)
def test_consistency_garbage_raises_only_verification_errors(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> None:
    try:
        root_from_consistency_proof(size1, size2, proof, root1)
    except VerificationError:
        pass
    try:
        verify_consistency(size1, size2, proof, root1, root2)
    except VerificationError:
        pass


@pytest.mark.parametrize("bad", ["3", 2.0, None, True])
def test_non_int_sizes_are_bad_shape(bad: Any) -> None:
    with pytest.raises(BadProofShape):
        root_from_inclusion_proof(bad, 4, A, [B, C])
    with pytest.raises(BadProofShape):
        verify_consistency(bad, 4, [], EMPTY_ROOT, ROOT4)


def test_non_bytes_hashes_are_bad_shape() -> None:
    with pytest.raises(BadProofShape):
        root_from_inclusion_proof(0, 2, A, ["x" * 32])  # type: ignore[list-item]
    with pytest.raises(BadProofShape):
        root_from_inclusion_proof(0, 2, A, B)  # type: ignore[arg-type]  # not a list
