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
    "BodyMismatch",
    "FetchFailed",
    "InconsistentCheckpoints",
    "InconsistentTrees",
    "InvalidSignature",
    "LeafMismatch",
    "MalformedBundle",
    "MalformedCheckpoint",
    "MalformedKey",
    "MalformedNote",
    "MalformedReceipt",
    "MalformedState",
    "MalformedTile",
    "OriginMismatch",
    "ResourceNotFound",
    "RootMismatch",
    "SourceUnavailable",
    "TileMismatch",
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


# --- the auditor and its HTTP / local-directory client (verifier.audit, verifier.client) ---


class FetchFailed(VerificationError):
    """A log answered, but not with what a C2SP tlog-tiles log must serve: an HTTP
    error status, a timeout, a truncated or over-long response, an undecodable body.

    Attributes ``url`` (the URL or file that was fetched) and ``status`` (the HTTP
    status, or None when there was none). ``tlog-verify`` exits 1: the log failed.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class ResourceNotFound(FetchFailed):
    """A tile, entry bundle, checkpoint or proof the log must serve is missing
    (HTTP 404, or no such file in a local log directory)."""


class SourceUnavailable(VerificationError):
    """The log cannot be reached at all: a bad URL, a refused connection, an unknown
    host, a TLS failure, a local directory that does not exist or a file that cannot
    be read. An I/O problem on the auditor's side rather than evidence against the
    log, so ``tlog-verify`` exits 2. Attribute ``url``."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class TileMismatch(VerificationError):
    """A tile or entry bundle disagrees with what the rest of the log implies
    (C2SP tlog-tiles): a leaf of a bundle does not hash to the level-0 tile, or a
    hash in a higher tile is not the root of the tile below it.

    Attributes ``path`` (the tile found wrong), ``position`` (the hash's position in
    it), ``index`` (the first leaf index the hash covers), ``expected`` (the hash
    recomputed from the level below) and ``got`` (the hash the log served).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        position: int,
        index: int,
        expected: bytes,
        got: bytes,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.position = position
        self.index = index
        self.expected = expected
        self.got = got


class InconsistentCheckpoints(InconsistentTrees):
    """Two checkpoints of one log cannot both be honest: the newer one is smaller
    (the log shrank), or it does not extend the older one (history was rewritten,
    or the log forked). C2SP tlog-checkpoint: a log MUST NOT sign such a pair.

    Attributes ``old`` and ``new`` hold both signed checkpoints verbatim, the
    evidence to publish; ``old_size`` and ``new_size`` their sizes.
    """

    def __init__(self, message: str, *, old: str, new: str, old_size: int, new_size: int) -> None:
        super().__init__(message)
        self.old = old
        self.new = new
        self.old_size = old_size
        self.new_size = new_size


class MalformedState(VerificationError, ValueError):
    """An auditor state file (the last verified checkpoint) cannot be used: not JSON,
    missing fields, or a checkpoint that no longer verifies. Local input, so
    ``tlog-verify`` exits 2."""


class BodyMismatch(VerificationError):
    """An artifact body does not have the SHA-256 or size its leaf commits to.

    Attributes ``expected`` and ``got``: (sha256 digest, size) pairs, the leaf's and
    the body's.
    """

    def __init__(
        self, message: str, *, expected: tuple[bytes, int], got: tuple[bytes, int]
    ) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got
