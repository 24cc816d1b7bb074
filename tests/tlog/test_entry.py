"""Tests for tlog.entry: the v1 entry envelope and its deterministic CBOR (RFC 8949 §4.2.1).

The golden vectors pin exact leaf bytes: version 1 of the schema is frozen, so a change that
breaks them breaks every receipt already handed out. Recipe: each vector is the
``encode_envelope`` of the Envelope beside it; the first is also spelled out item by item
below and was checked by hand against RFC 8949 §3 and §4.2.1. Do not regenerate them.

``_ref_encode`` is a short, independent RFC 8949 §4.2.1 encoder (it lives here, never in the
package) used to check cbor2's canonical mode differentially.
"""

from __future__ import annotations

import dataclasses
import doctest
import enum
import hashlib
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tlog.entry
from tlog.entry import (
    MAX_LEAF_BYTES,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    SCHEMA_VERSION,
    Envelope,
    decode_envelope,
    encode_envelope,
    envelope_to_json,
    validate_metadata,
)
from tlog.errors import InvalidEntry, LeafTooLarge

# --- An independent reference encoder: RFC 8949 §4.2.1 core deterministic encoding ---------


def _ref_head(major: int, argument: int) -> bytes:
    """Return the shortest head for major type and argument (RFC 8949 §3, §4.2.1)."""
    if argument < 24:
        return bytes([major << 5 | argument])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if argument < 1 << (8 * width):
            return bytes([major << 5 | info]) + argument.to_bytes(width, "big")
    raise AssertionError("argument beyond 64 bits")


def _ref_encode(value: Any) -> bytes:
    """Return the RFC 8949 §4.2.1 deterministic encoding of a JSON-like value."""
    if value is None:
        return b"\xf6"
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if isinstance(value, int):
        return _ref_head(0, value) if value >= 0 else _ref_head(1, -1 - value)
    if isinstance(value, float):
        # Shortest of half, single, double that round-trips the value (§4.2.1, §4.2.2).
        for fmt, initial in ((">e", 0xF9), (">f", 0xFA), (">d", 0xFB)):
            try:
                packed = struct.pack(fmt, value)
            except OverflowError:
                continue
            if struct.unpack(fmt, packed)[0] == value:
                return bytes([initial]) + packed
        raise AssertionError("unreachable: every finite float fits a double")
    if isinstance(value, bytes):
        return _ref_head(2, len(value)) + value
    if isinstance(value, str):
        utf8 = value.encode("utf-8")
        return _ref_head(3, len(utf8)) + utf8
    if isinstance(value, list):
        return _ref_head(4, len(value)) + b"".join(_ref_encode(v) for v in value)
    if isinstance(value, dict):
        # Keys sorted by the bytewise lexicographic order of their encodings (§4.2.1).
        pairs = sorted((_ref_encode(k), _ref_encode(v)) for k, v in value.items())
        return _ref_head(5, len(pairs)) + b"".join(k + v for k, v in pairs)
    raise AssertionError(f"no reference encoding for {type(value).__name__}")


def _leaf_map(e: Envelope) -> dict[str, Any]:
    """Return the CBOR map a leaf holds for e, built by hand from the schema."""
    return {
        "v": 1,
        "product": e.product,
        "artifact_type": e.artifact_type,
        "artifact_id": e.artifact_id,
        "version": e.version,
        "prev_index": e.prev_index,
        "integrated_at": e.integrated_at,
        "principal": e.principal,
        "body_sha256": e.body_sha256,
        "body_size": e.body_size,
        "metadata": dict(e.metadata),
    }


# --- Golden vectors ------------------------------------------------------------------------

EMPTY_SHA256 = hashlib.sha256(b"").digest()
HELLO_SHA256 = hashlib.sha256(b"hello\n").digest()

FIRST = Envelope(
    product="gurukul",
    artifact_type="lesson",
    artifact_id="algebra/linear-1",
    version=1,
    prev_index=None,
    integrated_at=1_700_000_000_000,
    principal="key:3f2a9c1d",
    body_sha256=EMPTY_SHA256,
    body_size=0,
    metadata={"lang": "en"},
)
# Every item of FIRST's leaf, in the order RFC 8949 §4.2.1 requires. Keys sort bytewise by
# encoding: 0x61 "v" < 0x67 "product" < 0x67 "version" < 0x68 "metadata" < 0x69 "body_size"
# < 0x69 "principal" < 0x6a "prev_index" < 0x6b "artifact_id" < 0x6b "body_sha256"
# < 0x6d "artifact_type" < 0x6d "integrated_at".
FIRST_LEAF = bytes.fromhex(
    "".join(
        [
            "ab",  # major 5 (map), 11 pairs
            "61 76 01",  # text(1) "v": unsigned 1
            "67 70726f64756374 67 677572756b756c",  # text(7) "product": text(7) "gurukul"
            "67 76657273696f6e 01",  # text(7) "version": 1
            "68 6d65746164617461 a1 64 6c616e67 62 656e",  # "metadata": map(1) {"lang": "en"}
            "69 626f64795f73697a65 00",  # text(9) "body_size": 0
            "69 7072696e636970616c 6c 6b65793a3366326139633164",  # "principal": text(12)
            "6a 707265765f696e646578 f6",  # text(10) "prev_index": null (simple value 22)
            "6b 61727469666163745f6964 70 616c67656272612f6c696e6561722d31",  # text(16) id
            "6b 626f64795f736861323536",  # text(11) "body_sha256"
            "5820 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # bytes(32)
            "6d 61727469666163745f74797065 66 6c6573736f6e",  # "artifact_type": "lesson"
            "6d 696e74656772617465645f6174",  # text(13) "integrated_at"
            "1b 0000018bcfe56800",  # 1_700_000_000_000 > 2**32 - 1: the 8-byte form is shortest
        ]
    )
)

LATER = Envelope(
    product="ai-assistant",
    artifact_type="model-card",
    artifact_id="assistant/v2 card",
    version=7,
    prev_index=4095,
    integrated_at=1_717_171_717_171,
    principal="key:0badc0de",
    body_sha256=HELLO_SHA256,
    body_size=6,
    metadata={"build": 42},
)
LATER_LEAF = bytes.fromhex(
    "ab6176016770726f647563746c61692d617373697374616e746776657273696f6e07686d65746164617461a1"
    "656275696c64182a69626f64795f73697a6506697072696e636970616c6c6b65793a30626164633064656a70"
    "7265765f696e646578190fff6b61727469666163745f696471617373697374616e742f763220636172646b62"
    "6f64795f73686132353658205891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    "6d61727469666163745f747970656a6d6f64656c2d636172646d696e74656772617465645f61741b0000018f"
    "cf690433"
)

EMPTY_METADATA = Envelope(
    product="enforcement",
    artifact_type="policy",
    artifact_id="p",
    version=2,
    prev_index=0,
    integrated_at=0,
    principal="k",
    body_sha256=EMPTY_SHA256,
    body_size=0,
    metadata={},
)
EMPTY_METADATA_LEAF = bytes.fromhex(
    "ab6176016770726f647563746b656e666f7263656d656e746776657273696f6e02686d65746164617461a069"
    "626f64795f73697a6500697072696e636970616c616b6a707265765f696e646578006b61727469666163745f"
    "696461706b626f64795f7368613235365820e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495"
    "991b7852b8556d61727469666163745f7479706566706f6c6963796d696e74656772617465645f617400"
)

NESTED = Envelope(
    product="ai-avatar",
    artifact_type="voice",
    artifact_id="voix/émilie-😀",
    version=1,
    prev_index=None,
    integrated_at=1_700_000_000_123,
    principal="key:3f2a9c1d",
    body_sha256=HELLO_SHA256,
    body_size=65_536,
    metadata={
        "name": "Émilie",
        "✓": True,
        "off": False,
        "none": None,
        "ints": [0, 23, 24, -1, -24, -25, 255, 256, -(2**63), 2**63 - 1],
        # half 1.0, half -0.0, half 1.5, largest half, single, double, smallest half subnormal
        "floats": [1.0, -0.0, 1.5, 65504.0, 100000.0, 0.1, 5.960464477539063e-08],
        "build": {"flags": ["-O2", "--lto"], "matrix": {"os": ["linux", "mac"], "n": 3}},
        "": "empty key",
    },
)
NESTED_LEAF = bytes.fromhex(
    "ab6176016770726f647563746961692d6176617461726776657273696f6e01686d65746164617461a8606965"
    "6d707479206b6579636f6666f463e29c93f564696e74738a001718182037381818ff1901003b7fffffffffff"
    "ffff1b7fffffffffffffff646e616d6567c3896d696c6965646e6f6e65f6656275696c64a265666c61677382"
    "632d4f32652d2d6c746f666d6174726978a2616e03626f7382656c696e7578636d616366666c6f61747387f9"
    "3c00f98000f93e00f97bfffa47c35000fb3fb999999999999af9000169626f64795f73697a651a0001000069"
    "7072696e636970616c6c6b65793a33663261396331646a707265765f696e646578f66b61727469666163745f"
    "696471766f69782fc3a96d696c69652df09f98806b626f64795f73686132353658205891b5b522d5df086d0f"
    "f0b110fbd9d21bb4fc7163af34d08286a2e846f6be036d61727469666163745f7479706565766f6963656d69"
    "6e74656772617465645f61741b0000018bcfe5687b"
)

LARGE = Envelope(
    product="gurukul",
    artifact_type="lesson",
    artifact_id="x" * 256,
    version=300,
    prev_index=2**32,
    integrated_at=2**63 - 1,
    principal="p" * 128,
    body_sha256=bytes(range(32)),
    body_size=2**32 - 1,
    metadata={
        "s23": "a" * 23,
        "s24": "b" * 24,
        "s255": "c" * 255,
        "s256": "d" * 256,
        "widths": [2**8 - 1, 2**8, 2**16 - 1, 2**16, 2**32 - 1, 2**32, -(2**32) - 1],
        "list24": list(range(24)),
        "map24": {f"k{i:02d}": i for i in range(24)},
    },
)
LARGE_LEAF = bytes.fromhex(
    "".join(
        [
            "ab 6176 01",  # map(11), "v": 1
            "6770726f64756374 67677572756b756c",  # "product": "gurukul"
            "6776657273696f6e 19012c",  # "version": 300, 2-byte argument
            "686d65746164617461 a7",  # "metadata": map(7)
            "63733233 77" + "61" * 23,  # "s23": text(23), the longest 1-byte head
            "63733234 7818" + "62" * 24,  # "s24": text(24), 1-byte length
            "6473323535 78ff" + "63" * 255,  # "s255": text(255)
            "6473323536 790100" + "64" * 256,  # "s256": text(256), 2-byte length
            "656d61703234 b818",  # "map24": map(24), 1-byte length; "k00": 0 ... "k23": 23
            "636b303000 636b303101 636b303202 636b303303 636b303404 636b303505 636b303606",
            "636b303707 636b303808 636b303909 636b31300a 636b31310b 636b31320c 636b31330d",
            "636b31340e 636b31350f 636b313610 636b313711 636b313812 636b313913 636b323014",
            "636b323115 636b323216 636b323317",
            "666c6973743234 9818 000102030405060708090a0b0c0d0e0f1011121314151617",  # "list24"
            "66776964746873 87",  # "widths": array(7)
            "18ff 190100 19ffff 1a00010000 1affffffff 1b0000000100000000 3b0000000100000000",
            "69626f64795f73697a65 1affffffff",  # "body_size": 2**32 - 1
            "697072696e636970616c 7880" + "70" * 128,  # "principal": text(128)
            "6a707265765f696e646578 1b0000000100000000",  # "prev_index": 2**32
            "6b61727469666163745f6964 790100" + "78" * 256,  # "artifact_id": text(256)
            "6b626f64795f736861323536 5820",  # "body_sha256": bytes(32)
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "6d61727469666163745f74797065 66 6c6573736f6e",  # "artifact_type": "lesson"
            "6d696e74656772617465645f6174 1b7fffffffffffffff",  # "integrated_at": 2**63 - 1
        ]
    )
)

GOLDEN = [
    pytest.param(FIRST, FIRST_LEAF, id="first-version"),
    pytest.param(LATER, LATER_LEAF, id="later-version"),
    pytest.param(EMPTY_METADATA, EMPTY_METADATA_LEAF, id="empty-metadata"),
    pytest.param(NESTED, NESTED_LEAF, id="nested-metadata"),
    pytest.param(LARGE, LARGE_LEAF, id="large-metadata"),
]


@pytest.mark.parametrize(("envelope", "leaf"), GOLDEN)
def test_golden_encode(envelope: Envelope, leaf: bytes) -> None:
    assert encode_envelope(envelope).hex() == leaf.hex()


@pytest.mark.parametrize(("envelope", "leaf"), GOLDEN)
def test_golden_decode(envelope: Envelope, leaf: bytes) -> None:
    assert decode_envelope(leaf) == envelope


@pytest.mark.parametrize(("envelope", "leaf"), GOLDEN)
def test_golden_matches_reference_encoder(envelope: Envelope, leaf: bytes) -> None:
    assert _ref_encode(_leaf_map(envelope)) == leaf


FIRST_LEAF_HASH = "a3964c4c2aff410b3600ef41d47cb91298eb9010fecc9b5a2b59443714656726"


def test_golden_sizes_and_leaf_hashes() -> None:
    # RFC 6962 §2.1 leaf hashes of the golden leaves: what receipts commit to.
    leaves = [FIRST_LEAF, LATER_LEAF, EMPTY_METADATA_LEAF, NESTED_LEAF, LARGE_LEAF]
    assert [len(leaf) for leaf in leaves] == [212, 224, 174, 373, 1366]
    assert hashlib.sha256(b"\x00" + FIRST_LEAF).hexdigest() == FIRST_LEAF_HASH


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(tlog.entry, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# --- Map key order: RFC 8949 §4.2.1 versus cbor2's length-first canonical mode --------------


def test_cbor2_canonical_is_length_first_for_mixed_key_types() -> None:
    # -1 encodes as 0x20 and 100 as 0x18 0x64: bytewise (RFC 8949 §4.2.1) puts 100 first,
    # length-first (RFC 7049 §3.9, cbor2's canonical mode) puts -1 first. This is why the
    # envelope allows text keys only.
    mixed = {-1: 0, 100: 0}
    assert cbor2.dumps(mixed, canonical=True) == bytes.fromhex("a2 2000 186400")
    assert _ref_encode(mixed) == bytes.fromhex("a2 186400 2000")


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param(["aa", "b", "c"], id="short"),
        pytest.param(["a" * 24, "b" * 23, "c" * 25], id="head-0x77-vs-0x78"),
        pytest.param(["a" * 256, "b" * 255], id="head-0x78-vs-0x79"),
        pytest.param(["é", "ab", "z", "😀", "\uffff", "abcd"], id="utf8-lengths"),
        pytest.param(["", "B", "a", "~", "\x7f", "\x80"], id="single-chars"),
    ],
)
def test_text_key_order_is_rfc8949_bytewise(keys: list[str]) -> None:
    # For text keys only, the shortest-form head makes both orders agree (module docstring).
    metadata = dict.fromkeys(keys, 0)
    expected = sorted(keys, key=lambda k: _ref_encode(k))
    leaf = encode_envelope(dataclasses.replace(FIRST, metadata=metadata))
    assert list(decode_envelope(leaf).metadata) == expected
    assert leaf == _ref_encode(_leaf_map(dataclasses.replace(FIRST, metadata=metadata)))


# --- Strategies ---------------------------------------------------------------------------

_INT64 = st.integers(-(2**63), 2**63 - 1)
_UINT63 = st.integers(0, 2**63 - 1)
_NAMES = st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True)
_CHARS = st.characters(codec="utf-8", exclude_categories=["Cc"])
_ARTIFACT_IDS = st.text(_CHARS, min_size=1, max_size=256).filter(
    lambda s: not s[0].isspace() and not s[-1].isspace()
)
_PRINCIPALS = st.text(_CHARS, min_size=1, max_size=128)
_SCALARS = (
    st.none()
    | st.booleans()
    | _INT64
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"), max_size=16)
)
_KEYS = st.text(st.characters(codec="utf-8"), max_size=8)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


def _depth(value: Any) -> int:
    """Return the container nesting depth of value (a scalar is 0, {} is 1)."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_METADATA = st.dictionaries(_KEYS, _VALUES, max_size=5).filter(
    lambda m: _depth(m) <= MAX_METADATA_DEPTH
)


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    """Return a valid envelope."""
    version = draw(st.integers(1, 2**63 - 1) | st.integers(1, 3))
    prev_index = None if version == 1 else draw(_UINT63 | st.integers(0, 3))
    return Envelope(
        product=draw(_NAMES),
        artifact_type=draw(_NAMES),
        artifact_id=draw(_ARTIFACT_IDS),
        version=version,
        prev_index=prev_index,
        integrated_at=draw(_UINT63),
        principal=draw(_PRINCIPALS),
        body_sha256=draw(st.binary(min_size=32, max_size=32)),
        body_size=draw(_UINT63),
        metadata=draw(_METADATA),
    )


# --- Round trip and differential -----------------------------------------------------------


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes())
def test_round_trip(envelope: Envelope) -> None:
    leaf = encode_envelope(envelope)
    decoded = decode_envelope(leaf)
    assert decoded == envelope
    # == cannot tell True from 1 or 0.0 from -0.0; the bytes can.
    assert encode_envelope(decoded) == leaf


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes())
def test_encoding_matches_reference_encoder(envelope: Envelope) -> None:
    assert encode_envelope(envelope) == _ref_encode(_leaf_map(envelope))


@given(_METADATA)
def test_validate_metadata_copies(metadata: dict[str, Any]) -> None:
    copy = validate_metadata(metadata)
    assert copy == metadata
    assert copy is not metadata


def test_validate_metadata_copies_tuples_as_lists_and_mappings_as_dicts() -> None:
    import types

    source = types.MappingProxyType({"a": (1, 2), "b": types.MappingProxyType({"c": [3]})})
    copy = validate_metadata(source)
    assert copy == {"a": [1, 2], "b": {"c": [3]}}
    assert type(copy) is dict and type(copy["a"]) is list and type(copy["b"]) is dict


def test_encode_copies_metadata_so_later_changes_do_not_matter() -> None:
    metadata: dict[str, Any] = {"lang": "en"}
    envelope = dataclasses.replace(FIRST, metadata=metadata)
    leaf = encode_envelope(envelope)
    metadata["lang"] = "fr"
    assert leaf == FIRST_LEAF


def test_envelope_is_frozen_and_hashable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FIRST.version = 2  # type: ignore[misc]
    twin = decode_envelope(FIRST_LEAF)
    assert twin == FIRST and hash(twin) == hash(FIRST)
    assert twin != dataclasses.replace(FIRST, metadata={"lang": "fr"})


def test_envelope_fields_are_the_schema() -> None:
    names = [f.name for f in dataclasses.fields(Envelope)]
    assert sorted(["v", *names]) == sorted(_leaf_map(FIRST))
    assert SCHEMA_VERSION == 1
    with pytest.raises(TypeError):
        Envelope("gurukul")  # type: ignore[call-arg]  # keyword-only on purpose


def test_envelope_to_json() -> None:
    view = envelope_to_json(NESTED)
    assert view["body_sha256"] == HELLO_SHA256.hex()
    assert view["body_sha256"] == view["body_sha256"].lower()
    assert view["v"] == 1 and view["prev_index"] is None and view["body_size"] == 65_536
    assert set(view) == set(_leaf_map(NESTED))
    assert view["metadata"] == NESTED.metadata
    assert json.loads(json.dumps(view)) == view
    view["metadata"]["build"]["flags"].append("-g")  # a deep copy: the envelope is untouched
    assert NESTED.metadata["build"]["flags"] == ["-O2", "--lto"]
    # The JSON view lists keys in leaf order (RFC 8949 §4.2.1), v first.
    assert list(envelope_to_json(FIRST)) == list(cbor2.loads(FIRST_LEAF))


# --- Every validation rule fails (encode) ----------------------------------------------------


class _Str(str):
    pass


class _Int(enum.IntEnum):
    ONE = 1


def _nest(levels: int) -> dict[str, Any]:
    """Return metadata with exactly `levels` levels of maps, counting the metadata map."""
    metadata: dict[str, Any] = {}
    for _ in range(levels - 1):
        metadata = {"n": metadata}
    return metadata


def _nest_lists(count: int) -> list[Any]:
    """Return count lists nested in one another; inside metadata that is count + 1 levels."""
    nested: list[Any] = []
    for _ in range(count - 1):
        nested = [nested]
    return nested


def _sized(size: int) -> dict[str, Any]:
    """Return metadata whose deterministic encoding is exactly size bytes (256 <= size-6)."""
    # a1 (map of 1), 61 6b ("k"), 79 hh hh (text, 2-byte length), then the text.
    return {"k": "x" * (size - 6)}


INVALID: list[Any] = [
    # product and artifact_type: ^[a-z0-9][a-z0-9-]{0,62}$
    ({"product": ""}, r"^product: must be a string matching"),
    ({"product": "Gurukul"}, r"^product: must be a string matching .*'Gurukul'"),
    ({"product": "-gurukul"}, r"^product: "),
    ({"product": "a" * 64}, r"^product: "),
    ({"product": "gurukul\n"}, r"^product: "),
    ({"product": "gurukül"}, r"^product: "),
    ({"product": "guru_kul"}, r"^product: "),
    ({"product": 7}, r"^product: must be a string"),
    ({"product": _Str("gurukul")}, r"^product: "),
    ({"artifact_type": "Lesson"}, r"^artifact_type: must be a string matching"),
    ({"artifact_type": ""}, r"^artifact_type: "),
    # artifact_id: 1..256 characters, no control characters, no outer whitespace
    ({"artifact_id": ""}, r"^artifact_id: must be 1\.\.256 characters, got 0"),
    ({"artifact_id": "x" * 257}, r"^artifact_id: must be 1\.\.256 characters, got 257"),
    ({"artifact_id": " x"}, r"^artifact_id: must not start or end with whitespace"),
    ({"artifact_id": "x\u3000"}, r"^artifact_id: must not start or end with whitespace"),
    ({"artifact_id": "a\x00b"}, r"^artifact_id: must not contain control characters"),
    ({"artifact_id": "a\x7fb"}, r"^artifact_id: must not contain control characters"),
    ({"artifact_id": "a\x85b"}, r"^artifact_id: must not contain control characters"),
    ({"artifact_id": "x\n"}, r"^artifact_id: "),
    ({"artifact_id": "a\ud800b"}, r"^artifact_id: not valid Unicode \(lone surrogate\)"),
    ({"artifact_id": b"id"}, r"^artifact_id: must be a str, got bytes"),
    # version: int >= 1
    ({"version": 0}, r"^version: must be an integer in 1\.\.2\*\*63-1, got 0"),
    ({"version": -1}, r"^version: "),
    ({"version": 2**63, "prev_index": 0}, r"^version: .*got 9223372036854775808"),
    ({"version": True}, r"^version: must be an int, got bool"),
    ({"version": 1.0}, r"^version: must be an int, got float"),
    ({"version": _Int.ONE}, r"^version: must be an int, got _Int"),
    # prev_index: null exactly when version == 1
    ({"prev_index": 0}, r"^prev_index: must be null when version is 1, got 0"),
    ({"version": 2}, r"^prev_index: required when version > 1 \(version is 2\)"),
    ({"version": 2, "prev_index": -1}, r"^prev_index: must be an integer in 0\.\.2\*\*63-1"),
    ({"version": 2, "prev_index": 2**63}, r"^prev_index: "),
    ({"version": 2, "prev_index": False}, r"^prev_index: must be an int, got bool"),
    ({"version": 2, "prev_index": "1"}, r"^prev_index: must be an int, got str"),
    # integrated_at: ms since the epoch, >= 0
    ({"integrated_at": -1}, r"^integrated_at: must be an integer in 0\.\.2\*\*63-1, got -1"),
    ({"integrated_at": 2**63}, r"^integrated_at: "),
    ({"integrated_at": 1.7e12}, r"^integrated_at: must be an int, got float"),
    ({"integrated_at": None}, r"^integrated_at: must be an int, got NoneType"),
    # principal: 1..128 characters, no control characters
    ({"principal": ""}, r"^principal: must be 1\.\.128 characters, got 0"),
    ({"principal": "k" * 129}, r"^principal: must be 1\.\.128 characters, got 129"),
    ({"principal": "key:\x1b[31m"}, r"^principal: must not contain control characters"),
    ({"principal": "\udfff"}, r"^principal: not valid Unicode"),
    ({"principal": None}, r"^principal: must be a str, got NoneType"),
    # body_sha256: exactly 32 bytes
    ({"body_sha256": bytes(31)}, r"^body_sha256: must be 32 bytes, got 31"),
    ({"body_sha256": bytes(33)}, r"^body_sha256: must be 32 bytes, got 33"),
    ({"body_sha256": EMPTY_SHA256.hex()}, r"^body_sha256: must be bytes, got str"),
    ({"body_sha256": bytearray(32)}, r"^body_sha256: must be bytes, got bytearray"),
    # body_size: int >= 0
    ({"body_size": -1}, r"^body_size: must be an integer in 0\.\.2\*\*63-1, got -1"),
    ({"body_size": 2**63}, r"^body_size: "),
    ({"body_size": True}, r"^body_size: must be an int, got bool"),
    # metadata: a JSON-compatible map
    ({"metadata": []}, r"^metadata: must be a map, got list"),
    ({"metadata": None}, r"^metadata: must be a map, got NoneType"),
    ({"metadata": {1: "x"}}, r"^metadata: keys must be str, got 1"),
    ({"metadata": {"a": {b"k": 1}}}, r"^metadata\.a: keys must be str, got b'k'"),
    ({"metadata": {_Str("k"): 1}}, r"^metadata: keys must be str"),
    (
        {"metadata": {"build": {"flags": [0.5, 1, "x", math.inf]}}},
        r"^metadata\.build\.flags\[3\]: floats must be finite$",
    ),
    ({"metadata": {"x": -math.inf}}, r"^metadata\.x: floats must be finite"),
    ({"metadata": {"x": math.nan}}, r"^metadata\.x: floats must be finite"),
    ({"metadata": {"x": 2**63}}, r"^metadata\.x: integers must fit in signed 64 bits"),
    ({"metadata": {"x": -(2**63) - 1}}, r"^metadata\.x: integers must fit in signed 64 bits"),
    ({"metadata": {"x": b"bytes"}}, r"^metadata\.x: unsupported type bytes"),
    ({"metadata": {"x": {1, 2}}}, r"^metadata\.x: unsupported type set"),
    ({"metadata": {"x": _Str("s")}}, r"^metadata\.x: unsupported type _Str"),
    ({"metadata": {"x": [_Int.ONE]}}, r"^metadata\.x\[0\]: unsupported type _Int"),
    ({"metadata": {"x": 1j}}, r"^metadata\.x: unsupported type complex"),
    ({"metadata": {"a b": {"c": math.nan}}}, r"^metadata\['a b'\]\.c: floats must be finite"),
    ({"metadata": {"x": "\ud800"}}, r"^metadata\.x: not valid Unicode"),
    ({"metadata": {"\ud800": 1}}, r"^metadata\[.*\]: not valid Unicode"),
    ({"metadata": _nest(MAX_METADATA_DEPTH + 1)}, r"^metadata(\.n){16}: nesting deeper than 16"),
    ({"metadata": {"l": _nest_lists(MAX_METADATA_DEPTH)}}, r"^metadata\.l(\[0\]){15}: nesting"),
    ({"metadata": _sized(MAX_METADATA_BYTES + 1)}, r"^metadata: encoded size exceeds 16384 bytes"),
    ({"metadata": {"k": ["x" * 1000] * 17}}, r"^metadata: encoded size exceeds 16384"),
    ({"metadata": {"k": list(range(20_000))}}, r"^metadata: encoded size exceeds 16384"),
]


@pytest.mark.parametrize(("changes", "message"), INVALID)
def test_encode_rejects(changes: dict[str, Any], message: str) -> None:
    envelope = dataclasses.replace(FIRST, **changes)
    with pytest.raises(InvalidEntry, match=message) as info:
        encode_envelope(envelope)
    assert type(info.value) is InvalidEntry  # not LeafTooLarge, not another error


def test_self_referencing_metadata_is_rejected() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidEntry, match="nesting deeper than 16"):
        validate_metadata({"loop": loop})


def test_huge_metadata_is_refused_before_encoding() -> None:
    # A million references to one 1 MB string would be a terabyte of CBOR.
    big = "x" * 1_000_000
    with pytest.raises(InvalidEntry, match="encoded size exceeds"):
        validate_metadata({"k": [big] * 1_000_000})


VALID_EDGES: list[Any] = [
    pytest.param({"product": "0", "artifact_type": "a" * 63}, id="name-lengths"),
    pytest.param({"product": "0-", "artifact_type": "a--b"}, id="name-hyphens"),
    pytest.param({"artifact_id": "x" * 256}, id="artifact-id-256"),
    pytest.param({"artifact_id": "😀" * 256}, id="artifact-id-256-astral"),
    pytest.param({"artifact_id": "a b\u200bc"}, id="artifact-id-inner-space"),
    pytest.param({"principal": " " + "k" * 127}, id="principal-128-leading-space"),
    pytest.param({"version": 2**63 - 1, "prev_index": 2**63 - 1}, id="int-max"),
    pytest.param({"integrated_at": 0, "body_size": 0}, id="zeros"),
    pytest.param({"metadata": {"x": [-(2**63), 2**63 - 1]}}, id="int64-bounds"),
    pytest.param({"metadata": {"x": [1.7976931348623157e308, 5e-324, -0.0]}}, id="floats"),
    pytest.param({"metadata": {"\x00": "\x00\x1b\x7f"}}, id="metadata-control-chars"),
    pytest.param({"metadata": _nest(MAX_METADATA_DEPTH)}, id="depth-16"),
    pytest.param({"metadata": _sized(MAX_METADATA_BYTES)}, id="metadata-16384-bytes"),
]


@pytest.mark.parametrize("changes", VALID_EDGES)
def test_edges_are_accepted(changes: dict[str, Any]) -> None:
    envelope = dataclasses.replace(FIRST, **changes)
    leaf = encode_envelope(envelope)
    assert decode_envelope(leaf) == envelope
    assert leaf == _ref_encode(_leaf_map(envelope))


def test_metadata_size_is_the_encoded_size() -> None:
    assert len(cbor2.dumps(_sized(MAX_METADATA_BYTES), canonical=True)) == MAX_METADATA_BYTES
    validate_metadata(_sized(MAX_METADATA_BYTES))
    with pytest.raises(InvalidEntry, match="got 16385"):
        validate_metadata(_sized(MAX_METADATA_BYTES + 1))


# --- Leaf size -------------------------------------------------------------------------------


def _padded(size: int) -> Envelope:
    """Return an envelope whose leaf is exactly size bytes (needs a raised metadata limit)."""
    base = len(encode_envelope(dataclasses.replace(FIRST, metadata={"pad": "x" * 1000})))
    return dataclasses.replace(FIRST, metadata={"pad": "x" * (1000 + size - base)})


def test_largest_possible_v1_leaf_fits() -> None:
    # Every field at its limit stays far below the entry-bundle limit.
    widest = dataclasses.replace(
        LARGE, artifact_id="😀" * 256, principal="😀" * 128, metadata=_sized(MAX_METADATA_BYTES)
    )
    assert len(encode_envelope(widest)) < 18 * 1024


def test_leaf_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    # Unreachable with the v1 metadata limit; raise it to reach the C2SP entry-bundle limit.
    monkeypatch.setattr(tlog.entry, "MAX_METADATA_BYTES", 10 * MAX_LEAF_BYTES)
    fits = _padded(MAX_LEAF_BYTES)
    leaf = encode_envelope(fits)
    assert len(leaf) == MAX_LEAF_BYTES
    assert decode_envelope(leaf) == fits
    with pytest.raises(LeafTooLarge, match="65536 bytes exceeds 65535"):
        encode_envelope(_padded(MAX_LEAF_BYTES + 1))


@pytest.mark.parametrize("size", [MAX_LEAF_BYTES - 40, MAX_LEAF_BYTES - 17, MAX_LEAF_BYTES - 1])
def test_check_room_agrees_with_building_the_leaf(
    monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    # The service checks a template with the largest sequenced values without building
    # the leaf; near the limit its verdict must be the one leaf() gives.
    monkeypatch.setattr(tlog.entry, "MAX_METADATA_BYTES", 10 * MAX_LEAF_BYTES)
    e = _padded(size)
    template = tlog.entry.envelope_template(e)
    verdicts = []
    for values in [(2, 0, 0), (24, 255, 2**32), (2**31, 2**62, 2**62), (2**63 - 1,) * 3]:
        try:
            template.leaf(*values)
            fits = True
        except LeafTooLarge:
            fits = False
        if fits:
            template.check_room(*values)
        else:
            with pytest.raises(LeafTooLarge):
                template.check_room(*values)
        verdicts.append(fits)
    assert verdicts[0]
    if size == MAX_LEAF_BYTES - 1:
        assert not verdicts[-1]  # both verdicts are exercised


def test_decode_rejects_oversized_leaf_before_parsing() -> None:
    with pytest.raises(LeafTooLarge):
        decode_envelope(b"\xff" * (MAX_LEAF_BYTES + 1))
    with pytest.raises(InvalidEntry) as info:
        decode_envelope(b"\xff" * MAX_LEAF_BYTES)
    assert type(info.value) is InvalidEntry


# --- Decode: schema rules on the wire ------------------------------------------------------


def _dumps_with(**changes: Any) -> bytes:
    """Return FIRST's leaf map with changes (a value of ... deletes the key), canonical."""
    item: dict[Any, Any] = _leaf_map(FIRST)
    for key, value in changes.items():
        if value is ...:
            del item[key]
        else:
            item[key] = value
    return bytes(cbor2.dumps(item, canonical=True))


DECODE_INVALID: list[Any] = [
    pytest.param(_dumps_with(v=2), r"^v: unsupported schema version 2", id="v2"),
    pytest.param(_dumps_with(v=0), r"^v: unsupported schema version 0", id="v0"),
    pytest.param(_dumps_with(v=True), r"^v: unsupported schema version True", id="v-true"),
    pytest.param(_dumps_with(v=1.0), r"^v: unsupported schema version 1\.0", id="v-float"),
    pytest.param(_dumps_with(v=...), r"^leaf: missing keys v$", id="no-v"),
    pytest.param(_dumps_with(prev_index=...), r"^leaf: missing keys prev_index", id="no-prev"),
    pytest.param(_dumps_with(extra=1), r"^leaf: unknown keys 'extra'", id="unknown-key"),
    pytest.param(_dumps_with(**{"Product": "x"}), r"^leaf: unknown keys 'Product'", id="case"),
    pytest.param(cbor2.dumps([1]), r"^leaf: must be a CBOR map, got list", id="array"),
    pytest.param(cbor2.dumps("v"), r"^leaf: must be a CBOR map, got str", id="text"),
    pytest.param(cbor2.dumps({}), r"^leaf: missing keys v, product", id="empty-map"),
    pytest.param(_dumps_with(product="Bad"), r"^product: must be a string matching", id="name"),
    pytest.param(_dumps_with(product=b"gurukul"), r"^product: must be a str", id="name-bytes"),
    pytest.param(_dumps_with(artifact_id=" x"), r"^artifact_id: must not start", id="id-space"),
    pytest.param(_dumps_with(version=0), r"^version: ", id="version-0"),
    pytest.param(_dumps_with(version=1.0), r"^version: must be an int, got float", id="float"),
    pytest.param(_dumps_with(prev_index=3), r"^prev_index: must be null", id="prev-on-v1"),
    pytest.param(_dumps_with(version=2), r"^prev_index: required", id="prev-missing"),
    pytest.param(_dumps_with(integrated_at=-5), r"^integrated_at: ", id="time-negative"),
    pytest.param(_dumps_with(principal=""), r"^principal: must be 1\.\.128", id="principal"),
    pytest.param(_dumps_with(body_sha256=bytes(31)), r"^body_sha256: must be 32", id="hash-31"),
    pytest.param(
        _dumps_with(body_sha256=EMPTY_SHA256.hex()), r"^body_sha256: must be bytes", id="hex"
    ),
    pytest.param(_dumps_with(body_size=-1), r"^body_size: ", id="size-negative"),
    pytest.param(_dumps_with(metadata=[]), r"^metadata: must be a map, got list", id="meta-list"),
    pytest.param(
        _dumps_with(metadata={"f": [math.inf]}),
        r"^metadata\.f\[0\]: floats must be finite",
        id="inf",
    ),
    pytest.param(
        _dumps_with(metadata={"f": math.nan}), r"^metadata\.f: floats must be finite", id="nan"
    ),
    pytest.param(_dumps_with(metadata={"b": b"\x00"}), r"^metadata\.b: unsupported type", id="bin"),
    pytest.param(
        _dumps_with(metadata={"i": 2**64 - 1}), r"^metadata\.i: integers must fit", id="uint64"
    ),
    pytest.param(
        _dumps_with(metadata={"i": -(2**64)}), r"^metadata\.i: integers must fit", id="nint64"
    ),
    pytest.param(
        _dumps_with(metadata={"s": "x" * 16_400}),
        r"^metadata: encoded size exceeds 16384",
        id="meta-too-big",
    ),
    pytest.param(cbor2.dumps({1: 1}), r"^leaf: not valid CBOR", id="int-key"),
    pytest.param(_dumps_with(metadata={1: 1}), r"^leaf: not valid CBOR", id="meta-int-key"),
]


@pytest.mark.parametrize(("leaf", "message"), DECODE_INVALID)
def test_decode_rejects(leaf: bytes, message: str) -> None:
    with pytest.raises(InvalidEntry, match=message) as info:
        decode_envelope(leaf)
    assert type(info.value) is InvalidEntry


# --- Decode: only the deterministic encoding is accepted (RFC 8949 §4.2.1) ------------------


def _splice(leaf: bytes, old: str, new: str) -> bytes:
    """Return leaf with the one occurrence of hex old replaced by hex new."""
    old_b, new_b = bytes.fromhex(old), bytes.fromhex(new)
    assert leaf.count(old_b) == 1
    return leaf.replace(old_b, new_b)


_VERSION_KEY = "6776657273696f6e"  # text(7) "version"
_PRODUCT_KEY = "6770726f64756374"  # text(7) "product"
_SHA_KEY = "6b626f64795f736861323536"  # text(11) "body_sha256"
_META_KEY = "686d65746164617461"  # text(8) "metadata"


def _reordered() -> bytes:
    """Return FIRST's map with keys in Python's alphabetical order instead of §4.2.1 order."""
    item = _leaf_map(FIRST)
    return bytes(cbor2.dumps({k: item[k] for k in sorted(item)}))


NON_CANONICAL: list[Any] = [
    pytest.param(_reordered(), "not the deterministic encoding", id="keys-alphabetical"),
    pytest.param(
        _splice(
            FIRST_LEAF,
            _PRODUCT_KEY + "67677572756b756c" + _VERSION_KEY + "01",
            _VERSION_KEY + "01" + _PRODUCT_KEY + "67677572756b756c",
        ),
        "not the deterministic encoding",
        id="two-keys-swapped",
    ),
    pytest.param(
        _splice(FIRST_LEAF, _VERSION_KEY + "01", _VERSION_KEY + "1801"),
        "not the deterministic encoding",
        id="int-not-shortest-1-byte",
    ),
    pytest.param(
        _splice(
            EMPTY_METADATA_LEAF,
            "6d696e74656772617465645f617400",
            "6d696e74656772617465645f61741b0000000000000000",
        ),
        "not the deterministic encoding",
        id="int-not-shortest-8-bytes",
    ),
    pytest.param(
        _splice(FIRST_LEAF, "6767757275", "780767757275"),
        "not the deterministic encoding",
        id="text-length-not-shortest",
    ),
    pytest.param(
        _splice(FIRST_LEAF, "58 20 e3b0", "5900 20 e3b0"),
        "not the deterministic encoding",
        id="bytes-length-not-shortest",
    ),
    pytest.param(
        b"\xb8\x0b" + FIRST_LEAF[1:], "not the deterministic encoding", id="map-length-not-shortest"
    ),
    pytest.param(
        b"\xbf" + FIRST_LEAF[1:] + b"\xff", "indefinite length at byte 0", id="indefinite-map"
    ),
    pytest.param(
        _splice(FIRST_LEAF, "a1 64 6c616e67 62 656e", "bf 64 6c616e67 62 656e ff"),
        "indefinite length",
        id="indefinite-metadata-map",
    ),
    pytest.param(
        _splice(FIRST_LEAF, "62 656e", "7f 61 65 61 6e ff"),
        "indefinite length",
        id="indefinite-text",
    ),
    pytest.param(
        _splice(FIRST_LEAF, "5820", "5f5820") + b"",
        "indefinite length",
        id="indefinite-bytes",
    ),
    pytest.param(
        b"\xac" + FIRST_LEAF[1:] + bytes.fromhex("617602"),
        "not valid CBOR.*[Dd]uplicate",
        id="duplicate-key-v",
    ),
    pytest.param(
        b"\xac" + FIRST_LEAF[1:] + bytes.fromhex("6776657273696f6e01"),
        "not valid CBOR.*[Dd]uplicate",
        id="duplicate-key-same-value",
    ),
    pytest.param(
        _splice(FIRST_LEAF, "a1 64 6c616e67 62 656e", "a2 64 6c616e67 62 656e 64 6c616e67 62 656e"),
        "not valid CBOR.*[Dd]uplicate",
        id="duplicate-metadata-key",
    ),
    pytest.param(
        _dumps_with(metadata={"f": 1.5}).replace(
            bytes.fromhex("f93e00"), bytes.fromhex("fb3ff8000000000000")
        ),
        "not the deterministic encoding",
        id="float-not-shortest",
    ),
    pytest.param(
        _dumps_with(metadata={"f": 1.0}).replace(
            bytes.fromhex("f93c00"), bytes.fromhex("fa3f800000")
        ),
        "not the deterministic encoding",
        id="float-single-for-half",
    ),
    pytest.param(
        _splice(FIRST_LEAF, _VERSION_KEY + "01", _VERSION_KEY + "c24101"),
        "CBOR tag 2 at byte",
        id="bignum-tag",
    ),
    pytest.param(bytes.fromhex("d9d9f7") + FIRST_LEAF, "CBOR tag 55799", id="self-describe-tag"),
    pytest.param(FIRST_LEAF + b"\x00", "1 trailing bytes", id="trailing-byte"),
    pytest.param(FIRST_LEAF + FIRST_LEAF, "212 trailing bytes", id="two-leaves"),
    pytest.param(FIRST_LEAF[:-1], "truncated CBOR", id="truncated"),
    pytest.param(b"", "truncated CBOR at byte 0", id="empty"),
    pytest.param(
        _splice(FIRST_LEAF, "6a707265765f696e646578f6", "6a707265765f696e646578f7"),
        "simple value at byte",
        id="undefined-for-null",
    ),
    pytest.param(
        _splice(FIRST_LEAF, "6a707265765f696e646578f6", "6a707265765f696e646578f816"),
        "simple value at byte",
        id="two-byte-simple-null",
    ),
    pytest.param(
        _splice(FIRST_LEAF, _VERSION_KEY + "01", _VERSION_KEY + "1c"),
        "reserved additional information",
        id="reserved-info",
    ),
    pytest.param(_splice(FIRST_LEAF, "62 656e", "62 c328"), "not valid CBOR", id="invalid-utf8"),
    pytest.param(
        _splice(FIRST_LEAF, "62 656e", "63 eda080"), "not valid CBOR", id="utf8-surrogate"
    ),
    pytest.param(_splice(FIRST_LEAF, "62 656e", "62 c0af"), "not valid CBOR", id="utf8-overlong"),
]


@pytest.mark.parametrize(("leaf", "message"), NON_CANONICAL)
def test_decode_rejects_non_canonical(leaf: bytes, message: str) -> None:
    with pytest.raises(InvalidEntry, match=message) as info:
        decode_envelope(leaf)
    assert type(info.value) is InvalidEntry


def test_decode_rejects_deep_nesting() -> None:
    # 60,000 nested arrays: refused by the structure scan, no recursion in cbor2.
    deep = b"\x81" * 60_000 + b"\x00"
    with pytest.raises(InvalidEntry, match="nesting deeper than 17 levels"):
        decode_envelope(deep)
    nested17 = _dumps_with(metadata={}).replace(
        bytes.fromhex(_META_KEY + "a0"), bytes.fromhex(_META_KEY) + b"\xa1\x61n" * 16 + b"\xa0"
    )
    with pytest.raises(InvalidEntry, match="nesting deeper than 17 levels"):
        decode_envelope(nested17)
    nested16 = _dumps_with(metadata=_nest(MAX_METADATA_DEPTH))
    assert decode_envelope(nested16).metadata == _nest(MAX_METADATA_DEPTH)


def test_decode_rejects_shared_reference_cycles() -> None:
    # Tag 28/29 (value sharing) could make cbor2 build a cyclic value; tags never get that far.
    leaf = _splice(FIRST_LEAF, "a1 64 6c616e67 62 656e", "a1 64 6c616e67 d81c 81 d81d 00")
    with pytest.raises(InvalidEntry, match="CBOR tag 28"):
        decode_envelope(leaf)


def test_decode_accepts_bytes_like_and_refuses_other_types() -> None:
    assert decode_envelope(bytearray(FIRST_LEAF)) == FIRST
    assert decode_envelope(memoryview(FIRST_LEAF)) == FIRST
    with pytest.raises(InvalidEntry, match="must be bytes, got str"):
        decode_envelope(FIRST_LEAF.hex())  # type: ignore[arg-type]


# --- Decode never raises anything but InvalidEntry ------------------------------------------


def _decode_or_invalid(leaf: bytes) -> None:
    """Decode leaf; if it is accepted it must be the canonical encoding of the result."""
    try:
        envelope = decode_envelope(leaf)
    except InvalidEntry:
        return
    assert encode_envelope(envelope) == leaf


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_invalid_entry(leaf: bytes) -> None:
    _decode_or_invalid(leaf)


_EDITS: list[Callable[[bytes, int, int], bytes]] = [
    lambda leaf, i, b: leaf[:i] + bytes([b]) + leaf[i + 1 :],  # replace a byte
    lambda leaf, i, b: leaf[:i] + bytes([b]) + leaf[i:],  # insert a byte
    lambda leaf, i, b: leaf[:i] + leaf[i + 1 :],  # delete a byte
    lambda leaf, i, b: leaf[:i],  # truncate
    lambda leaf, i, b: leaf[:i] + bytes([leaf[i % len(leaf)] ^ (1 << (b % 8))]) + leaf[i + 1 :],
]


@settings(max_examples=400)
@given(
    st.sampled_from([FIRST_LEAF, LATER_LEAF, EMPTY_METADATA_LEAF, NESTED_LEAF, LARGE_LEAF]),
    st.lists(
        st.tuples(st.integers(0, len(_EDITS) - 1), st.integers(0, 2000), st.integers(0, 255)),
        min_size=1,
        max_size=3,
    ),
)
def test_mutated_leaves_only_raise_invalid_entry(
    leaf: bytes, edits: list[tuple[int, int, int]]
) -> None:
    for edit, position, byte in edits:
        leaf = _EDITS[edit](leaf, position % (len(leaf) + 1), byte) if leaf else b"\x00"
    _decode_or_invalid(leaf)


def test_control_character_class_is_unicode_category_cc() -> None:
    """The regex that refuses control characters matches exactly Unicode category Cc."""
    import sys
    import unicodedata

    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        expected = unicodedata.category(ch) == "Cc"
        assert tlog.entry._has_control(f"a{ch}b") is expected, hex(cp)


@given(envelopes())
def test_template_of_an_envelope_encodes_like_cbor2(envelope: Envelope) -> None:
    """The three-part template (what the writer fills in) gives cbor2's canonical bytes."""
    e = envelope
    template = tlog.entry.envelope_template(e)
    expected = cbor2.dumps(tlog.entry._to_cbor_map(e), canonical=True)
    assert template.leaf(e.version, e.prev_index, e.integrated_at) == expected
    for version, prev, at in [(1, None, 0), (24, 23, 255), (2**32, 2**16, 2**63 - 1)]:
        other = dataclasses.replace(e, version=version, prev_index=prev, integrated_at=at)
        assert template.leaf(version, prev, at) == _ref_encode(tlog.entry._to_cbor_map(other))


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=60), max_size=12))
def test_flat_text_metadata_fast_path_equals_the_general_path(metadata: dict[str, str]) -> None:
    plain, encoded = tlog.entry.encode_metadata(metadata)
    assert plain == metadata and plain is not metadata
    general = tlog.entry._plain_metadata(metadata, "metadata", 1, [0])
    assert encoded == cbor2.dumps(general, canonical=True) == _ref_encode(general)


def test_flat_text_metadata_errors_name_the_field() -> None:
    with pytest.raises(InvalidEntry, match=r"metadata\.title: not valid Unicode"):
        tlog.entry.encode_metadata({"title": "x\ud800"})
    with pytest.raises(InvalidEntry, match="encoded size exceeds"):
        tlog.entry.encode_metadata({"big": "z" * MAX_METADATA_BYTES})
