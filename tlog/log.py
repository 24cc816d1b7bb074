"""The sequencer: queue -> batch -> integrate -> sign checkpoint -> commit -> resolve.

A :class:`Store` is one data directory: an LMDB environment with many logs and one
writer thread. Writers hand items to the queue (``Log.submit`` from asyncio,
``Log.append_many`` from plain threads) and wait. The writer thread drains the
queue into a batch (cut when the queue is empty or a size limit is reached) and, in
one LMDB write transaction, for each log touched: stores leaves, bodies, tile
records, the leaf-hash and artifact indexes and the idempotency records, checks
that the new tree extends the last signed one (RFC 9162 §2.1.4 consistency), signs
a new C2SP checkpoint and stores it. Then it commits with fsync and resolves every
waiter. A waiter is answered only after its batch is durable, so an answer means:
the entry is on disk at a fixed index and a signed checkpoint covering it is stored
(DESIGN.md, "Write path and the durability contract").

An idle log commits one submission at once (about one fsync); a busy one amortises
the fsync over the whole batch (group commit).

>>> store = Store.open(Path("data"))                      # doctest: +SKIP
>>> log = store.create_log("gurukul", "bucket.example/logs/gurukul")  # doctest: +SKIP
>>> log.append_many([b"a", b"b"]).indexes                 # doctest: +SKIP
[0, 1]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple, cast

from tlog import storage as st
from tlog.bloom import Bloom, GenerationFilters
from tlog.entry import (
    MAX_LEAF_BYTES,
    Envelope,
    EnvelopeTemplate,
    decode_envelope,
    prepare_envelope,
)
from tlog.errors import (
    BadRequest,
    Conflict,
    EntryLimit,
    InvalidEntry,
    KeyProblem,
    LeafTooLarge,
    NotFound,
    TlogError,
)
from tlog.indexer import MAX_PER_REQUEST, IndexFailed, IndexProcess
from tlog.keys import create_key, load_key
from tlog.storage import LogDBs, Storage, StorageError, TxnHashReader
from tlog.tree import RECORD_SIZE, TILE_HEIGHT, TILE_WIDTH, ProofBuilder, append_hashes
from verifier.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from verifier.errors import VerificationError
from verifier.hashing import EMPTY_ROOT, leaf_hash
from verifier.note import Signer
from verifier.proof import verify_consistency
from verifier.receipt import Receipt, format_receipt

__all__ = [
    "ENVELOPE",
    "RAW",
    "Appended",
    "Batch",
    "Draft",
    "Log",
    "NotWritten",
    "Store",
    "VersionConflict",
]

RAW = "raw"
"""A log of raw leaves (append_many, benchmarks, the audit log's own records)."""

ENVELOPE = "envelope"
"""A product log: every leaf is a tlog.entry envelope built from a Draft."""

KINDS = (RAW, ENVELOPE)

_log = logging.getLogger("tlog.log")

MAX_BATCH_ITEMS = 4096
"""A batch is cut at this many items (or when the queue is empty)."""

BUSY_LINGER_S = 0.005
"""How long at most the writer waits for more jobs before committing a batch while busy
(its last batch had several jobs and ended less than IDLE_AFTER_S ago, and jobs keep
arriving). An idle writer commits at once: a lone submission never waits."""

IDLE_AFTER_S = 0.02
"""The writer counts as idle, whatever its last batch held, once it has waited this long
for a job."""

LINGER_STEP_S = 0.001
"""The writer stops lingering after a step of this length in which no job arrived."""

MAX_BATCH_BYTES = 64 << 20
"""... or at this many leaf and body bytes."""

MAX_INDEX_BACKLOG = 32
"""Committed batches the indexer may lag behind before the writer waits for it."""

INDEX_PROCESS = True
"""Insert leaf hashes into the index env from a separate process (tlog.indexer), not
from a thread of this one (which competes with the writer for the GIL). If the process
cannot be started or dies, the indexer thread does the inserts itself."""

_EMPTY_SHA256 = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def _idempotency_slot(item: Draft) -> bytes:
    """Return the key of an item's idempotency record: SHA-256 of its principal, 0x00
    and its Idempotency-Key (UTF-8). Scoped to the principal, so two principals' equal
    keys are unrelated (one can neither replay nor probe the other's), and 32 bytes
    whatever the key's length (LMDB keys hold at most 511 bytes)."""
    assert item.idempotency_key is not None
    scoped = f"{item.principal}\x00{item.idempotency_key}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(scoped).digest()


def _durable_without_receipt(reason: str, cause: BaseException | None = None) -> StorageError:
    """Return the error for a job whose batch is committed but whose receipt failed: it
    says the entries are durable (a caller must not write them again), with ``reason``,
    and chains ``cause``."""
    error = StorageError(
        f"the entries are durable, but no receipt could be made ({reason}); "
        "look them up by leaf hash"
    )
    error.__cause__ = cause
    return error


class IntegrityFailure(StorageError):
    """A batch would sign a tree that does not extend the log's last signed checkpoint:
    stored hashes no longer match what was signed. Nothing is written (500), and the
    store's ``on_integrity_failure`` hook is told (governance halts on it)."""

    code = "integrity_failure"
    log_name: str = ""
    """The log whose batch failed."""


class VersionConflict(Conflict):
    """A submission's expected_version is not the artifact's latest version."""

    code = "version_conflict"


@dataclass(frozen=True)
class Draft:
    """An artifact submission before sequencing: the writer fills in version,
    previous index and integration time, then encodes the envelope (tlog.entry)."""

    product: str
    artifact_type: str
    artifact_id: str
    principal: str
    body: bytes = b""
    body_sha256: bytes = _EMPTY_SHA256
    metadata: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    request_digest: bytes = b""
    expected_version: int | None = None
    """If set, the artifact's latest version must be this (0: it must not exist yet),
    checked atomically when the entry is sequenced; otherwise Conflict (409)."""
    fresh_id: bool = False
    """The service generated ``artifact_id`` (122 random bits): no earlier version can
    exist, so the writer skips the version lookup."""
    _template: EnvelopeTemplate | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if hashlib.sha256(self.body).digest() != self.body_sha256:
            raise InvalidEntry("body_sha256 is not the SHA-256 of the body")

    def template(self, encoded_metadata: bytes | None = None) -> EnvelopeTemplate:
        """Return the envelope template of this draft, checking it once (then cached).

        ``encoded_metadata``: the metadata's CBOR if the caller already validated it.
        Raises InvalidEntry / LeafTooLarge (tlog.entry.prepare_envelope), and InvalidEntry
        for an artifact id the artifact index cannot key (over st.MAX_ARTIFACT_ID_BYTES).
        """
        if self._template is None:
            aid = self.artifact_id
            if type(aid) is str and len(aid) * 4 > st.MAX_ARTIFACT_ID_BYTES:  # else it fits
                size = len(aid.encode("utf-8", "surrogatepass"))
                if size > st.MAX_ARTIFACT_ID_BYTES:
                    raise InvalidEntry(
                        f"artifact_id: must be at most {st.MAX_ARTIFACT_ID_BYTES} bytes of "
                        f"UTF-8 here (the artifact index's key limit), got {size}"
                    )
            template = prepare_envelope(
                product=self.product,
                artifact_type=self.artifact_type,
                artifact_id=self.artifact_id,
                principal=self.principal,
                body_sha256=self.body_sha256,
                body_size=len(self.body),
                metadata=self.metadata,
                encoded_metadata=encoded_metadata,
            )
            object.__setattr__(self, "_template", template)
            return template
        return self._template

    def envelope(self, version: int, prev_index: int | None, integrated_at: int) -> Envelope:
        """Return the envelope this draft becomes at the given version and time."""
        return Envelope(
            product=self.product,
            artifact_type=self.artifact_type,
            artifact_id=self.artifact_id,
            version=version,
            prev_index=prev_index,
            integrated_at=integrated_at,
            principal=self.principal,
            body_sha256=self.body_sha256,
            body_size=len(self.body),
            metadata=self.metadata,
        )


@dataclass(frozen=True)
class Appended:
    """One item's outcome: where it sits and the signed checkpoint that covers it.

    ``proof`` is the inclusion proof at ``size`` (empty unless proofs were asked for).
    ``replayed`` is True when an idempotency key or an identical leaf matched an
    earlier entry, so nothing new was written for this item.
    """

    index: int
    size: int
    leaf: bytes
    leaf_hash: bytes
    checkpoint: str
    proof: tuple[bytes, ...] = ()
    version: int | None = None
    artifact_id: str | None = None
    replayed: bool = False

    def receipt(self) -> str:
        """Return the C2SP tlog-proof receipt (``extra`` = the leaf bytes)."""
        return format_receipt(
            Receipt(index=self.index, proof=self.proof, checkpoint=self.checkpoint, extra=self.leaf)
        )


@dataclass(frozen=True)
class Batch:
    """The outcome of ``append_many``: indexes in order, and the checkpoint covering them."""

    indexes: list[int]
    size: int
    checkpoint: str


Item = bytes | Draft
Outcome = Appended | TlogError


def _plain_leaves(items: Sequence[Item]) -> Sequence[bytes] | None:
    """Return items as raw leaves if every one is a raw leaf of at most MAX_LEAF_BYTES
    bytes, else None."""
    for item in items:
        if isinstance(item, Draft) or len(item) > MAX_LEAF_BYTES:
            return None
    return cast("Sequence[bytes]", items)


class _Placed(NamedTuple):
    """Where the writer put one item (before the batch is committed). A named tuple:
    one is made per leaf on the hot path, and tuples are cheap to build."""

    at: int
    """The index in the log."""
    leaf: bytes | None
    replayed: bool
    version: int | None = None
    artifact_id: str | None = None
    leaf_hash: bytes | None = None


@dataclass
class _Job:
    log: Log
    items: Sequence[Item]
    proofs: bool
    deliver: Callable[[Any], None]
    nbytes: int = 0
    # Runs inside the batch's write transaction after every log is integrated, with this
    # job's placements; raising a TlogError aborts the whole batch. Such a job is batched
    # alone, so its failure cannot take other writers' entries with it.
    pre_commit: Callable[[st.WriteTxn, list[_Placed | TlogError]], None] | None = None
    # Deliver the placements themselves (index, no proof, no Appended objects): the fast
    # path of append_many, which only returns indexes.
    brief: bool = False
    # All items or none: if one fails, the others are not written (NotWritten).
    atomic: bool = False


class NotWritten(Conflict):
    """An item of an all-or-nothing submission (``submit_many(..., atomic=True)``) that
    was not written because another item of it failed; that item carries the reason."""

    code = "not_written"


def _not_written() -> NotWritten:
    """Return a fresh NotWritten (one per item: an exception raised by a caller keeps
    its traceback, which a shared instance would carry from one caller to the next)."""
    return NotWritten("not written: another item of this all-or-nothing submission failed")


_MISSING = object()


class _Quota:
    """The entry limits as the writer applies them to one batch: at most ``per_log``
    entries in any one log, and ``left`` more in all quota-bound logs together."""

    __slots__ = ("left", "per_log")

    def __init__(self, per_log: int, left: int) -> None:
        self.per_log = per_log
        self.left = left


class _Group:
    """The writer's bookkeeping for one all-or-nothing range of a batch's items: how
    long each list was at its start and what its dict writes replaced, so a failure
    can forget the whole range (Log._integrate)."""

    def __init__(self, end: int, *lists: list[Any]) -> None:
        self.end = end
        self.failed = False
        self.lengths = [len(x) for x in lists]
        self.undo: list[tuple[dict[Any, Any], Any, Any]] = []

    def note(self, table: dict[Any, Any], key: Any) -> None:
        """Remember key's value in table (or its absence) before the range sets it."""
        self.undo.append((table, key, table.get(key, _MISSING)))

    def close(self, placed: list[Any], *lists: list[Any]) -> None:
        """End the range: if an item failed, forget every placement of the range and
        answer each of its items with its own error, or NotWritten. Pass the lists in
        the order given to __init__, ``placed`` first."""
        if not self.failed:
            return
        first = self.lengths[0]
        for x, n in zip((placed, *lists), self.lengths, strict=True):
            if x is not placed:
                del x[n:]
        for table, key, old in reversed(self.undo):
            if old is _MISSING:
                del table[key]
            else:
                table[key] = old
        placed[first:] = [
            p if isinstance(p, TlogError) and not isinstance(p, NotWritten) else _not_written()
            for p in placed[first:]
        ]


AuditHook = Callable[[str, int, int, bytes, Sequence[str]], bytes]
"""Builds the audit log's record of one batch appended to one log:
(log name, first index, new size, new root, principals) -> audit leaf."""


class Log:
    """One append-only RFC 6962 log in a :class:`Store`. Reads are thread-safe; writes go
    through the store's writer thread."""

    def __init__(
        self, store: Store, name: str, origin: str, log_id: int, signer: Signer, kind: str
    ) -> None:
        if kind not in KINDS:
            raise StorageError(f"log {name}: unknown kind {kind!r}")
        self.store = store
        self.kind = kind
        self.name = name
        self.origin = origin
        self.log_id = log_id
        self.signer = signer
        self.vkey = signer.vkey
        self._verifier_keys = (signer.verifier_key,)
        self.dbs: LogDBs = store.storage.dbs(log_id)
        with store.storage.read() as txn:
            latest = st.latest_checkpoint(txn, self.dbs)
            count = st.leaf_count(txn, self.dbs)
        if latest is None:
            self._size, self._root, self._note = 0, b"", ""
            if count:
                raise StorageError(f"log {name}: {count} leaves but no checkpoint")
        else:
            size, note = latest
            try:
                cp = open_checkpoint(note, self._verifier_keys, origin=origin)
            except VerificationError as exc:
                raise KeyProblem(
                    f"log {name}: the stored checkpoint does not verify with the log's key "
                    f"({exc}); the key file is not the key this log was created with"
                ) from exc
            if cp.size != size or count != size:
                raise StorageError(
                    f"log {name}: checkpoint size {cp.size}, key {size}, {count} leaves"
                )
            self._size, self._root, self._note = size, cp.root, note.decode()
        # MTHs of ragged leaf ranges, shared by read-side proof builders (immutable values).
        self._memo: dict[tuple[int, int], bytes] = {}
        # Tile records at the right edge of the tree, as committed (writer thread only).
        self._records: dict[tuple[int, int], bytearray] = {}
        self._pending: dict[tuple[int, int], bytearray] = {}
        self._next: tuple[int, bytes, str] = (self._size, self._root, self._note)
        # Leaf hashes committed but not yet in the index env, one dict per batch (the
        # indexer thread drops a batch's dict once that batch is indexed).
        self._unindexed: dict[int, dict[bytes, int]] = {}
        self._new_hashes: list[bytes] = []
        # Raw logs deduplicate: the filter is filled by the indexer thread at start-up.
        self.dedup = kind == RAW
        # The writer thread adds every hash it commits to _bloom, and the indexer thread
        # adds the hashes stored before start-up (_build_bloom), then sets _bloom_built.
        # Until the writer sees that, "not in the filter" proves nothing. (Adding into
        # the one live filter keeps the writer from OR-ing a 32 MiB start-up filter into
        # it, which held the GIL for ~200 ms on the first batch after every start.)
        self._bloom = Bloom() if self.dedup else None
        # Filled with _bloom, trusted with it: which generations of the hash index to
        # seek when _bloom says "maybe" (or index_of is asked).
        self._gens = GenerationFilters(st.GENERATION_BITS) if self.dedup else None
        self._bloom_built = False
        self._bloom_ready = self._size == 0  # an empty filter is complete for an empty log
        self._catch_up_index()

    def _catch_up_index(self) -> None:
        """Bring the derived index env up to the log's size (after a crash or a rebuild):
        artifact versions from the leaves (envelope logs), leaf hashes from the tiles.

        Another process opening the same data directory may be catching up at the same
        time, so how far the index goes is read under the index env's write lock, in the
        transaction that extends it: each version is written once. Raises StorageError if
        the index covers more leaves than the log holds.
        """
        storage = self.store.storage
        if self.kind == ENVELOPE:
            while True:
                with storage.write_index() as itxn:
                    done = storage.indexed_size(self.log_id, itxn)
                    if done >= self._size:
                        self._check_index_extent(done, "index")
                        break
                    stop = min(self._size, done + 65536)
                    with storage.read() as txn:
                        leaves = list(st.iter_leaves(txn, self.dbs, done, stop))
                    self._index_versions(itxn, done, leaves)
                    storage.set_indexed_size(itxn, self.log_id, stop)
        while True:
            with storage.write_index() as itxn:
                done = st.index_hashes_upto(storage, itxn, self.log_id, self._size, 65536)
            if done >= self._size:
                self._check_index_extent(done, "hash index")
                break

    def _check_index_extent(self, done: int, what: str) -> None:
        """Raise StorageError if an index covers more leaves than the log env holds now
        (more than our size is fine: another process appended and indexed since)."""
        if done > self._size:
            with self.store.storage.read() as txn:
                stored = st.leaf_count(txn, self.dbs)
            if done > stored:
                raise StorageError(f"log {self.name}: {what} covers {done} of {stored} leaves")

    def _unindexed_index(self, h: bytes) -> int | None:
        """Return the index of a committed leaf hash the indexer has not applied yet."""
        for batch in list(self._unindexed.values()):
            found = batch.get(h)
            if found is not None:
                return found
        return None

    def _stored_hash(self, txn: Any, index: int) -> bytes:
        found = st.leaf_hash_at(txn, self.dbs, index)
        if found is None:
            raise StorageError(f"log {self.name}: tile record for leaf {index} is missing")
        return found

    def _index_versions(self, itxn: st.Txn, first_index: int, leaves: Sequence[bytes]) -> None:
        """Record artifact versions of stored envelope leaves in the index txn."""
        for index, leaf in enumerate(leaves, first_index):
            env = decode_envelope(leaf)
            st.put_version(itxn, self.dbs, env.artifact_id, env.version, index)

    def _build_bloom(self) -> None:
        """Add the hashes stored at start-up to the live filter (indexer thread), then
        set ``_bloom_built``; the writer trusts the filter from its next batch on.

        Raises StorageError if a level-0 tile record is missing.
        """
        bloom, gens = self._bloom, self._gens
        if bloom is None or gens is None or self._bloom_ready:
            return
        size = self._size  # later hashes are the writer's: it adds each at commit
        with self.store.storage.read() as txn:
            for tile in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
                record = st.get_tile_record(txn, self.dbs, 0, tile)
                if record is None:
                    raise StorageError(f"log {self.name}: tile record 0/{tile} is missing")
                width = min(TILE_WIDTH, size - tile * TILE_WIDTH)
                hashes = [record[32 * i : 32 * i + 32] for i in range(width)]
                bloom.add_many(hashes)
                gens.add_many(tile * TILE_WIDTH, hashes)
        self._bloom_built = True

    def _candidate_gens(self, h: bytes) -> list[int] | None:
        """Return the hash-index generations that may hold h (none when the log's filter
        has never seen it), or None (seek them all) while the filters are not complete
        or the log has none.

        Until the indexer thread has filled the filters after a start (about 10 s at
        10^7 leaves), every lookup seeks every generation: 39 seeks at 10^7.
        """
        if self._bloom is None or self._gens is None or not self._bloom_ready:
            return None
        if h not in self._bloom:
            return []
        return self._gens.candidates(h)

    # -- state ----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Return the size of the latest signed tree."""
        return self._size

    def checkpoint(self) -> str:
        """Return the latest signed checkpoint note. Raises NotFound for an empty log
        that has never signed one."""
        note = self._note
        if not note:
            raise NotFound(f"log {self.name} has no checkpoint yet")
        return note

    # -- writes ----------------------------------------------------------------------

    async def submit(self, item: Item, *, proof: bool = True) -> Appended:
        """Queue one item and return its outcome once its batch is durable.

        Raises the item's TlogError (e.g. LeafTooLarge, Conflict, StorageFull).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Appended] = loop.create_future()

        def deliver(result: list[Outcome] | TlogError) -> None:
            outcome = result if isinstance(result, TlogError) else result[0]
            self.store._resolve(loop, future, outcome)

        self.store._enqueue(_Job(self, (item,), proof, deliver, _item_bytes(item)))
        return await future

    async def submit_many(
        self, items: Sequence[Item], *, proof: bool = True, atomic: bool = False
    ) -> list[Outcome]:
        """Queue items as one job; return one outcome (Appended or TlogError) per item.

        ``atomic``: write all items or none. If one fails (e.g. a VersionConflict found
        when it is sequenced), it answers its error and every other item NotWritten, and
        none of them is stored. Otherwise each item stands alone.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Outcome]] = loop.create_future()

        def deliver(result: list[Outcome] | TlogError) -> None:
            self.store._resolve(loop, future, result)

        job = _Job(self, items, proof, deliver, sum(map(_item_bytes, items)), atomic=atomic)
        self.store._enqueue(job)
        return await future

    def write_sync(
        self,
        items: Sequence[Item],
        *,
        pre_commit: Callable[[st.WriteTxn, list[_Placed | TlogError]], None] | None = None,
        proofs: bool = False,
        timeout: float | None = None,
    ) -> list[Outcome]:
        """Queue items as one job from a plain thread; block until durable and return one
        outcome per item. ``pre_commit`` runs in the same write transaction (see _Job).

        Raises the batch's TlogError (e.g. StorageFull, or what pre_commit raised).
        """
        future: concurrent.futures.Future[list[Outcome]] = concurrent.futures.Future()

        def deliver(result: list[Outcome] | TlogError) -> None:
            if isinstance(result, TlogError):
                future.set_exception(result)
            else:
                future.set_result(result)

        nbytes = sum(map(_item_bytes, items))
        self.store._enqueue(_Job(self, items, proofs, deliver, nbytes, pre_commit))
        return future.result(timeout)

    async def write_async(
        self,
        items: Sequence[Item],
        *,
        pre_commit: Callable[[st.WriteTxn, list[_Placed | TlogError]], None] | None = None,
        proofs: bool = False,
    ) -> list[Outcome]:
        """Like write_sync, for asyncio callers. Raises the batch's TlogError."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Outcome]] = loop.create_future()

        def deliver(result: list[Outcome] | TlogError) -> None:
            self.store._resolve(loop, future, result)

        nbytes = sum(map(_item_bytes, items))
        self.store._enqueue(_Job(self, items, proofs, deliver, nbytes, pre_commit))
        return await future

    def append_many(self, leaves: Sequence[bytes], *, timeout: float | None = None) -> Batch:
        """Append raw leaves durably and return their indexes and the covering checkpoint.

        Blocks until the batch holding them is committed with fsync. A leaf already in
        the log is not appended again: its earlier index is returned. Raises LeafTooLarge
        (nothing appended) for a leaf over 65,535 bytes, StorageFull if the map is full.
        """
        for i, leaf in enumerate(leaves):
            if len(leaf) > MAX_LEAF_BYTES:
                raise LeafTooLarge(f"leaf {i} is {len(leaf)} bytes; the limit is {MAX_LEAF_BYTES}")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def deliver(result: Any) -> None:
            if isinstance(result, TlogError):
                future.set_exception(result)
            else:
                future.set_result(result)

        job = _Job(self, leaves, False, deliver, sum(map(len, leaves)), brief=True)
        self.store._enqueue(job)
        placed, size, note = future.result(timeout)
        indexes: list[int] = []
        for p in placed:
            if isinstance(p, TlogError):
                raise p
            indexes.append(p.at)
        return Batch(indexes, size, note)

    # -- integration (writer thread only) --------------------------------------------

    def _record(self, txn: Any, tile_level: int, tile_index: int) -> bytearray:
        key = (tile_level, tile_index)
        rec = self._pending.get(key)
        if rec is None:
            committed = self._records.get(key)
            if committed is not None:
                rec = bytearray(committed)
            else:
                stored = st.get_tile_record(txn, self.dbs, tile_level, tile_index)
                rec = bytearray(stored) if stored is not None else bytearray(RECORD_SIZE)
            self._pending[key] = rec
        return rec

    def _integrate(
        self,
        wtxn: st.WriteTxn,
        items: Sequence[Item],
        now_ms: int,
        atomic: Sequence[tuple[int, int]] = (),
        quota: _Quota | None = None,
    ) -> list[_Placed | TlogError]:
        """Write items into txn (the caller commits); return where each one went.

        A write transaction sees its own writes, so a duplicate leaf, a reused
        idempotency key or a second version within the same batch is found by the same
        lookups as one from an earlier batch. ``atomic``: ranges [start, end) of items
        that are written all or none: if one fails, the range's others are undone and
        answer NotWritten (nothing is stored until after the loop, so undoing is
        forgetting the range's placements). ``quota``: refuse new entries beyond it
        (EntryLimit), counting them as they are placed (the admission check before the
        queue saw only what was written then).
        """
        dbs = self.dbs
        txn = wtxn.main
        itxn: Any = None
        if st.leaf_count(txn, dbs) != self._size:
            before = self._size
            self._reload(txn)
            if quota is not None:
                quota.left -= self._size - before  # another process's entries count too
        size = self._size
        envelopes = self.kind == ENVELOPE
        if envelopes:
            itxn = wtxn.index
            indexed = self.store.storage.indexed_size(self.log_id, itxn)
            if indexed < size:
                # An earlier batch's index commit failed after its durable log commit:
                # index its versions first, or the version lookups below would miss them.
                self._index_versions(itxn, indexed, list(st.iter_leaves(txn, dbs, indexed, size)))
                self.store.storage.set_indexed_size(itxn, self.log_id, size)
        seen: dict[bytes, int] = {}
        # This batch's versions, bodies and idempotency keys are written after the loop,
        # each kind in one call (tlog.storage.put_versions says why); until then these
        # answer the lookups of later items in the same batch.
        batch_versions: dict[str, tuple[int, int]] = {}
        batch_idempotency: dict[bytes, dict[str, Any]] = {}
        versions: list[tuple[str, int, int]] = []
        bodies: list[tuple[int, bytes]] = []
        bloom = self._bloom
        if not self._bloom_ready and self._bloom_built:
            self._bloom_ready = True
        leaves: list[bytes] = []
        hashes: list[bytes] = []
        placed: list[_Placed | TlogError] = []
        groups = {start: end for start, end in atomic if end - start > 1}
        group: _Group | None = None  # the all-or-nothing range being placed, if any

        def close(group: _Group) -> None:
            placed_leaves = len(leaves)
            group.close(placed, leaves, hashes, versions, bodies)
            if quota is not None:
                quota.left += placed_leaves - len(leaves)  # the undone entries' room

        plain = (
            None
            if envelopes
            or groups
            or (
                quota is not None and (size + len(items) > quota.per_log or quota.left < len(items))
            )
            else _plain_leaves(items)
        )
        if plain is not None:
            # Raw leaves, none too large, no all-or-nothing range, room for all: nothing
            # in the loop below could refuse one, so only deduplication remains.
            placed, leaves, hashes = self._place_raw(txn, size, plain)
            if quota is not None:
                quota.left -= len(leaves)
        for pos, item in enumerate(items if plain is None else ()):
            if group is not None and pos == group.end:
                close(group)
                group = None
            if pos in groups:
                group = _Group(groups[pos], placed, leaves, hashes, versions, bodies)
            if group is not None and group.failed:
                placed.append(_not_written())  # the range is refused already: skip the work
                continue
            index = size + len(leaves)
            version: int | None = None
            try:
                if isinstance(item, Draft) != envelopes:
                    raise BadRequest(
                        f"log {self.name} takes "
                        + ("artifact submissions" if envelopes else "raw leaves")
                    )
                if isinstance(item, Draft):
                    slot = None if item.idempotency_key is None else _idempotency_slot(item)
                    if slot is not None:
                        rec = (
                            batch_idempotency.get(slot)
                            or st.get_idempotency(txn, dbs, slot)
                            or self._legacy_idempotency(txn, item)
                        )
                        if rec is not None:
                            if rec["digest"] != item.request_digest.hex():
                                raise Conflict(
                                    "this Idempotency-Key was already used for another request"
                                )
                            placed.append(
                                _Placed(int(rec["index"]), None, True, artifact_id=item.artifact_id)
                            )
                            continue
                    latest = batch_versions.get(item.artifact_id)
                    if latest is None and not item.fresh_id:
                        latest = st.latest_version(itxn, dbs, item.artifact_id)
                    version, prev = (latest[0] + 1, latest[1]) if latest else (1, None)
                    if item.expected_version is not None and item.expected_version != version - 1:
                        raise VersionConflict(
                            f"artifact {item.artifact_id!r} is at version {version - 1}, "
                            f"not {item.expected_version}"
                        )
                    leaf = item.template().leaf(version, prev, now_ms)
                else:
                    leaf = item
                    if len(leaf) > MAX_LEAF_BYTES:
                        raise LeafTooLarge(
                            f"leaf is {len(leaf)} bytes; the limit is {MAX_LEAF_BYTES}"
                        )
            except TlogError as exc:
                placed.append(exc)
                if group is not None:
                    group.failed = True
                continue
            if quota is not None and (size + len(leaves) >= quota.per_log or quota.left <= 0):
                placed.append(
                    EntryLimit(
                        f"{self.name} holds {size + len(leaves)} entries; the limit is "
                        f"{quota.per_log}"
                        if size + len(leaves) >= quota.per_log
                        else "the service holds as many entries as its limit allows"
                    )
                )
                if group is not None:
                    group.failed = True
                continue
            h = leaf_hash(leaf)
            if self.dedup:
                earlier = seen.get(h)
                if earlier is None and (bloom is None or not self._bloom_ready or h in bloom):
                    earlier = self._earlier_index(txn, h)
                if earlier is not None:
                    placed.append(_Placed(earlier, None, True))
                    continue
                if group is not None:
                    group.note(seen, h)
                seen[h] = index
            leaves.append(leaf)
            hashes.append(h)
            if quota is not None:
                quota.left -= 1
            if isinstance(item, Draft):
                assert version is not None
                placed.append(_Placed(index, leaf, False, version, item.artifact_id, h))
                if group is not None:
                    group.note(batch_versions, item.artifact_id)
                    if slot is not None:
                        group.note(batch_idempotency, slot)
                batch_versions[item.artifact_id] = (version, index)
                versions.append((item.artifact_id, version, index))
                if item.body:
                    bodies.append((index, item.body))
                if slot is not None:
                    batch_idempotency[slot] = {
                        "digest": item.request_digest.hex(),
                        "index": index,
                    }
            else:
                placed.append(_Placed(index, leaf, False, leaf_hash=h))
        if group is not None:
            close(group)
        if versions:
            st.put_versions(itxn, dbs, versions)
        if bodies:
            st.put_bodies(txn, dbs, bodies)
        if batch_idempotency:
            st.put_idempotency_many(txn, dbs, list(batch_idempotency.items()))
        if leaves:
            st.put_leaves(txn, dbs, size, leaves)
            new_size = append_hashes(lambda lv, ix: self._record(txn, lv, ix), size, hashes)
            for (tile_level, tile_index), record in self._pending.items():
                st.put_tile_record(txn, dbs, tile_level, tile_index, record)
            builder = ProofBuilder(TxnHashReader(txn, dbs, self._pending))
            root = builder.root(new_size)
            if size:
                # Never sign a tree that does not extend the last signed one.
                try:
                    verify_consistency(
                        size, new_size, builder.consistency_proof(size, new_size), self._root, root
                    )
                except VerificationError as exc:
                    failure = IntegrityFailure(
                        f"log {self.name}: the tree of size {new_size} does not extend the "
                        f"signed checkpoint of size {size} ({exc}); nothing was written"
                    )
                    failure.log_name = self.name
                    raise failure from exc
            note = sign_checkpoint(Checkpoint(self.origin, new_size, root), self.signer)
            st.put_checkpoint(txn, dbs, new_size, note.encode())
            if envelopes:
                self.store.storage.set_indexed_size(itxn, self.log_id, new_size)
            self._next = (new_size, root, note)
            self._new_hashes = hashes
        return placed

    def _place_raw(
        self, txn: Any, size: int, items: Sequence[bytes]
    ) -> tuple[list[_Placed | TlogError], list[bytes], list[bytes]]:
        """Place raw leaves that nothing refuses (the caller checked: none is too large,
        none is in an all-or-nothing range, the quota has room for all) at size, size+1,
        ...; return (placements, new leaves, their hashes), as _integrate's loop would.

        The batch is handled whole where it can be: its hashes in one pass, one filter
        probe for all of them (``Bloom.maybe_many``), an exact lookup for each "maybe",
        and placements made in one go when neither the lookups nor the batch itself show
        a duplicate, the common case. A batch with a duplicate is placed one leaf at a
        time, as is every batch while the filter is not ready.
        """
        hashes = list(map(leaf_hash, items))
        count = len(items)
        if self.dedup:
            bloom = self._bloom
            if bloom is None or not self._bloom_ready:
                return self._place_raw_slowly(txn, size, items, hashes, None)
            # The filter's "maybe"s, looked up now: at 10^7 leaves a batch of 1,000 holds
            # one or two false positives, and they must not cost the batch its fast path.
            earlier: dict[int, int] = {}
            for pos in bloom.maybe_many(hashes):
                found = self._earlier_index(txn, hashes[pos])
                if found is not None:
                    earlier[pos] = found
            if earlier or len(set(hashes)) != count:
                return self._place_raw_slowly(txn, size, items, hashes, earlier)
        indexes = range(size, size + count)
        fields = zip(indexes, items, repeat(False), repeat(None), repeat(None), hashes)
        # tuple.__new__ as _Placed._make does it, minus a Python frame per leaf.
        placed: list[_Placed | TlogError] = list(map(tuple.__new__, repeat(_Placed), fields))
        return placed, list(items), hashes

    def _place_raw_slowly(
        self,
        txn: Any,
        size: int,
        items: Sequence[bytes],
        hashes: list[bytes],
        committed: dict[int, int] | None,
    ) -> tuple[list[_Placed | TlogError], list[bytes], list[bytes]]:
        """_place_raw for a batch that holds a duplicate, or whose filter is not ready:
        ``committed`` maps the position of each leaf the log already holds to its index
        (None: unknown, look every leaf up). Returns what _place_raw does."""
        seen: dict[bytes, int] = {}
        placed: list[_Placed | TlogError] = []
        leaves: list[bytes] = []
        new_hashes: list[bytes] = []
        for pos, (leaf, h) in enumerate(zip(items, hashes, strict=True)):
            earlier = seen.get(h)
            if earlier is None:
                if committed is None:
                    earlier = self._earlier_index(txn, h)
                else:
                    earlier = committed.get(pos)
            if earlier is not None:
                placed.append(_Placed(earlier, None, True))
                continue
            index = size + len(leaves)
            seen[h] = index
            leaves.append(leaf)
            new_hashes.append(h)
            placed.append(_Placed(index, leaf, False, leaf_hash=h))
        return placed, leaves, new_hashes

    def _earlier_index(self, txn: Any, h: bytes) -> int | None:
        """Return the index of a committed leaf with hash h, or None: the exact lookup
        behind a "maybe" of the dedup filter (not-yet-indexed batches first, then the
        hash index's generations the filters name)."""
        earlier = self._unindexed_index(h)
        if earlier is not None:
            return earlier
        # A fresh snapshot for each lookup: the indexer may have committed this hash
        # (and dropped it from _unindexed) a moment ago.
        with self.store.storage.read_index() as reader:
            try:
                return st.find_leaf_hash(reader, txn, self.dbs, h, self._candidate_gens(h))
            except NotFound:
                return None

    def _legacy_idempotency(self, txn: Any, item: Draft) -> dict[str, Any] | None:
        """Return the record of item's Idempotency-Key as stored before keys were scoped
        to principals (keyed by the key itself), if that record's entry was written by
        item's principal; else None. Keeps retries across the upgrade safe without
        letting one principal's old record answer another's request."""
        assert item.idempotency_key is not None
        try:
            raw_key = item.idempotency_key.encode()
        except UnicodeEncodeError:
            return None
        if not raw_key or len(raw_key) > st.MAX_KEY_BYTES:
            return None
        rec = st.get_idempotency(txn, self.dbs, raw_key)
        if rec is None:
            return None
        try:
            stored = decode_envelope(st.get_leaf(txn, self.dbs, int(rec["index"])))
        except (TlogError, KeyError, ValueError):
            return None
        return rec if stored.principal == item.principal else None

    def _reload(self, txn: Any) -> None:
        """Adopt the stored state: another process (e.g. the tlog CLI) appended to this log.

        LMDB serialises write transactions across processes, so within this write
        transaction the stored state is current. Raises StorageError/KeyProblem if the
        stored log does not verify.
        """
        latest = st.latest_checkpoint(txn, self.dbs)
        count = st.leaf_count(txn, self.dbs)
        if latest is None or latest[0] != count:
            raise StorageError(
                f"log {self.name}: {count} leaves, checkpoint {latest and latest[0]}"
            )
        size, note = latest
        try:
            cp = open_checkpoint(note, self._verifier_keys, origin=self.origin)
        except VerificationError as exc:
            raise KeyProblem(f"log {self.name}: stored checkpoint does not verify ({exc})") from exc
        if size < self._size:
            raise StorageError(f"log {self.name} shrank from {self._size} to {size}")
        # The other process's leaves may not be in the index env yet (its indexer runs
        # after its commit, and it may die first): treat them like a batch of our own,
        # findable in _unindexed until our indexer has indexed them.
        first = self._size
        hashes = st.leaf_hashes(txn, self.dbs, first, size)
        # Into our dedup filters too, first (as _commit does): index_of on another thread
        # trusts the filters once it misses _unindexed, which the indexer may empty as
        # soon as _index_later has run. If the indexer thread is still filling the filters
        # from the stored tiles, it reads our size either before this reload (then it adds
        # up to `first` and we add the rest) or after (then it adds these too): either way
        # they end up holding every stored leaf. (Until 2026-11-29 the filter was dropped
        # instead, and every later leaf was looked up exactly.)
        if self._bloom is not None and self._gens is not None and hashes:
            self._bloom.add_many(hashes)
            self._gens.add_many(first, hashes)
        self._size, self._root, self._note = size, cp.root, note.decode()
        self._next = (self._size, self._root, self._note)
        self._records = {}
        if hashes:
            adopted: dict[bytes, int] = {}
            for i, h in enumerate(hashes, first):
                adopted.setdefault(h, i)
            self._unindexed[first] = adopted
            self.store._index_later(self, first, hashes)

    def _commit(self) -> None:
        """The batch is durable: adopt its state and keep only right-edge tile records;
        hand the new leaf hashes to the indexer thread."""
        if self._pending:
            first = self._size
            if self._bloom is not None and self._gens is not None:
                self._bloom.add_many(self._new_hashes)
                self._gens.add_many(first, self._new_hashes)
            self._unindexed[first] = dict(
                zip(self._new_hashes, range(first, self._next[0]), strict=True)
            )
            self.store._index_later(self, first, self._new_hashes)
            self._new_hashes = []
            self._size, self._root, self._note = self._next
            self._records.update(self._pending)
            self._pending = {}
            complete = [k for k in self._records if self._tile_complete(*k)]
            for key in complete:
                del self._records[key]
            if complete:
                # Proofs read complete tile records at random: map them, so that the
                # page-cache trimming leaves them cached (tlog.pagecache).
                try:
                    with self.store.storage.read() as txn:
                        st.map_tile_records(txn, self.dbs, complete)
                except Exception:
                    _log.exception("could not map the tile records completed in %s", self.name)

    def _discard(self) -> None:
        """The batch was aborted: forget its state."""
        self._pending = {}
        self._new_hashes = []

    def _tile_complete(self, tile_level: int, tile_index: int) -> bool:
        return self._size >= (tile_index + 1) << (TILE_HEIGHT * (tile_level + 1))

    def _outcomes(
        self,
        placed: Sequence[_Placed | TlogError],
        proofs: dict[int, list[bytes]] | None,
        txn: st.Txn,
    ) -> list[Outcome]:
        """Turn placements into outcomes against the latest checkpoint (after commit).

        ``proofs`` holds the inclusion proof of every placed index at the log's size
        (computed for the whole batch at once), or None when no proofs are wanted.
        """
        out: list[Outcome] = []
        size, note = self._size, self._note
        for p in placed:
            if isinstance(p, TlogError):
                out.append(p)
                continue
            leaf = p.leaf if p.leaf is not None else st.get_leaf(txn, self.dbs, p.at)
            version, artifact_id = p.version, p.artifact_id
            if p.replayed and artifact_id is not None:
                # An earlier entry answers this item: report that entry's own facts.
                stored = decode_envelope(leaf)
                version, artifact_id = stored.version, stored.artifact_id
            out.append(
                Appended(
                    index=p.at,
                    size=size,
                    leaf=leaf,
                    leaf_hash=p.leaf_hash or leaf_hash(leaf),
                    checkpoint=note,
                    proof=tuple(proofs[p.at]) if proofs is not None else (),
                    version=version,
                    artifact_id=artifact_id,
                    replayed=p.replayed,
                )
            )
        return out

    # -- reads ------------------------------------------------------------------------

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self._size:
            raise BadRequest(f"tree size {size} is beyond the log's size {self._size}")

    def entry(self, index: int) -> bytes:
        """Return the leaf bytes at index. Raises NotFound."""
        if not 0 <= index < self._size:
            raise NotFound(f"no entry at index {index} (tree size {self._size})")
        with self.store.storage.read() as txn:
            return st.get_leaf(txn, self.dbs, index)

    def index_of(self, leaf_hash_: bytes) -> int:
        """Return the index of the first leaf with this RFC 6962 leaf hash. Raises NotFound."""
        index = self._unindexed_index(leaf_hash_)
        if index is None:
            with self.store.storage.read_index() as itxn, self.store.storage.read() as txn:
                index = st.find_leaf_hash(
                    itxn, txn, self.dbs, leaf_hash_, self._candidate_gens(leaf_hash_)
                )
        if index >= self._size:
            raise NotFound("no entry with that leaf hash")
        return index

    def root(self, size: int) -> bytes:
        """Return the root hash of the tree of this size. Raises BadRequest beyond the tree."""
        self._check_size(size)
        with self.store.storage.read() as txn:
            return ProofBuilder(TxnHashReader(txn, self.dbs)).root(size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Return the RFC 6962 §2.1.1 inclusion proof of index in the tree of this size.

        Raises BadRequest unless 0 <= index < size <= the log's size.
        """
        self._check_size(size)
        if not 0 <= index < size:
            raise BadRequest(f"index {index} is not in a tree of size {size}")
        with self.store.storage.read() as txn:
            return ProofBuilder(TxnHashReader(txn, self.dbs), self._memo).inclusion_proof(
                index, size
            )

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """Return the RFC 6962 §2.1.2 consistency proof from size old to size new.

        Raises BadRequest unless 0 <= old <= new <= the log's size.
        """
        self._check_size(new)
        if not 0 <= old <= new:
            raise BadRequest(f"old size {old} must be between 0 and new size {new}")
        with self.store.storage.read() as txn:
            return ProofBuilder(TxnHashReader(txn, self.dbs), self._memo).consistency_proof(
                old, new
            )

    def checkpoint_at(self, size: int) -> str:
        """Return the signed checkpoint published for exactly this size. Raises NotFound."""
        with self.store.storage.read() as txn:
            return st.get_checkpoint(txn, self.dbs, size).decode()

    def receipt(self, index: int, size: int | None = None) -> str:
        """Return a C2SP tlog-proof receipt for the entry at index.

        With ``size``, against the checkpoint published for exactly that size (NotFound
        if none was); without, against the latest checkpoint. Raises NotFound/BadRequest.
        """
        if size is None:
            size = self._size
        self._check_size(size)
        if not 0 <= index < size:
            raise BadRequest(f"index {index} is not in a tree of size {size}")
        with self.store.storage.read() as txn:
            note = st.get_checkpoint(txn, self.dbs, size).decode()
            proof = ProofBuilder(TxnHashReader(txn, self.dbs)).inclusion_proof(index, size)
            leaf = st.get_leaf(txn, self.dbs, index)
        return format_receipt(Receipt(index=index, proof=tuple(proof), checkpoint=note, extra=leaf))

    def tile(self, level: int, index: int, width: int) -> bytes:
        """Return C2SP tlog-tiles hash tile ``tile/<level>/<index>[.p/<width>]``.

        Raises NotFound unless the tree holds at least that many hashes in that tile.
        """
        size = self._size
        have = (size >> (8 * level)) - index * TILE_WIDTH
        if not 1 <= width <= TILE_WIDTH or have < width:
            raise NotFound(f"tile {level}/{index} of width {width} does not exist at size {size}")
        with self.store.storage.read() as txn:
            rec = st.get_tile_record(txn, self.dbs, level, index)
        if rec is None:
            raise AssertionError(f"bad math: tile record {level}/{index} missing at size {size}")
        return rec[: width * 32]

    def bundle(self, index: int, width: int) -> bytes:
        """Return C2SP tlog-tiles entry bundle ``tile/entries/<index>[.p/<width>]``.

        Raises NotFound unless the tree holds at least that many entries in that bundle.
        """
        size = self._size
        first = index * TILE_WIDTH
        if not 1 <= width <= TILE_WIDTH or size - first < width:
            raise NotFound(f"entry bundle {index} of width {width} does not exist at size {size}")
        parts: list[bytes] = []
        with self.store.storage.read() as txn:
            for leaf in st.iter_leaves(txn, self.dbs, first, first + width):
                parts.append(len(leaf).to_bytes(2, "big"))
                parts.append(leaf)
        return b"".join(parts)

    def versions(self, artifact_id: str) -> list[tuple[int, int]]:
        """Return [(version, index), ...] of an artifact, oldest first. Raises NotFound."""
        with self.store.storage.read_index() as txn:
            found = st.list_versions(txn, self.dbs, artifact_id)
        found = [(v, i) for v, i in found if i < self._size]
        if not found:
            raise NotFound(f"no artifact {artifact_id!r} in log {self.name}")
        return found

    def body(self, index: int) -> bytes | None:
        """Return the stored artifact body of the entry at index, or None."""
        with self.store.storage.read() as txn:
            return st.get_body(txn, self.dbs, index)


def _settle_futures(items: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """Set each future's result or exception (on its event loop's thread)."""
    for future, result in items:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def _item_bytes(item: Item) -> int:
    return len(item) if isinstance(item, bytes) else len(item.body) + 1024


class Store:
    """A data directory: one LMDB environment, its logs and their signing keys, and
    the single writer thread that sequences every write."""

    def __init__(self, data_dir: Path, storage: Storage) -> None:
        self.data_dir = data_dir
        self.storage = storage
        self.keys_dir = data_dir / "keys"
        self.logs: dict[str, Log] = {}
        for name, record in storage.log_records().items():
            signer = load_key(self.keys_dir / f"{name}.key", record["origin"])
            if signer.vkey != record["vkey"]:
                raise KeyProblem(
                    f"log {name}: key file {self.keys_dir / (name + '.key')} is not the key "
                    "the log was created with"
                )
            self.logs[name] = Log(
                self, name, record["origin"], record["id"], signer, record.get("kind", RAW)
            )
        self.audit_log: str | None = None
        """Name of the log that receives one record per batch appended to any other log."""
        self.audit_hook: AuditHook | None = None
        self.entry_limits: tuple[int, int] | None = None
        """(per log, all logs but the audit log): the writer refuses entries beyond them
        (EntryLimit) as it places them, so no two batches admitted at once can pass."""
        # Called from the writer thread, (log name, problem), when a batch was refused
        # because its tree would not extend the last signed checkpoint. It must not wait
        # for the writer (governance halts from another thread).
        self.on_integrity_failure: Callable[[str, str], None] | None = None
        self.on_batch: Callable[[dict[str, int], int, float], None] | None = None
        """Called after each committed batch with (entries appended per log, items, seconds)."""
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._to_settle: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
        self._closed = False
        # Held across _closed's check and the put in _enqueue, and by close() across
        # setting it and queueing the writer's stop: no job lands after the stop, unanswered.
        self._enqueue_lock = threading.Lock()
        self._committed = False  # the writer thread: has the current batch committed?
        self._last_jobs = 0  # the writer thread: jobs in the last batch
        self._last_done = 0.0  # the writer thread: time.monotonic() after the last batch
        self._thread = threading.Thread(target=self._run, name="tlog-writer", daemon=True)
        self._index_queue: queue.SimpleQueue[
            tuple[Log, int, list[bytes]] | threading.Event | None
        ] = queue.SimpleQueue()
        # The indexer process, started at the first batch to index (None: not yet, or
        # never, see INDEX_PROCESS); _index_inline once it failed. Indexer thread only.
        self._index_process: IndexProcess | None = None
        self._index_inline = not INDEX_PROCESS
        self._indexer = threading.Thread(target=self._run_indexer, name="tlog-indexer", daemon=True)
        self._indexer.start()
        self._thread.start()

    @classmethod
    def open(cls, data_dir: Path, *, map_size: int = st.DEFAULT_MAP_SIZE) -> Store:
        """Open (creating if needed) the store in data_dir and every log in it.

        Raises StorageError or KeyProblem if a log cannot be restored exactly.
        """
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir, Storage(data_dir, map_size=map_size))

    def create_log(self, name: str, origin: str, *, kind: str = RAW) -> Log:
        """Create a new, empty log with a fresh key (mode 0600) named after its origin.

        ``kind`` is RAW (append_many/submit of raw leaves) or ENVELOPE (Draft submissions,
        encoded as tlog.entry envelopes, with an artifact index).

        Returns it. Raises StorageError if it exists, KeyProblem if its key file exists.
        """
        if name in self.logs:
            raise StorageError(f"log {name!r} already exists")
        if kind not in KINDS:
            raise BadRequest(f"unknown log kind {kind!r}")
        key_path = self.keys_dir / f"{name}.key"
        if key_path.exists():
            # A crash between writing the key and recording the log leaves the key behind;
            # nothing was ever signed with it (checkpoints need the record), so reuse it.
            signer = load_key(key_path, origin)
        else:
            signer = create_key(key_path, origin)
        record = self.storage.create_log(
            name, {"origin": origin, "vkey": signer.vkey, "kind": kind}
        )
        dbs = self.storage.dbs(record["id"])
        # Sign the empty tree, as C2SP logs do, so a new log has a checkpoint at once.
        note = sign_checkpoint(Checkpoint(origin, 0, EMPTY_ROOT), signer)
        with self.storage.write() as wtxn:
            st.put_checkpoint(wtxn.main, dbs, 0, note.encode())
        log = Log(self, name, origin, record["id"], signer, kind)
        self.logs[name] = log
        return log

    def refresh(self) -> None:
        """Pick up appends made by another process (e.g. the tlog CLI) to any log: the
        writer reloads a log whose stored size differs from its own."""
        with self.storage.read() as txn:
            stale = [log for log in self.logs.values() if st.leaf_count(txn, log.dbs) != log.size]
        for log in stale:
            self._enqueue(_Job(log, (), False, lambda result: None))

    def log(self, name: str) -> Log:
        """Return the log called name. Raises NotFound."""
        try:
            return self.logs[name]
        except KeyError:
            raise NotFound(f"no log named {name!r}") from None

    def close(self) -> None:
        """Finish queued work, stop the writer and close the environment."""
        with self._enqueue_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        self._index_queue.put(None)
        self._indexer.join()
        self.storage.close()

    # -- the indexer thread -------------------------------------------------------------

    def _index_later(self, log: Log, first: int, hashes: list[bytes]) -> None:
        self._index_queue.put((log, first, hashes))

    def _index_queue_drain(self, timeout: float = 30.0) -> None:
        """Wait until the indexer has applied everything queued so far (tests, close)."""
        done = threading.Event()
        self._index_queue.put(done)
        if not done.wait(timeout):
            raise StorageError("the indexer did not catch up in time")

    def _run_indexer(self) -> None:
        """Keep the leaf-hash index up to date off the commit path.

        At start-up it adds the hashes stored so far to each raw log's filter (until it
        is done, the writer looks every new leaf up exactly). Then it takes every
        committed batch queued so far (at most MAX_INDEX_BACKLOG) and has the indexer
        process (tlog.indexer) index each log up to its newest committed size in one
        index transaction; the batches queued meanwhile make the next, larger, request.
        Only after that commit does it drop them from the log's ``_unindexed`` map, so a
        committed hash is always findable in one of the two.
        """
        for log in list(self.logs.values()):
            try:
                log._build_bloom()
            except Exception:
                _log.exception("could not build the dedup filter of %s", log.name)
        waiting: list[tuple[Log, int, int]] = []  # (log, first, stop) not yet indexed
        stop = False
        while not stop:
            job = self._index_queue.get()
            if job is None:
                break
            jobs: list[tuple[Log, int, list[bytes]] | threading.Event] = [job]
            while len(jobs) < MAX_INDEX_BACKLOG:
                try:
                    nxt = self._index_queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            waiting.extend(
                (j[0], j[1], j[1] + len(j[2])) for j in jobs if not isinstance(j, threading.Event)
            )
            reached: dict[int, int] = {}  # log id -> hashed size, as last answered
            while waiting:
                targets: dict[int, int] = {}
                for log, _, end in waiting:
                    targets[log.log_id] = max(targets.get(log.log_id, 0), end)
                try:
                    done = self._index_upto(targets)
                except Exception:
                    # The hashes stay in _unindexed (still found); the next request (it
                    # indexes from the stored hashed size) or the next open catches up.
                    _log.exception("indexer: index transaction failed")
                    break
                left = [w for w in waiting if done.get(w[0].log_id, 0) < w[2]]
                for log, first, end in waiting:
                    if done.get(log.log_id, 0) >= end:
                        log._unindexed.pop(first, None)
                # A request indexes at most MAX_PER_REQUEST leaves of a log, so a large
                # batch takes several; stop only when one moved no log forward (the
                # next job, or the next open, retries).
                if not any(size > reached.get(log_id, -1) for log_id, size in done.items()):
                    break
                reached.update(done)
                waiting = left
            for j in jobs:
                if isinstance(j, threading.Event):
                    j.set()
        if self._index_process is not None:
            self._index_process.close()
            self._index_process = None

    def _index_upto(self, targets: dict[int, int]) -> dict[int, int]:
        """Index each log (by id) up to its size; return how far each is indexed. Uses the
        indexer process, started on first use; without one, indexes in this thread."""
        if not self._index_inline and self._index_process is None:
            try:
                self._index_process = IndexProcess(self.storage)
            except StorageError:
                _log.exception("indexer: no indexer process; indexing in this thread")
                self._index_inline = True
        if self._index_process is not None:
            try:
                return self._index_process.index(targets)
            except IndexFailed:
                raise
            except StorageError:
                _log.exception("indexer process failed; indexing in this thread from now on")
                self._index_process.close(timeout=5.0)
                self._index_process = None
                self._index_inline = True
        storage = self.storage
        for log_id in targets:
            storage.dbs(log_id)  # before the index txn (see index_hashes_upto)
        with storage.write_index() as itxn:
            return {
                log_id: st.index_hashes_upto(storage, itxn, log_id, size, MAX_PER_REQUEST)
                for log_id, size in targets.items()
            }

    # -- the writer thread --------------------------------------------------------------

    def _enqueue(self, job: _Job) -> None:
        """Queue a job for the writer. Raises StorageError once the store is closing."""
        with self._enqueue_lock:
            if self._closed:
                raise StorageError("the store is closed")
            self._queue.put(job)

    def _resolve(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any
    ) -> None:
        """Settle an asyncio future from the writer thread, at the end of the batch.

        Waking an event loop costs a write to its self-pipe; settling each batch's futures
        with one call per loop instead of one per future keeps 1,000 concurrent
        submitters from spending their time in wake-ups.
        """
        self._to_settle.setdefault(loop, []).append((future, result))

    def _settle(self) -> None:
        pending, self._to_settle = self._to_settle, {}
        for loop, items in pending.items():
            try:
                loop.call_soon_threadsafe(_settle_futures, items)
            except RuntimeError:  # the loop was closed: nobody is waiting any more
                pass

    def _run(self) -> None:
        stop = False
        while not stop:
            job = self._queue.get()
            if job is None:
                break
            jobs = [job]
            count, nbytes = len(job.items), job.nbytes
            held: _Job | None = None
            # Busy (the last batch had several jobs and has just ended): while callers
            # keep queueing, wait for them a little (LINGER_STEP_S at a time,
            # BUSY_LINGER_S in all), so the per-batch work (signing, audit record,
            # fsync) is shared by more of them.
            busy = self._last_jobs > 1 and time.monotonic() - self._last_done < IDLE_AFTER_S
            steps = round(BUSY_LINGER_S / LINGER_STEP_S) if busy else 0
            since_step = 1
            while job.pre_commit is None and count < MAX_BATCH_ITEMS and nbytes < MAX_BATCH_BYTES:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    if steps == 0 or since_step == 0:
                        break
                    time.sleep(LINGER_STEP_S)
                    steps -= 1
                    since_step = 0
                    continue
                since_step += 1
                if nxt is None:
                    stop = True
                    break
                if nxt.pre_commit is not None:
                    held = nxt  # batched alone, next
                    break
                jobs.append(nxt)
                count += len(nxt.items)
                nbytes += nxt.nbytes
            self._last_jobs = len(jobs)
            for batch in [jobs, [held]] if held is not None else [jobs]:
                self._committed = False
                try:
                    self._process(batch)
                except BaseException:  # never let the writer die silently
                    _log.exception("writer thread failed on a batch")
                    error = (
                        _durable_without_receipt("internal error after the commit")
                        if self._committed
                        else StorageError("internal error while writing; nothing was written")
                    )
                    for j in batch:
                        try:
                            j.deliver(error)
                        except concurrent.futures.InvalidStateError:
                            pass  # answered before the failure
                # Before the callers are woken, so one that then submits sees it.
                self._last_done = time.monotonic()
                self._settle()

    def _process(self, jobs: list[_Job]) -> None:
        by_log: dict[str, list[_Job]] = {}
        for job in jobs:
            by_log.setdefault(job.log.name, []).append(job)
        started = time.perf_counter()
        now_ms = time.time_ns() // 1_000_000
        raw: dict[int, list[_Placed | TlogError]] = {}
        audit = self.logs.get(self.audit_log) if self.audit_log is not None else None
        touched = [self.logs[name] for name in by_log if self.logs[name] is not audit]
        records: list[bytes] = []
        quota = None
        if self.entry_limits is not None and touched:
            per_log, in_all = self.entry_limits
            used = sum(lg._size for lg in self.logs.values() if lg is not audit)
            quota = _Quota(per_log, in_all - used)
        try:
            with self.storage.write() as wtxn:
                for log in touched:
                    items = [it for job in by_log[log.name] for it in job.items]
                    atomic: list[tuple[int, int]] = []
                    pos = 0
                    for job in by_log[log.name]:
                        if job.atomic:
                            atomic.append((pos, pos + len(job.items)))
                        pos += len(job.items)
                    outcomes = log._integrate(wtxn, items, now_ms, atomic, quota)
                    # After _integrate: it may have adopted another process's appends,
                    # which are that process's to record, not this batch's.
                    before = log.size
                    pos = 0
                    for job in by_log[log.name]:
                        raw[id(job)] = outcomes[pos : pos + len(job.items)]
                        pos += len(job.items)
                    if audit is not None and self.audit_hook is not None and log._pending:
                        new_size, root, _ = log._next
                        # Only the items written now: not replays, not refused ones.
                        principals = sorted(
                            {
                                it.principal
                                for it, out in zip(items, outcomes, strict=True)
                                if isinstance(it, Draft)
                                and isinstance(out, _Placed)
                                and not out.replayed
                            }
                        )
                        records.append(
                            self.audit_hook(log.name, before, new_size, root, principals)
                        )
                if audit is not None and (records or audit.name in by_log):
                    # The audit log goes last, so it records this batch in this transaction.
                    audit_jobs = by_log.get(audit.name, [])
                    items = [it for job in audit_jobs for it in job.items]
                    touched.append(audit)
                    outcomes = audit._integrate(wtxn, [*items, *records], now_ms)
                    pos = 0
                    for job in audit_jobs:
                        raw[id(job)] = outcomes[pos : pos + len(job.items)]
                        pos += len(job.items)
                for job in jobs:
                    if job.pre_commit is not None:
                        job.pre_commit(wtxn, raw[id(job)])
        except TlogError as exc:
            for log in touched:
                log._discard()
            for job in jobs:
                job.deliver(exc)
            if isinstance(exc, IntegrityFailure) and self.on_integrity_failure is not None:
                try:
                    self.on_integrity_failure(exc.log_name, str(exc))
                except Exception:
                    _log.exception("integrity failure hook failed")
            return
        except BaseException:
            for log in touched:
                log._discard()
            raise
        self._committed = True  # from here on the batch is durable, whatever fails
        sizes_before = {log.name: log.size for log in touched}
        for log in touched:
            log._commit()
        if self._index_queue.qsize() > MAX_INDEX_BACKLOG:
            # Back-pressure: the indexer competes with this thread for the GIL and can
            # fall behind under sustained load; waiting here bounds the memory of the
            # hashes it has not applied yet. The batch is durable already: a slow
            # indexer must not turn it into an error (its hashes stay findable in
            # _unindexed), so a timeout is only logged.
            try:
                self._index_queue_drain()
            except StorageError:
                _log.warning("the indexer is more than %d batches behind", MAX_INDEX_BACKLOG)
        if self.on_batch is not None:
            try:
                self.on_batch(
                    {log.name: log.size - sizes_before[log.name] for log in touched},
                    sum(len(job.items) for job in jobs),
                    time.perf_counter() - started,
                )
            except Exception:
                _log.exception("batch observer failed")
        with self.storage.read() as rtxn:
            for log in touched:
                log_jobs = by_log.get(log.name, [])
                proofs: dict[int, list[bytes]] = {}
                failed: TlogError | None = None
                wanted = [
                    p.at
                    for job in log_jobs
                    if job.proofs and not job.brief
                    for p in raw[id(job)]
                    if not isinstance(p, TlogError)
                ]
                if wanted:
                    # One walk for every receipt of the batch (1,000 lone submits share
                    # most of their proof hashes), not one per job.
                    builder = ProofBuilder(TxnHashReader(rtxn, log.dbs, log._records))
                    try:
                        proofs = builder.inclusion_proofs(wanted, log.size)
                    except TlogError as exc:
                        failed = exc  # answered to the jobs that wanted proofs
                for job in log_jobs:
                    if job.brief:
                        job.deliver((raw[id(job)], log.size, log._note))
                        continue
                    if job.proofs and failed is not None:
                        job.deliver(_durable_without_receipt(str(failed), failed))
                        continue
                    try:
                        results = log._outcomes(raw[id(job)], proofs if job.proofs else None, rtxn)
                    except TlogError as exc:
                        job.deliver(_durable_without_receipt(str(exc), exc))
                        continue
                    job.deliver(results)
