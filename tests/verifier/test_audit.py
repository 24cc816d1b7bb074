"""Tests for :mod:`verifier.audit` and :mod:`verifier.client`: auditing whole tlog-tiles logs.

The logs audited here are Tessera's real test log (an independent Go implementation
wrote it) and logs we write ourselves with :func:`write_log`, whose hashes come
from the recursive RFC 6962 reference in ``tests/reference.py``, not from the code
under test. Tamper loops run in-process over a :class:`MemorySource`, so checking
every byte of every file costs milliseconds per variant.
"""

from __future__ import annotations

import doctest
import gzip
import http.server
import json
import os
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VECTORS
from tests.reference import consistency_proof, mth_of_hashes
from verifier import audit_log, verify_consistency, verify_receipt
from verifier.audit import (
    AuditState,
    verify_checkpoint_consistency,
    verify_receipt_in_log,
)
from verifier.checkpoint import Checkpoint, sign_checkpoint
from verifier.client import DirSource, HTTPSource, fetch_consistency_proof, open_source
from verifier.errors import (
    FetchFailed,
    InconsistentCheckpoints,
    InvalidSignature,
    MalformedBundle,
    MalformedCheckpoint,
    MalformedNote,
    MalformedState,
    MalformedTile,
    OriginMismatch,
    ResourceNotFound,
    RootMismatch,
    SourceUnavailable,
    TileMismatch,
    UnknownKey,
    VerificationError,
)
from verifier.hashing import leaf_hash
from verifier.note import Signer, parse_vkey
from verifier.receipt import Receipt, format_receipt
from verifier.tiles import (
    TILE_WIDTH,
    TileID,
    encode_bundle,
    iter_bundles_for_size,
    iter_tiles_for_size,
)

TESSERA: dict[str, Any] = json.loads((VECTORS / "tessera-testdata-log.json").read_text())
TESSERA_DIR = VECTORS / TESSERA["dir"]
TESSERA_KEY = parse_vkey(TESSERA["vkey"])
TESSERA_ORIGIN: str = TESSERA["origin_line"]
TESSERA_LEAVES = [w.encode() for w in TESSERA["leaves_text"]]

ORIGIN = "example.com/logs/audit-test"
SIGNER = Signer.from_seed(ORIGIN, bytes(range(32)))
OTHER_SIGNER = Signer.from_seed(ORIGIN, bytes(32))  # same name, another key


# --- helpers: sources, log writers, servers -----------------------------------------------


class MemorySource:
    """A log held in a dict of path -> bytes (a TileSource for fast tamper loops)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def location(self, path: str) -> str:
        return f"memory:{path}"

    def fetch(self, path: str, *, max_bytes: int) -> bytes:
        try:
            data = self.files[path]
        except KeyError:
            raise ResourceNotFound(f"{path}: not in the log", url=path) from None
        if len(data) > max_bytes:
            raise FetchFailed(f"{path}: larger than {max_bytes} bytes", url=path)
        return data


class OverlaySource:
    """A directory log with some files replaced (``None`` deletes one)."""

    def __init__(self, base: DirSource, overrides: dict[str, bytes | None]) -> None:
        self.base = base
        self.overrides = overrides

    def location(self, path: str) -> str:
        return self.base.location(path)

    def fetch(self, path: str, *, max_bytes: int) -> bytes:
        if path in self.overrides:
            data = self.overrides[path]
            if data is None:
                raise ResourceNotFound(f"{path}: deleted", url=path)
            return data
        return self.base.fetch(path, max_bytes=max_bytes)


def read_tree(root: Path) -> dict[str, bytes]:
    """Return every file under ``root`` by its relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def tessera_files(size: int = 15) -> dict[str, bytes]:
    """Return Tessera's log as files, with ``checkpoint`` at ``size``."""
    files = read_tree(TESSERA_DIR)
    files["checkpoint"] = files[f"checkpoint.{size}"]
    return files


def tree_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Return the hashes every tile level holds for ``leaves`` (reference maths):
    level 0 the leaf hashes, level l the roots of complete groups of 256 below."""
    levels = [[leaf_hash(x) for x in leaves]]
    while len(levels[-1]) >= TILE_WIDTH:
        below = levels[-1]
        levels.append(
            [mth_of_hashes(below[i : i + TILE_WIDTH]) for i in range(0, len(below) - 255, 256)]
        )
    return levels


def write_log(
    root: Path,
    leaves: Sequence[bytes],
    *,
    signer: Signer = SIGNER,
    sizes: Sequence[int] | None = None,
    origin: str = ORIGIN,
) -> dict[int, str]:
    """Write a C2SP tlog-tiles log of ``leaves`` under ``root``: the tiles and bundles
    of every size in ``sizes`` (default: all leaves; earlier sizes leave their partial
    tiles behind, as a real log does) and ``checkpoint`` for the last one. Returns the
    signed checkpoint of each size."""
    sizes = [len(leaves)] if sizes is None else list(sizes)
    levels = tree_levels(leaves)
    notes = {}
    for size in sizes:
        for tile in iter_tiles_for_size(size):
            start = tile.index * TILE_WIDTH
            _write(root / tile.path, b"".join(levels[tile.level][start : start + tile.width]))
        for bundle in iter_bundles_for_size(size):
            start = bundle.index * TILE_WIDTH
            _write(root / bundle.path, encode_bundle(leaves[start : start + bundle.width]))
        root_hash = mth_of_hashes(levels[0][:size])
        notes[size] = sign_checkpoint(Checkpoint(origin, size, root_hash), signer)
    _write(root / "checkpoint", notes[sizes[-1]].encode())
    return notes


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def leaves_of(count: int, tag: str = "") -> list[bytes]:
    return [f"leaf {i}{tag}".encode() for i in range(count)]


Route = Callable[[http.server.BaseHTTPRequestHandler], None]


@contextmanager
def serve(
    files: dict[str, bytes] | None = None,
    *,
    routes: dict[str, Route] | None = None,
    token: str | None = None,
    gzip_paths: bool = False,
) -> Iterator[tuple[str, list[str]]]:
    """Serve ``files`` (path -> bytes) over HTTP on 127.0.0.1 from a thread; yield the
    base URL and the list of requested paths. ``routes`` override paths (the full
    path with query); ``token`` demands that bearer token; ``gzip_paths`` gzips tiles."""
    requested: list[str] = []
    release = threading.Event()
    files = files or {}
    routes = routes or {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.removeprefix("/log/")
            requested.append(path)
            if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                self.send_error(401)
                return
            if path in routes:
                routes[path](self)
                return
            if path == "__hang__" or "hang" in routes:
                release.wait(10)
                return
            data = files.get(path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            if gzip_paths and path.startswith("tile/"):
                data = gzip.compress(data)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/log", requested
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Route:
    """Return a route answering ``status`` with ``body``."""

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {"Content-Length": str(len(body))}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    return route


def closed_port() -> int:
    """Return a local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_module_examples() -> None:
    import verifier.audit
    import verifier.client
    import verifier.envelope

    for module in (verifier.audit, verifier.client, verifier.envelope):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__


# --- the Tessera log -----------------------------------------------------------------------


def test_tessera_log_audits_clean_from_its_directory() -> None:
    result = audit_log(TESSERA_DIR, [TESSERA_KEY])
    assert result.checkpoint.origin == TESSERA_ORIGIN
    assert result.checkpoint.size == result.entries == 15
    assert result.checkpoint.root == mth_of_hashes([leaf_hash(x) for x in TESSERA_LEAVES])
    assert (result.bundles, result.tiles, result.fallbacks) == (1, 1, 0)
    assert result.signed_by == (f"{TESSERA_ORIGIN}+33d7b496",)
    assert result.previous is None and result.state.size == 15


@pytest.mark.parametrize("size", range(16))
def test_tessera_log_audits_clean_at_every_size(size: int) -> None:
    result = audit_log(MemorySource(tessera_files(size)), [TESSERA_KEY], origin=TESSERA_ORIGIN)
    assert result.entries == size
    assert result.checkpoint.root == mth_of_hashes([leaf_hash(x) for x in TESSERA_LEAVES[:size]])


def _entry_of_byte(bundle: bytes) -> list[tuple[int, bool]]:
    """Return, for each byte of a bundle, (entry index, is it a length byte)."""
    owners = []
    pos = entry = 0
    while pos < len(bundle):
        n = int.from_bytes(bundle[pos : pos + 2], "big")
        owners += [(entry, True)] * 2 + [(entry, False)] * n
        pos += 2 + n
        entry += 1
    return owners


@pytest.mark.parametrize("size", range(1, 16))
def test_every_byte_change_of_every_file_read_is_caught(size: int) -> None:
    files = tessera_files(size)
    tile, bundle = f"tile/0/000.p/{size}", f"tile/entries/000.p/{size}"
    read = ["checkpoint", tile, bundle]
    owners = _entry_of_byte(files[bundle])
    variants = 0
    for name in read:
        original = files[name]
        for pos in range(len(original)):
            for flip in (0x01, 0x80):
                mutated = bytearray(original)
                mutated[pos] ^= flip
                source = MemorySource({**files, name: bytes(mutated)})
                with pytest.raises(VerificationError) as caught:
                    audit_log(source, [TESSERA_KEY])
                err, message = caught.value, str(caught.value)
                assert "\n" not in message
                if name == "checkpoint":
                    assert isinstance(
                        err, MalformedNote | InvalidSignature | UnknownKey | MalformedCheckpoint
                    ), (pos, message)
                    assert message.startswith("checkpoint (memory:checkpoint): ")
                elif name == tile:
                    assert isinstance(err, TileMismatch), (pos, message)
                    assert (err.path, err.position, err.index) == (tile, pos // 32, pos // 32)
                    assert f"{bundle}: entry {pos // 32} (leaf index {pos // 32})" in message
                    assert tile in message
                else:
                    entry, is_length = owners[pos]
                    assert isinstance(err, TileMismatch | MalformedBundle), (pos, message)
                    assert message.startswith(f"{bundle}: ")
                    if not is_length:
                        assert isinstance(err, TileMismatch)
                        assert err.index == entry and f"leaf index {entry})" in message
                variants += 1
    assert variants == 2 * sum(len(files[n]) for n in read)


def test_truncated_long_and_missing_files() -> None:
    files = tessera_files()
    tile, bundle = "tile/0/000.p/15", "tile/entries/000.p/15"
    cases: list[tuple[str, bytes | None, type[VerificationError], str]] = [
        (tile, files[tile][:-1], MalformedTile, f"{tile}: 479 bytes, want 480"),
        (tile, files[tile] + b"\0", MalformedTile, f"{tile}: 481 bytes, want 480"),
        (tile, b"", MalformedTile, f"{tile}: 0 bytes"),
        (tile, files[tile][:-32] + files[tile][:32], TileMismatch, "entry 14 (leaf index 14)"),
        (bundle, files[bundle][:-1], MalformedBundle, f"{bundle}: truncated: entry 14"),
        (bundle, files[bundle][:-7], MalformedBundle, f"{bundle}: truncated in the length"),
        (bundle, files[bundle] + b"\0\0", MalformedBundle, f"{bundle}: 2 bytes after its 15"),
        (tile, None, ResourceNotFound, f"{tile}: not in the log"),
        (bundle, None, ResourceNotFound, f"{bundle}: not in the log"),
        ("checkpoint", None, ResourceNotFound, "checkpoint: not in the log"),
        ("checkpoint", b"", MalformedNote, "checkpoint (memory:checkpoint): malformed note"),
    ]
    for name, data, kind, message in cases:
        changed = dict(files)
        if data is None:
            del changed[name]
        else:
            changed[name] = data
        with pytest.raises(kind) as caught:
            audit_log(MemorySource(changed), [TESSERA_KEY])
        assert message in str(caught.value), (name, str(caught.value))


def test_checkpoint_signed_by_another_key_or_not_matching_the_tiles() -> None:
    files = tessera_files()
    stranger = Signer.from_seed(TESSERA_ORIGIN, bytes(32))
    cp = Checkpoint(TESSERA_ORIGIN, 15, mth_of_hashes([leaf_hash(x) for x in TESSERA_LEAVES]))
    files["checkpoint"] = sign_checkpoint(cp, stranger).encode()
    with pytest.raises(UnknownKey, match=r"^checkpoint \(memory:checkpoint\): note has no"):
        audit_log(MemorySource(files), [TESSERA_KEY])
    # The right key, a root the tiles do not give.
    wrong = Checkpoint(TESSERA_ORIGIN, 15, bytes(32))
    files["checkpoint"] = sign_checkpoint(wrong, stranger).encode()
    with pytest.raises(RootMismatch, match="tiles of the tree of size 15 give root"):
        audit_log(MemorySource(files), [stranger.verifier_key])
    # The right key and tiles, but another origin than asked for.
    with pytest.raises(OriginMismatch):
        audit_log(TESSERA_DIR, [TESSERA_KEY], origin="example.com/other")


# --- our own logs: every size, partial tiles, fallback, bounded memory -----------------------


def test_small_logs_of_every_shape(tmp_path: Path) -> None:
    leaves = leaves_of(600)
    for size in (1, 2, 3, 255, 256, 257, 511, 512, 513, 600):
        root = tmp_path / str(size)
        write_log(root, leaves[:size])
        result = audit_log(root, [SIGNER.verifier_key])
        assert result.checkpoint.root == mth_of_hashes([leaf_hash(x) for x in leaves[:size]])
        assert result.tiles == len(list(iter_tiles_for_size(size)))
        assert result.bundles == len(list(iter_bundles_for_size(size)))


def test_empty_log(tmp_path: Path) -> None:
    write_log(tmp_path, [])
    result = audit_log(tmp_path, [SIGNER.verifier_key])
    assert (result.entries, result.tiles, result.bundles) == (0, 0, 0)


def test_full_tile_read_when_a_partial_one_is_gone(tmp_path: Path) -> None:
    notes = write_log(tmp_path, leaves_of(600), sizes=[300, 600])
    (tmp_path / "checkpoint").write_text(notes[300])
    for path in ("tile/0/001.p/44", "tile/entries/001.p/44"):
        (tmp_path / path).unlink()
    result = audit_log(tmp_path, [SIGNER.verifier_key])
    assert (result.entries, result.fallbacks) == (300, 2)
    # Without the full tile either, the missing partial one is reported.
    (tmp_path / "tile/0/001").unlink()
    with pytest.raises(ResourceNotFound, match=r"tile/0/001\.p/44: not in the log directory"):
        audit_log(tmp_path, [SIGNER.verifier_key])


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log of 70,000 leaves: three tile levels, a partial tile at each (C2SP example)."""
    root = tmp_path_factory.mktemp("big")
    write_log(root, leaves_of(70_000))
    return root


def test_big_log_with_three_levels(big_log: Path) -> None:
    assert (big_log / "tile/0/273.p/112").is_file()
    assert (big_log / "tile/1/001.p/17").is_file()
    assert (big_log / "tile/2/000.p/1").is_file()
    tracemalloc.start()
    try:
        result = audit_log(big_log, [SIGNER.verifier_key])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (result.entries, result.bundles, result.tiles) == (70_000, 274, 277)
    # Streaming: one bundle and one tile at a time, never the tree (70,000 leaf hashes
    # alone would be 2.2 MB as bytes, more as objects).
    assert peak < 512 * 1024, peak


@pytest.mark.parametrize(
    ("path", "pos", "first_leaf"),
    [
        ("tile/1/000", 5 * 32 + 7, 5 * 256),
        ("tile/1/000", 255 * 32, 255 * 256),
        ("tile/1/001.p/17", 16 * 32 + 31, (256 + 16) * 256),
        ("tile/2/000.p/1", 0, 0),
        ("tile/2/000.p/1", 31, 0),
        ("tile/0/273.p/112", 111 * 32, 273 * 256 + 111),
    ],
)
def test_big_log_upper_tile_byte_changes(
    big_log: Path, path: str, pos: int, first_leaf: int
) -> None:
    data = bytearray((big_log / path).read_bytes())
    data[pos] ^= 0x10
    source = OverlaySource(DirSource(big_log), {path: bytes(data)})
    with pytest.raises(TileMismatch) as caught:
        audit_log(source, [SIGNER.verifier_key])
    assert (caught.value.path, caught.value.position) == (path, pos // 32)
    assert caught.value.index == first_leaf
    assert str(caught.value).startswith(f"{path}: ") or path in str(caught.value)


def test_big_log_level1_tile_of_wrong_width(big_log: Path) -> None:
    data = (big_log / "tile/1/001.p/17").read_bytes()
    source = OverlaySource(DirSource(big_log), {"tile/1/001.p/17": data[:-32]})
    with pytest.raises(MalformedTile, match=r"^tile/1/001\.p/17: 512 bytes, want 544"):
        audit_log(source, [SIGNER.verifier_key])


def test_progress_is_reported(big_log: Path) -> None:
    seen: list[tuple[int, int]] = []
    audit_log(big_log, [SIGNER.verifier_key], progress=lambda p: seen.append((p.entries, p.total)))
    assert len(seen) == 274
    assert seen[0] == (256, 70_000) and seen[-1] == (70_000, 70_000)


# --- history: the state file -------------------------------------------------------------


def test_state_file_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = audit_log(TESSERA_DIR, [TESSERA_KEY], state=state)
    assert first.previous is None
    saved = json.loads(state.read_text())
    assert saved["size"] == 15 and saved["origin"] == TESSERA_ORIGIN
    second = audit_log(TESSERA_DIR, [TESSERA_KEY], state=state)
    assert second.previous == first.state
    # A grown log: the state moves on.
    files = tessera_files(4)
    audit_log(MemorySource(files), [TESSERA_KEY], state=tmp_path / "s2")
    grown = audit_log(TESSERA_DIR, [TESSERA_KEY], state=tmp_path / "s2")
    assert grown.previous is not None and grown.previous.size == 4
    assert AuditState.load(tmp_path / "s2", [TESSERA_KEY]) == grown.state


def test_state_from_a_larger_tree_is_caught(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    audit_log(TESSERA_DIR, [TESSERA_KEY], state=state)
    before = state.read_bytes()
    with pytest.raises(InconsistentCheckpoints, match=r"log shrank.*size 9.*size 15") as caught:
        audit_log(MemorySource(tessera_files(9)), [TESSERA_KEY], state=state)
    assert caught.value.old_size == 15 and caught.value.new_size == 9
    assert caught.value.old == (TESSERA_DIR / "checkpoint").read_text()
    assert state.read_bytes() == before  # a failed audit never moves the state


def test_every_old_size_is_checked_as_a_prefix(tmp_path: Path) -> None:
    """For each old size m of a 600-leaf log, the audit recomputes the root of the
    first m leaves on the way: the real old root passes, any other root fails."""
    leaves = leaves_of(600)
    notes = write_log(tmp_path, leaves, sizes=list(range(0, 601)))
    source = MemorySource(read_tree(tmp_path))
    hashes = [leaf_hash(x) for x in leaves]
    for m in [*range(0, 20), *range(250, 262), *range(505, 520), 599, 600]:
        good = AuditState(ORIGIN, m, mth_of_hashes(hashes[:m]), notes[m])
        assert audit_log(source, [SIGNER.verifier_key], state=good).previous == good
        if m == 0:
            continue
        bad = AuditState(ORIGIN, m, mth_of_hashes(hashes[1 : m + 1]), notes[m])
        with pytest.raises(InconsistentCheckpoints) as caught:
            audit_log(source, [SIGNER.verifier_key], state=bad)
        expected = "forked" if m == 600 else "rewrote history"
        assert expected in str(caught.value), (m, str(caught.value))


def test_prefix_check_across_three_levels(big_log: Path) -> None:
    hashes = [leaf_hash(x) for x in leaves_of(70_000)]
    for m in (65_536, 65_537):
        old = Checkpoint(ORIGIN, m, mth_of_hashes(hashes[:m]))
        good = AuditState(ORIGIN, m, old.root, sign_checkpoint(old, SIGNER))
        assert audit_log(big_log, [SIGNER.verifier_key], state=good).previous == good
    bad = AuditState(ORIGIN, 65_537, bytes(32), good.checkpoint)
    with pytest.raises(InconsistentCheckpoints, match="first 65537 leaves"):
        audit_log(big_log, [SIGNER.verifier_key], state=bad)


def test_forked_log_is_caught(tmp_path: Path) -> None:
    honest, forked, same_size = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    leaves = leaves_of(300)
    rewritten = list(leaves_of(400))
    rewritten[5] = b"leaf 5, rewritten"
    write_log(honest, leaves)
    write_log(forked, rewritten)
    write_log(same_size, rewritten[:300])
    state = tmp_path / "state.json"
    audit_log(honest, [SIGNER.verifier_key], state=state)
    # Each forked log is internally consistent: alone, it audits clean.
    assert audit_log(forked, [SIGNER.verifier_key]).entries == 400
    with pytest.raises(InconsistentCheckpoints, match=r"rewrote history: its first 300 leaves"):
        audit_log(forked, [SIGNER.verifier_key], state=state)
    with pytest.raises(InconsistentCheckpoints, match="forked: its checkpoint of size 300"):
        audit_log(same_size, [SIGNER.verifier_key], state=state)


def test_bad_state_files(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    for text in ("not json", "[]", '{"format": "other"}', "{}"):
        state.write_text(text)
        with pytest.raises(MalformedState, match="state file"):
            audit_log(TESSERA_DIR, [TESSERA_KEY], state=state)
    # Signed by a key we do not trust, or its fields edited by hand.
    state.unlink()
    audit_log(TESSERA_DIR, [TESSERA_KEY], state=state)
    doc = json.loads(state.read_text())
    state.write_text(json.dumps({**doc, "size": 14}))
    with pytest.raises(MalformedState, match="differ from its signed checkpoint"):
        audit_log(TESSERA_DIR, [TESSERA_KEY], state=state)
    stranger = Signer.from_seed(TESSERA_ORIGIN, bytes(32))
    forged = sign_checkpoint(Checkpoint(TESSERA_ORIGIN, 15, _roots(15)[0]), stranger)
    state.write_text(json.dumps({**doc, "checkpoint": forged}))
    with pytest.raises(MalformedState, match="does not verify with the given keys"):
        audit_log(TESSERA_DIR, [TESSERA_KEY], state=state)
    # A state for another log.
    other, signer = tmp_path / "other", Signer.from_seed(TESSERA_ORIGIN, bytes(range(32)))
    write_log(other, leaves_of(3), origin=TESSERA_ORIGIN, signer=signer)
    with pytest.raises(OriginMismatch, match="but the audit state is for"):
        audit_log(other, [signer.verifier_key], state=AuditState(ORIGIN, 1, bytes(32), "x"))


# --- over HTTP ---------------------------------------------------------------------------


def test_http_audit_clean_with_token_and_gzip() -> None:
    files = tessera_files()
    with serve(files, token="s3cret", gzip_paths=True) as (url, requested):
        result = audit_log(url, [TESSERA_KEY], token="s3cret")
        assert result.entries == 15
        assert requested == ["checkpoint", "tile/entries/000.p/15", "tile/0/000.p/15"]
        with pytest.raises(FetchFailed, match=r"checkpoint: HTTP 401") as caught:
            audit_log(url, [TESSERA_KEY])
        assert caught.value.status == 401


def test_http_errors_and_timeouts() -> None:
    files = tessera_files()
    with serve(files, routes={"tile/0/000.p/15": answer(500, b"oops")}) as (url, _):
        with pytest.raises(FetchFailed, match=r"^GET http://.*/tile/0/000\.p/15: HTTP 500"):
            audit_log(url, [TESSERA_KEY])
    with serve(files, routes={"tile/0/000.p/15": answer(200, b"x", {"Content-Length": "480"})}) as (
        url,
        _,
    ):
        with pytest.raises(FetchFailed, match=r"000\.p/15: (truncated answer|broken HTTP)"):
            audit_log(url, [TESSERA_KEY])
    with serve(files, routes={"hang": answer(200)}) as (url, _):
        started = time.monotonic()
        with pytest.raises(FetchFailed, match=r"checkpoint: no complete answer within 0.3 s"):
            audit_log(url, [TESSERA_KEY], timeout=0.3)
        assert time.monotonic() - started < 5
    with pytest.raises(SourceUnavailable, match="cannot connect"):
        audit_log(f"http://127.0.0.1:{closed_port()}/log", [TESSERA_KEY])
    for bad in ("http://", "ftp://example.com/log", "https://example.com:99999/", "http://a/?q"):
        with pytest.raises(SourceUnavailable, match="bad log URL"):
            open_source(bad)
    with pytest.raises(SourceUnavailable, match="not a directory"):
        audit_log(TESSERA_DIR / "nope", [TESSERA_KEY])


def test_http_gzip_bomb_and_oversize_refused() -> None:
    files = tessera_files()
    bomb = gzip.compress(bytes(10_000_000))
    routes = {
        "tile/0/000.p/15": answer(
            200, bomb, {"Content-Encoding": "gzip", "Content-Length": str(len(bomb))}
        )
    }
    with serve(files, routes=routes) as (url, _):
        with pytest.raises(FetchFailed, match="larger than 8192 bytes"):
            audit_log(url, [TESSERA_KEY])


# --- checkpoints and receipts against each other and the log ---------------------------


def test_checkpoint_consistency_for_every_tessera_pair() -> None:
    notes = [(TESSERA_DIR / f"checkpoint.{n}").read_text() for n in range(16)]
    for m in range(16):
        for n in range(m, 16):
            proof = consistency_proof(m, TESSERA_LEAVES[:n])
            checked = verify_checkpoint_consistency(notes[m], notes[n], [TESSERA_KEY], proof)
            assert (checked.old.size, checked.new.size) == (m, n)
            if proof:
                bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
                with pytest.raises(RootMismatch, match="does not extend the old one"):
                    verify_checkpoint_consistency(notes[m], notes[n], [TESSERA_KEY], bad)
            if m < n:
                with pytest.raises(InconsistentCheckpoints, match="sizes went backwards"):
                    verify_checkpoint_consistency(notes[n], notes[m], [TESSERA_KEY], proof)
    # The public function underneath agrees.
    verify_consistency(3, 15, consistency_proof(3, TESSERA_LEAVES), *_roots(3, 15))


def _roots(*sizes: int) -> list[bytes]:
    return [mth_of_hashes([leaf_hash(x) for x in TESSERA_LEAVES[:n]]) for n in sizes]


def test_checkpoint_consistency_needs_one_log_and_one_tree_per_size() -> None:
    other = sign_checkpoint(Checkpoint(ORIGIN, 3, _roots(3)[0]), SIGNER)
    tessera3 = (TESSERA_DIR / "checkpoint.3").read_text()
    with pytest.raises(OriginMismatch, match="different logs"):
        verify_checkpoint_consistency(tessera3, other, [TESSERA_KEY, SIGNER.verifier_key], [])
    fork = sign_checkpoint(Checkpoint(ORIGIN, 3, bytes(32)), SIGNER)
    with pytest.raises(InconsistentCheckpoints, match=r"forked.*both have size 3"):
        verify_checkpoint_consistency(other, fork, [SIGNER.verifier_key], [])
    with pytest.raises(UnknownKey, match=r"^new checkpoint: "):
        verify_checkpoint_consistency(tessera3, other, [TESSERA_KEY], [])


def tessera_receipt(index: int, size: int) -> str:
    from tests.reference import inclusion_path

    checkpoint = (TESSERA_DIR / f"checkpoint.{size}").read_text()
    proof = tuple(inclusion_path(index, TESSERA_LEAVES[:size]))
    return format_receipt(Receipt(index, proof, checkpoint, TESSERA_LEAVES[index]))


def proof_route(m: int, n: int, proof: list[bytes] | None = None) -> dict[str, Route]:
    import base64

    hashes = consistency_proof(m, TESSERA_LEAVES[:n]) if proof is None else proof
    body = json.dumps(
        {"old": m, "new": n, "proof": [base64.b64encode(h).decode() for h in hashes]}
    ).encode()
    return {f"proof/consistency?old={m}&new={n}": answer(200, body)}


def test_receipt_still_in_the_log() -> None:
    receipt = tessera_receipt(4, 7)
    assert verify_receipt(receipt, [TESSERA_KEY]).size == 7
    with serve(tessera_files(), routes=proof_route(7, 15)) as (url, requested):
        checked = verify_receipt_in_log(receipt, [TESSERA_KEY], url)
        assert (checked.receipt.index, checked.latest.size) == (4, 15)
        assert list(checked.proof) == consistency_proof(7, TESSERA_LEAVES)
        assert requested == ["checkpoint", "proof/consistency?old=7&new=15"]
    # Same size: no proof needed; a smaller log: caught.
    with serve(tessera_files(7)) as (url, requested):
        assert verify_receipt_in_log(receipt, [TESSERA_KEY], url).proof == ()
    with serve(tessera_files(6)) as (url, _):
        with pytest.raises(InconsistentCheckpoints, match="sizes went backwards"):
            verify_receipt_in_log(receipt, [TESSERA_KEY], url)
    # A proof that does not verify, and one that answers for other sizes.
    bad = consistency_proof(7, TESSERA_LEAVES)[::-1]
    with serve(tessera_files(), routes=proof_route(7, 15, bad)) as (url, _):
        with pytest.raises(RootMismatch, match="consistency proof from size 7 to 15"):
            verify_receipt_in_log(receipt, [TESSERA_KEY], url)
    wrong = {"proof/consistency?old=7&new=15": answer(200, b'{"old": 7, "new": 14, "proof": []}')}
    with serve(tessera_files(), routes=wrong) as (url, _):
        with pytest.raises(FetchFailed, match="new=14, asked for new=15"):
            verify_receipt_in_log(receipt, [TESSERA_KEY], url)


def test_consistency_proof_needs_http() -> None:
    with pytest.raises(SourceUnavailable, match="serves no consistency proofs"):
        fetch_consistency_proof(DirSource(TESSERA_DIR), 1, 2)
    assert isinstance(open_source("https://example.com/log/"), HTTPSource)
    assert open_source("https://example.com/log/").location("checkpoint") == (
        "https://example.com/log/checkpoint"
    )
    assert "s3cret" not in repr(HTTPSource("https://example.com", token="s3cret"))
    assert os.fspath(DirSource(TESSERA_DIR).root) == os.fspath(TESSERA_DIR)


def test_dir_source_refuses_paths_outside_the_log() -> None:
    source = DirSource(TESSERA_DIR / "tile")
    for path in ("../checkpoint", "0//000.p/1", "./0/000.p/1", "proof?x=1"):
        with pytest.raises(ResourceNotFound):
            source.fetch(path, max_bytes=100)
    with pytest.raises(FetchFailed, match="larger than the 10 bytes"):
        source.fetch("0/000.p/15", max_bytes=10)
    with pytest.raises(FetchFailed, match="is a directory"):
        source.fetch("0", max_bytes=10)
    assert TileID(0, 0, 15).path == "tile/0/000.p/15"


# --- the documentation's example runs ------------------------------------------------------


@pytest.mark.parametrize(
    ("doc_file", "heading"),
    [("docs/auditing.md", "## Python API"), ("README.md", "## For auditors")],
)
def test_docs_python_example_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    doc_file: str,
    heading: str,
) -> None:
    """The Python snippet of docs/auditing.md and of the README, run against Tessera's log
    served over HTTP (with its URL in place of the example's)."""
    doc = (Path(__file__).resolve().parents[2] / doc_file).read_text()
    section = doc.split(heading, 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "gurukul.vkey").write_text(TESSERA["vkey"] + "\n")
    (tmp_path / "entry.tlog-proof").write_text(tessera_receipt(4, 7))
    monkeypatch.chdir(tmp_path)
    with serve(tessera_files(), routes=proof_route(7, 15)) as (url, _):
        code = snippet.replace("https://bucket.example/logs/gurukul", url)
        exec(compile(code, doc_file, "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["entry 4 of the tree of size 7", "still in the log at size 15"]
    assert out[2].startswith("15 entries verified; root ")
    assert json.loads((tmp_path / "gurukul.audit.json").read_text())["size"] == 15


# --- the fast paths of receipt parsing agree with the checked ones -------------------------


def _parse_outcome(parse: Callable[[str], Receipt], text: str) -> object:
    try:
        return parse(text)
    except VerificationError as err:
        return (type(err), str(err))


def test_fast_receipt_parser_agrees_with_the_checked_one() -> None:
    """parse_receipt's fast path (performance only) must accept exactly what the
    line-by-line parser accepts, with the same result, for every one-character edit
    of real receipts (and fall back to it for the error message otherwise)."""
    from verifier.receipt import _parse_receipt_checked, parse_receipt

    texts = [tessera_receipt(i, n) for n, i in ((1, 0), (2, 1), (7, 4), (15, 14))]
    texts.append(tessera_receipt(3, 4).replace("extra dGhyZWU=\n", ""))
    alphabet = ["A", "=", "\n", "0", "x", " ", "—", "/"]
    checked = 0
    for text in texts:
        assert _parse_outcome(parse_receipt, text) == _parse_outcome(_parse_receipt_checked, text)
        head_end = text.index("\n\n") + 4
        for pos in range(head_end):
            for edit in (
                text[:pos] + text[pos + 1 :],
                *(text[:pos] + ch + text[pos + 1 :] for ch in alphabet),
                text[:pos] + "\n" + text[pos:],
            ):
                fast = _parse_outcome(parse_receipt, edit)
                slow = _parse_outcome(_parse_receipt_checked, edit)
                assert fast == slow, (pos, edit)
                checked += 1
    assert checked > 5_000
