"""The entry envelope: what one leaf of a product's log says, as deterministic CBOR.

Every leaf of a Bucket log is the encoding of one :class:`Envelope`, a CBOR map (RFC 8949
§3.1, major type 5) with eleven text keys. It holds the provenance of one artifact version
that must never change: which product and artifact it belongs to, its version number and the
log index of the previous version, when the server integrated it, which principal wrote it,
and the SHA-256 and size of the body (the body itself is stored beside the log, keyed by its
hash; the leaf commits to it), plus a small JSON-compatible ``metadata`` map.

Why deterministic CBOR
    The leaf hash, ``SHA-256(0x00 || leaf)`` (RFC 6962 §2.1), is what receipts and
    checkpoints commit to, so one envelope must have exactly one byte string. We use the core
    deterministic encoding of RFC 8949 §4.2.1: integers and lengths in their shortest form
    (the "preferred serialization" of §4.1), floats in the shortest of half, single or double
    precision that keeps the value, no indefinite lengths, and the keys of every map sorted
    bytewise by their encoded form. Where §4.2.2 leaves choices to the application, we make
    them by refusing the values: no NaN or infinities, no tags, no simple values but false,
    true and null, and integers never stand in for floats or floats for integers.
    :func:`decode_envelope` accepts only that one encoding: it re-encodes what it decoded and
    rejects the leaf unless the bytes are identical, so no two leaves can carry the same
    envelope (no malleability), and anyone can rebuild a leaf from its decoded view.

Map key order
    RFC 8949 §4.2.1 sorts map keys by the bytewise lexicographic order of their deterministic
    encodings. ``cbor2.dumps(..., canonical=True)`` instead implements the older "length-first"
    order of RFC 7049 §3.9 (shorter encoded key first, then bytewise), and the two orders
    differ when keys of different major types are mixed (e.g. ``-1`` encodes as ``0x20`` and
    sorts after ``100``, ``0x18 0x64``, bytewise, but before it length-first). We implement
    RFC 8949 §4.2.1. Every map we write or accept has text keys only (major type 3), and for
    keys of one major type the orders are the same: a text key's head encodes its UTF-8 length
    in shortest form, so a longer key has a longer encoding *and* a head that compares greater
    bytewise (``0x77`` < ``0x78 0x18`` < ``0x78 0xff`` < ``0x79 0x01 0x00``), and keys of equal
    length compare by their UTF-8 bytes in both orders. So cbor2's canonical mode is exactly
    RFC 8949 §4.2.1 for this schema; the tests check it against an independent encoder.

Why the schema is frozen
    Leaves are immutable and live forever in signed trees. Version 1 of this schema (``v: 1``)
    is frozen: a golden test pins the exact bytes of known envelopes, so any change to field
    names, field rules or the encoding fails loudly instead of silently producing leaves that
    older verifiers cannot read. A change of schema means a new ``v`` and a new decoder, never
    an edit to this one.

Worked example::

    >>> import hashlib
    >>> e = Envelope(
    ...     product="gurukul", artifact_type="lesson", artifact_id="algebra/linear-1",
    ...     version=1, prev_index=None, integrated_at=1_700_000_000_000,
    ...     principal="key:3f2a9c1d", body_sha256=hashlib.sha256(b"").digest(),
    ...     body_size=0, metadata={"lang": "en"},
    ... )
    >>> leaf = encode_envelope(e)
    >>> leaf[:3].hex()  # map(11), then the shortest key first: text(1) "v", then 1
    'ab6176'
    >>> len(leaf)
    212
    >>> decode_envelope(leaf) == e
    True
    >>> envelope_to_json(e)["body_sha256"][:16]
    'e3b0c44298fc1c14'

Field rules (every one enforced on encode and on decode; failures raise
:class:`~tlog.errors.InvalidEntry` naming the field):

- ``v``: 1, the schema version.
- ``product``, ``artifact_type``: ``^[a-z0-9][a-z0-9-]{0,62}$``.
- ``artifact_id``: 1..256 characters, no control characters (Unicode category Cc), no leading
  or trailing whitespace.
- ``version``: int >= 1. ``prev_index``: null exactly when ``version == 1``, else int >= 0.
- ``integrated_at``: milliseconds since the Unix epoch, int >= 0.
- ``principal``: 1..128 characters, no control characters.
- ``body_sha256``: exactly 32 bytes. ``body_size``: int >= 0.
- ``metadata``: see :func:`validate_metadata`.

Integers in the envelope's own fields are also at most ``2**63 - 1``, and integers in metadata
within signed 64-bit range, so the leaf never needs a bignum tag (RFC 8949 §3.4.3).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import cbor2

from tlog.errors import InvalidEntry, LeafTooLarge

__all__ = [
    "MAX_LEAF_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "SCHEMA_VERSION",
    "Envelope",
    "EnvelopeTemplate",
    "decode_cbor_strict",
    "decode_envelope",
    "encode_envelope",
    "encode_metadata",
    "envelope_template",
    "envelope_to_json",
    "prepare_envelope",
    "validate_metadata",
]

SCHEMA_VERSION = 1
MAX_METADATA_BYTES = 16384
"""Most bytes the deterministic CBOR encoding of the metadata map may take."""
MAX_LEAF_BYTES = 65535
"""Most bytes of one leaf: C2SP tlog-tiles entry bundles use a uint16 length prefix."""
MAX_METADATA_DEPTH = 16
"""Most levels of container nesting in metadata; the metadata map itself is level 1."""

_MAX_ARTIFACT_ID_CHARS = 256
_MAX_PRINCIPAL_CHARS = 128
_SHA256_BYTES = 32
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_NAME_PATTERN = "^[a-z0-9][a-z0-9-]{0,62}$"
_SCALAR_TYPES = (str, int, float, bool, type(None))
_PLAIN_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

# The envelope's keys, in the order RFC 8949 §4.2.1 puts them (shortest encodings first,
# then bytewise), which is also the order of the JSON view. cbor2 sorts on its own.
_KEYS = (
    "v",
    "product",
    "version",
    "metadata",
    "body_size",
    "principal",
    "prev_index",
    "artifact_id",
    "body_sha256",
    "artifact_type",
    "integrated_at",
)


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """One leaf's content, schema version 1 (the ``v`` key is implied, see SCHEMA_VERSION).

    Construction does not validate; :func:`encode_envelope` does. ``metadata`` takes part in
    equality but not in hashing, so an envelope is hashable although its metadata is a dict.
    """

    product: str
    artifact_type: str
    artifact_id: str
    version: int
    prev_index: int | None
    integrated_at: int
    principal: str
    body_sha256: bytes
    body_size: int
    metadata: Mapping[str, Any] = field(hash=False)


def _show(value: object, limit: int = 40) -> str:
    """Return a short repr of a rejected value for an error message (never the whole thing)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _utf8(where: str, text: str) -> bytes:
    """Return the UTF-8 encoding of text; raises InvalidEntry on lone surrogates.

    CBOR text strings are UTF-8 (RFC 8949 §3.1, major type 3), which cannot carry surrogates.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEntry(f"{where}: not valid Unicode (lone surrogate)") from exc


# Unicode category Cc is exactly C0 (U+0000..U+001F), DEL (U+007F) and C1 (U+0080..U+009F);
# a test checks the class against unicodedata for every code point.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")


def _has_control(text: str) -> bool:
    """Return whether text holds a control character (Unicode category Cc: C0, DEL, C1)."""
    return _CONTROL_RE.search(text) is not None


def _is_int(value: object) -> TypeGuard[int]:
    """Return whether value is exactly an int: not a bool, not another int subclass.

    Exact types everywhere: a bool would encode as a CBOR simple value (RFC 8949 §3.3), and
    subclasses (enums) may not encode as the value they compare equal to.
    """
    return type(value) is int


def _check_name(name: str, value: object) -> None:
    """Check a product or artifact-type name; raises InvalidEntry."""
    if type(value) is not str or not _NAME_RE.fullmatch(value):
        raise InvalidEntry(f"{name}: must be a string matching {_NAME_PATTERN}, got {_show(value)}")


def _check_text(name: str, value: object, max_chars: int, *, trim: bool) -> None:
    """Check a free-text field of 1..max_chars characters; raises InvalidEntry."""
    if type(value) is not str:
        raise InvalidEntry(f"{name}: must be a str, got {type(value).__name__}")
    if not 1 <= len(value) <= max_chars:
        raise InvalidEntry(f"{name}: must be 1..{max_chars} characters, got {len(value)}")
    _utf8(name, value)
    if _has_control(value):
        raise InvalidEntry(f"{name}: must not contain control characters")
    if trim and (value[0].isspace() or value[-1].isspace()):
        raise InvalidEntry(f"{name}: must not start or end with whitespace")


def _check_int(name: str, value: object, minimum: int) -> None:
    """Check an integer field lies in minimum..2**63-1; raises InvalidEntry."""
    if not _is_int(value):
        raise InvalidEntry(f"{name}: must be an int, got {type(value).__name__}")
    if not minimum <= value <= _INT64_MAX:
        raise InvalidEntry(f"{name}: must be an integer in {minimum}..2**63-1, got {value}")


def _child_path(path: str, key: str) -> str:
    """Return the error-message path of a map member: ``a.b``, or ``a['odd key']``."""
    if _PLAIN_KEY_RE.fullmatch(key) and len(key) <= 40:
        return f"{path}.{key}"
    return f"{path}[{_show(key)}]"


def _plain_metadata(value: object, path: str, depth: int, budget: list[int]) -> Any:
    """Return a plain copy of one metadata value; raises InvalidEntry naming path.

    depth is the container level value would occupy (the metadata map is level 1). budget[0]
    counts bytes the encoding needs at least (one head byte per item plus UTF-8 string bytes),
    so that oversized or self-referencing input is refused before anything big is built.
    Scalars must be exactly str, int, float, bool or None (see _is_int for why exactly).
    """
    budget[0] += 1
    if type(value) not in _SCALAR_TYPES and not isinstance(value, list | tuple | Mapping):
        raise InvalidEntry(f"{path}: unsupported type {type(value).__name__}")
    copy: Any
    if value is None or isinstance(value, bool):
        copy = value
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidEntry(f"{path}: integers must fit in signed 64 bits")
        copy = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEntry(f"{path}: floats must be finite")
        copy = value
    elif isinstance(value, str):
        budget[0] += len(_utf8(path, value))
        copy = value
    elif depth > MAX_METADATA_DEPTH:
        raise InvalidEntry(f"{path}: nesting deeper than {MAX_METADATA_DEPTH} levels")
    elif isinstance(value, Mapping):
        copy = {}
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidEntry(f"{path}: keys must be str, got {_show(key)}")
            child = _child_path(path, key)
            budget[0] += 1 + len(_utf8(child, key))
            copy[key] = _plain_metadata(item, child, depth + 1, budget)
    elif isinstance(value, list | tuple):
        copy = [
            _plain_metadata(item, f"{path}[{i}]", depth + 1, budget) for i, item in enumerate(value)
        ]
    else:
        raise AssertionError("bad type dispatch: every other type was refused above")
    if budget[0] > MAX_METADATA_BYTES:
        raise InvalidEntry(f"metadata: encoded size exceeds {MAX_METADATA_BYTES} bytes")
    return copy


def validate_metadata(metadata: object) -> dict[str, Any]:
    """Return a plain-dict copy of metadata; raises InvalidEntry naming the offending path.

    Metadata is a JSON-compatible map: string keys; values that are strings, integers in
    signed 64-bit range, finite floats, booleans, None, or lists (tuples are copied as lists)
    and maps of those; at most MAX_METADATA_DEPTH levels of nesting counting the map itself;
    and at most MAX_METADATA_BYTES bytes once encoded as deterministic CBOR (RFC 8949 §4.2.1).
    Paths in messages read like ``metadata.build.flags[3]: floats must be finite``.
    """
    return encode_metadata(metadata)[0]


def encode_metadata(metadata: object) -> tuple[dict[str, Any], bytes]:
    """Return a plain-dict copy of metadata and its deterministic CBOR (RFC 8949 §4.2.1).

    The rules are validate_metadata's; raises InvalidEntry naming the offending path.
    """
    if type(metadata) is dict and all(
        type(k) is str and type(v) is str for k, v in metadata.items()
    ):
        # The common case, a flat map of text (what JSON gives): the one check left is
        # UTF-8 (cbor2 refuses lone surrogates), and a size bound keeps the encoding small.
        # Anything else, or an error, takes the general path, which names the problem.
        if sum(map(len, metadata)) + sum(map(len, metadata.values())) <= MAX_METADATA_BYTES:
            try:
                flat: bytes = cbor2.dumps(metadata, canonical=True)
            except UnicodeEncodeError:
                pass
            else:
                if len(flat) <= MAX_METADATA_BYTES:
                    return dict(metadata), flat
    if not isinstance(metadata, Mapping):
        raise InvalidEntry(f"metadata: must be a map, got {type(metadata).__name__}")
    plain: dict[str, Any] = _plain_metadata(metadata, "metadata", 1, [0])
    encoded: bytes = cbor2.dumps(plain, canonical=True)
    if len(encoded) > MAX_METADATA_BYTES:
        raise InvalidEntry(
            f"metadata: encoded size exceeds {MAX_METADATA_BYTES} bytes (got {len(encoded)})"
        )
    return plain, encoded


def _to_cbor_map(envelope: Envelope) -> dict[str, Any]:
    """Return the CBOR map of envelope after checking every field; raises InvalidEntry.

    The numbered checks follow the field list in the module docstring.
    """
    e = envelope
    # 1. Names and free text.
    _check_name("product", e.product)
    _check_name("artifact_type", e.artifact_type)
    _check_text("artifact_id", e.artifact_id, _MAX_ARTIFACT_ID_CHARS, trim=True)
    _check_text("principal", e.principal, _MAX_PRINCIPAL_CHARS, trim=False)
    # 2. Version chain: prev_index is null exactly for the first version.
    _check_int("version", e.version, 1)
    if e.version == 1:
        if e.prev_index is not None:
            raise InvalidEntry(
                f"prev_index: must be null when version is 1, got {_show(e.prev_index)}"
            )
    elif e.prev_index is None:
        raise InvalidEntry(f"prev_index: required when version > 1 (version is {e.version})")
    else:
        _check_int("prev_index", e.prev_index, 0)
    # 3. Time and body.
    _check_int("integrated_at", e.integrated_at, 0)
    if type(e.body_sha256) is not bytes:
        raise InvalidEntry(f"body_sha256: must be bytes, got {type(e.body_sha256).__name__}")
    if len(e.body_sha256) != _SHA256_BYTES:
        raise InvalidEntry(f"body_sha256: must be 32 bytes, got {len(e.body_sha256)}")
    _check_int("body_size", e.body_size, 0)
    # 4. Metadata, copied so later changes to the caller's dict cannot reach the leaf.
    metadata = validate_metadata(e.metadata)
    return {
        "v": SCHEMA_VERSION,
        "product": e.product,
        "artifact_type": e.artifact_type,
        "artifact_id": e.artifact_id,
        "version": e.version,
        "prev_index": e.prev_index,
        "integrated_at": e.integrated_at,
        "principal": e.principal,
        "body_sha256": e.body_sha256,
        "body_size": e.body_size,
        "metadata": metadata,
    }


def encode_envelope(envelope: Envelope) -> bytes:
    """Return the leaf bytes of envelope: deterministic CBOR (RFC 8949 §4.2.1).

    Raises InvalidEntry naming the field if any field breaks the schema, and LeafTooLarge if
    the leaf would exceed MAX_LEAF_BYTES (with the v1 field limits a leaf stays under about
    18 KiB, so this guards the entry-bundle format rather than a reachable case).
    """
    e = envelope
    return envelope_template(e).leaf(e.version, e.prev_index, e.integrated_at)


def envelope_template(envelope: Envelope) -> EnvelopeTemplate:
    """Return the template of an envelope's fixed fields (all but version, prev_index and
    integrated_at). Raises InvalidEntry / LeafTooLarge as prepare_envelope does."""
    e = envelope
    return prepare_envelope(
        product=e.product,
        artifact_type=e.artifact_type,
        artifact_id=e.artifact_id,
        principal=e.principal,
        body_sha256=e.body_sha256,
        body_size=e.body_size,
        metadata=e.metadata,
    )


def _cbor_uint(n: int) -> bytes:
    """Return the shortest CBOR head of unsigned integer n (RFC 8949 §3.1 major type 0, §4.1)."""
    if n < 24:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x18, n))
    if n < 0x10000:
        return b"\x19" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\x1a" + n.to_bytes(4, "big")
    return b"\x1b" + n.to_bytes(8, "big")


def _cbor_text(text: str) -> bytes:
    """Return the CBOR text string of text (RFC 8949 §3.1 major type 3, shortest head)."""
    raw = text.encode("utf-8")
    head = _cbor_uint(len(raw))
    return bytes((head[0] | 0x60,)) + head[1:] + raw


_CBOR_NULL = b"\xf6"
_MAP_HEAD = bytes((0xA0 | len(_KEYS),))  # a map of eleven pairs (RFC 8949 §3.1 major type 5)
_K = {key: _cbor_text(key) for key in _KEYS}


@dataclass(frozen=True)
class EnvelopeTemplate:
    """An envelope checked and encoded except for the three fields the sequencer fills in.

    The deterministic encoding (RFC 8949 §4.2.1) puts the keys in a fixed order (``_KEYS``),
    so the leaf is three fixed byte strings with ``version``, ``prev_index`` and
    ``integrated_at`` between them: the writer thread then spends a few concatenations per
    entry instead of a full encode. ``decode_envelope`` re-encodes every leaf with cbor2,
    and the tests compare both encoders, so the two cannot drift apart.
    """

    head: bytes
    """The map head, ``v``, ``product`` and the ``version`` key."""
    middle: bytes
    """``metadata``, ``body_size``, ``principal`` and the ``prev_index`` key."""
    tail: bytes
    """``artifact_id``, ``body_sha256``, ``artifact_type`` and the ``integrated_at`` key."""

    def leaf(self, version: int, prev_index: int | None, integrated_at: int) -> bytes:
        """Return the leaf bytes at this version, previous index and integration time.

        Raises InvalidEntry if the three break the schema (version >= 1; prev_index null
        exactly for version 1, else >= 0; integrated_at >= 0; all below 2**63) and
        LeafTooLarge over MAX_LEAF_BYTES.
        """
        _check_int("version", version, 1)
        if version == 1:
            if prev_index is not None:
                raise InvalidEntry(
                    f"prev_index: must be null when version is 1, got {_show(prev_index)}"
                )
            prev = _CBOR_NULL
        elif prev_index is None:
            raise InvalidEntry(f"prev_index: required when version > 1 (version is {version})")
        else:
            _check_int("prev_index", prev_index, 0)
            prev = _cbor_uint(prev_index)
        _check_int("integrated_at", integrated_at, 0)
        leaf = b"".join(
            (
                self.head,
                _cbor_uint(version),
                self.middle,
                prev,
                self.tail,
                _cbor_uint(integrated_at),
            )
        )
        if len(leaf) > MAX_LEAF_BYTES:
            raise LeafTooLarge(f"leaf: {len(leaf)} bytes exceeds {MAX_LEAF_BYTES}")
        return leaf

    def check_room(self, version: int, prev_index: int, integrated_at: int) -> None:
        """Raise LeafTooLarge unless the leaf at these values would fit in MAX_LEAF_BYTES.

        The size check of ``leaf`` without building the leaf: with the largest values the
        sequencer can fill in, a template that passes gives a leaf that fits. The values
        must be valid (version >= 1, prev_index and integrated_at >= 0).
        """
        size = (
            len(self.head)
            + len(self.middle)
            + len(self.tail)
            + len(_cbor_uint(version))
            + len(_cbor_uint(prev_index))
            + len(_cbor_uint(integrated_at))
        )
        if size > MAX_LEAF_BYTES:
            raise LeafTooLarge(f"leaf: {size} bytes exceeds {MAX_LEAF_BYTES}")


# The parts that depend on one name only: a service has a handful of products, types and
# principals, so each is checked and encoded once (a failed check raises and is not kept).


@functools.lru_cache(maxsize=256)
def _head_part(product: str) -> bytes:
    """Return the map head, ``v``, ``product`` and the ``version`` key; checks product."""
    _check_name("product", product)
    return (
        b"".join(
            (_MAP_HEAD, _K["v"], _cbor_uint(SCHEMA_VERSION), _K["product"], _cbor_text(product))
        )
        + _K["version"]
    )


@functools.lru_cache(maxsize=1024)
def _type_part(artifact_type: str) -> bytes:
    """Return ``artifact_type`` and the ``integrated_at`` key; checks the type name."""
    _check_name("artifact_type", artifact_type)
    return _K["artifact_type"] + _cbor_text(artifact_type) + _K["integrated_at"]


@functools.lru_cache(maxsize=4096)
def _principal_part(principal: str) -> bytes:
    """Return ``principal`` and the ``prev_index`` key; checks the principal text."""
    _check_text("principal", principal, _MAX_PRINCIPAL_CHARS, trim=False)
    return _K["principal"] + _cbor_text(principal) + _K["prev_index"]


def prepare_envelope(
    *,
    product: str,
    artifact_type: str,
    artifact_id: str,
    principal: str,
    body_sha256: bytes,
    body_size: int,
    metadata: object,
    encoded_metadata: bytes | None = None,
) -> EnvelopeTemplate:
    """Return the template of an envelope after checking every field it fixes.

    ``encoded_metadata``, if given, must be ``encode_metadata(metadata)[1]`` (the caller
    validated already); otherwise metadata is validated and encoded here. Raises
    InvalidEntry naming the field, and LeafTooLarge if even the smallest sequenced fields
    would not fit (a leaf of the largest ones may still be refused by ``leaf``).
    """
    if type(product) is not str:
        _check_name("product", product)  # raises
    head = _head_part(product)
    if type(artifact_type) is not str:
        _check_name("artifact_type", artifact_type)  # raises
    type_part = _type_part(artifact_type)
    _check_text("artifact_id", artifact_id, _MAX_ARTIFACT_ID_CHARS, trim=True)
    if type(principal) is not str:
        _check_text("principal", principal, _MAX_PRINCIPAL_CHARS, trim=False)  # raises
    principal_part = _principal_part(principal)
    if type(body_sha256) is not bytes:
        raise InvalidEntry(f"body_sha256: must be bytes, got {type(body_sha256).__name__}")
    if len(body_sha256) != _SHA256_BYTES:
        raise InvalidEntry(f"body_sha256: must be 32 bytes, got {len(body_sha256)}")
    _check_int("body_size", body_size, 0)
    if encoded_metadata is None:
        encoded_metadata = encode_metadata(metadata)[1]
    template = EnvelopeTemplate(
        head=head,
        middle=b"".join(
            (
                _K["metadata"],
                encoded_metadata,
                _K["body_size"],
                _cbor_uint(body_size),
                principal_part,
            )
        ),
        tail=b"".join(
            (
                _K["artifact_id"],
                _cbor_text(artifact_id),
                _K["body_sha256"],
                b"\x58\x20" + body_sha256,  # a 32-byte string (major type 2)
                type_part,
            )
        ),
    )
    fixed = len(template.head) + len(template.middle) + len(template.tail)
    if fixed + 3 > MAX_LEAF_BYTES:
        raise LeafTooLarge(f"leaf: at least {fixed + 3} bytes, over {MAX_LEAF_BYTES}")
    return template


def _check_structure(leaf: bytes, max_depth: int = MAX_METADATA_DEPTH + 1) -> None:
    """Check leaf is exactly one well-formed CBOR item of the kinds we use; raises InvalidEntry.

    Walks the item heads (RFC 8949 §3) without building values, and refuses: truncation,
    trailing bytes, reserved additional information (§3, values 28..30), indefinite lengths
    (§3.2, forbidden by §4.2.1), tags (§3.4), simple values other than false, true and null
    (§3.3), and nesting deeper than the envelope map plus MAX_METADATA_DEPTH. Why before cbor2:
    cbor2 runs its semantic decoders on tags (bignums, dates, shared and string references)
    while decoding, and some of them are costly or build cyclic values; none belongs in a leaf.
    Shortest-form heads and key order are left to the re-encoding check in decode_envelope.
    """
    size = len(leaf)
    pos = 0
    pending = [1]  # items still to read at each open nesting level, outermost first
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        if pos >= size:
            raise InvalidEntry(f"leaf: truncated CBOR at byte {pos}")
        start = pos
        major, info = leaf[pos] >> 5, leaf[pos] & 0x1F
        pos += 1
        if info < 24:
            argument = info
        elif info < 28:
            width = 1 << (info - 24)
            if pos + width > size:
                raise InvalidEntry(f"leaf: truncated CBOR at byte {start}")
            argument = int.from_bytes(leaf[pos : pos + width], "big")
            pos += width
        elif info == 31:
            raise InvalidEntry(f"leaf: indefinite length at byte {start} (RFC 8949 §4.2.1)")
        else:
            raise InvalidEntry(f"leaf: reserved additional information at byte {start}")
        if major in (2, 3):  # byte and text strings
            if argument > size - pos:
                raise InvalidEntry(f"leaf: truncated CBOR at byte {start}")
            pos += argument
        elif major in (4, 5):  # arrays and maps (a map holds 2 items per pair)
            if len(pending) > max_depth:  # the envelope map, then the metadata
                raise InvalidEntry(f"leaf: nesting deeper than {max_depth} levels")
            pending.append(argument if major == 4 else 2 * argument)
        elif major == 6:
            raise InvalidEntry(f"leaf: CBOR tag {argument} at byte {start} is not allowed")
        elif major == 7 and info not in (20, 21, 22, 25, 26, 27):
            raise InvalidEntry(f"leaf: simple value at byte {start} is not allowed")
    if pos != size:
        raise InvalidEntry(f"leaf: {size - pos} trailing bytes after the CBOR item")


def decode_envelope(leaf: bytes | bytearray | memoryview) -> Envelope:
    """Return the envelope encoded in leaf; raises InvalidEntry on anything else.

    Strict, in this order:

    1. at most MAX_LEAF_BYTES bytes (LeafTooLarge, a kind of InvalidEntry);
    2. exactly one well-formed CBOR item without tags or indefinite lengths (see
       _check_structure), decoded with duplicate map keys refused (RFC 8949 §5.6);
    3. a map with exactly the eleven keys of schema v1, ``v`` equal to 1;
    4. every field valid, as encode_envelope checks them;
    5. re-encoding gives the same bytes, so only the deterministic encoding of RFC 8949
       §4.2.1 is accepted (key order, shortest integers, lengths and floats).

    Every failure, including cbor2's own decoder errors, surfaces as InvalidEntry.
    """
    if not isinstance(leaf, bytes | bytearray | memoryview):
        raise InvalidEntry(f"leaf: must be bytes, got {type(leaf).__name__}")
    leaf = bytes(leaf)
    if len(leaf) > MAX_LEAF_BYTES:
        raise LeafTooLarge(f"leaf: {len(leaf)} bytes exceeds {MAX_LEAF_BYTES}")
    _check_structure(leaf)
    try:
        item = cbor2.loads(
            leaf,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
            max_depth=MAX_METADATA_DEPTH + 4,
        )
    except Exception as exc:  # cbor2 raises CBORDecodeError, but promise InvalidEntry only
        raise InvalidEntry(f"leaf: not valid CBOR: {str(exc)[:120]}") from exc
    if not isinstance(item, dict):
        raise InvalidEntry(f"leaf: must be a CBOR map, got {type(item).__name__}")
    missing = [key for key in _KEYS if key not in item]
    if missing:
        raise InvalidEntry(f"leaf: missing keys {', '.join(missing)}")
    unknown = sorted(str(key) for key in item if key not in _KEYS)
    if unknown:
        raise InvalidEntry(f"leaf: unknown keys {', '.join(_show(k) for k in unknown)}")
    v = item["v"]
    if not _is_int(v) or v != SCHEMA_VERSION:
        raise InvalidEntry(f"v: unsupported schema version {_show(v)}, expected {SCHEMA_VERSION}")
    # Field types are checked by _to_cbor_map, exactly as on the way in.
    envelope = Envelope(
        product=item["product"],
        artifact_type=item["artifact_type"],
        artifact_id=item["artifact_id"],
        version=item["version"],
        prev_index=item["prev_index"],
        integrated_at=item["integrated_at"],
        principal=item["principal"],
        body_sha256=item["body_sha256"],
        body_size=item["body_size"],
        metadata=item["metadata"],
    )
    canonical = cbor2.dumps(_to_cbor_map(envelope), canonical=True)
    if canonical != leaf:
        raise InvalidEntry("leaf: not the deterministic encoding (RFC 8949 §4.2.1)")
    return envelope


def decode_cbor_strict(data: bytes, *, max_depth: int) -> Any:
    """Return the one CBOR item in data, refusing what a leaf refuses (see _check_structure):
    tags, indefinite lengths, odd simple values, trailing bytes, duplicate map keys, and
    nesting deeper than max_depth. Used for request bodies. Raises InvalidEntry.
    """
    _check_structure(data, max_depth)
    try:
        return cbor2.loads(
            data,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
            max_depth=max_depth + 2,
        )
    except Exception as exc:  # cbor2 raises CBORDecodeError, but promise InvalidEntry only
        raise InvalidEntry(f"not valid CBOR: {str(exc)[:120]}") from exc


def _json_copy(value: Any) -> Any:
    """Return value with maps copied to dicts and sequences to lists."""
    if isinstance(value, Mapping):
        return {str(k): _json_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_copy(v) for v in value]
    return value


def envelope_to_json(envelope: Envelope) -> dict[str, Any]:
    """Return a JSON-friendly dict of envelope: every key of the leaf, body_sha256 as hex.

    Keys appear in leaf order, ``v`` first; body_sha256 is lowercase hex; metadata is a deep
    copy. Does not validate: pass an envelope that decode_envelope returned or that
    encode_envelope accepted.
    """
    e = envelope
    view: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "product": e.product,
        "version": e.version,
        "metadata": _json_copy(e.metadata),
        "body_size": e.body_size,
        "principal": e.principal,
        "prev_index": e.prev_index,
        "artifact_id": e.artifact_id,
        "body_sha256": bytes(e.body_sha256).hex(),
        "artifact_type": e.artifact_type,
        "integrated_at": e.integrated_at,
    }
    return view
