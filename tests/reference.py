"""A short recursive RFC 6962 reference, for tests only (never imported by the package).

Each function is the RFC 6962 definition written as directly as Python allows,
so it can be trusted by reading; speed does not matter. ``leaves`` are raw
leaf data, hashed with ``verifier.hashing.leaf_hash``; the ``*_of_hashes``
variants take leaf hashes instead (for tests that only have a tile).

    D[n] = (d0, ..., d(n-1)),  k = the largest power of two < n   (RFC 6962 §2.1)
    MTH({}) = SHA-256()
    MTH({d0}) = SHA-256(0x00 || d0)
    MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))

>>> from verifier.hashing import leaf_hash, node_hash
>>> a, b, c = (leaf_hash(d) for d in (b"a", b"b", b"c"))
>>> mth([b"a", b"b", b"c"]) == node_hash(node_hash(a, b), c)
True
>>> inclusion_path(2, [b"a", b"b", b"c"]) == [node_hash(a, b)]
True
>>> consistency_proof(2, [b"a", b"b", b"c"]) == [c]
True
"""

from __future__ import annotations

from collections.abc import Sequence

from verifier.hashing import EMPTY_ROOT, leaf_hash, node_hash

__all__ = [
    "consistency_proof",
    "consistency_proof_of_hashes",
    "inclusion_path",
    "inclusion_path_of_hashes",
    "mth",
    "mth_of_hashes",
]


def _k(n: int) -> int:
    """Return the largest power of two strictly less than ``n`` (requires n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth_of_hashes(hashes: Sequence[bytes]) -> bytes:
    """Return MTH of the leaves whose leaf hashes are ``hashes`` (RFC 6962 §2.1)."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = _k(n)
    return node_hash(mth_of_hashes(hashes[:k]), mth_of_hashes(hashes[k:]))


def mth(leaves: Sequence[bytes]) -> bytes:
    """Return MTH(D[n]) of the raw leaves ``leaves`` (RFC 6962 §2.1)."""
    return mth_of_hashes([leaf_hash(d) for d in leaves])


def inclusion_path_of_hashes(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Return PATH(m, D[n]) for m = ``index`` over leaf hashes (RFC 6962 §2.1.1)."""
    n = len(hashes)
    if not 0 <= index < n:
        raise ValueError(f"index {index} is not in a tree of size {n}")
    if n == 1:
        return []
    k = _k(n)
    if index < k:
        return [*inclusion_path_of_hashes(index, hashes[:k]), mth_of_hashes(hashes[k:])]
    return [*inclusion_path_of_hashes(index - k, hashes[k:]), mth_of_hashes(hashes[:k])]


def inclusion_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Return PATH(m, D[n]) for m = ``index`` over raw leaves (RFC 6962 §2.1.1)."""
    return inclusion_path_of_hashes(index, [leaf_hash(d) for d in leaves])


def _subproof(m: int, hashes: Sequence[bytes], b: bool) -> list[bytes]:
    """Return SUBPROOF(m, D[n], b) over leaf hashes (RFC 6962 §2.1.2)."""
    n = len(hashes)
    if m == n:
        return [] if b else [mth_of_hashes(hashes)]
    k = _k(n)
    if m <= k:
        return [*_subproof(m, hashes[:k], b), mth_of_hashes(hashes[k:])]
    return [*_subproof(m - k, hashes[k:], False), mth_of_hashes(hashes[:k])]


def consistency_proof_of_hashes(size1: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Return PROOF(m, D[n]) = SUBPROOF(m, D[n], true) for m = ``size1`` (RFC 6962 §2.1.2).

    RFC 6962 defines it for 0 < m < n; for m == n it is empty, and for m == 0
    we return the empty proof too (the empty tree is a prefix of every tree).
    """
    n = len(hashes)
    if not 0 <= size1 <= n:
        raise ValueError(f"size1 {size1} is not in 0..{n}")
    if size1 == 0:
        return []
    return _subproof(size1, hashes, True)


def consistency_proof(size1: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Return PROOF(m, D[n]) for m = ``size1`` over raw leaves (RFC 6962 §2.1.2)."""
    return consistency_proof_of_hashes(size1, [leaf_hash(d) for d in leaves])
