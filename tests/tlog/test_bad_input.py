"""Bad input and full storage: a refused write leaves the log exactly as it was, still
readable and still writable, and fails only the item at fault."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

import tlog.log
from tests.reference import consistency_proof, inclusion_path, mth
from tlog.entry import MAX_LEAF_BYTES, decode_envelope
from tlog.errors import InvalidEntry, LeafTooLarge, NotFound, StorageFull
from tlog.indexer import IndexFailed, IndexProcess
from tlog.log import ENVELOPE, Appended, Draft, Log, Outcome, Store
from verifier.checkpoint import open_checkpoint
from verifier.hashing import leaf_hash
from verifier.note import parse_vkey
from verifier.proof import verify_consistency
from verifier.receipt import verify_receipt
from verifier.tiles import decode_bundle

ORIGIN = "bucket.example/logs/bad"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path)
    yield s
    s.close()


def submit_many(log: Log, items: list[bytes | Draft]) -> list[Outcome]:
    async def run() -> list[Outcome]:
        return await log.submit_many(items)

    return asyncio.run(run())


def state(log: Log) -> tuple[int, str, bytes]:
    return log.size, log.checkpoint(), log.root(log.size)


# -- oversized leaves ------------------------------------------------------------------------


def test_oversized_leaf_is_refused_and_changes_nothing(store: Store) -> None:
    log = store.create_log("t", ORIGIN)
    log.append_many([b"a", b"b"])
    before = state(log)
    too_big = b"x" * (MAX_LEAF_BYTES + 1)
    assert len(too_big) == 65_536
    with pytest.raises(LeafTooLarge):
        log.append_many([too_big])
    # One bad leaf refuses the whole append_many call: nothing of it is appended.
    with pytest.raises(LeafTooLarge):
        log.append_many([b"c", too_big])
    assert state(log) == before
    with pytest.raises(NotFound):
        log.index_of(leaf_hash(b"c"))

    # Through the queue, only the item at fault fails.
    out = submit_many(log, [b"c", too_big, b"d"])
    assert isinstance(out[0], Appended) and isinstance(out[2], Appended)
    assert isinstance(out[1], LeafTooLarge)
    assert [o.index for o in (out[0], out[2]) if isinstance(o, Appended)] == [2, 3]

    async def one() -> Appended:
        return await log.submit(too_big)

    with pytest.raises(LeafTooLarge):
        asyncio.run(one())
    assert log.size == 4

    # The largest leaf a bundle can hold is fine, and round-trips through the bundle.
    biggest = b"y" * MAX_LEAF_BYTES
    assert log.append_many([biggest]).indexes == [4]
    assert decode_bundle(log.bundle(0, 5), 5) == [b"a", b"b", b"c", b"d", biggest]
    key = parse_vkey(log.vkey)
    assert verify_receipt(log.receipt(4), [key]).leaf == biggest
    assert open_checkpoint(log.checkpoint(), [key]).root == mth([b"a", b"b", b"c", b"d", biggest])


# -- envelopes that break the schema -----------------------------------------------------------


def draft(artifact_id: str, body: bytes = b"body", **kw: Any) -> Draft:
    fields: dict[str, Any] = {
        "product": "gurukul",
        "artifact_type": "lesson",
        "artifact_id": artifact_id,
        "principal": "key:3f2a9c1d",
        "body": body,
        "body_sha256": hashlib.sha256(body).digest(),
    }
    fields.update(kw)
    return Draft(**fields)


@pytest.mark.parametrize("digest", [b"short", hashlib.sha256(b"other").digest()])
def test_draft_must_commit_to_its_own_body(digest: bytes) -> None:
    with pytest.raises(InvalidEntry, match="body_sha256"):
        draft("doc", body_sha256=digest)


@pytest.mark.parametrize(
    "bad",
    [
        {"product": "Gurukul!"},
        {"artifact_type": ""},
        {"artifact_id": " padded "},
        {"artifact_id": "line\nbreak"},
        {"principal": ""},
        {"metadata": {"when": float("nan")}},
        {"metadata": {"blob": "z" * 20_000}},
    ],
)
def test_invalid_envelope_fails_only_its_item(store: Store, bad: dict[str, Any]) -> None:
    log = store.create_log("gurukul", "bucket.example/logs/gurukul", kind=ENVELOPE)
    (first,) = submit_many(log, [draft("doc")])
    assert isinstance(first, Appended)
    before = state(log)
    fields = {"artifact_id": "doc", **bad}
    artifact_id = fields.pop("artifact_id")
    broken = draft(artifact_id, idempotency_key="retry-me", request_digest=b"\x01" * 32, **fields)
    out = submit_many(log, [draft("doc"), broken, draft("other")])
    assert isinstance(out[1], InvalidEntry), out[1]
    ok = [o for o in (out[0], out[2]) if isinstance(o, Appended)]
    assert len(ok) == 2
    assert [o.index for o in ok] == [before[0], before[0] + 1]
    # The refused item used no version number and recorded no idempotency key.
    assert ok[0].version == 2
    assert decode_envelope(ok[0].leaf).prev_index == first.index
    assert log.versions("doc") == [(1, first.index), (2, ok[0].index)]
    fixed = draft("doc", idempotency_key="retry-me", request_digest=b"\x01" * 32)
    (retried,) = submit_many(log, [fixed])
    assert isinstance(retried, Appended) and not retried.replayed
    assert retried.version == 3


# -- a full LMDB map ---------------------------------------------------------------------------


def test_full_map_refuses_the_batch_and_leaves_the_log_intact(tmp_path: Path) -> None:
    rng = random.Random(11)
    leaves: list[bytes] = []
    checkpoints: list[str] = []
    store = Store.open(tmp_path, map_size=1 << 20)
    try:
        log = store.create_log("t", ORIGIN)
        full = 0
        for _ in range(2000):
            batch = [rng.randbytes(rng.randint(16, 600)) for _ in range(rng.randint(1, 60))]
            before = (log.size, log.checkpoint() if log.size else "")
            try:
                got = log.append_many(batch)
            except StorageFull:
                full += 1
                assert (log.size, log.checkpoint()) == before
                if full == 3:
                    break
                continue
            leaves.extend(batch)
            checkpoints.append(got.checkpoint)
        assert full == 3, "the map never filled up"
        assert len(leaves) > 100

        # Still readable, and what it serves is what was acknowledged.
        size = log.size
        assert size == len(leaves)
        key = parse_vkey(log.vkey)
        assert open_checkpoint(log.checkpoint(), [key]).root == mth(leaves)
        assert log.inclusion_proof(7, size) == inclusion_path(7, leaves)
        assert verify_receipt(log.receipt(size - 1), [key]).leaf == leaves[-1]
        assert log.index_of(leaf_hash(leaves[3])) == 3

        async def one() -> Appended:
            return await log.submit(rng.randbytes(60_000))

        with pytest.raises(StorageFull):
            asyncio.run(one())
        assert log.size == size
    finally:
        store.close()

    # More room: writable again, and consistent with everything signed before.
    store = Store.open(tmp_path, map_size=16 << 20)
    try:
        log = store.log("t")
        assert log.size == len(leaves)
        more = [rng.randbytes(300) for _ in range(50)]
        assert log.append_many(more).indexes == list(range(len(leaves), len(leaves) + 50))
        leaves.extend(more)
        key = parse_vkey(log.vkey)
        latest = open_checkpoint(log.checkpoint(), [key])
        assert latest.root == mth(leaves)
        for note in checkpoints[:: max(1, len(checkpoints) // 10)]:
            cp = open_checkpoint(note, [key])
            proof = log.consistency_proof(cp.size, latest.size)
            assert proof == consistency_proof(cp.size, leaves)
            verify_consistency(cp.size, latest.size, proof, cp.root, latest.root)
        for index, leaf in enumerate(leaves):
            assert log.index_of(leaf_hash(leaf)) == index
    finally:
        store.close()


# -- the index commit failing after the durable log commit --------------------------------------


class _FailingCommit:
    """A write transaction whose commit fails like a full map (and commits nothing)."""

    def __init__(self, txn: Any) -> None:
        self._txn = txn

    def commit(self) -> None:
        self._txn.abort()
        raise lmdb.MapFullError("mdb_txn_commit: MDB_MAP_FULL (simulated)")

    def __enter__(self) -> Any:
        return self

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if kind is None:
            self.commit()
        else:
            self._txn.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)


class _IndexEnv:
    """Wraps the index env; the next write transaction's commit fails once."""

    def __init__(self, env: Any) -> None:
        self._env = env
        self.fail_next = False

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        txn = self._env.begin(*args, **kwargs)
        if kwargs.get("write") and self.fail_next:
            self.fail_next = False
            return _FailingCommit(txn)
        return txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


@pytest.mark.parametrize("process", [True, False], ids=["indexer-process", "indexer-thread"])
def test_index_commit_failure_after_a_durable_commit(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    process: bool,
) -> None:
    """The batch is durable and signed, so it is answered as a success; the next batch
    indexes it before any lookup, so dedup and artifact versions stay right."""
    monkeypatch.setattr(tlog.log, "INDEX_PROCESS", process)
    fail_request = [False]
    real_index = IndexProcess.index

    def index(self: IndexProcess, targets: dict[int, int]) -> dict[int, int]:
        if fail_request[0]:  # as if the process's index commit failed
            fail_request[0] = False
            raise IndexFailed("indexer: MapFullError: MDB_MAP_FULL (simulated)")
        return real_index(self, targets)

    monkeypatch.setattr(IndexProcess, "index", index)
    store = Store.open(tmp_path)
    raw = store.create_log("raw", "bucket.example/logs/raw")
    env_log = store.create_log("gurukul", "bucket.example/logs/gurukul", kind=ENVELOPE)
    index_env = _IndexEnv(store.storage.ienv)
    monkeypatch.setattr(store.storage, "ienv", index_env)
    try:
        raw.append_many([b"a", b"b"])
        (v1,) = submit_many(env_log, [draft("doc")])
        store._index_queue_drain()  # earlier batches' hashes are indexed
        assert (store._index_process is not None) == process
        if process:
            fail_request[0] = True
        else:
            index_env.fail_next = True
        with caplog.at_level(logging.ERROR):
            got = raw.append_many([b"c", b"d"])
            # Raw logs' hashes are indexed by the indexer, after the commit.
            store._index_queue_drain()
        assert "index transaction failed" in caplog.text
        assert got.indexes == [2, 3] and raw.size == 4
        assert open_checkpoint(got.checkpoint, [parse_vkey(raw.vkey)]).root == mth(
            [b"a", b"b", b"c", b"d"]
        )
        # The next batch sees c and d as already in the log.
        assert raw.append_many([b"c", b"e", b"d"]).indexes == [2, 4, 3]
        assert raw.size == 5
        assert [raw.index_of(leaf_hash(x)) for x in (b"a", b"b", b"c", b"d", b"e")] == [
            0,
            1,
            2,
            3,
            4,
        ]
        # The next request indexed the failed batch's hashes too (from the tile records).
        store._index_queue_drain()
        assert raw._unindexed == {} and store.storage.hashed_size(raw.log_id) == 5

        index_env.fail_next = True
        (v2,) = submit_many(env_log, [draft("doc", b"two")])
        (v3,) = submit_many(env_log, [draft("doc", b"three")])
        assert isinstance(v2, Appended) and isinstance(v3, Appended)
        assert (v2.version, v3.version) == (2, 3)
        assert decode_envelope(v3.leaf).prev_index == v2.index
        assert isinstance(v1, Appended)
        assert env_log.versions("doc") == [(1, v1.index), (2, v2.index), (3, v3.index)]
    finally:
        store.close()
    store = Store.open(tmp_path)
    try:
        assert store.log("raw").index_of(leaf_hash(b"e")) == 4
        assert [v for v, _ in store.log("gurukul").versions("doc")] == [1, 2, 3]
    finally:
        store.close()
