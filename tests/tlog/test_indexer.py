"""The leaf-hash indexer process (tlog.indexer): its protocol, that the store uses it, and
that indexing goes on in the writer's process when it dies."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pytest

import tlog.indexer
import tlog.log
from tlog import storage as st
from tlog.indexer import IndexProcess, serve
from tlog.log import Store
from tlog.storage import StorageError
from verifier.hashing import leaf_hash


def _leaves(n: int, tag: bytes) -> list[bytes]:
    return [tag + i.to_bytes(4, "big") for i in range(n)]


def test_serve_indexes_from_the_tile_records_and_answers_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing indexes behind our back: the store's own indexer would use the process.
    monkeypatch.setattr(tlog.log, "INDEX_PROCESS", False)
    store = Store.open(tmp_path)
    log = store.create_log("t", "bucket.example/logs/t")
    leaves = _leaves(700, b"a")
    log.append_many(leaves)
    store._index_queue_drain()
    storage = store.storage
    # Forget the hashes past 300 (as after a failed index commit) and ask serve() for them.
    with storage.write_index() as itxn:
        storage.set_hashed_size(itxn, log.log_id, 300)
    out = io.BytesIO()
    serve(storage, io.BytesIO(f"{log.log_id}:700\n{log.log_id}:701\n".encode()), out)
    lines = out.getvalue().splitlines()
    assert lines[0] == b"ready"
    assert lines[1] == f"ok {log.log_id}:700".encode()
    assert lines[2].startswith(b"err StorageError:") and b"only 700 leaves" in lines[2]
    assert storage.hashed_size(log.log_id) == 700  # the failed request committed nothing
    with storage.read_index() as itxn, storage.read() as txn:
        for i in (0, 299, 300, 456, 699):
            assert st.find_leaf_hash(itxn, txn, log.dbs, leaf_hash(leaves[i])) == i
    store.close()


def test_store_indexes_in_the_indexer_process(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    log = store.create_log("t", "bucket.example/logs/t")
    leaves = _leaves(3000, b"b")
    for k in range(0, 3000, 500):
        log.append_many(leaves[k : k + 500])
    store._index_queue_drain()
    process = store._index_process
    assert process is not None and not store._index_inline
    assert log._unindexed == {} and store.storage.hashed_size(log.log_id) == 3000
    assert [log.index_of(leaf_hash(x)) for x in leaves[::97]] == list(range(0, 3000, 97))
    # Dedup goes through the index once the hashes left _unindexed.
    assert log.append_many([leaves[5], b"new"]).indexes == [5, 3000]
    store.close()
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)  # it exited (and was reaped) at close


def test_indexing_goes_on_in_this_process_when_the_indexer_dies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.open(tmp_path)
    log = store.create_log("t", "bucket.example/logs/t")
    log.append_many(_leaves(100, b"c"))
    store._index_queue_drain()
    process = store._index_process
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    leaves = _leaves(400, b"d")
    log.append_many(leaves)
    store._index_queue_drain()
    assert "indexing in this thread" in caplog.text
    assert store._index_inline and store._index_process is None
    assert log._unindexed == {} and store.storage.hashed_size(log.log_id) == 500
    assert log.index_of(leaf_hash(leaves[321])) == 421
    store.close()
    store = Store.open(tmp_path)
    try:
        assert store.log("t").index_of(leaf_hash(leaves[399])) == 499
    finally:
        store.close()


def test_a_hung_indexer_is_killed_and_indexing_goes_on_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tlog.indexer, "REQUEST_TIMEOUT_S", 1.0)
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", "bucket.example/logs/t")
        log.append_many(_leaves(10, b"e"))
        store._index_queue_drain()
        process = store._index_process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)  # alive, but never answers again
        leaves = _leaves(50, b"f")
        log.append_many(leaves)
        store._index_queue_drain(timeout=20.0)
        assert "did not answer" in caplog.text
        assert store._index_inline and store._index_process is None
        with pytest.raises(ProcessLookupError):
            os.kill(process.pid, 0)  # killed and reaped
        assert log._unindexed == {} and store.storage.hashed_size(log.log_id) == 60
        assert log.index_of(leaf_hash(leaves[7])) == 17
    finally:
        store.close()


def test_the_indexer_process_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", "bucket.example/logs/t")
        process = IndexProcess(store.storage)
        assert process.index({log.log_id: 0}) == {log.log_id: 0}  # up and serving
        os.kill(process.pid, signal.SIGTERM)
        assert process._proc.wait(10) == 0  # exit status 0: it closed its envs itself
        with pytest.raises(StorageError, match="gone"):
            process.index({log.log_id: 0})
        process.close()
    finally:
        store.close()


def test_a_batch_larger_than_one_request_is_indexed_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The indexer takes several requests for a batch past MAX_PER_REQUEST, instead of
    leaving the rest until the next batch comes."""
    monkeypatch.setattr(tlog.log, "INDEX_PROCESS", False)
    monkeypatch.setattr(tlog.log, "MAX_PER_REQUEST", 100)
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", "bucket.example/logs/t")
        leaves = _leaves(1000, b"g")
        log.append_many(leaves)  # one job
        store._index_queue_drain()
        assert log._unindexed == {} and store.storage.hashed_size(log.log_id) == 1000
        assert log.index_of(leaf_hash(leaves[999])) == 999
    finally:
        store.close()
