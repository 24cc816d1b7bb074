"""Keep the log env's cold pages out of the page cache.

Every entry adds about 500 bytes to the log env's data file (its leaf, ~350 bytes on
average in the benchmarks, and its share of tiles, keys and B-tree pages), and the
kernel keeps every page it writes in its page cache until memory runs short. On a
virtual machine whose host backs guest memory on first touch, each of those new cache
pages costs a host fault once the guest's already-backed memory is used up: on the
reference machine (a Firecracker guest) fsync'd sequential writes of a growing file ran
at 0.62-0.64 GiB/s for the first 2 GiB and at 0.21 GiB/s after, with system time per
GiB going from 0.7 s to 3.7 s; with the pages written more than 256 MiB earlier dropped
from the cache, 0.62-0.71 GiB/s throughout (docs/benchmarks.md, 2026-11-29). The
append rate of a log fell the same way past about 8 million entries. In a container
the same pages count against the memory limit.

Most of those bytes are never read again: a transparency log's readers ask for proofs
(tile records) and recent entries; old leaves are read rarely. So after each durable
commit, :class:`ColdPages` asks the kernel (``posix_fadvise(POSIX_FADV_DONTNEED)``) to
drop the part of the file written more than ``lag`` bytes ago, a ``step`` at a time.
The kernel leaves alone any page a process has mapped (and, as it drops whole folios,
the rest of that page's folio), and LMDB reads through its memory map: every page read
since it was written stays (B-tree branch pages, tile records a proof read, leaves a
reader fetched). Complete tile records, which proofs read at random, are mapped on
purpose: as a batch completes a record, the writer reads one byte of each of its pages
through the map (:func:`map_pages`), within the same commit's aftermath, long before the
record's part of the file goes cold. (Other reads do not cover them: the indexer reads
only the first 8 bytes of each leaf hash, pages 0-1 of a record's four, and the rows
above, pages 2-3, are what proofs read.) A dropped page that is read later comes back
from the disk. On the reference machine, a log of the benchmark's 200-500-byte leaves
kept about 44% of its cold pages cached (whole folios with a mapped page stay).

"Written more than ``lag`` bytes ago" is, exactly, "below the data file's high-water mark
minus ``lag``": LMDB reuses freed pages below the mark, and a page reused there after its
range was dropped simply stays cached (the range is not advised again).

Only a hint: the data are on disk already (the commit was fsync'd), nothing is lost
and nothing fails if the platform has no such advice (then this does nothing).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

__all__ = ["COLD_LAG_BYTES", "COLD_STEP_BYTES", "ColdPages", "map_pages"]

_log = logging.getLogger("tlog.pagecache")

COLD_LAG_BYTES = 256 << 20
"""The most recently written part of the data file that stays cached whatever happens
(B-tree pages written lately are read again by the next transactions)."""

COLD_STEP_BYTES = 64 << 20
"""How much newly cold file is dropped at once (one ``posix_fadvise`` call)."""

_ADVICE = getattr(os, "POSIX_FADV_DONTNEED", None)


class ColdPages:
    """Drops the cold part of one data file from the page cache (see the module).

    ``start``: the file offset from which written data may be dropped (data written by
    an earlier process is left to the kernel). ``lag`` and ``step`` default to
    COLD_LAG_BYTES and COLD_STEP_BYTES as they are when it is made. Thread-safe (every
    write transaction's commit calls it, on whichever thread ran it).
    """

    def __init__(
        self,
        data_file: Path,
        start: int,
        *,
        lag: int | None = None,
        step: int | None = None,
    ) -> None:
        self._lag = COLD_LAG_BYTES if lag is None else lag
        self._step = COLD_STEP_BYTES if step is None else step
        self._done = start
        self._lock = threading.Lock()
        self._fd: int | None = None
        if _ADVICE is not None:
            try:
                self._fd = os.open(data_file, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                _log.warning("cannot open %s to trim its page cache: %s", data_file, exc)

    @property
    def dropped_to(self) -> int:
        """Return the file offset up to which written pages have been dropped."""
        return self._done

    def written_up_to(self, end: int) -> None:
        """The file's first ``end`` bytes hold committed data: drop the pages between
        the last drop and ``end - lag`` once ``step`` bytes of them have gathered.

        Raises nothing: a failed advice is logged (it is only a hint).
        """
        cold = end - self._lag
        if self._fd is None or cold - self._done < self._step:
            return
        with self._lock:
            if self._fd is None or cold - self._done < self._step:
                return
            try:
                os.posix_fadvise(self._fd, self._done, cold - self._done, _ADVICE)  # type: ignore[arg-type]
            except OSError as exc:
                _log.warning("posix_fadvise(DONTNEED) failed: %s; no longer trimming", exc)
                os.close(self._fd)
                self._fd = None
                return
            self._done = cold

    def close(self) -> None:
        """Close the file descriptor (idempotent)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


_TOUCH_STRIDE = 2048
"""Less than any page size, so a strided read touches every page of a buffer."""


def map_pages(buffer: bytes | memoryview) -> None:
    """Read one byte of every page a buffer of LMDB's memory map spans, so that this
    process maps each of them and ColdPages's advice leaves them cached."""
    if len(buffer):
        bytes(buffer[::_TOUCH_STRIDE])
        bytes(buffer[-1:])  # the last page, which the stride may have stepped over
