"""LMDB storage: the only module that imports ``lmdb``.

A data directory holds two LMDB environments:

* ``lmdb/``, the log itself, opened with full fsync: leaves, tile records,
  checkpoints, bodies, idempotency records. Everything here is primary data and
  almost every write is an append, so a batch dirties few pages.
* ``index/``, derived lookups (leaf hash -> index, artifact id -> versions),
  committed right after the log's transaction but without fsync. Random 32-byte
  keys would otherwise make every batch of N entries write N random pages with
  fsync, and throughput would fall as the tree grows. The index records how far
  each log is indexed; on open it is brought up to date from the log, and if the
  machine (not just the process) went down while it was dirty, it is rebuilt from
  the log, since unsynced pages may then be torn. ``index.lock`` beside them is
  locked while a process opens (and, if torn, rebuilds) the index env.

Each log gets its own named databases, so each can be appended to in key order
(LMDB's append mode fills pages completely and skips the B-tree search):

==================  ===========================  ==================================
database            key                          value
==================  ===========================  ==================================
``meta``            ``log/<name>``               JSON log record (id, origin, vkey)
``<id>/leaves``     index, uint64 BE             leaf bytes
``<id>/hashgen18``  generation u32 BE, first     index, uint64 BE (dupsort; index env)
                    8 bytes of the leaf hash
``<id>/tiles``      tile level u8, index u64 BE  tile record (see ``tlog.tree``)
``<id>/checkpoints`` tree size, uint64 BE        signed checkpoint note
``<id>/artifacts``  artifact id, 0x00, u32 BE    index, uint64 BE (index env)
``<id>/bodies``     index, uint64 BE             artifact body bytes
``<id>/idempotency`` SHA-256(principal, 0, key)  JSON (request digest, index)
==================  ===========================  ==================================

The leaf-hash index is split into generations of ``2**GENERATION_BITS`` consecutive
leaves (the generation is the key's first part), so each insert lands in a B-tree range
no bigger than one generation, whatever the log's size: random keys across the whole
log cost about one copied 4 KiB page per insert once the log had many more leaf pages
than a transaction has keys, and the indexer's CPU per entry grew with the log (2.2 us
at 10^5 entries, 6-10 us at 10^7, docs/benchmarks.md). A lookup seeks once per
generation.

Every write happens in one write transaction per batch, committed with fsync
(``sync=True``): either all of a batch is on disk or none of it is. Nothing here
deletes or overwrites a leaf, a hash or a checkpoint; tile records only grow (a
partial tile's record is replaced by a longer one holding the same prefix). (The index
env is derived: a leaf-hash index of an older layout is dropped, and a torn one rebuilt.)
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import logging
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from tlog.errors import NotFound, StorageFull, TlogError
from tlog.pagecache import ColdPages, map_pages
from tlog.tree import RECORD_SIZE, ROW_OFFSETS, Node

__all__ = [
    "DEFAULT_MAP_SIZE",
    "LogDBs",
    "Storage",
    "StorageError",
    "Txn",
    "TxnHashReader",
    "WriteTxn",
]

DEFAULT_MAP_SIZE = 64 << 30
"""64 GiB of address space; LMDB only uses the disk it needs."""

_log = logging.getLogger("tlog.storage")

_U64 = struct.Struct(">Q")
_GEN = struct.Struct(">I")

GENERATION_BITS = 18
"""Leaves per leaf-hash index generation: 2**18 = 262,144. Smaller makes inserts cheaper
and lookups dearer (one seek per generation: 39 at 10^7 leaves). Part of the on-disk
format: the index database and its progress record are named after it, so a build with
another value starts a new index (caught up from the tiles on open) rather than misread
this one. At least 8: index_hashes_upto takes a tile of 256 leaves to lie in one
generation."""
assert GENERATION_BITS >= 8
_TILE_KEY = struct.Struct(">BQ")

Txn = lmdb.Transaction


class StorageError(TlogError):
    """The database is unusable (corrupt, locked, inconsistent)."""

    code = "storage_error"


@dataclass(frozen=True)
class LogDBs:
    """The named databases of one log (``hashes`` and ``artifacts`` live in the index env)."""

    leaves: Any
    tiles: Any
    checkpoints: Any
    bodies: Any
    idempotency: Any
    hashes: Any
    artifacts: Any


class WriteTxn:
    """A write transaction on the log env and, begun on first use, one on the index env;
    committed in that order. Batches of raw logs never touch the index env, so the
    writer and the background indexer do not wait for each other; a batch recording
    artifact ids waits for the index env's lock while an index request is in progress
    (bounded by tlog.indexer.MAX_PER_REQUEST)."""

    def __init__(self, main: Any, ienv: Any) -> None:
        self.main = main
        self._ienv = ienv
        self._index: Any = None

    @property
    def index(self) -> Any:
        """Return the index env's write transaction, beginning it if needed."""
        if self._index is None:
            self._index = self._ienv.begin(write=True)
        return self._index

    @property
    def index_begun(self) -> Any:
        """Return the index env's write transaction if one was begun, else None."""
        return self._index


def u64(n: int) -> bytes:
    """Return n as 8 big-endian bytes (keys sort numerically)."""
    return _U64.pack(n)


def tile_key(tile_level: int, tile_index: int) -> bytes:
    """Return the key of a tile record."""
    return _TILE_KEY.pack(tile_level, tile_index)


def _boot_id() -> str:
    """Return an id of the running kernel boot ('' where the platform has none)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _openers(state: dict[str, Any]) -> int:
    """Return how many processes may have the index env open with unsynced pages."""
    if "open" in state:
        return int(state["open"])
    return 0 if state.get("clean") else 1  # the older {"clean": bool} form


def _bytes_in_use(env: Any) -> int:
    """Return the bytes of an env's data file up to its last page in use."""
    return int((env.info()["last_pgno"] + 1) * env.stat()["psize"])


class Storage:
    """The two LMDB environments of a data directory, holding many logs.

    Raises StorageError if the directory cannot be opened.
    """

    def __init__(self, path: Path, *, map_size: int = DEFAULT_MAP_SIZE, max_logs: int = 250):
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.map_size = map_size
        self.max_logs = max_logs
        self._max_dbs = 8 * max_logs + 4
        self._usage: tuple[int, int] | None = None
        try:
            self.env = lmdb.open(
                str(path / "lmdb"),
                map_size=map_size,
                max_dbs=self._max_dbs,
                subdir=True,
                sync=True,
                metasync=True,
                readahead=False,
                max_readers=512,
            )
        except lmdb.Error as exc:
            raise StorageError(f"cannot open LMDB at {path / 'lmdb'}: {exc}") from exc
        self._meta = self.env.open_db(b"meta")
        self.meta_db = self._meta
        self.index_rebuilt = self._open_index()
        self._log_bytes = _bytes_in_use(self.env)
        # Pages this process writes, once cold, leave the page cache (tlog.pagecache).
        self._cold = ColdPages(path / "lmdb" / "data.mdb", start=self._log_bytes)
        self._dbs: dict[int, LogDBs] = {}

    def _open_index(self) -> bool:
        """Open the index env; rebuild it empty if a machine crash may have torn it.

        Returns True if it was (re)created empty, so every log must be re-indexed. Holds
        an exclusive lock on ``index.lock`` in the data directory throughout: two
        processes starting after a machine crash (the server and the tlog CLI) would
        otherwise both find the index torn, and the second would delete the files the
        first had just rebuilt and opened, leaving it alone with an unlinked index that
        nobody else sees.
        """
        path = self.path / "index.lock"
        try:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                # Created by another user (root running the CLI once, say): flock needs
                # no write access, so a read-only descriptor locks it just as well.
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
            except OSError:
                os.close(fd)
                raise
        except OSError as exc:
            raise StorageError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        try:
            return self._open_index_locked()
        finally:
            os.close(fd)

    def _open_index_locked(self) -> bool:
        ipath = self.path / "index"
        boot = _boot_id()
        for attempt in (1, 2):
            try:
                self.ienv = lmdb.open(
                    str(ipath),
                    map_size=self.map_size,
                    max_dbs=self._max_dbs,
                    subdir=True,
                    sync=False,
                    metasync=False,
                    writemap=True,
                    readahead=False,
                    max_readers=512,
                )
            except lmdb.Error as exc:
                raise StorageError(f"cannot open LMDB at {ipath}: {exc}") from exc
            self._imeta = self.ienv.open_db(b"meta")
            with self.ienv.begin(db=self._imeta) as txn:
                raw = txn.get(b"state")
            state = json.loads(raw) if raw else None
            torn = state is not None and state["boot"] != boot and _openers(state) > 0
            if not torn or attempt == 2:
                break
            # Derived data written without fsync before a machine crash: start again.
            self.ienv.close()
            for f in ipath.iterdir():
                f.unlink()
        self._mark_index(+1)
        return state is None or torn

    def _mark_index(self, delta: int) -> None:
        """Count this process in (or out of) the index env's openers and sync it.

        Several processes may share a data directory (the server and the tlog CLI). The
        index is safe after a machine crash only if no opener had unsynced pages, i.e.
        the count was 0. A process that crashes never counts itself out, so after the
        next reboot the index is rebuilt: conservative, never wrong.
        """
        boot = _boot_id()
        with self.ienv.begin(write=True, db=self._imeta) as txn:
            raw = txn.get(b"state")
            state = json.loads(raw) if raw else None
            openers = _openers(state) if state is not None and state["boot"] == boot else 0
            txn.put(b"state", json.dumps({"boot": boot, "open": max(0, openers + delta)}).encode())
        self.ienv.sync(True)

    def close(self) -> None:
        """Flush the index, count this process out of it and close both environments."""
        try:
            self.ienv.sync(True)
            self._mark_index(-1)
            self.ienv.close()
            self.env.close()
        finally:
            self._cold.close()

    # -- transactions -------------------------------------------------------------

    def read(self) -> Txn:
        """Return a read-only transaction on the log env with zero-copy buffers, to be
        used as ``with storage.read() as txn:`` (the block's end ends it; its buffers are
        valid only inside the block).

        The transaction is its own context manager: a generator-based one would add a few
        microseconds to every read, a tenth of an inclusion proof's time."""
        return self.env.begin(buffers=True)

    def read_index(self) -> Txn:
        """Return a read-only transaction on the index env, used like ``read()``."""
        return self.ienv.begin(buffers=True)

    @contextmanager
    def write(self) -> Iterator[WriteTxn]:
        """Yield write transactions on both envs; on success commit the log env (with
        fsync), then the index env; on any error abort both.

        Raises StorageFull (nothing written) when an LMDB map is full. Nothing after the
        durable log commit raises: a failed index commit or usage measurement is logged
        (the index catches up, usage is measured again on the next write), because a
        caller seeing an exception would take the committed batch for unwritten.
        """
        txn = self.env.begin(write=True)
        wtxn = WriteTxn(txn, self.ienv)
        try:
            yield wtxn
            txn.commit()
        except lmdb.MapFullError as exc:
            txn.abort()
            if wtxn.index_begun is not None:
                wtxn.index_begun.abort()
            raise StorageFull(
                "storage is full: the LMDB map size is reached; nothing was written"
            ) from exc
        except BaseException:
            txn.abort()
            if wtxn.index_begun is not None:
                wtxn.index_begun.abort()
            raise
        if wtxn.index_begun is not None:
            try:
                wtxn.index_begun.commit()
            except Exception:
                # The log is durable, so the batch succeeded: do not report a failure, or
                # the caller would drop state that is on disk. The index is behind
                # (indexed_size() says how far); the next batch of each log, or the next
                # open, indexes the missing leaves before any lookup.
                _log.exception("index commit failed after a durable log commit; catching up")
        try:
            self.refresh_usage()
        except Exception:
            _log.exception("measuring storage use failed after a durable commit")
        self._cold.written_up_to(self._log_bytes)

    @contextmanager
    def write_index(self) -> Iterator[Txn]:
        """Yield a write transaction on the index env alone (for catching up)."""
        with self.ienv.begin(write=True) as txn:
            yield txn

    @staticmethod
    def snapshot_id(txn: Txn) -> int:
        """Return the id of the committed transaction a read transaction sees.

        Key a cached value by this id, and trust it while last_txnid() still equals it.
        (Not by last_txnid() read before the transaction: LMDB writes the meta page
        before it updates the reader table, so a read begun between the two sees the
        older snapshot while last_txnid() already gives the newer id.)
        """
        return int(txn.id())

    def last_txnid(self) -> int:
        """Return the id of the log env's newest committed transaction (any process's).

        A value cached with the snapshot id it was read at (snapshot_id) is current while
        this still equals that id: the check for a cache on the request path, one call
        that reads LMDB's meta page, without a read transaction.
        """
        return int(self.env.info()["last_txnid"])

    def usage(self) -> tuple[int, int]:
        """Return (bytes in use, map size) of whichever env is fuller (both have the same
        map size; with many small leaves the index can fill first), as of the last write
        transaction of this process or the last refresh_usage (no LMDB call here: every
        write request asks)."""
        return self._usage if self._usage is not None else self.refresh_usage()

    def refresh_usage(self) -> tuple[int, int]:
        """Measure and remember usage(); called after each write commit and periodically
        (another process's writes, the indexer's)."""
        in_use = self.disk_bytes()
        self._log_bytes = in_use["log"]
        self._usage = (max(in_use.values()), int(self.env.info()["map_size"]))
        return self._usage

    def disk_bytes(self) -> dict[str, int]:
        """Return the bytes in use by each environment's data file."""
        return {"log": _bytes_in_use(self.env), "index": _bytes_in_use(self.ienv)}

    # -- logs -----------------------------------------------------------------------

    def log_records(self) -> dict[str, dict[str, Any]]:
        """Return every log's record, by log name."""
        out: dict[str, dict[str, Any]] = {}
        with self.env.begin(db=self._meta) as txn:
            for key, value in txn.cursor().iternext():
                if key.startswith(b"log/"):
                    out[key[4:].decode()] = json.loads(value)
        return out

    def create_log(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        """Store a new log's record with a fresh numeric id and create its databases.

        Returns the record with ``id`` set. Raises StorageError if the log exists.
        """
        key = b"log/" + name.encode()
        with self.env.begin(write=True, db=self._meta) as txn:
            if txn.get(key) is not None:
                raise StorageError(f"log {name!r} already exists")
            next_id = int(txn.get(b"next_log_id", b"1"))
            record = {**record, "id": next_id}
            txn.put(b"next_log_id", str(next_id + 1).encode())
            txn.put(key, json.dumps(record, sort_keys=True).encode())
        self.dbs(next_id)
        return record

    def dbs(self, log_id: int) -> LogDBs:
        """Return (opening or creating) the named databases of log ``log_id``."""
        found = self._dbs.get(log_id)
        if found is None:
            prefix = f"{log_id}/".encode()
            main = [
                self.env.open_db(prefix + part, create=True)
                for part in (b"leaves", b"tiles", b"checkpoints", b"bodies", b"idempotency")
            ]
            index = [
                self.ienv.open_db(
                    prefix + hash_db_name(), create=True, dupsort=True, dupfixed=True
                ),
                self.ienv.open_db(prefix + b"artifacts", create=True),
            ]
            found = LogDBs(*main, *index)
            self._drop_old_hash_index(log_id)
            self._dbs[log_id] = found
        return found

    def _drop_old_hash_index(self, log_id: int) -> None:
        """Delete the log's leaf-hash index of the layout before generations
        (``<id>/hashes8``, keyed by hash prefix alone) and its progress record, if this
        index env still has them: the generations index (:func:`hash_db_name`) replaces
        it, caught up on open, and it would only hold disk. Takes the index env's write
        lock briefly, so it must run, like every named database open, before the caller
        begins an index write transaction."""
        old = f"{log_id}/hashes8".encode()
        with self.ienv.begin() as txn:
            if txn.get(old) is None:  # named databases are keys of the main database
                return
        with self.ienv.begin(write=True) as itxn:
            raw = itxn.get(b"state", db=self._imeta)
            state = json.loads(raw) if raw else {}
            if state.get("boot") == _boot_id() and _openers(state) > 1:
                # Another process has the index open, perhaps a version that still uses
                # hashes8: its handle would go stale and its lookups would find nothing.
                # The next open with nobody else around drops it.
                return
            try:
                db = self.ienv.open_db(old, txn=itxn, create=False)
            except lmdb.NotFoundError:
                return  # another process dropped it meanwhile
            itxn.drop(db, delete=True)
            itxn.delete(f"hashed/{log_id}".encode(), db=self._imeta)

    def indexed_size(self, log_id: int, itxn: Txn | None = None) -> int:
        """Return how many leaves of the log the index env covers, as seen by ``itxn``
        (an index env transaction) or else by a new read transaction."""
        if itxn is None:
            with self.ienv.begin() as txn:
                return self.indexed_size(log_id, txn)
        raw = itxn.get(f"indexed/{log_id}".encode(), db=self._imeta)
        return 0 if raw is None else int(raw)

    def hashed_size(self, log_id: int) -> int:
        """Return how many leaf hashes of the log the index env holds."""
        with self.ienv.begin(db=self._imeta) as txn:
            raw = txn.get(_hashed_key(log_id))
        return 0 if raw is None else int(raw)

    def set_hashed_size(self, itxn: Txn, log_id: int, size: int) -> None:
        """Record (in the index transaction) that leaf hashes are indexed up to ``size``."""
        itxn.put(_hashed_key(log_id), str(size).encode(), db=self._imeta)

    def set_indexed_size(self, itxn: Txn, log_id: int, size: int) -> None:
        """Record (in the index transaction) that the index covers ``size`` leaves."""
        itxn.put(f"indexed/{log_id}".encode(), str(size).encode(), db=self._imeta)

    def get_meta(self, txn: Txn, key: bytes) -> bytes | None:
        """Return a value of the log env's ``meta`` database, or None."""
        value = txn.get(key, db=self._meta)
        return None if value is None else bytes(value)

    def put_meta(self, txn: Txn, key: bytes, value: bytes) -> None:
        """Set a value of the log env's ``meta`` database (service-level settings and state)."""
        txn.put(key, value, db=self._meta)


# -- per-log reads and writes (each takes the transaction) --------------------------


def leaf_count(txn: Txn, dbs: LogDBs) -> int:
    """Return the number of leaves stored for the log."""
    return int(txn.stat(dbs.leaves)["entries"])


def put_leaves(txn: Txn, dbs: LogDBs, first_index: int, leaves: Sequence[bytes]) -> None:
    """Append leaves at first_index, first_index+1, ...; requires first_index == leaf count."""
    items = list(
        zip(map(_U64.pack, range(first_index, first_index + len(leaves))), leaves, strict=True)
    )
    _consumed, added = txn.cursor(dbs.leaves).putmulti(items, append=True, overwrite=False)
    if added != len(items):
        raise AssertionError(f"bad math: appended {added} of {len(items)} leaves at {first_index}")


def get_leaf(txn: Txn, dbs: LogDBs, index: int) -> bytes:
    """Return the leaf at index. Raises NotFound."""
    value = txn.get(u64(index), db=dbs.leaves)
    if value is None:
        raise NotFound(f"no entry at index {index}")
    return bytes(value)


def iter_leaves(txn: Txn, dbs: LogDBs, start: int, stop: int) -> Iterator[bytes]:
    """Yield the leaves at indexes [start, stop) in order.

    Raises StorageError naming the first index that is not stored: a gap means the
    store was damaged (nothing here deletes a leaf), and skipping it would hide that.
    """
    if stop <= start:
        return
    expected = start
    cursor = txn.cursor(dbs.leaves)
    if cursor.set_key(u64(start)):
        for key, value in cursor:
            index = _U64.unpack(key)[0]
            if index >= stop or index != expected:
                break
            yield bytes(value)
            expected += 1
    if expected < stop:
        raise StorageError(f"leaf {expected} is missing from the store")


def hash_db_name() -> bytes:
    """Return the name (after ``<id>/``) of a log's leaf-hash index database:
    ``hashgen<GENERATION_BITS>``."""
    return f"hashgen{GENERATION_BITS}".encode()


def _hashed_key(log_id: int) -> bytes:
    """Return the index env meta key recording how far a log's leaf hashes are indexed,
    named like the database (an index of another layout counts as empty)."""
    return f"hashgen{GENERATION_BITS}/{log_id}".encode()


def hash_key(index: int, leaf_hash: bytes) -> bytes:
    """Return the leaf-hash index key of a leaf: its generation (index >> GENERATION_BITS,
    u32 BE) and the first 8 bytes of its hash. A lookup confirms the full hash against
    the stored tile, so the prefix may collide; the generation keeps inserts local."""
    return _GEN.pack(index >> GENERATION_BITS) + leaf_hash[:8]


def index_hashes_upto(storage: Storage, itxn: Txn, log_id: int, target: int, limit: int) -> int:
    """Index the leaf hashes of a log from the index env's hashed size up to ``target``
    (at most ``limit`` of them), in the index write transaction ``itxn``; return the
    hashed size it recorded.

    The hashes are read from the durable level-0 tile records of the log env, so any
    gap (a failed index commit, another process that crashed before indexing) is
    filled too, and the caller only says how far. Open ``storage.dbs(log_id)`` before
    beginning ``itxn``: opening a named database takes the log env's write lock, which
    must never be awaited while holding the index env's (the writer takes them in the
    other order). Raises StorageError if ``target`` is beyond the stored log.
    """
    dbs = storage.dbs(log_id)
    raw = itxn.get(_hashed_key(log_id), db=storage._imeta)
    done = 0 if raw is None else int(raw)
    stop = min(target, done + limit)
    if stop <= done:
        return done
    items: list[tuple[bytes, bytes]] = []
    with storage.read() as txn:
        if leaf_count(txn, dbs) < stop:
            raise StorageError(
                f"log {log_id}: cannot index to {stop}, only {leaf_count(txn, dbs)} leaves"
            )
        for tile in range(done >> 8, ((stop - 1) >> 8) + 1):
            record = txn.get(tile_key(0, tile), db=dbs.tiles)
            if record is None:
                raise StorageError(f"log {log_id}: tile record 0/{tile} is missing")
            base = tile << 8
            gen = _GEN.pack(base >> GENERATION_BITS)  # a tile never spans generations
            for i in range(max(done, base), min(stop, base + 256)):
                off = (i - base) * 32
                items.append((gen + bytes(record[off : off + 8]), _U64.pack(i)))
    # Sorted, so the cursor walks the B-tree left to right (LMDB skips the descent from
    # the root while the next key is on the current page).
    items.sort()
    itxn.cursor(dbs.hashes).putmulti(items, dupdata=True)
    storage.set_hashed_size(itxn, log_id, stop)
    return stop


def leaf_hashes(txn: Txn, dbs: LogDBs, start: int, stop: int) -> list[bytes]:
    """Return the RFC 6962 leaf hashes of indexes [start, stop), read from the level-0
    tile records. Raises StorageError if a record is missing or too short."""
    out: list[bytes] = []
    if stop <= start:
        return out
    for tile in range(start >> 8, ((stop - 1) >> 8) + 1):
        record = txn.get(tile_key(0, tile), db=dbs.tiles)
        base = tile << 8
        lo, hi = max(start, base), min(stop, base + 256)
        if record is None or len(record) < (hi - base) * 32:
            raise StorageError(f"tile record 0/{tile} is missing or short")
        out.extend(bytes(record[(i - base) * 32 : (i - base) * 32 + 32]) for i in range(lo, hi))
    return out


def leaf_hash_at(txn: Txn, dbs: LogDBs, index: int) -> bytes | None:
    """Return the stored RFC 6962 leaf hash at index (from its level-0 tile record)."""
    record = txn.get(tile_key(0, index >> 8), db=dbs.tiles)
    if record is None:
        return None
    offset = (index & 0xFF) * 32
    return bytes(record[offset : offset + 32])


def find_leaf_hash(
    itxn: Txn, txn: Txn, dbs: LogDBs, leaf_hash: bytes, gens: Sequence[int] | None = None
) -> int:
    """Return the index of the first leaf with this hash. Raises NotFound.

    ``itxn`` reads the index env, ``txn`` the log env (to confirm the full hash). One
    seek per generation, oldest first, until one holds the hash: every generation, or
    only ``gens`` (ascending; e.g. those whose tlog.bloom.GenerationFilters say maybe).
    """
    cursor = itxn.cursor(dbs.hashes)
    prefix = leaf_hash[:8]
    for gen in itertools.count() if gens is None else gens:
        if not cursor.set_range(_GEN.pack(gen) + prefix):
            break  # beyond the last key: no later generation either
        key = cursor.key()
        if key[4:] == prefix and _GEN.unpack_from(key)[0] == gen:
            for raw in cursor.iternext_dup():
                index = int(_U64.unpack(raw)[0])
                if leaf_hash_at(txn, dbs, index) == leaf_hash:
                    return index
    raise NotFound("no entry with that leaf hash")


def get_tile_record(txn: Txn, dbs: LogDBs, tile_level: int, tile_index: int) -> bytes | None:
    """Return the stored tile record, or None."""
    value = txn.get(tile_key(tile_level, tile_index), db=dbs.tiles)
    return None if value is None else bytes(value)


def map_tile_records(txn: Txn, dbs: LogDBs, keys: Iterable[tuple[int, int]]) -> None:
    """Map every page of each stored tile record (level, index) into this process, so
    that they stay in the page cache (tlog.pagecache: proofs read them at random). With a
    ``buffers=True`` transaction (``Storage.read``) it reads one byte per page; with
    another, LMDB's copy of each record reads them all, to the same effect."""
    for tile_level, tile_index in keys:
        value = txn.get(tile_key(tile_level, tile_index), db=dbs.tiles)
        if value is not None:
            map_pages(value)


def put_tile_record(
    txn: Txn, dbs: LogDBs, tile_level: int, tile_index: int, record: bytes | bytearray
) -> None:
    """Store a tile record (a longer version of the same prefix, or a new one)."""
    if len(record) != RECORD_SIZE:
        raise AssertionError("bad math: tile record of the wrong size")
    txn.put(tile_key(tile_level, tile_index), bytes(record), db=dbs.tiles)


def put_checkpoint(txn: Txn, dbs: LogDBs, size: int, note: bytes) -> None:
    """Store the signed checkpoint of tree size ``size``; a size is signed at most once."""
    if not txn.put(u64(size), note, db=dbs.checkpoints, overwrite=False):
        raise AssertionError(f"bad math: a checkpoint for size {size} already exists")


def latest_checkpoint(txn: Txn, dbs: LogDBs) -> tuple[int, bytes] | None:
    """Return (size, note) of the newest stored checkpoint, or None."""
    cursor = txn.cursor(dbs.checkpoints)
    if not cursor.last():
        return None
    return int(_U64.unpack(cursor.key())[0]), bytes(cursor.value())


def get_checkpoint(txn: Txn, dbs: LogDBs, size: int) -> bytes:
    """Return the signed checkpoint of exactly this size. Raises NotFound."""
    value = txn.get(u64(size), db=dbs.checkpoints)
    if value is None:
        raise NotFound(f"no checkpoint was published for tree size {size}")
    return bytes(value)


def checkpoint_at_or_after(txn: Txn, dbs: LogDBs, size: int) -> tuple[int, bytes] | None:
    """Return (size, note) of the first published checkpoint of at least ``size``, or None."""
    cursor = txn.cursor(dbs.checkpoints)
    if not cursor.set_range(u64(size)):
        return None
    return int(_U64.unpack(cursor.key())[0]), bytes(cursor.value())


MAX_KEY_BYTES = 511
"""LMDB's largest key (its default MDB_MAXKEYSIZE); a longer one raises BadValsizeError."""

MAX_ARTIFACT_ID_BYTES = MAX_KEY_BYTES - 5
"""The longest artifact id, in bytes of UTF-8, that the artifact index can key (the id,
0x00 and a 4-byte version). The envelope schema allows 256 characters, which can take
1,024 bytes; a new entry's id must also fit here (``Draft.template`` checks it)."""


def _artifact_key(artifact_id: str, version: int) -> bytes:
    return artifact_id.encode() + b"\x00" + struct.pack(">I", version)


def _indexable(artifact_id: str) -> bool:
    """Return whether an artifact id's version keys fit in an LMDB key. New entries are
    refused beyond that (MAX_ARTIFACT_ID_BYTES), so a longer id has no versions, and a
    lookup must say so rather than hand LMDB a key it refuses."""
    return len(artifact_id.encode("utf-8", "surrogatepass")) <= MAX_ARTIFACT_ID_BYTES


def latest_version(txn: Txn, dbs: LogDBs, artifact_id: str) -> tuple[int, int] | None:
    """Return (version, index) of the newest version of an artifact, or None."""
    if not _indexable(artifact_id):
        return None
    cursor = txn.cursor(dbs.artifacts)
    prefix = artifact_id.encode() + b"\x00"
    if cursor.set_range(artifact_id.encode() + b"\x01"):
        if not cursor.prev():
            return None
    elif not cursor.last():
        return None
    key = bytes(cursor.key())
    if not key.startswith(prefix) or len(key) != len(prefix) + 4:
        return None
    return struct.unpack(">I", key[-4:])[0], int(_U64.unpack(cursor.value())[0])


def put_version(txn: Txn, dbs: LogDBs, artifact_id: str, version: int, index: int) -> None:
    """Record that version ``version`` of an artifact is the entry at ``index``."""
    if not txn.put(
        _artifact_key(artifact_id, version), u64(index), db=dbs.artifacts, overwrite=False
    ):
        raise AssertionError(f"bad math: version {version} of {artifact_id!r} exists")


def put_versions(txn: Txn, dbs: LogDBs, versions: Sequence[tuple[str, int, int]]) -> None:
    """Record many (artifact id, version, index) at once, like put_version each.

    One ``putmulti`` call, not one ``put`` per entry: py-lmdb gives up the GIL on every
    write call, and on a busy service each give-up can cost the writer thread a wait for
    the GIL (a GIL-holding thread makes each such call take milliseconds, not microseconds).
    """
    items = sorted((_artifact_key(a, v), u64(i)) for a, v, i in versions)
    _consumed, added = txn.cursor(dbs.artifacts).putmulti(items, overwrite=False)
    if added != len(items):
        raise AssertionError(f"bad math: {len(items) - added} artifact versions already exist")


def list_versions(txn: Txn, dbs: LogDBs, artifact_id: str) -> list[tuple[int, int]]:
    """Return [(version, index), ...] of an artifact, oldest first (empty if unknown)."""
    if not _indexable(artifact_id):
        return []
    prefix = artifact_id.encode() + b"\x00"
    cursor = txn.cursor(dbs.artifacts)
    out: list[tuple[int, int]] = []
    if not cursor.set_range(prefix):
        return out
    for key, value in cursor:
        key = bytes(key)
        if not key.startswith(prefix) or len(key) != len(prefix) + 4:
            break
        out.append((struct.unpack(">I", key[-4:])[0], int(_U64.unpack(value)[0])))
    return out


def put_bodies(txn: Txn, dbs: LogDBs, bodies: Sequence[tuple[int, bytes]]) -> None:
    """Store the artifact bodies of many entries, (index, body) with indexes new and
    increasing, in one ``putmulti`` call (see put_versions for why). Each leaf commits to
    its body's SHA-256."""
    items = [(u64(index), body) for index, body in bodies]
    _consumed, added = txn.cursor(dbs.bodies).putmulti(items, overwrite=False)
    if added != len(items):
        raise AssertionError(f"bad math: {len(items) - added} bodies already exist")


def put_idempotency_many(
    txn: Txn, dbs: LogDBs, records: Sequence[tuple[bytes, dict[str, Any]]]
) -> None:
    """Record many idempotency slots (tlog.log._idempotency_slot) at once, first use
    wins, in one ``putmulti`` call."""
    items = sorted((slot, json.dumps(record, sort_keys=True).encode()) for slot, record in records)
    txn.cursor(dbs.idempotency).putmulti(items, overwrite=False)


def get_body(txn: Txn, dbs: LogDBs, index: int) -> bytes | None:
    """Return the artifact body of the entry at ``index``, or None."""
    value = txn.get(u64(index), db=dbs.bodies)
    return None if value is None else bytes(value)


def expire_body(txn: Txn, dbs: LogDBs, index: int) -> bool:
    """Remove the artifact body of the entry at ``index`` (retention expiry); return True if
    one was stored. The only removal in this package: bodies sit beside the log, and the
    leaf, which commits to the body's SHA-256, is never touched."""
    return bool(txn.delete(u64(index), db=dbs.bodies))


def get_idempotency(txn: Txn, dbs: LogDBs, slot: bytes) -> dict[str, Any] | None:
    """Return what an idempotency slot (tlog.log._idempotency_slot) was used for, or None."""
    value = txn.get(slot, db=dbs.idempotency)
    return None if value is None else dict(json.loads(bytes(value)))


class TxnHashReader:
    """A tlog.tree.HashReader over the tile records of one log in one read transaction."""

    def __init__(
        self, txn: Txn, dbs: LogDBs, overlay: dict[tuple[int, int], bytearray] | None = None
    ):
        self._txn = txn
        self._dbs = dbs
        self._overlay = overlay or {}
        self._records: dict[tuple[int, int], Any] = {}

    def _record(self, tile_level: int, tile_index: int) -> Any:
        key = (tile_level, tile_index)
        rec = self._records.get(key)
        if rec is None:
            rec = self._overlay.get(key)
            if rec is None:
                rec = self._txn.get(tile_key(tile_level, tile_index), db=self._dbs.tiles)
                if rec is None:
                    raise NotFound(f"tile record {tile_level}/{tile_index} is missing")
            self._records[key] = rec
        return rec

    def read_hashes(self, nodes: Sequence[Node]) -> list[bytes]:
        """Return the stored hash of each complete subtree. Raises NotFound."""
        out = []
        records = self._records
        for level, index in nodes:
            tile_level, shift, base, mask = _PLACE[level]
            key = (tile_level, index >> shift)
            rec = records.get(key)
            if rec is None:
                rec = self._record(*key)
            offset = base + (index & mask) * 32
            out.append(bytes(rec[offset : offset + 32]))
        return out


_PLACE: tuple[tuple[int, int, int, int], ...] = tuple(
    (level >> 3, 8 - (level & 7), ROW_OFFSETS[level & 7], (1 << (8 - (level & 7))) - 1)
    for level in range(64)
)
"""Per node level: (tile level, shift from node index to tile index, byte offset of the
node's row in the record, mask of its position in the row); tlog.tree.locate in tables."""
