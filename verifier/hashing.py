"""RFC 6962 §2.1 Merkle tree hashing (also RFC 9162 §2.1.1).

The hash of a leaf is ``SHA-256(0x00 || leaf)``, of an interior node
``SHA-256(0x01 || left || right)``; the empty tree hashes to ``SHA-256("")``.
The one-byte prefixes are the domain separation that stops a node from being
passed off as a leaf (second pre-image attack).

>>> leaf_hash(b"").hex()[:16]
'6e340b9cffb37a98'
"""

from __future__ import annotations

import hashlib

__all__ = ["EMPTY_ROOT", "HASH_SIZE", "empty_root", "leaf_hash", "node_hash"]

HASH_SIZE = 32
"""Bytes in one SHA-256 hash."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""RFC 6962 §2.1: MTH({}) = SHA-256() (``e3b0c442…b855``)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def empty_root() -> bytes:
    """Return MTH({}), the root hash of the empty tree (RFC 6962 §2.1)."""
    return EMPTY_ROOT


def leaf_hash(leaf: bytes) -> bytes:
    """Return MTH({d0}) = SHA-256(0x00 || leaf), the RFC 6962 §2.1 leaf hash."""
    return hashlib.sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return SHA-256(0x01 || left || right), the RFC 6962 §2.1 interior node hash."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()
