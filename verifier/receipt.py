"""C2SP tlog-proof receipts: offline proof that a leaf is in a log.

A receipt (c2sp.org/tlog-proof@v1, file extension ``.tlog-proof``) is text::

    c2sp.org/tlog-proof@v1
    extra <base64 of the leaf bytes>
    index <leaf index>
    <base64 inclusion-path hash, leaf's sibling first>
    ...
    <blank line>
    <the signed checkpoint, verbatim>

The ``extra`` line is optional in the spec and unauthenticated; Bucket's receipts
always carry the leaf bytes there, so one file is self-contained. Verifying hashes
the leaf (RFC 6962 §2.1), checks the checkpoint's signature against pinned keys,
and checks the inclusion path against the checkpoint's root (RFC 9162 §2.1.3.2).

>>> from verifier.checkpoint import Checkpoint, sign_checkpoint
>>> from verifier.hashing import leaf_hash
>>> from verifier.note import Signer
>>> signer = Signer.from_seed("example.com/log", bytes(32))
>>> signed = sign_checkpoint(Checkpoint("example.com/log", 1, leaf_hash(b"hi")), signer)
>>> text = format_receipt(Receipt(index=0, proof=(), checkpoint=signed, extra=b"hi"))
>>> text.splitlines()[:3]
['c2sp.org/tlog-proof@v1', 'extra aGk=', 'index 0']
>>> verify_receipt(text, [signer.verifier_key], origin="example.com/log").leaf
b'hi'
"""

from __future__ import annotations

import binascii
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from verifier.checkpoint import MAX_TREE_SIZE, Checkpoint, open_checkpoint_note
from verifier.errors import LeafMismatch, MalformedReceipt
from verifier.hashing import HASH_SIZE, leaf_hash
from verifier.note import VerifierKey, _b64decode_canonical, _b64encode
from verifier.proof import verify_inclusion

__all__ = [
    "MAX_PROOF_HASHES",
    "RECEIPT_HEADER",
    "CheckpointCache",
    "Receipt",
    "VerifiedReceipt",
    "format_receipt",
    "parse_receipt",
    "verify_receipt",
]

RECEIPT_HEADER = "c2sp.org/tlog-proof@v1"
"""First line of every receipt (C2SP tlog-proof §Format)."""

MAX_PROOF_HASHES = 64
"""Most inclusion-path hashes a receipt may hold: a tree of fewer than 2**64 leaves
has paths of at most 64 hashes, so anything longer cannot verify."""

_INDEX = re.compile(r"index (0|[1-9][0-9]{0,19})")
# Canonical standard base64 of exactly 32 bytes: 43 characters carry 258 bits, so the
# last one must leave its 2 low bits zero, then one '=' (RFC 4648 §3.5, §4).
_HASH_LINE = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")


@dataclass(frozen=True)
class Receipt:
    """A parsed, unverified receipt: leaf index, inclusion path, signed checkpoint, extra.

    Construction checks the shape and raises MalformedReceipt: 0 <= index < 2**64, at
    most :data:`MAX_PROOF_HASHES` hashes of 32 bytes, and a checkpoint that is
    non-empty text starting with a non-empty line and ending in newline.
    """

    index: int
    proof: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if (
            not isinstance(self.index, int)
            or isinstance(self.index, bool)
            or not 0 <= self.index <= MAX_TREE_SIZE
        ):
            raise MalformedReceipt(f"receipt index {self.index!r} is not in 0..2**64-1")
        if len(self.proof) > MAX_PROOF_HASHES:
            raise MalformedReceipt(
                f"receipt has {len(self.proof)} proof hashes, more than {MAX_PROOF_HASHES}"
            )
        for i, node in enumerate(self.proof):
            if not isinstance(node, bytes) or len(node) != HASH_SIZE:
                raise MalformedReceipt(f"receipt proof hash {i} is not {HASH_SIZE} bytes")
        if (
            not isinstance(self.checkpoint, str)
            or not self.checkpoint.endswith("\n")
            or self.checkpoint.startswith("\n")
        ):
            raise MalformedReceipt(
                "receipt checkpoint must be note text that starts with the origin line "
                "and ends in a newline"
            )
        if self.extra is not None and not isinstance(self.extra, bytes):
            raise MalformedReceipt(f"receipt extra must be bytes or None, not {self.extra!r}")


@dataclass(frozen=True)
class VerifiedReceipt:
    """What a verified receipt proves: ``leaf`` is at ``index`` in the log ``origin``,
    whose tree of ``size`` leaves has ``root``, as signed by the keys ``signed_by``."""

    origin: str
    size: int
    root: bytes
    index: int
    leaf: bytes | None
    leaf_hash: bytes
    signed_by: tuple[str, ...]


def format_receipt(r: Receipt) -> str:
    """Return the receipt as ``.tlog-proof`` text (C2SP tlog-proof §Format)."""
    lines = [RECEIPT_HEADER]
    if r.extra is not None:
        lines.append(f"extra {_b64encode(r.extra)}")
    lines.append(f"index {r.index}")
    lines.extend(_b64encode(node) for node in r.proof)
    return "\n".join(lines) + "\n\n" + r.checkpoint


def parse_receipt(text: bytes | str) -> Receipt:
    """Return the receipt in ``.tlog-proof`` text, accepting only the canonical encoding.

    C2SP tlog-proof §Format: the header line; an optional ``extra <base64>`` line; an
    ``index <n>`` line (ASCII decimal, no leading zeros, < 2**64); zero or more lines
    of one canonical base64 32-byte hash each; a blank line; the checkpoint verbatim
    (checked only when verified). Raises MalformedReceipt otherwise.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise MalformedReceipt(f"receipt is not UTF-8 text: {err}") from None
    elif not isinstance(text, str):
        raise MalformedReceipt(f"receipt must be bytes or str, not {type(text).__name__}")
    head, blank, checkpoint = text.partition("\n\n")
    if not blank:
        raise MalformedReceipt("receipt has no blank line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != RECEIPT_HEADER:
        raise MalformedReceipt(f"receipt does not start with {RECEIPT_HEADER!r}: {lines[0][:80]!r}")
    pos = 1
    extra = None
    if pos < len(lines) and lines[pos].startswith("extra "):
        extra = _b64decode_canonical(lines[pos][len("extra ") :])
        if extra is None:
            raise MalformedReceipt("receipt extra data is not canonical standard base64")
        pos += 1
    match = _INDEX.fullmatch(lines[pos]) if pos < len(lines) else None
    if match is None:
        got = lines[pos][:80] if pos < len(lines) else "nothing"
        raise MalformedReceipt(
            f"receipt line {pos + 1} should be 'index <decimal without leading zeros>', got {got!r}"
        )
    index = int(match.group(1))
    hash_lines = lines[pos + 1 :]
    if len(hash_lines) > MAX_PROOF_HASHES:
        raise MalformedReceipt(
            f"receipt has {len(hash_lines)} proof hashes, more than {MAX_PROOF_HASHES}"
        )
    proof = []
    for number, line in enumerate(hash_lines, pos + 2):
        if _HASH_LINE.fullmatch(line) is None:
            raise MalformedReceipt(
                f"receipt line {number} is not one canonical base64 32-byte hash: {line[:80]!r}"
            )
        proof.append(binascii.a2b_base64(line))
    if not checkpoint:
        raise MalformedReceipt("receipt has no checkpoint after the blank line")
    return Receipt(index, tuple(proof), checkpoint, extra)


class CheckpointCache:
    """A bounded, thread-safe memo of checkpoints that already verified.

    Entries are keyed by the exact note text, the set of trusted keys and the
    expected origin, so a hit returns exactly what verifying again would return;
    receipts that share a checkpoint pay for the Ed25519 check once. Failures are
    never cached. The least recently used entry goes first when ``maxsize`` is reached.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        if maxsize < 1:
            raise ValueError(f"cache size must be at least 1, not {maxsize}")
        self._maxsize = maxsize
        self._entries: OrderedDict[
            tuple[bytes | str, frozenset[VerifierKey], str | None],
            tuple[Checkpoint, tuple[str, ...]],
        ] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()

    def open(
        self, data: bytes | str, keys: Sequence[VerifierKey], *, origin: str | None = None
    ) -> tuple[Checkpoint, tuple[str, ...]]:
        """Return the verified checkpoint in ``data`` and the names of the keys that signed it.

        Same checks and errors as :func:`verifier.checkpoint.open_checkpoint`.
        """
        cache_key = (data, frozenset(keys), origin)
        with self._lock:
            hit = self._entries.get(cache_key)
            if hit is not None:
                self._entries.move_to_end(cache_key)
                return hit
        cp, note = open_checkpoint_note(data, keys, origin=origin)
        value = (cp, tuple(key.name for key in note.verified_by))
        with self._lock:
            self._entries[cache_key] = value
            if len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)
        return value


def verify_receipt(
    receipt: Receipt | bytes | str,
    keys: Sequence[VerifierKey],
    *,
    leaf: bytes | None = None,
    origin: str | None = None,
    cache: CheckpointCache | None = None,
) -> VerifiedReceipt:
    """Return what ``receipt`` proves once its checkpoint and inclusion path verify.

    1. parse the receipt if given as text (MalformedReceipt);
    2. take the leaf from ``leaf`` or else the ``extra`` line; with neither, raise
       MalformedReceipt; with both, they must be equal (LeafMismatch);
    3. open the checkpoint with the trusted ``keys`` and, if given, the expected
       ``origin`` (C2SP tlog-checkpoint; errors as ``open_checkpoint``), through
       ``cache`` if one is given;
    4. verify the inclusion of ``leaf_hash(leaf)`` at the index in the checkpoint's
       tree against its root (RFC 9162 §2.1.3.2; BadProofShape, RootMismatch).

    Pass ``origin`` whenever ``keys`` may hold keys of more than one log.
    """
    r = receipt if isinstance(receipt, Receipt) else parse_receipt(receipt)
    if leaf is None:
        if r.extra is None:
            raise MalformedReceipt(
                "receipt has no 'extra' line with the leaf, and no leaf was given to check"
            )
        leaf = r.extra
    elif r.extra is not None and r.extra != leaf:
        raise LeafMismatch(
            f"receipt is for a different leaf ({len(r.extra)} bytes, leaf hash "
            f"{leaf_hash(r.extra).hex()}) than the one given ({len(leaf)} bytes, leaf hash "
            f"{leaf_hash(leaf).hex()})",
            expected=leaf,
            got=r.extra,
        )
    if cache is not None:
        cp, signed_by = cache.open(r.checkpoint, keys, origin=origin)
    else:
        cp, note = open_checkpoint_note(r.checkpoint, keys, origin=origin)
        signed_by = tuple(key.name for key in note.verified_by)
    hashed = leaf_hash(leaf)
    verify_inclusion(r.index, cp.size, hashed, r.proof, cp.root)
    return VerifiedReceipt(cp.origin, cp.size, cp.root, r.index, leaf, hashed, signed_by)
