"""The log env's cold pages leave the page cache; tile records and read pages stay; and
everything dropped still reads back (from the disk) exactly."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.reference import mth_of_hashes
from tlog import pagecache
from tlog.log import Store
from tlog.pagecache import ColdPages
from tlog.storage import tile_key
from verifier.hashing import leaf_hash
from verifier.proof import verify_inclusion

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="mincore(2) and POSIX_FADV_DONTNEED: Linux"
)

PAGE = mmap.PAGESIZE


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
    with open(path, "wb") as f:
        f.write(os.urandom(8 * mib))
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
        assert len(f.read()) == 8 * mib


def map_base(path: Path) -> int:
    """Return the address at which this process maps the start of the file (LMDB maps
    its data file whole, from offset 0)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path) and int(fields[2], 16) == 0:
            return int(fields[0].split("-")[0], 16)
    raise AssertionError(f"{path} is not mapped")


def test_a_log_keeps_its_tiles_cached_drops_its_leaves_and_reads_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pagecache, "COLD_LAG_BYTES", 1 << 20)
    monkeypatch.setattr(pagecache, "COLD_STEP_BYTES", 256 << 10)
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", "bucket.example/logs/t")
        leaves = [i.to_bytes(4, "big") + os.urandom(1500) for i in range(8_000)]
        for k in range(0, len(leaves), 500):
            log.append_many(leaves[k : k + 500])
        data = (tmp_path / "lmdb" / "data.mdb").resolve()
        dropped_to = store.storage._cold.dropped_to
        assert dropped_to > 8 << 20  # ~12 MiB of leaves written, 1 MiB of lag
        pages = resident(data)
        # Most of what was written has left the cache (the kernel keeps whole folios
        # that hold a mapped page: 27% of these pages stayed, in trials)...
        assert sum(pages[: dropped_to // PAGE]) < 0.5 * (dropped_to // PAGE)
        # ...but not one page of a complete tile record in that part (proofs read them;
        # the indexer has read each through the map, tlog.pagecache says why that keeps
        # them).
        base = map_base(data)
        checked = 0
        with store.storage.read() as txn:
            for tile in range(len(leaves) // 256):
                value = txn.get(tile_key(0, tile), db=log.dbs.tiles)
                assert value is not None
                start = np.frombuffer(value, dtype=np.uint8).ctypes.data - base  # no read
                if start + len(value) <= dropped_to:
                    first, last = start // PAGE, (start + len(value) - 1) // PAGE
                    assert all(pages[first : last + 1]), f"tile 0/{tile} left the cache"
                    checked += 1
        assert checked > 10
        # Nothing is lost: leaves and proofs read back from the disk exactly.
        size = log.size
        hashes = [leaf_hash(leaf) for leaf in leaves]
        root = mth_of_hashes(hashes)
        assert log.root(size) == root
        for i in range(0, len(leaves), 97):
            assert log.entry(i) == leaves[i]
            verify_inclusion(i, size, hashes[i], log.inclusion_proof(i, size), root)
    finally:
        store.close()
