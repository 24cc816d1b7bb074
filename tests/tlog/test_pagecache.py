"""The log env's cold pages leave the page cache; tile records and read pages stay; and
everything dropped still reads back (from the disk) exactly."""

from __future__ import annotations

import ctypes
import mmap
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.reference import mth_of_hashes
from tlog import pagecache, storage
from tlog.log import Store
from tlog.pagecache import ColdPages, map_pages
from tlog.storage import tile_key
from verifier.hashing import leaf_hash
from verifier.proof import verify_inclusion

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="mincore(2) and POSIX_FADV_DONTNEED: Linux"
)

PAGE = mmap.PAGESIZE


@pytest.fixture(autouse=True)
def dropping_works(tmp_path: Path) -> None:
    """Skip where the filesystem under tmp_path keeps pages despite the advice (tmpfs,
    which /tmp is on some distributions, ignores POSIX_FADV_DONTNEED)."""
    probe = tmp_path / "probe"
    with open(probe, "wb") as f:
        f.write(os.urandom(64 * PAGE))
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    cached = sum(resident(probe))
    probe.unlink()
    if cached == 64:
        pytest.skip(f"the filesystem under {tmp_path} keeps pages despite POSIX_FADV_DONTNEED")


def mapped_pages(area: mmap.mmap) -> list[bool]:
    """Return, for each page of a memory map, whether it is resident (mincore(2)): for a
    file's pages not touched through this map, whether they are in the page cache."""
    size = len(area)
    vec = (ctypes.c_ubyte * ((size + PAGE - 1) // PAGE))()
    view = ctypes.c_char.from_buffer(area)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mincore(ctypes.c_void_p(ctypes.addressof(view)), ctypes.c_size_t(size), vec):
            raise OSError(ctypes.get_errno(), "mincore")
    finally:
        del view
    return [bool(b & 1) for b in vec]


def resident(path: Path) -> list[bool]:
    """Return, for each page of the file, whether it is in the page cache (through a
    private map of the file, which itself touches nothing)."""
    with open(path, "rb") as f:
        area = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    try:
        return mapped_pages(area)
    finally:
        area.close()


def test_cold_pages_are_dropped_and_mapped_ones_kept(tmp_path: Path) -> None:
    path = tmp_path / "data"
    mib = 1 << 20
    written = os.urandom(8 * mib)
    with open(path, "wb") as f:
        f.write(written)
        f.flush()
        os.fsync(f.fileno())
    # A page in the part that goes cold, mapped (as LMDB's reads map what they read).
    with open(path, "rb") as f:
        kept = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        assert kept[3 * mib + 100] >= 0  # read through the map: the page is mapped
        cold = ColdPages(path, start=mib, lag=2 * mib, step=4 * mib)
        cold.written_up_to(6 * mib)  # 3 MiB gone cold: less than a step, nothing yet
        assert cold.dropped_to == mib
        assert all(resident(path)[: 8 * mib // PAGE])
        cold.written_up_to(8 * mib)  # 5 MiB cold: [1, 6) MiB dropped
        assert cold.dropped_to == 6 * mib
        pages = resident(path)
        assert all(pages[: mib // PAGE])  # before start: left to the kernel
        assert pages[3 * mib // PAGE]  # mapped: kept (with the rest of its folio)
        # The kernel drops whole folios (up to 2 MiB here): at least [4, 6) MiB go.
        dropped = pages[mib // PAGE : 6 * mib // PAGE]
        assert sum(dropped) <= len(dropped) - 2 * mib // PAGE
        assert all(pages[6 * mib // PAGE :])  # within the lag
        cold.close()
        cold.close()
        cold.written_up_to(100 * mib)  # closed: a no-op, not an error
    finally:
        kept.close()
    with open(path, "rb") as f:  # nothing lost: the file reads back from the disk
        assert f.read() == written


def test_map_pages_touches_every_page_of_a_buffer() -> None:
    area = mmap.mmap(-1, 16 * PAGE)  # anonymous: a page is resident once touched
    try:
        assert not any(mapped_pages(area))
        # 16 bytes into page 2 to one byte into page 7: pages 2-7, the last barely.
        map_pages(memoryview(area)[2 * PAGE + 16 : 7 * PAGE + 1])
        assert [i for i, r in enumerate(mapped_pages(area)) if r] == [2, 3, 4, 5, 6, 7]
        map_pages(memoryview(area)[:0])  # empty: nothing to touch
    finally:
        area.close()


def map_base(path: Path) -> int:
    """Return the address at which this process maps the start of the file (LMDB maps
    its data file whole, from offset 0)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path) and int(fields[2], 16) == 0:
            return int(fields[0].split("-")[0], 16)
    raise AssertionError(f"{path} is not mapped")


def build(tmp_path: Path) -> tuple[Store, list[bytes], list[bool], int]:
    """Append 60,000 leaves of 200-500 bytes in batches of 4,096 (the writer's largest) to
    a log whose cold pages go after 1 MiB; return (the open store, the leaves, the data
    file's cached pages, the offset up to which pages were dropped)."""
    store = Store.open(tmp_path)
    log = store.create_log("t", "bucket.example/logs/t")
    rng = random.Random(7)
    leaves = [i.to_bytes(4, "big") + rng.randbytes(rng.randint(196, 496)) for i in range(60_000)]
    for k in range(0, len(leaves), 4096):
        log.append_many(leaves[k : k + 4096])
    store._index_queue_drain()
    data = (tmp_path / "lmdb" / "data.mdb").resolve()
    return store, leaves, resident(data), store.storage._cold.dropped_to


def tile_pages_lost(store: Store, tmp_path: Path, pages: list[bool], dropped_to: int) -> int:
    """Return how many complete level-0 tile records wholly below dropped_to have a page
    that left the cache (found through the map's addresses; nothing is read)."""
    data = (tmp_path / "lmdb" / "data.mdb").resolve()
    base = map_base(data)
    log = store.log("t")
    lost = checked = 0
    with store.storage.read() as txn:
        for tile in range(log.size // 256):
            value = txn.get(tile_key(0, tile), db=log.dbs.tiles)
            assert value is not None
            start = np.frombuffer(value, dtype=np.uint8).ctypes.data - base
            if start + len(value) <= dropped_to:
                checked += 1
                first, last = start // PAGE, (start + len(value) - 1) // PAGE
                lost += not all(pages[first : last + 1])
    assert checked > 50
    return lost


@pytest.fixture
def small_lag(monkeypatch: pytest.MonkeyPatch) -> int:
    lag = 1 << 20
    monkeypatch.setattr(pagecache, "COLD_LAG_BYTES", lag)
    monkeypatch.setattr(pagecache, "COLD_STEP_BYTES", 256 << 10)
    return lag


@pytest.mark.parametrize("indexer", [True, False])
def test_a_log_keeps_its_tiles_cached_drops_its_leaves_and_reads_both(
    tmp_path: Path, small_lag: int, monkeypatch: pytest.MonkeyPatch, indexer: bool
) -> None:
    if not indexer:
        # The indexer reads the first pages of each record too (and the kernel maps the
        # pages around a fault): without it, the writer's own mapping must do.
        monkeypatch.setattr(Store, "_index_upto", lambda self, targets: {})
    store, leaves, pages, dropped_to = build(tmp_path)
    try:
        log = store.log("t")
        in_use = store.storage.disk_bytes()["log"]
        # Everything up to 1 MiB below the high-water mark (and no more) was advised...
        assert in_use - small_lag - (256 << 10) <= dropped_to <= in_use - small_lag
        assert all(pages[dropped_to // PAGE + 1 : in_use // PAGE])
        # ...and most of it has left the cache (whole folios holding a mapped page stay)...
        assert sum(pages[: dropped_to // PAGE]) < 0.6 * (dropped_to // PAGE)
        # ...but not one page of a complete tile record (proofs read them at random).
        assert tile_pages_lost(store, tmp_path, pages, dropped_to) == 0
        # Nothing is lost: leaves and proofs read back from the disk exactly.
        size = log.size
        hashes = [leaf_hash(leaf) for leaf in leaves]
        root = mth_of_hashes(hashes)
        assert log.root(size) == root
        for i in range(0, len(leaves), 397):
            assert log.entry(i) == leaves[i]
            verify_inclusion(i, size, hashes[i], log.inclusion_proof(i, size), root)
    finally:
        store.close()


def test_without_mapping_tile_records_they_would_leave_the_cache(
    tmp_path: Path, small_lag: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control for the test above: with neither the writer mapping complete records
    # nor the indexer reading them, the same build loses pages of many tile records, so
    # the test above can tell when they are not kept.
    monkeypatch.setattr(storage, "map_tile_records", lambda txn, dbs, keys: None)
    monkeypatch.setattr(Store, "_index_upto", lambda self, targets: {})
    store, _leaves, pages, dropped_to = build(tmp_path)
    try:
        assert tile_pages_lost(store, tmp_path, pages, dropped_to) > 10
    finally:
        store.close()
