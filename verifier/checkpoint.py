"""C2SP tlog-checkpoint: the signed tree head of a transparency log.

A checkpoint (c2sp.org/tlog-checkpoint@v1.0.0) is a signed note whose text is the
log's origin, its tree size in decimal and its RFC 6962 root hash in base64, one per
line, optionally followed by non-empty extension lines. Parsing is strict: exactly
one text encodes a given checkpoint, so nothing in a signed checkpoint can change
without changing the signed bytes.

>>> from verifier.note import Signer
>>> from verifier.hashing import EMPTY_ROOT
>>> signer = Signer.from_seed("example.com/log", bytes(32))
>>> signed = sign_checkpoint(Checkpoint("example.com/log", 0, EMPTY_ROOT), signer)
>>> print(signed.split("\\n\\n")[0])
example.com/log
0
47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=
>>> open_checkpoint(signed, [signer.verifier_key], origin="example.com/log").size
0
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from verifier.errors import MalformedCheckpoint, OriginMismatch
from verifier.hashing import HASH_SIZE
from verifier.note import (
    Signer,
    VerifiedNote,
    VerifierKey,
    _b64decode_canonical,
    _b64encode,
    open_note,
    sign_note,
)

__all__ = [
    "MAX_TREE_SIZE",
    "Checkpoint",
    "format_checkpoint",
    "open_checkpoint",
    "open_checkpoint_note",
    "parse_checkpoint",
    "sign_checkpoint",
]

MAX_TREE_SIZE = 2**64 - 1
"""Largest tree size we accept: sizes are uint64 everywhere in the C2SP tlog specs."""

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")  # ASCII only; int() would accept more
_CONTROL = re.compile(r"[\x00-\x1f]")


@dataclass(frozen=True)
class Checkpoint:
    """An RFC 6962 tree head as named by a log: origin, size, root and extension lines.

    Construction checks the fields (C2SP tlog-checkpoint §Note text) and raises
    MalformedCheckpoint: a non-empty origin without leading or trailing whitespace,
    0 <= size < 2**64, a 32-byte root, non-empty extension lines; no line may hold a
    newline or another control character.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise MalformedCheckpoint("checkpoint origin is empty")
        if self.origin != self.origin.strip():
            raise MalformedCheckpoint(
                f"checkpoint origin {self.origin!r} has leading or trailing whitespace"
            )
        if _CONTROL.search(self.origin):
            raise MalformedCheckpoint(
                f"checkpoint origin {self.origin!r} contains a control character"
            )
        if (
            not isinstance(self.size, int)
            or isinstance(self.size, bool)
            or not 0 <= self.size <= MAX_TREE_SIZE
        ):
            raise MalformedCheckpoint(f"checkpoint size {self.size!r} is not in 0..2**64-1")
        if not isinstance(self.root, bytes):
            raise MalformedCheckpoint(f"checkpoint root must be bytes, not {self.root!r}")
        if len(self.root) != HASH_SIZE:
            raise MalformedCheckpoint(
                f"checkpoint root is {len(self.root)} bytes, want {HASH_SIZE}"
            )
        for line in self.extensions:
            if not isinstance(line, str) or not line or _CONTROL.search(line):
                raise MalformedCheckpoint(
                    f"checkpoint extension line {line!r} is empty or holds a control character"
                )


def format_checkpoint(cp: Checkpoint) -> str:
    """Return the checkpoint note text ``origin\\nsize\\nbase64(root)\\n[extensions\\n]``.

    C2SP tlog-checkpoint §Note text. The result ends in a newline and is ready to sign.
    """
    lines = [cp.origin, str(cp.size), _b64encode(cp.root), *cp.extensions]
    return "\n".join(lines) + "\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Return the checkpoint in a note text, accepting only the canonical encoding.

    C2SP tlog-checkpoint §Note text: at least three lines, each ending in newline; the
    origin; the size in ASCII decimal without sign or leading zeros; the root as
    standard padded base64 of exactly 32 bytes (canonical: re-encodes identically);
    then non-empty extension lines. Raises MalformedCheckpoint otherwise.

    Only parse text that :func:`~verifier.note.open_note` returned: the text of an
    unverified note means nothing. :func:`open_checkpoint` does both.
    """
    if not isinstance(text, str):
        raise MalformedCheckpoint(f"checkpoint text must be str, not {type(text).__name__}")
    if not text.endswith("\n"):
        raise MalformedCheckpoint("checkpoint text does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise MalformedCheckpoint(
            f"checkpoint text has {len(lines)} lines, want origin, size and root hash"
        )
    origin, size_line, root_line, *extensions = lines
    if not _DECIMAL.fullmatch(size_line):
        raise MalformedCheckpoint(
            f"checkpoint size {size_line[:40]!r} is not a decimal number without leading "
            "zeros or sign"
        )
    root = _b64decode_canonical(root_line)
    if root is None:
        raise MalformedCheckpoint(
            f"checkpoint root hash {root_line[:80]!r} is not canonical standard base64"
        )
    return Checkpoint(origin, int(size_line), root, tuple(extensions))


def sign_checkpoint(cp: Checkpoint, signer: Signer) -> str:
    """Return the signed note for ``cp``: its text, a blank line and ``signer``'s line.

    C2SP tlog-checkpoint §Signatures: the log's key name should equal the origin.
    """
    return sign_note(format_checkpoint(cp), [signer])


def open_checkpoint_note(
    data: bytes | str, keys: Sequence[VerifierKey], *, origin: str | None = None
) -> tuple[Checkpoint, VerifiedNote]:
    """Return the checkpoint in a signed note and the verified note itself.

    Same checks and errors as :func:`open_checkpoint`; the note says which trusted keys
    signed (``verified_by``), which tools want to report.
    """
    note = open_note(data, keys)
    cp = parse_checkpoint(note.text)
    if origin is not None and cp.origin != origin:
        raise OriginMismatch(
            f"checkpoint is for origin {cp.origin!r}, expected {origin!r}",
            expected=origin,
            got=cp.origin,
        )
    return cp, note


def open_checkpoint(
    data: bytes | str, keys: Sequence[VerifierKey], *, origin: str | None = None
) -> Checkpoint:
    """Return the checkpoint in a signed note after verifying it.

    1. :func:`~verifier.note.open_note` with the trusted ``keys`` (MalformedNote,
       TooManySignatures, InvalidSignature, UnknownKey);
    2. :func:`parse_checkpoint` on the verified text (MalformedCheckpoint);
    3. if ``origin`` is given, the checkpoint must name it (OriginMismatch).

    Pass ``origin`` whenever ``keys`` may hold keys of other logs: a key vouches for
    whatever origin it signs.
    """
    return open_checkpoint_note(data, keys, origin=origin)[0]
