"""Reading a Bucket leaf (the entry envelope) without trusting it: claims, not proofs.

A Bucket leaf is the deterministic CBOR (RFC 8949 §4.2.1) encoding of a map with
schema version ``v: 1`` and the fields ``product``, ``artifact_type``,
``artifact_id``, ``version``, ``prev_index``, ``integrated_at`` (server time in
milliseconds since the Unix epoch), ``principal``, ``body_sha256``, ``body_size``
and ``metadata``. A receipt proves that *these bytes* sit at an index of a signed
tree; it proves nothing about whether what they say is true. So this module only
decodes them for display and for one real check: a body file's SHA-256 and size
against the ``body_sha256`` and ``body_size`` the leaf commits to.

The decoder handles the CBOR subset an envelope uses (RFC 8949 §3: unsigned and
negative integers, byte and text strings, arrays, maps with text keys, false, true,
null and floats) with definite lengths only, no tags, no duplicate keys and a depth
limit; anything else means "not an envelope" (None), never an exception.

>>> leaf = bytes.fromhex("a2617601") + b"\\x67product" + b"\\x63abc"
>>> decode_envelope(leaf)
Envelope(fields={'v': 1, 'product': 'abc'})
>>> decode_envelope(b"not cbor") is None
True
"""

from __future__ import annotations

import datetime
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from verifier.errors import BodyMismatch

__all__ = ["ENVELOPE_FIELDS", "Envelope", "decode_cbor", "decode_envelope"]

ENVELOPE_FIELDS = (
    "v",
    "product",
    "artifact_type",
    "artifact_id",
    "version",
    "prev_index",
    "integrated_at",
    "principal",
    "body_sha256",
    "body_size",
    "metadata",
)
"""The fields of a version-1 Bucket entry envelope, in display order."""

_MAX_DEPTH = 32


class _NotCBOR(Exception):
    """Raised inside the decoder; :func:`decode_cbor` turns it into None."""


@dataclass(frozen=True)
class Envelope:
    """The decoded fields of a leaf that is a CBOR map with text keys. Unverified:
    every value is what the submitter and the server *claim*."""

    fields: dict[str, Any]

    @property
    def body_sha256(self) -> bytes | None:
        """The SHA-256 of the body the leaf commits to, if it names a 32-byte one."""
        value = self.fields.get("body_sha256")
        return value if isinstance(value, bytes) and len(value) == 32 else None

    @property
    def body_size(self) -> int | None:
        """The body size the leaf commits to, if it names a non-negative integer."""
        value = self.fields.get("body_size")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        return None

    def check_body(self, digest: bytes, size: int) -> None:
        """Return (None) if a body with SHA-256 ``digest`` and ``size`` bytes is the one
        the leaf commits to (its ``body_sha256`` and ``body_size``).

        Raises BodyMismatch if it is not, or if the leaf names no such fields.
        """
        want_hash, want_size = self.body_sha256, self.body_size
        if want_hash is None or want_size is None:
            raise BodyMismatch(
                "cannot check the body: the leaf names no body_sha256 (32 bytes) and body_size",
                expected=(b"", -1),
                got=(digest, size),
            )
        if digest != want_hash or size != want_size:
            raise BodyMismatch(
                f"the body has SHA-256 {digest.hex()} and {size} bytes, but the leaf "
                f"commits to SHA-256 {want_hash.hex()} and {want_size} bytes",
                expected=(want_hash, want_size),
                got=(digest, size),
            )

    def describe(self) -> dict[str, str]:
        """Return each field as display text: hashes in hex, times in UTC ISO 8601."""
        shown: dict[str, str] = {}
        order = [k for k in ENVELOPE_FIELDS if k in self.fields]
        order += sorted(k for k in self.fields if k not in ENVELOPE_FIELDS)
        for key in order:
            value = self.fields[key]
            if key == "integrated_at" and isinstance(value, int) and 0 <= value < 2**53:
                when = datetime.datetime.fromtimestamp(value / 1000, datetime.UTC)
                shown[key] = f"{value} ({when.isoformat(timespec='milliseconds')})"
            else:
                shown[key] = _show(value)
        return shown


def decode_envelope(leaf: bytes) -> Envelope | None:
    """Return the leaf's fields if it is one CBOR map with text keys, else None."""
    item = decode_cbor(leaf)
    if not isinstance(item, _Found) or not isinstance(item.value, dict):
        return None
    if not all(isinstance(k, str) for k in item.value):
        return None
    return Envelope(item.value)


@dataclass(frozen=True)
class _Found:
    value: Any


def decode_cbor(data: bytes) -> _Found | None:
    """Return the one CBOR data item that is all of ``data`` (wrapped, since the item
    may itself be null), or None if ``data`` is not that (RFC 8949 §3, the subset
    described in the module docstring)."""
    try:
        value, pos = _item(data, 0, 0)
    except (_NotCBOR, IndexError, struct.error, UnicodeDecodeError, RecursionError):
        return None
    return _Found(value) if pos == len(data) else None


def _head(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """Return (major type, additional info, argument, next position)."""
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if info < 24:
        return major, info, info, pos
    if info > 27:
        raise _NotCBOR("indefinite length or reserved additional information")
    n = 1 << (info - 24)
    if pos + n > len(data):
        raise _NotCBOR("truncated")
    return major, info, int.from_bytes(data[pos : pos + n], "big"), pos + n


def _item(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    """Return the data item at ``pos`` and the position after it."""
    if depth > _MAX_DEPTH:
        raise _NotCBOR("nested too deeply")
    major, info, arg, pos = _head(data, pos)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        end = pos + arg
        if end > len(data):
            raise _NotCBOR("truncated string")
        raw = data[pos:end]
        return (raw if major == 2 else raw.decode("utf-8")), end
    if major == 4:
        if arg > len(data) - pos:
            raise _NotCBOR("array longer than the data")
        items = []
        for _ in range(arg):
            value, pos = _item(data, pos, depth + 1)
            items.append(value)
        return items, pos
    if major == 5:
        if arg > len(data) - pos:
            raise _NotCBOR("map longer than the data")
        mapping: dict[Any, Any] = {}
        for _ in range(arg):
            key, pos = _item(data, pos, depth + 1)
            if not isinstance(key, str | int) or key in mapping:
                raise _NotCBOR("map key is not text or an integer, or is repeated")
            mapping[key], pos = _item(data, pos, depth + 1)
        return mapping, pos
    if major == 7:
        simple: dict[int, Any] = {20: False, 21: True, 22: None}
        if info < 24 and arg in simple:
            return simple[arg], pos
        if info == 25:
            return _half(arg), pos
        if info == 26:
            return struct.unpack(">f", arg.to_bytes(4, "big"))[0], pos
        if info == 27:
            return struct.unpack(">d", arg.to_bytes(8, "big"))[0], pos
    raise _NotCBOR("tag or unsupported simple value")


def _half(bits: int) -> float:
    """Return the IEEE 754 half-precision float with these 16 bits (RFC 8949 App. D)."""
    exponent, mantissa = (bits >> 10) & 0x1F, bits & 0x3FF
    if exponent == 0:
        value = math.ldexp(mantissa, -24)
    elif exponent == 0x1F:
        value = math.inf if mantissa == 0 else math.nan
    else:
        value = math.ldexp(mantissa + 1024, exponent - 25)
    return -value if bits & 0x8000 else value


def _show(value: Any, limit: int = 200) -> str:
    """Return ``value`` as one line of display text: bytes in hex, text as is, the
    rest as JSON (bytes in it as hex), cut at ``limit`` characters."""
    if isinstance(value, bytes):
        text = value.hex()
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, default=_json_default)
    # One printable line, whatever the claim holds (no terminal escapes, no newlines).
    text = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_default(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot show {type(value).__name__}")
