"""The verifier's error types: one root, one subclass per kind of failure.

Every parser and verifier in this package ends in a subclass of
:class:`VerificationError` when its input is bad or a check fails; never in
another exception type. Errors that come from malformed input also inherit
:class:`ValueError`, so callers that only care about "bad value" can catch that.

Errors carry their evidence (expected and computed roots, the sizes involved) as
attributes, so a tool can print exactly what did not match.
"""

from __future__ import annotations

__all__ = [
    "BadProofShape",
    "InconsistentTrees",
    "InvalidSignature",
    "LeafMismatch",
    "MalformedBundle",
    "MalformedCheckpoint",
    "MalformedKey",
    "MalformedNote",
    "MalformedReceipt",
    "MalformedTile",
    "OriginMismatch",
    "RootMismatch",
    "TooManySignatures",
    "UnknownKey",
    "VerificationError",
]


class VerificationError(Exception):
    """Root of every error raised by the ``verifier`` package."""


class MalformedKey(VerificationError, ValueError):
    """A verifier key (vkey) or signer key string is not well formed."""


class MalformedNote(VerificationError, ValueError):
    """A signed note is not well formed (C2SP signed-note)."""


class TooManySignatures(MalformedNote):
    """A signed note carries more signature lines than we are willing to check."""


class MalformedCheckpoint(VerificationError, ValueError):
    """A checkpoint body is not canonical C2SP tlog-checkpoint text."""


class MalformedTile(VerificationError, ValueError):
    """A tile path or tile body is not well formed (C2SP tlog-tiles)."""


class MalformedBundle(VerificationError, ValueError):
    """An entry bundle is not well formed (C2SP tlog-tiles)."""


class MalformedReceipt(VerificationError, ValueError):
    """A receipt is not well formed (C2SP tlog-proof)."""


class UnknownKey(VerificationError):
    """No trusted key signed the note."""


class InvalidSignature(VerificationError):
    """A trusted key's signature does not verify."""


class OriginMismatch(VerificationError):
    """A checkpoint names a different origin from the one expected."""

    def __init__(self, message: str, *, expected: str, got: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got


class BadProofShape(VerificationError, ValueError):
    """A proof has the wrong number of hashes, a hash of the wrong length, or
    impossible sizes or indexes for the tree it claims to be about."""


class RootMismatch(VerificationError):
    """A proof does not lead to the expected root hash.

    Attributes ``expected`` and ``computed`` hold the two roots.
    """

    def __init__(self, message: str, *, expected: bytes, computed: bytes) -> None:
        super().__init__(message)
        self.expected = expected
        self.computed = computed


class InconsistentTrees(VerificationError):
    """Two tree heads cannot both be honest views of one append-only log
    (a consistency proof failed, or a tree got smaller)."""


class LeafMismatch(VerificationError):
    """A receipt is about a different leaf from the one the caller holds.

    Attributes ``expected`` (the caller's leaf) and ``got`` (the receipt's leaf).
    """

    def __init__(self, message: str, *, expected: bytes, got: bytes) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got
