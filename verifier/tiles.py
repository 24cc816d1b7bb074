"""C2SP tlog-tiles: tile paths, which tiles a tree has, tile and entry-bundle codecs.

A tlog-tiles log publishes its Merkle tree as tiles of height 8: a level-0
tile holds up to 256 consecutive leaf hashes; a level-``L`` tile holds up to
256 roots of complete subtrees of ``256**L`` leaves. Tile ``N`` at level ``L``
lives at ``tile/<L>/<N>``, with ``N`` written as zero-padded groups of three
digits, all but the last prefixed with ``x``. A tile that is not yet full has
``.p/<W>`` appended, ``W`` (1..255) being the number of hashes it holds. The
leaves themselves are served as entry bundles ``tile/entries/<N>[.p/<W>]``: each
entry prefixed with its length as a big-endian uint16.

Worked example, the tree of 70,000 leaves (C2SP tlog-tiles):

>>> format_index(1234067)
'x001/x234/067'
>>> [t.path for t in tiles_for_size(70_000) if t.width < TILE_WIDTH]
['tile/0/273.p/112', 'tile/1/001.p/17', 'tile/2/000.p/1']
>>> parse_tile_path("tile/entries/x001/234.p/7")
TileID(level=0, index=1234, width=7, entries=True)
>>> decode_bundle(encode_bundle([b"one", b"two"]))
[b'one', b'two']

Every parser here is strict: it accepts exactly what the formatter produces
and raises :class:`~verifier.errors.MalformedTile` or
:class:`~verifier.errors.MalformedBundle` for anything else, so one tile has
one name. Tree sizes and indexes are uint64, as in every tlog.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from verifier.errors import MalformedBundle, MalformedTile
from verifier.hashing import HASH_SIZE

__all__ = [
    "MAX_ENTRY_SIZE",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileID",
    "bundles_for_size",
    "decode_bundle",
    "encode_bundle",
    "format_index",
    "iter_bundles_for_size",
    "iter_tiles_for_size",
    "parse_index",
    "parse_tile_path",
    "split_tile",
    "tile_width_at",
    "tiles_for_size",
]

TILE_HEIGHT = 8
"""Levels of the Merkle tree covered by one tile (C2SP tlog-tiles)."""

TILE_WIDTH = 1 << TILE_HEIGHT
"""Hashes in a full tile, and entries in a full entry bundle: 256."""

MAX_ENTRY_SIZE = 0xFFFF
"""Largest entry an entry bundle can hold: its length prefix is a uint16."""

_MAX_LEVEL = 63  # C2SP tlog-tiles: L is 0..63

_MAX_UINT64 = (1 << 64) - 1
_DIGITS = frozenset("0123456789")
_PREFIX = "tile/"
_ENTRIES = "entries"
_PARTIAL = ".p/"


def format_index(n: int) -> str:
    """Return the C2SP tlog-tiles path encoding of tile index ``n``.

    Zero-padded groups of three digits, all but the last prefixed with ``x``:
    5 -> ``005``, 1000 -> ``x001/000``, 1234067 -> ``x001/x234/067``.
    Requires ``0 <= n < 2**64``; raises :class:`MalformedTile` otherwise.
    """
    _check_uint64("tile index", n)
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def parse_index(s: str) -> int:
    """Return the tile index that ``s`` encodes (C2SP tlog-tiles).

    Strict: accepts exactly the strings :func:`format_index` produces (no
    leading ``x000/`` group, ASCII digits only, below ``2**64``). Raises
    :class:`MalformedTile` for anything else.
    """
    if not isinstance(s, str):
        raise MalformedTile(f"tile index must be text, not {type(s).__name__}")
    groups = s.split("/")
    if len(groups) > 7:  # 2**64 - 1 has 20 digits: seven groups
        raise MalformedTile(f"tile index {s!r} has too many groups")
    *upper, last = groups
    if not _is_digits(last, 3) or not all(g[:1] == "x" and _is_digits(g[1:], 3) for g in upper):
        raise MalformedTile(f"tile index {s!r} is not x-prefixed 3-digit groups like x001/234")
    if upper and upper[0] == "x000":
        raise MalformedTile(f"tile index {s!r} has a leading zero group")
    n = int("".join(g.lstrip("x") for g in groups))
    if n > _MAX_UINT64:
        raise MalformedTile(f"tile index {s!r} does not fit in 64 bits")
    return n


@dataclass(frozen=True)
class TileID:
    """Names one hash tile or entry bundle (C2SP tlog-tiles).

    ``level`` is the tile level (0..63; always 0 for an entry bundle), ``index``
    the tile's position in its level, ``width`` the number of hashes or entries
    it holds (256 for a full tile, 1..255 for a partial one) and ``entries``
    True for an entry bundle. Construction raises :class:`MalformedTile` for an
    impossible tile.
    """

    level: int
    index: int
    width: int = TILE_WIDTH
    entries: bool = False

    def __post_init__(self) -> None:
        """Raise MalformedTile unless the fields name a possible tile."""
        if not _is_int(self.level) or not 0 <= self.level <= _MAX_LEVEL:
            raise MalformedTile(f"tile level must be 0..{_MAX_LEVEL}, got {self.level!r}")
        _check_uint64("tile index", self.index)
        if not _is_int(self.width) or not 1 <= self.width <= TILE_WIDTH:
            raise MalformedTile(f"tile width must be 1..{TILE_WIDTH}, got {self.width!r}")
        if not isinstance(self.entries, bool):
            raise MalformedTile(f"entries must be a bool, got {self.entries!r}")
        if self.entries and self.level != 0:
            raise MalformedTile(f"an entry bundle has no level, got level {self.level}")

    @property
    def path(self) -> str:
        """Return the tile's path, ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]``."""
        kind = _ENTRIES if self.entries else str(self.level)
        path = f"{_PREFIX}{kind}/{format_index(self.index)}"
        if self.width < TILE_WIDTH:
            path += f"{_PARTIAL}{self.width}"
        return path


def parse_tile_path(path: str) -> TileID:
    """Return the :class:`TileID` a tile or entry-bundle path names (C2SP tlog-tiles).

    ``path`` starts at ``tile/`` (strip the log prefix first). Strict: the level
    is ``0``..``63`` without leading zeros, the index is canonical
    (:func:`parse_index`) and a partial width is ``1``..``255`` without leading
    zeros, so ``parse_tile_path(t.path) == t`` and every tile has one name.
    Raises :class:`MalformedTile` for anything else.
    """
    if not isinstance(path, str) or not path.startswith(_PREFIX):
        raise MalformedTile(f"tile path {path!r} does not start with {_PREFIX!r}")
    kind, sep, rest = path[len(_PREFIX) :].partition("/")
    if not sep:
        raise MalformedTile(f"tile path {path!r} has no tile index")
    width = TILE_WIDTH
    if _PARTIAL in rest:
        rest, _, w = rest.rpartition(_PARTIAL)
        if not _is_canonical_decimal(w) or not 1 <= int(w) < TILE_WIDTH:
            raise MalformedTile(f"tile path {path!r} has a bad partial width {w!r}, want 1..255")
        width = int(w)
    index = parse_index(rest)
    if kind == _ENTRIES:
        return TileID(0, index, width, entries=True)
    if not _is_canonical_decimal(kind) or int(kind) > _MAX_LEVEL:
        raise MalformedTile(f"tile path {path!r} has a bad level {kind!r}, want 0..{_MAX_LEVEL}")
    return TileID(int(kind), index, width)


def tile_width_at(level: int, index: int, size: int) -> int:
    """Return how many hashes tile ``index`` at ``level`` holds in a tree of ``size`` leaves.

    256 for a full tile, 1..255 for a partial one, 0 if the tree does not reach
    the tile yet (C2SP tlog-tiles: ``W = floor(size / 256**level) - 256 * index``,
    capped at 256). Raises :class:`MalformedTile` for a level outside 0..63 or a
    negative index or size.
    """
    if not _is_int(level) or not 0 <= level <= _MAX_LEVEL:
        raise MalformedTile(f"tile level must be 0..{_MAX_LEVEL}, got {level!r}")
    _check_uint64("tile index", index)
    _check_uint64("tree size", size)
    hashes_at_level = size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, hashes_at_level - index * TILE_WIDTH))


def iter_tiles_for_size(size: int) -> Iterator[TileID]:
    """Yield every hash tile a tree of ``size`` leaves has, level by level, by index.

    Full tiles have width 256; the last tile of a level is partial when the
    level's hash count is not a multiple of 256 (C2SP tlog-tiles). A tree of
    size 0 has no tiles. Lazy, so usable for any uint64 size. Raises
    :class:`MalformedTile` if ``size`` is not ``0 <= size < 2**64``.
    """
    _check_uint64("tree size", size)
    return _iter_all_levels(size)


def tiles_for_size(size: int) -> list[TileID]:
    """Return :func:`iter_tiles_for_size` as a list (for small trees)."""
    return list(iter_tiles_for_size(size))


def iter_bundles_for_size(size: int) -> Iterator[TileID]:
    """Yield every entry bundle a tree of ``size`` leaves has, by index.

    One bundle per level-0 tile, with the same widths (C2SP tlog-tiles). Lazy.
    Raises :class:`MalformedTile` if ``size`` is not ``0 <= size < 2**64``.
    """
    _check_uint64("tree size", size)
    return _iter_level(size, 0, entries=True)


def bundles_for_size(size: int) -> list[TileID]:
    """Return :func:`iter_bundles_for_size` as a list (for small trees)."""
    return list(iter_bundles_for_size(size))


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """Return the entry bundle holding ``entries``: each one prefixed with its
    length as a big-endian uint16 (C2SP tlog-tiles).

    Raises :class:`MalformedBundle` if there are more than 256 entries or an
    entry is longer than 65,535 bytes.
    """
    if len(entries) > TILE_WIDTH:
        raise MalformedBundle(
            f"an entry bundle holds at most {TILE_WIDTH} entries, got {len(entries)}"
        )
    out = bytearray()
    for i, entry in enumerate(entries):
        if len(entry) > MAX_ENTRY_SIZE:
            raise MalformedBundle(
                f"entry {i} is {len(entry)} bytes; a bundle entry is at most {MAX_ENTRY_SIZE}"
            )
        out += len(entry).to_bytes(2, "big")
        out += entry
    return bytes(out)


def decode_bundle(data: bytes, count: int | None = None) -> list[bytes]:
    """Return the entries of entry bundle ``data`` (C2SP tlog-tiles).

    If ``count`` is given (the bundle's width, 1..256), the bundle must hold
    exactly that many entries. Raises :class:`MalformedBundle` if ``data`` is
    empty or truncated, has bytes after the last entry, holds more than 256
    entries, or does not hold ``count`` entries.
    """
    if count is not None and (not _is_int(count) or not 1 <= count <= TILE_WIDTH):
        raise MalformedBundle(f"an entry bundle holds 1..{TILE_WIDTH} entries, not {count!r}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedBundle(f"an entry bundle is bytes, not {type(data).__name__}")
    view = memoryview(data)
    if not view:
        raise MalformedBundle("an entry bundle holds at least one entry, got 0 bytes")
    limit = TILE_WIDTH if count is None else count
    entries: list[bytes] = []
    pos = 0
    while pos < len(view):
        if len(entries) == limit:
            if count is None:
                raise MalformedBundle(f"entry bundle holds more than {TILE_WIDTH} entries")
            raise MalformedBundle(
                f"entry bundle has {len(view) - pos} trailing bytes after its {count} entries"
            )
        if pos + 2 > len(view):
            raise MalformedBundle(
                f"entry bundle is truncated in the length of entry {len(entries)}"
            )
        n = int.from_bytes(view[pos : pos + 2], "big")
        pos += 2
        if pos + n > len(view):
            raise MalformedBundle(
                f"entry bundle is truncated: entry {len(entries)} claims {n} bytes, "
                f"{len(view) - pos} remain"
            )
        entries.append(bytes(view[pos : pos + n]))
        pos += n
    if count is not None and len(entries) != count:
        raise MalformedBundle(f"entry bundle holds {len(entries)} entries, want {count}")
    return entries


def split_tile(data: bytes, width: int) -> list[bytes]:
    """Return the ``width`` 32-byte hashes of hash tile ``data`` (C2SP tlog-tiles).

    Raises :class:`MalformedTile` unless ``width`` is 1..256 and ``data`` is
    exactly ``32 * width`` bytes.
    """
    if not _is_int(width) or not 1 <= width <= TILE_WIDTH:
        raise MalformedTile(f"tile width must be 1..{TILE_WIDTH}, got {width!r}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedTile(f"a tile is bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) != HASH_SIZE * width:
        raise MalformedTile(f"tile of width {width} is {len(data)} bytes, want {HASH_SIZE * width}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def _iter_all_levels(size: int) -> Iterator[TileID]:
    """Yield the tiles of every level that a tree of ``size`` leaves reaches."""
    level = 0
    while size >> (TILE_HEIGHT * level):
        yield from _iter_level(size, level, entries=False)
        level += 1


def _iter_level(size: int, level: int, *, entries: bool) -> Iterator[TileID]:
    """Yield the tiles (or bundles) at ``level`` of a tree of ``size`` leaves."""
    hashes = size >> (TILE_HEIGHT * level)
    full, partial = divmod(hashes, TILE_WIDTH)
    for index in range(full):
        yield TileID(level, index, TILE_WIDTH, entries)
    if partial:
        yield TileID(level, full, partial, entries)


def _is_int(value: object) -> bool:
    """Return True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_uint64(name: str, value: int) -> None:
    """Raise MalformedTile unless ``value`` is an int in 0..2**64-1."""
    if not _is_int(value) or not 0 <= value <= _MAX_UINT64:
        raise MalformedTile(f"{name} must be 0..2**64-1, got {value!r}")


def _is_digits(s: str, n: int) -> bool:
    """Return True if ``s`` is exactly ``n`` ASCII digits."""
    return len(s) == n and set(s) <= _DIGITS


def _is_canonical_decimal(s: str) -> bool:
    """Return True if ``s`` is a short ASCII decimal without leading zeros."""
    return 0 < len(s) <= 3 and set(s) <= _DIGITS and (s == "0" or s[0] != "0")
