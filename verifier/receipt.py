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
import struct
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
_HEADER_LINE = RECEIPT_HEADER + "\n"
_MAX_HASH_BLOCK_CHARS = 45 * MAX_PROOF_HASHES - 1  # 44 characters and a newline each
# Canonical base64 hash lines joined by newlines (the fast path of parse_receipt).
_HASH_BLOCK = re.compile(
    r"(?:[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=\n)*[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]="
)
_PAD_AS_ZERO_BITS = bytes.maketrans(b"=", b"A")
_RECORDS = [struct.Struct(f">{f'{HASH_SIZE}sx' * n}") for n in range(MAX_PROOF_HASHES + 1)]
_ONLY_BYTES = frozenset({bytes})
_ONLY_HASH_SIZE = frozenset({HASH_SIZE})


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
        proof = self.proof
        if not (set(map(type, proof)) <= _ONLY_BYTES and set(map(len, proof)) <= _ONLY_HASH_SIZE):
            for i, node in enumerate(proof):
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

    @classmethod
    def _checked_by_parser(
        cls, index: int, proof: tuple[bytes, ...], checkpoint: str, extra: bytes | None
    ) -> Receipt:
        """Return a Receipt of fields that :func:`parse_receipt` has already checked as
        ``__post_init__`` would (index in range, at most MAX_PROOF_HASHES hashes of 32
        bytes, checkpoint text starting with a line and ending in a newline, bytes
        or None extra), without checking them again: the parser's fast path."""
        receipt = object.__new__(cls)
        receipt.__dict__.update(index=index, proof=proof, checkpoint=checkpoint, extra=extra)
        return receipt


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
    # Fast path for well-formed receipts (verifying thousands a second is a use case):
    # positions instead of a list of lines, one check and one decode for all the hashes.
    # Anything it does not accept goes to _parse_receipt_checked, which accepts the
    # same language and names the problem, so the two can never disagree on an error.
    if type(text) is bytes:
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return _parse_receipt_checked(text)
    if type(text) is str and text.startswith(_HEADER_LINE):
        pos = len(_HEADER_LINE)
        extra = None
        if text.startswith("extra ", pos):
            end = text.find("\n", pos)
            extra = _b64decode_canonical(text[pos + len("extra ") : end]) if end > 0 else None
            if extra is None:
                return _parse_receipt_checked(text)
            pos = end + 1
        end = text.find("\n", pos)
        match = _INDEX.fullmatch(text, pos, end) if end > 0 else None
        if match is not None:
            # The first blank line ends the head: right after the index line if the
            # proof is empty, else right after the hash lines. No earlier line can be
            # blank (each was found by its own newline).
            if text.startswith("\n", end + 1):
                proof: tuple[bytes, ...] | None = ()
                blank = end
            else:
                proof, blank = _decode_hash_block(text, end + 1)
            checkpoint = text[blank + 2 :]
            index = int(match.group(1))
            if (
                proof is not None
                and index <= MAX_TREE_SIZE
                and checkpoint.endswith("\n")
                and not checkpoint.startswith("\n")
            ):
                return Receipt._checked_by_parser(index, proof, checkpoint, extra)
    return _parse_receipt_checked(text)


def _parse_receipt_checked(text: bytes | str) -> Receipt:
    """Return what :func:`parse_receipt` returns, checking line by line; raise
    MalformedReceipt naming the first line that is wrong."""
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


def _decode_hash_block(text: str, start: int) -> tuple[tuple[bytes, ...] | None, int]:
    """Return the 32-byte hashes of the lines of canonical base64 that start at
    ``text[start]`` and end at a blank line, and the position of that blank line;
    (None, -1) if there is no such block of at most MAX_PROOF_HASHES lines.

    One regular expression finds and checks every line (:data:`_HASH_LINE`,
    repeated) and one base64 call decodes them all. A line is 43 characters and
    ``=``; the expression has checked that the 43rd character leaves its 2 low bits
    zero, so with the ``=`` read as ``A`` (six zero bits) and the newlines dropped,
    each line is 11 whole base64 quanta decoding to its hash and one zero byte
    (RFC 4648 §4). The 33-byte records are then cut apart by one ``struct`` call.
    """
    block = _HASH_BLOCK.match(text, start)
    if block is None:
        return None, -1
    stop = block.end()
    if stop - start > _MAX_HASH_BLOCK_CHARS or not text.startswith("\n\n", stop):
        return None, -1
    raw = binascii.a2b_base64(text[start:stop].encode("ascii").translate(_PAD_AS_ZERO_BITS, b"\n"))
    return _RECORDS[len(raw) // (HASH_SIZE + 1)].unpack(raw), stop


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
        # The last key list seen and its frozenset, as ONE tuple so that threads can
        # never pair one list with another's set: most callers pass the same keys on
        # every call, and hashing them each time costs more than the lookup.
        self._last_keys: tuple[tuple[VerifierKey, ...], frozenset[VerifierKey]] = ((), frozenset())

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
        keys_tuple = tuple(keys)
        last = self._last_keys
        if last[0] == keys_tuple:
            key_set = last[1]
        else:
            key_set = frozenset(keys_tuple)
            self._last_keys = (keys_tuple, key_set)
        cache_key = (data, key_set, origin)
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
    # Every field comes from a checked Receipt or Checkpoint, so skip the frozen
    # dataclass's per-field __init__ (this is on the hot path of bulk verification).
    verified = object.__new__(VerifiedReceipt)
    verified.__dict__.update(
        origin=cp.origin,
        size=cp.size,
        root=cp.root,
        index=r.index,
        leaf=leaf,
        leaf_hash=hashed,
        signed_by=signed_by,
    )
    return verified
