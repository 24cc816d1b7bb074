"""The leaf-hash indexer process (tlog.indexer): its protocol, that the store uses it, and
that indexing goes on in the writer's process when it dies."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

import tlog.indexer
import tlog.log
from tlog import storage as st
from tlog.errors import NotFound
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


@pytest.fixture
def small_generations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generations of 2**8 leaves (one tile each) instead of 2**18, indexed in this
    process so that the smaller size applies to the indexer too."""
    monkeypatch.setattr(tlog.log, "INDEX_PROCESS", False)
    monkeypatch.setattr(st, "GENERATION_BITS", 8)


@pytest.mark.usefixtures("small_generations")
def test_lookups_and_dedup_span_every_generation_of_the_hash_index(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    log = store.create_log("t", "bucket.example/logs/t")
    leaves = _leaves(1500, b"g")  # generations 0..5, the last one partial
    for k in range(0, 1500, 400):  # batches that cross generation boundaries
        log.append_many(leaves[k : k + 400])
    store._index_queue_drain()
    assert log._unindexed == {} and store.storage.hashed_size(log.log_id) == 1500
    with store.storage.read_index() as itxn:
        keys = [bytes(k) for k, _ in itxn.cursor(log.dbs.hashes)]
    assert len(keys) == 1500
    assert sorted({int.from_bytes(k[:4], "big") for k in keys}) == [0, 1, 2, 3, 4, 5]
    for i in (0, 255, 256, 511, 512, 1023, 1024, 1280, 1499):
        assert log.index_of(leaf_hash(leaves[i])) == i
        assert keys.count(st.hash_key(i, leaf_hash(leaves[i]))) == 1
    with pytest.raises(NotFound):
        log.index_of(leaf_hash(b"never appended"))
    # The Bloom filter says "maybe" for every leaf it holds; exact lookups in every
    # generation then find the earlier index, old or new.
    assert log.append_many([leaves[3], leaves[1400], b"fresh"]).indexes == [3, 1400, 1500]
    store.close()


def test_an_index_of_the_layout_before_generations_is_dropped_and_rebuilt(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path)
    log = store.create_log("t", "bucket.example/logs/t")
    leaves = _leaves(600, b"o")
    log.append_many(leaves)
    log_id = log.log_id
    store.close()
    # What an older version left: prefix-keyed hashes8 and its progress record, and (as
    # if it were that version's only index) no hashgen index at all.
    env = lmdb.open(str(tmp_path / "index"), max_dbs=16, subdir=True)
    with env.begin(write=True) as txn:
        old = env.open_db(f"{log_id}/hashes8".encode(), txn=txn, dupsort=True, dupfixed=True)
        for i, leaf in enumerate(leaves):
            txn.put(leaf_hash(leaf)[:8], i.to_bytes(8, "big"), db=old)
        meta = env.open_db(b"meta", txn=txn)
        txn.put(f"hashed/{log_id}".encode(), b"600", db=meta)
        txn.drop(env.open_db(f"{log_id}/".encode() + st.hash_db_name(), txn=txn), delete=True)
        txn.delete(f"hashgen{st.GENERATION_BITS}/{log_id}".encode(), db=meta)
    env.close()
    store = Store.open(tmp_path)
    try:
        log = store.log("t")
        assert store.storage.hashed_size(log_id) == 600  # caught up on open
        assert [log.index_of(leaf_hash(x)) for x in leaves[::50]] == list(range(0, 600, 50))
        assert log.append_many([leaves[7], b"new"]).indexes == [7, 600]
    finally:
        store.close()
    env = lmdb.open(str(tmp_path / "index"), max_dbs=16, subdir=True)
    with env.begin() as txn:
        assert txn.get(f"{log_id}/hashes8".encode()) is None
        assert txn.get(f"hashed/{log_id}".encode(), db=env.open_db(b"meta", txn=txn)) is None
    env.close()


_HOLD_OPEN = """
import sys
from pathlib import Path
from tlog.log import Store
store = Store.open(Path(sys.argv[1]))
print("open", flush=True)
sys.stdin.read()
store.close()
"""


def test_the_old_index_is_kept_while_another_process_has_the_index_open(
    tmp_path: Path,
) -> None:
    # That process may be an older version still using hashes8: dropping the database
    # under it would leave it a stale handle, whose lookups find nothing.
    store = Store.open(tmp_path)
    log_id = store.create_log("t", "bucket.example/logs/t").log_id
    store.close()

    def old_index_there() -> bool:
        env = lmdb.open(str(tmp_path / "index"), max_dbs=16, subdir=True)
        try:
            with env.begin() as txn:
                return txn.get(f"{log_id}/hashes8".encode()) is not None
        finally:
            env.close()

    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_OPEN, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        # The old layout's index appears while that process has the env open (as if it
        # were the older version that keeps it).
        env = lmdb.open(str(tmp_path / "index"), max_dbs=16, subdir=True)
        with env.begin(write=True) as txn:
            old = env.open_db(f"{log_id}/hashes8".encode(), txn=txn, dupsort=True, dupfixed=True)
            txn.put(b"12345678", bytes(8), db=old)
        env.close()
        Store.open(tmp_path).close()
        assert old_index_there()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    Store.open(tmp_path).close()  # alone now
    assert not old_index_there()


@pytest.mark.usefixtures("small_generations")
def test_filters_filled_on_open_serve_every_generation(tmp_path: Path) -> None:
    # The per-generation filters of a reopened log are filled from the stored tiles by the
    # indexer thread; once the writer trusts them, lookups seek only where they point.
    leaves = _leaves(1500, b"r")
    store = Store.open(tmp_path)
    store.create_log("t", "bucket.example/logs/t").append_many(leaves)
    store.close()
    store = Store.open(tmp_path)
    try:
        log = store.log("t")
        store._index_queue_drain()  # the filters are filled (the indexer thread did it)
        assert log._bloom_built
        assert log.append_many([b"first batch"]).indexes == [1500]  # now trusted
        assert log._bloom_ready
        for i in (0, 300, 700, 1000, 1499):
            assert log.index_of(leaf_hash(leaves[i])) == i
        assert log.append_many([leaves[300], leaves[1499], b"other"]).indexes == [
            300,
            1499,
            1501,
        ]
    finally:
        store.close()


_APPEND_MANY = """
import sys
from pathlib import Path
from tlog.log import Store
store = Store.open(Path(sys.argv[1]))
leaves = [sys.argv[2].encode() + i.to_bytes(4, "big") for i in range(int(sys.argv[3]))]
print(store.log("t").append_many(leaves).indexes[0], flush=True)
store.close()
"""


@pytest.mark.usefixtures("small_generations")
def test_leaves_another_process_appended_across_generations_are_found(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", "bucket.example/logs/t")
        log.append_many(_leaves(200, b"m"))
        store._index_queue_drain()
        # Another process appends 400 leaves, 200..599: generations 0, 1 and 2 here.
        out = subprocess.run(
            [sys.executable, "-c", _APPEND_MANY, str(tmp_path), "x", "400"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert int(out.stdout) == 200
        theirs = [b"x" + i.to_bytes(4, "big") for i in range(400)]
        assert log.append_many([b"mine"]).indexes == [600]  # adopts 200..599
        store._index_queue_drain()
        assert log._unindexed == {}
        for k in (0, 55, 56, 311, 312, 399):
            assert log.index_of(leaf_hash(theirs[k])) == 200 + k
        assert log.append_many([theirs[350], theirs[10]]).indexes == [550, 210]
    finally:
        store.close()
