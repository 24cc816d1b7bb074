"""The service's error types: one root, one subclass per kind of failure.

Each class carries a stable snake_case ``code`` that the HTTP layer puts in the
RFC 9457 problem body; the HTTP status for each class is chosen in one table in
``tlog.http``. Bad input raises one of these; our own bugs raise AssertionError.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InvalidEntry",
    "KeyProblem",
    "LeafTooLarge",
    "NotFound",
    "PayloadTooLarge",
    "Pushback",
    "StorageFull",
    "TlogError",
    "Unauthorized",
    "UnsupportedMediaType",
]


class TlogError(Exception):
    """Root of every error raised by the ``tlog`` package.

    ``threat`` names the threat of the certification document this refusal is a
    detection of (tlog.governance.THREATS), if any: the HTTP layer counts it and
    writes a ``threat`` audit record beside the ``refusal`` record.
    """

    code = "internal_error"
    threat: str | None = None


class BadRequest(TlogError, ValueError):
    """The request is malformed: bad syntax, a size beyond the tree, a bad index."""

    code = "bad_request"


class InvalidEntry(BadRequest):
    """The entry is well formed but breaks the envelope schema or the product's rules."""

    code = "invalid_entry"


class LeafTooLarge(InvalidEntry):
    """The leaf is over 65,535 bytes, the C2SP tlog-tiles entry-bundle limit."""

    code = "leaf_too_large"


class PayloadTooLarge(BadRequest):
    """The request body or the artifact is over its size limit."""

    code = "payload_too_large"


class UnsupportedMediaType(BadRequest):
    """The request body's Content-Type is not one we accept."""

    code = "unsupported_media_type"


class NotFound(TlogError, LookupError):
    """The log, entry, tile, artifact or checkpoint does not exist."""

    code = "not_found"


class Conflict(TlogError):
    """The request contradicts something already recorded (e.g. an idempotency key reused
    with other content)."""

    code = "conflict"
    threat = "concurrent_write_collision"


class Unauthorized(TlogError):
    """No credentials, or credentials we do not know."""

    code = "unauthorized"


class Forbidden(TlogError):
    """Known credentials that do not allow this operation on this resource."""

    code = "forbidden"


class Pushback(TlogError):
    """The service cannot take this write now; try again later."""

    code = "pushback"


class StorageFull(TlogError):
    """The storage (LMDB map) has no room for this write; nothing was written."""

    code = "storage_full"


class EntryLimit(StorageFull):
    """The certified entry count of a product or of the service is reached (507)."""

    code = "entry_limit_reached"


class KeyProblem(TlogError):
    """A log's signing key is missing, unreadable, or not the key the log was created with."""

    code = "key_problem"
