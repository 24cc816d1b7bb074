"""Concurrency: many asyncio submitters and a plain thread share one log's writer.

Every submitter gets its own index (unique, and together contiguous from 0), a
receipt that verifies offline, and a checkpoint that was really published; the log
afterwards is exactly the leaves submitted, each at the index it was told.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reference import mth
from tlog.log import Appended, Batch, Log, Store
from verifier.checkpoint import open_checkpoint
from verifier.note import parse_vkey
from verifier.receipt import verify_receipt

ORIGIN = "bucket.example/logs/busy"


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    store = Store.open(tmp_path)
    yield store.create_log("busy", ORIGIN)
    store.close()


def check_appended(log: Log, results: list[Appended], leaves: list[bytes]) -> None:
    key = parse_vkey(log.vkey)
    for leaf, a in zip(leaves, results, strict=True):
        assert a.leaf == leaf and not a.replayed
        got = verify_receipt(a.receipt(), [key], origin=ORIGIN)
        assert (got.index, got.leaf, got.size) == (a.index, leaf, a.size)
        assert a.index < a.size
        # The checkpoint in the answer is the one stored for its size.
        assert log.checkpoint_at(a.size) == a.checkpoint


def test_200_concurrent_submitters(log: Log) -> None:
    leaves = [f"entry {i}".encode() for i in range(200)]

    async def main() -> list[Appended]:
        return await asyncio.gather(*(log.submit(leaf) for leaf in leaves))

    results = asyncio.run(main())
    assert sorted(a.index for a in results) == list(range(200))
    check_appended(log, results, leaves)
    assert log.size == 200
    by_index = sorted(zip((a.index for a in results), leaves, strict=True))
    in_log_order = [leaf for _, leaf in by_index]
    assert [log.entry(i) for i in range(200)] == in_log_order
    cp = open_checkpoint(log.checkpoint(), [parse_vkey(log.vkey)], origin=ORIGIN)
    assert cp.root == mth(in_log_order)


def test_submitters_mixed_with_append_many_from_a_thread(log: Log) -> None:
    """A thread keeps calling append_many for as long as 200 staggered submitters run."""
    async_leaves = [f"async {i}".encode() for i in range(200)]
    thread_batches: list[list[bytes]] = []
    thread_out: list[Batch] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def appender() -> None:
        try:
            b = 0
            while not done.is_set() or b < 5:
                batch = [f"thread {b}/{i}".encode() for i in range(b % 7 + 1)]
                thread_batches.append(batch)
                thread_out.append(log.append_many(batch, timeout=30))
                b += 1
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    async def one(i: int, leaf: bytes) -> Appended:
        await asyncio.sleep((i % 25) * 0.002)
        return await log.submit(leaf)

    async def main() -> list[Appended]:
        return await asyncio.gather(*(one(i, leaf) for i, leaf in enumerate(async_leaves)))

    thread = threading.Thread(target=appender)
    thread.start()
    try:
        results = asyncio.run(main())
    finally:
        done.set()
        thread.join(60)
    assert not errors, errors
    assert not thread.is_alive()
    check_appended(log, results, async_leaves)

    placed: dict[int, bytes] = {a.index: a.leaf for a in results}
    for batch, out in zip(thread_batches, thread_out, strict=True):
        # One append_many call is one job, sequenced as a block in order.
        assert out.indexes == list(range(out.indexes[0], out.indexes[0] + len(batch)))
        assert out.size >= out.indexes[-1] + 1
        assert log.checkpoint_at(out.size) == out.checkpoint
        for index, leaf in zip(out.indexes, batch, strict=True):
            assert index not in placed, "two writers were given the same index"
            placed[index] = leaf
    total = len(async_leaves) + sum(map(len, thread_batches))
    assert sorted(placed) == list(range(total))
    assert log.size == total
    assert [log.entry(i) for i in range(total)] == [placed[i] for i in range(total)]
    key = parse_vkey(log.vkey)
    assert open_checkpoint(log.checkpoint(), [key]).root == mth([placed[i] for i in range(total)])
    # The two kinds of writer really were sequenced among each other.
    async_indexes = sorted(a.index for a in results)
    thread_indexes = [i for out in thread_out for i in out.indexes]
    assert any(async_indexes[0] < i < async_indexes[-1] for i in thread_indexes)


def test_a_busy_writer_waits_for_callers_still_queueing_and_an_idle_one_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: after a batch of several jobs the writer lingers while jobs keep
    arriving (so they share one commit); after a lone job it commits at once."""
    import tlog.log

    monkeypatch.setattr(tlog.log, "BUSY_LINGER_S", 1.0)
    monkeypatch.setattr(tlog.log, "LINGER_STEP_S", 0.5)
    monkeypatch.setattr(tlog.log, "IDLE_AFTER_S", 0.3)
    store = Store.open(tmp_path)
    batches: list[int] = []
    store.on_batch = lambda per_log, items, seconds: batches.append(items)
    try:
        log = store.create_log("t", "bucket.example/logs/t")

        async def lone() -> None:
            await log.submit(b"lone-1")
            await log.submit(b"lone-2")  # the last batch had one job: no waiting

        started = time.monotonic()
        asyncio.run(lone())
        assert time.monotonic() - started < 0.45  # less than one linger step
        assert batches == [1, 1]

        # After a batch of 5 submissions that ended long ago, the writer is idle.
        store._last_jobs = 5
        store._last_done = time.monotonic() - 1.0
        started = time.monotonic()
        asyncio.run(log.submit(b"after-a-pause"))
        assert time.monotonic() - started < 0.45
        assert batches == [1, 1, 1]

        # After a batch of 5 that has just ended, it waits for callers still queueing.
        store._last_jobs = 5
        store._last_done = time.monotonic() + 10.0  # "just now", however slow this runs
        batches.clear()

        async def busy() -> list[int]:
            async def late() -> Appended:
                await asyncio.sleep(0.2)  # inside the writer's first linger step
                return await log.submit(b"late")

            got = await asyncio.gather(log.submit(b"early"), late())
            return [a.size for a in got]

        sizes = asyncio.run(busy())
        assert sizes[0] == sizes[1]  # answered by the same checkpoint: one commit
        assert batches == [2]
    finally:
        store.close()
