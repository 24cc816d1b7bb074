"""What a caller is told when the writer fails after a batch is durable: never "nothing
was written" for entries that are in the log."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

import tlog.log
from tlog.log import Appended, Log, Store
from tlog.storage import Storage, StorageError
from verifier.hashing import leaf_hash


def _kept_at_zero_and_writer_goes_on(log: Log, leaf: bytes) -> None:
    """The leaf is in the log at index 0 (a retry would find it, not write it again), and
    the writer takes the next batch."""
    assert log.size == 1 and log.index_of(leaf_hash(leaf)) == 0
    (after,) = log.append_many([b"next"]).indexes
    assert after == 1


def test_a_failure_after_the_commit_says_the_entries_are_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", "bucket.example/logs/t")

        def broken(self: Log, *args: object) -> list[object]:
            raise RuntimeError("receipt building broke")

        monkeypatch.setattr(Log, "_outcomes", broken)
        with caplog.at_level(logging.ERROR), pytest.raises(StorageError) as info:
            asyncio.run(log.submit(b"durable"))
        assert "durable" in str(info.value) and "nothing was written" not in str(info.value)
        assert "writer thread failed on a batch" in caplog.text
        monkeypatch.undo()
        _kept_at_zero_and_writer_goes_on(log, b"durable")
    finally:
        store.close()


def test_a_failure_before_the_commit_says_nothing_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", "bucket.example/logs/t")

        def broken(self: Log, *args: object) -> list[object]:
            raise RuntimeError("integration broke")

        monkeypatch.setattr(Log, "_integrate", broken)
        with pytest.raises(StorageError, match="nothing was written"):
            asyncio.run(log.submit(b"lost"))
        monkeypatch.undo()
        assert log.size == 0
        assert log.append_many([b"next"]).indexes == [0]
    finally:
        store.close()


def test_a_slow_indexer_does_not_fail_a_durable_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Back-pressure waits for an indexer far behind; if it times out, the batch (already
    committed) is still answered with its receipts."""
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", "bucket.example/logs/t")
        monkeypatch.setattr(tlog.log, "MAX_INDEX_BACKLOG", -1)  # always wait

        def never_in_time(self: Store, timeout: float = 30.0) -> None:
            raise StorageError("the indexer did not catch up in time")

        monkeypatch.setattr(Store, "_index_queue_drain", never_in_time)
        with caplog.at_level(logging.WARNING):
            got = asyncio.run(log.submit(b"answered"))
        assert isinstance(got, Appended) and got.index == 0 and got.proof == ()
        assert "batches behind" in caplog.text
    finally:
        monkeypatch.undo()
        store.close()


def test_a_failure_inside_the_storage_after_the_commit_is_not_a_lost_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Storage.write measures usage after the durable commit; if that fails, the batch
    must still be answered as written (not discarded and then written again on retry)."""
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", "bucket.example/logs/t")
        calls: list[int] = []

        def broken(self: Storage) -> tuple[int, int]:
            calls.append(1)
            raise OSError("stat failed")

        monkeypatch.setattr(Storage, "refresh_usage", broken)
        with caplog.at_level(logging.ERROR):
            got = asyncio.run(log.submit(b"kept"))
        monkeypatch.undo()
        assert calls, "the failure was not exercised"
        assert "measuring storage use failed" in caplog.text
        assert isinstance(got, Appended) and got.index == 0
        _kept_at_zero_and_writer_goes_on(log, b"kept")
    finally:
        store.close()


def test_a_receipt_that_cannot_be_built_says_the_entries_are_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", "bucket.example/logs/t")

        def missing(self: object, *args: object) -> object:
            raise StorageError("tile record 0/0 is missing")

        monkeypatch.setattr(tlog.log.ProofBuilder, "inclusion_proofs", missing)
        with pytest.raises(StorageError) as info:
            asyncio.run(log.submit(b"no receipt"))
        monkeypatch.undo()
        assert "durable" in str(info.value) and "tile record 0/0 is missing" in str(info.value)
        _kept_at_zero_and_writer_goes_on(log, b"no receipt")
    finally:
        store.close()
