"""Tests for verifier.tiles: C2SP tlog-tiles examples, a real Tessera log, strictness.

The Tessera log in ../shared/vectors/tessera-testdata-log/ was written by an
independent Go implementation; its tiles, bundles and checkpoints are checked
byte for byte against our codecs and tests/reference.py.
"""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import VECTORS
from tests.reference import mth_of_hashes
from verifier.errors import MalformedBundle, MalformedTile, VerificationError
from verifier.hashing import EMPTY_ROOT, leaf_hash
from verifier.tiles import (
    MAX_ENTRY_SIZE,
    TILE_HEIGHT,
    TILE_WIDTH,
    TileID,
    bundles_for_size,
    decode_bundle,
    encode_bundle,
    format_index,
    iter_bundles_for_size,
    iter_tiles_for_size,
    parse_index,
    parse_tile_path,
    split_tile,
    tile_width_at,
    tiles_for_size,
)

C2SP = json.loads((VECTORS / "c2sp-spec-examples.json").read_text(encoding="utf-8"))
TESSERA = json.loads((VECTORS / "tessera-testdata-log.json").read_text(encoding="utf-8"))
TESSERA_DIR = VECTORS / "tessera-testdata-log"

uint64 = st.integers(0, 2**64 - 1)
tile_ids = st.one_of(
    st.builds(TileID, st.integers(0, 63), uint64, st.integers(1, 256)),
    st.builds(TileID, st.just(0), uint64, st.integers(1, 256), st.just(True)),
)


def test_constants() -> None:
    assert (TILE_HEIGHT, TILE_WIDTH, MAX_ENTRY_SIZE) == (8, 256, 65535)


# --- C2SP tlog-tiles examples --------------------------------------------------------------


@pytest.mark.parametrize("case", C2SP["tiles_example"]["cases"], ids=lambda c: f"size-{c['size']}")
def test_c2sp_tiles_for_size(case: dict[str, Any]) -> None:
    tiles = tiles_for_size(case["size"])
    full: dict[str, int] = {}
    partial: dict[str, int] = {}
    for t in tiles:
        assert not t.entries
        if t.width == TILE_WIDTH:
            full[str(t.level)] = full.get(str(t.level), 0) + 1
        else:
            assert str(t.level) not in partial, "one partial tile per level"
            partial[str(t.level)] = t.width
    assert full == case["want_tiles"]["full"]
    assert partial == case["want_tiles"]["partial"]
    assert [t.path for t in tiles if t.width < TILE_WIDTH] == case["want_partial_paths"]
    assert len(set(tiles)) == len(tiles)


def test_c2sp_size_256_and_0() -> None:
    assert [t.path for t in tiles_for_size(256)] == ["tile/0/000", "tile/1/000.p/1"]
    assert tiles_for_size(0) == []
    assert bundles_for_size(0) == []


def test_bundles_for_size_70000() -> None:
    bundles = bundles_for_size(70_000)
    assert len(bundles) == 274
    assert all(b.entries and b.level == 0 for b in bundles)
    assert bundles[0].path == "tile/entries/000"
    assert bundles[-1].path == "tile/entries/273.p/112"


def test_tile_lists_are_lazy_for_huge_trees() -> None:
    size = 2**64 - 1
    first = list(itertools.islice(iter_tiles_for_size(size), 2))
    assert [t.path for t in first] == ["tile/0/000", "tile/0/001"]
    assert next(iter_bundles_for_size(size)) == TileID(0, 0, entries=True)
    # The last level of a 2**64 - 1 tree: (2**64 - 1) >> 56 = 255 hashes at level 7.
    assert tile_width_at(7, 0, size) == 255
    assert tile_width_at(8, 0, size) == 0


def test_c2sp_index_encoding() -> None:
    ex = C2SP["tiles_example"]["path_encoding_example"]
    assert format_index(ex["index"]) == ex["want"]
    assert parse_index(ex["want"]) == ex["index"]
    assert format_index(5) == "005"
    assert format_index(1000) == "x001/000"
    assert format_index(0) == "000"
    assert format_index(2**64 - 1) == "x018/x446/x744/x073/x709/x551/615"


@given(st.integers(0, 2**20))
def test_tile_width_at_agrees_with_tile_list(size: int) -> None:
    tiles = tiles_for_size(size)
    for t in tiles:
        assert tile_width_at(t.level, t.index, size) == t.width
    levels = {t.level for t in tiles}
    for level in range(max(levels, default=-1) + 2):
        nxt = sum(1 for t in tiles if t.level == level)
        assert tile_width_at(level, nxt, size) == 0
    # Level L has floor(size / 256**L) hashes in all (C2SP tlog-tiles).
    for level in levels:
        total = sum(t.width for t in tiles if t.level == level)
        assert total == size >> (TILE_HEIGHT * level)
    assert [(b.index, b.width) for b in bundles_for_size(size)] == [
        (t.index, t.width) for t in tiles if t.level == 0
    ]


# --- strict paths ---------------------------------------------------------------------------


@given(uint64)
def test_parse_index_inverts_format_index(n: int) -> None:
    assert parse_index(format_index(n)) == n


@given(tile_ids)
def test_parse_tile_path_inverts_path(tile: TileID) -> None:
    assert parse_tile_path(tile.path) == tile


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (TileID(0, 0), "tile/0/000"),
        (TileID(0, 273, 112), "tile/0/273.p/112"),
        (TileID(2, 1234067, 1), "tile/2/x001/x234/067.p/1"),
        (TileID(63, 1000), "tile/63/x001/000"),
        (TileID(0, 5, 255, entries=True), "tile/entries/005.p/255"),
        (TileID(0, 1000, entries=True), "tile/entries/x001/000"),
    ],
)
def test_good_paths(tile: TileID, path: str) -> None:
    assert tile.path == path
    assert parse_tile_path(path) == tile


BAD_PATHS = [
    "",
    "tile",
    "tile/",
    "tile/0",
    "tile/0/",
    "/tile/0/000",
    "tiles/0/000",
    "tile/0/0",
    "tile/0/00",
    "tile/0/0000",
    "tile/0/5",
    "tile/0/x000/005",  # 5 is 005
    "tile/0/x001",  # no final group
    "tile/0/001/000",  # upper groups need x
    "tile/0/x01/000",
    "tile/0/X001/000",
    "tile/0/x001/x000",  # last group has no x
    "tile/0/x001//000",
    "tile/0/000/",
    "tile/0/０００",  # fullwidth digits
    "tile/0/٠٠٠",  # Arabic-Indic digits
    "tile/0/+00",
    "tile/0/-01",
    "tile/0/ 00",
    "tile/00/000",
    "tile/01/000",
    "tile/64/000",
    "tile/100/000",
    "tile/-1/000",
    "tile/+1/000",
    "tile/x/000",
    "tile/8/0/000",  # sumdb-style height in the path
    "tile/data/000",  # static-ct-api, not ours
    "tile/entries",
    "tile/entries/",
    "tile/entries/5",
    "tile/entries/000.p",
    "tile/0/000.p",
    "tile/0/000.p/",
    "tile/0/000.p/0",
    "tile/0/000.p/00",
    "tile/0/000.p/007",
    "tile/0/000.p/256",
    "tile/0/000.p/1000",
    "tile/0/000.p/-1",
    "tile/0/000.p/ 1",
    "tile/0/000.p/1/",
    "tile/0/000.p/1.p/1",
    "tile/0/000.P/1",
    "tile/0/000.p/１",
    "tile/0/x001/x018/x446/x744/x073/x709/x551/615",  # more than 64 bits
    "tile/0/x018/x446/x744/x073/x709/x551/616",  # 2**64
    "tile/0/000\n",
    "tile/0/000 ",
    "https://example.com/tile/0/000",
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_paths_rejected(path: str) -> None:
    with pytest.raises(MalformedTile):
        parse_tile_path(path)


@pytest.mark.parametrize("s", ["", "5", "0005", "x000/005", "x1/000", "00a", "x001/", "/000"])
def test_bad_indexes_rejected(s: str) -> None:
    with pytest.raises(MalformedTile):
        parse_index(s)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"level": -1, "index": 0},
        {"level": 64, "index": 0},
        {"level": 0, "index": -1},
        {"level": 0, "index": 2**64},
        {"level": 0, "index": 0, "width": 0},
        {"level": 0, "index": 0, "width": 257},
        {"level": 1, "index": 0, "entries": True},
        {"level": True, "index": 0},
        {"level": 0, "index": 0, "width": 1.5},
    ],
)
def test_impossible_tile_ids_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(MalformedTile):
        TileID(**kwargs)


@pytest.mark.parametrize("n", [-1, 2**64])
def test_format_index_range(n: int) -> None:
    with pytest.raises(MalformedTile):
        format_index(n)


@pytest.mark.parametrize(
    ("level", "index", "size"), [(-1, 0, 1), (64, 0, 1), (0, -1, 1), (0, 0, -1), (0, 0, 2**64)]
)
def test_tile_width_at_rejects_impossible_input(level: int, index: int, size: int) -> None:
    with pytest.raises(MalformedTile):
        tile_width_at(level, index, size)


@pytest.mark.parametrize("size", [-1, 2**64])
def test_tiles_for_size_range(size: int) -> None:
    with pytest.raises(MalformedTile):
        iter_tiles_for_size(size)
    with pytest.raises(MalformedTile):
        iter_bundles_for_size(size)


# --- the Tessera test log ------------------------------------------------------------------


def _checkpoint_root(size: int) -> bytes:
    lines = (TESSERA_DIR / f"checkpoint.{size}").read_text(encoding="utf-8").split("\n")
    assert lines[0] == TESSERA["origin_line"] and int(lines[1]) == size
    return base64.b64decode(lines[2], validate=True)


def test_tessera_empty_checkpoint() -> None:
    assert _checkpoint_root(0) == EMPTY_ROOT


@pytest.mark.parametrize("width", range(1, 16))
def test_tessera_tiles_and_bundles(width: int) -> None:
    tile = TileID(0, 0, width)
    bundle = TileID(0, 0, width, entries=True)
    assert tiles_for_size(width) == [tile]
    assert bundles_for_size(width) == [bundle]
    assert parse_tile_path(tile.path) == tile and parse_tile_path(bundle.path) == bundle

    hashes = split_tile((TESSERA_DIR / tile.path).read_bytes(), width)
    bundle_bytes = (TESSERA_DIR / bundle.path).read_bytes()
    entries = decode_bundle(bundle_bytes, width)
    assert len(entries) == len(hashes) == width
    assert entries == decode_bundle(bundle_bytes)
    assert encode_bundle(entries) == bundle_bytes
    assert [leaf_hash(e) for e in entries] == hashes
    assert [e.decode("ascii") for e in entries] == TESSERA["leaves_text"][:width]
    assert mth_of_hashes(hashes) == _checkpoint_root(width)


def test_tessera_final_checkpoint_is_size_15() -> None:
    text = (TESSERA_DIR / "checkpoint").read_text(encoding="utf-8")
    assert text == (TESSERA_DIR / "checkpoint.15").read_text(encoding="utf-8")


# --- bundles and tile bodies --------------------------------------------------------------


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=TILE_WIDTH))
def test_bundle_round_trip(entries: list[bytes]) -> None:
    data = encode_bundle(entries)
    assert decode_bundle(data) == entries
    assert decode_bundle(data, len(entries)) == entries


def test_bundle_entry_size_limit() -> None:
    big = b"\xab" * MAX_ENTRY_SIZE
    assert decode_bundle(encode_bundle([big, b""])) == [big, b""]
    with pytest.raises(MalformedBundle):
        encode_bundle([b"ok", big + b"!"])
    with pytest.raises(MalformedBundle):
        encode_bundle([b""] * (TILE_WIDTH + 1))


GOOD = encode_bundle([b"one", b"two", b""])


@pytest.mark.parametrize(
    ("data", "count"),
    [
        (b"", None),  # an empty bundle is never served
        (b"", 1),
        (b"\x00", None),  # truncated length
        (GOOD + b"\x00", None),  # trailing half length
        (b"\x00\x05abc", None),  # truncated entry
        (GOOD[:-1] + b"\x00\x01", None),
        (GOOD[:6], None),  # half a length after "one"
        (GOOD[:8], None),  # "two" cut short
        (GOOD + b"junk", 3),  # trailing bytes after the promised entries
        (GOOD, 2),
        (GOOD, 4),
        (GOOD, 0),
        (GOOD, 257),
        (GOOD, -1),
        (b"\x00\x00" * (TILE_WIDTH + 1), None),  # too many entries
        (b"\x00\x00" * (TILE_WIDTH + 1), TILE_WIDTH),
        (b"\xff\xff" + b"x" * 10, None),  # claims 65,535 bytes
    ],
)
def test_bundle_garbage_rejected(data: bytes, count: int | None) -> None:
    with pytest.raises(MalformedBundle):
        decode_bundle(data, count)


def test_bundle_of_256_empty_entries() -> None:
    assert decode_bundle(b"\x00\x00" * TILE_WIDTH, TILE_WIDTH) == [b""] * TILE_WIDTH


def test_split_tile() -> None:
    hashes = [bytes([i]) * 32 for i in range(3)]
    assert split_tile(b"".join(hashes), 3) == hashes
    for data, width in [
        (b"".join(hashes), 2),
        (b"".join(hashes), 4),
        (b"".join(hashes)[:-1], 3),
        (b"", 0),
        (b"", 1),
        (b"\x00" * 32 * 257, 257),
    ]:
        with pytest.raises(MalformedTile):
            split_tile(data, width)


# --- garbage in, VerificationError out -----------------------------------------------------

path_alphabet = st.text(alphabet="tile/entries0123456789x.p/ \n", max_size=40)


@given(st.one_of(st.text(max_size=40), path_alphabet, st.builds(lambda t: t.path, tile_ids)))
def test_parse_tile_path_garbage(path: str) -> None:
    try:
        tile = parse_tile_path(path)
    except VerificationError:
        return
    assert tile.path == path  # anything accepted is canonical


@given(st.binary(max_size=600), st.one_of(st.none(), st.integers(-5, 300)))
def test_decode_bundle_garbage(data: bytes, count: int | None) -> None:
    try:
        entries = decode_bundle(data, count)
    except VerificationError:
        return
    assert encode_bundle(entries) == data  # anything accepted is canonical


@given(st.binary(max_size=200), st.integers(-5, 300))
def test_split_tile_garbage(data: bytes, width: int) -> None:
    try:
        hashes = split_tile(data, width)
    except VerificationError:
        return
    assert b"".join(hashes) == data and len(hashes) == width
