"""The dedup filter and the background indexer: no false negatives, few false positives,
and deduplication that holds across restarts whether or not the filter is ready."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tlog.bloom import Bloom, GenerationFilters
from tlog.log import Store
from verifier.hashing import leaf_hash


def append_elsewhere(data: Path, leaf: bytes, *, die_unindexed: bool = False) -> int:
    """Append leaf to log "t" from another process (as the tlog CLI would); return its
    index. ``die_unindexed``: that process never indexes it and exits without closing,
    as one killed right after its durable commit."""
    script = (
        "import os, sys; from pathlib import Path; from tlog.log import Store; "
        "s = Store.open(Path(sys.argv[1])); "
        + ("s._index_later = lambda *a: None; " if die_unindexed else "")
        + "print(s.log('t').append_many([sys.argv[2].encode()]).indexes[0], flush=True); "
        + ("os._exit(0)" if die_unindexed else "s.close()")
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(data), leaf.decode()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(out.stdout)


def test_bloom_has_no_false_negatives_and_few_false_positives() -> None:
    bloom = Bloom(bits_log2=20)
    added = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(20_000)]
    for h in added:
        bloom.add(h)
    assert all(h in bloom for h in added)
    others = [hashlib.sha256(b"x" + i.to_bytes(4, "big")).digest() for i in range(20_000)]
    false_positives = sum(h in bloom for h in others)
    # 4 bits in one of 2^14 words, 20k keys: about 0.02% expected.
    assert false_positives < 0.005 * len(others)
    assert Bloom(bits_log2=10).__contains__(added[0]) is False


def test_bloom_false_positive_rate_at_the_load_of_ten_million_leaves() -> None:
    # The default filter (2^28 bits) holding 10^7 hashes has about 2.4 hashes per 64-bit
    # word; the module's docstring promises about 0.14% false positives there. Same load
    # on a filter 2^8 times smaller.
    bloom = Bloom(bits_log2=20)
    keys = int(10_000_000 / (1 << 22) * (1 << 14))
    bloom.add_many([hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(keys)])
    probes = 200_000
    false_positives = sum(
        hashlib.sha256(b"y" + i.to_bytes(4, "big")).digest() in bloom for i in range(probes)
    )
    assert 0.0005 * probes < false_positives < 0.003 * probes


def test_bloom_needs_a_whole_word() -> None:
    assert Bloom(bits_log2=6).__contains__(bytes(32)) is False
    with pytest.raises(ValueError):
        Bloom(bits_log2=5)


def test_generation_filters_name_every_generation_that_holds_a_hash() -> None:
    gens = GenerationFilters(generation_bits=8, bits_log2=12)
    digests = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1000)]
    gens.add_many(0, digests[:100])
    gens.add_many(100, digests[100:700])  # crosses the boundaries at 256 and 512
    gens.add_many(700, digests[700:])
    for i in range(1000):
        assert i >> 8 in gens.candidates(digests[i])
    # A hash held nowhere is named by few generations (the four filters are a quarter full).
    absent = [hashlib.sha256(b"z" + i.to_bytes(4, "big")).digest() for i in range(2000)]
    assert sum(len(gens.candidates(h)) for h in absent) < 0.05 * 4 * len(absent)
    # The same hash at two indexes (an envelope log may hold it twice): both named.
    gens.add_many(1000, [digests[3]])
    assert gens.candidates(digests[3])[0] == 0 and 3 in gens.candidates(digests[3])


class _SlowBloom(Bloom):
    """A filter whose word updates give up the GIL between reading a word and writing
    it back, so another thread runs in between (NumPy may release the GIL inside its
    update, but too briefly for a test to catch a missing lock reliably)."""

    def _set_bits(self, selected: Any, bits: Any) -> None:
        for word, bit in zip(selected.tolist(), bits.tolist(), strict=True):
            value = int(self._array[word])
            time.sleep(0)
            self._array[word] = value | bit


def test_bloom_loses_no_bit_when_two_threads_add() -> None:
    # The writer and the start-up build add to one filter at once. One word (bits_log2=6),
    # and hashes that each set one bit of it: thread A sets bits 0-31, thread B 32-63. A
    # read-modify-write of the word not under the lock loses the other thread's bits.
    def one_bit(b: int) -> bytes:
        return bytes(8) + bytes([b]) * 4 + bytes(20)

    for _ in range(5):
        bloom = _SlowBloom(bits_log2=6)
        halves = [[one_bit(b) for b in range(32)], [one_bit(b) for b in range(32, 64)]]
        threads = [threading.Thread(target=bloom.add_many, args=(hs,)) for hs in halves]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert bloom._words[0] == (1 << 64) - 1
        assert all(h in bloom for hs in halves for h in hs)


def test_batch_probes_agree_with_single_probes() -> None:
    # maybe_many and add_many compute the same word and bits as __contains__ (bytes 0-7
    # little-endian, bytes 8-11 mod 64), on a filter small enough to hold false positives.
    bloom = Bloom(bits_log2=12)
    added = [hashlib.sha256(b"a" + i.to_bytes(4, "big")).digest() for i in range(300)]
    bloom.add_many(added)
    assert all(h in bloom for h in added)
    absent = [hashlib.sha256(b"b" + i.to_bytes(4, "big")).digest() for i in range(3000)]
    probes = added[::7] + absent
    expected = [i for i, h in enumerate(probes) if h in bloom]
    assert bloom.maybe_many(probes) == expected
    assert 300 // 7 < len(expected) < len(probes)  # some false positives, not all
    assert bloom.maybe_many([]) == []
    # Small batches go one hash at a time (a NumPy pass costs more): the same answers.
    for k in range(1, 40):
        assert bloom.maybe_many(probes[:k]) == [i for i in expected if i < k]
    small = Bloom(bits_log2=12)
    small.add_many(added[:5])
    assert small.maybe_many(added) == [i for i, h in enumerate(added) if h in small]
    assert small.maybe_many(added[:5]) == list(range(5))
    words = memoryview(bytes(256)).cast("Q")  # len() 32, but 256 bytes
    for bad in (
        [bytes(31)],
        [bytes(32)] * 40 + [bytes(33)],
        [bytes(31), bytes(33)] * 20,
        [words],
        [bytes(32)] * 40 + [words],
    ):
        with pytest.raises(ValueError):
            bloom.maybe_many(bad)
        with pytest.raises(ValueError):
            bloom.add_many(bad)


def test_one_batch_sets_every_bit_of_a_shared_word() -> None:
    # Sixty-four hashes of one batch select the same word, each one bit of it: an update
    # that keeps one hash per word would leave 63 of them unset.
    bloom = Bloom(bits_log2=10)
    same_word = [bytes(8) + bytes([b]) * 4 + os.urandom(20) for b in range(64)]
    bloom.add_many(same_word)
    assert bloom._words[0] == (1 << 64) - 1
    assert bloom.maybe_many(same_word) == list(range(64))


def test_dedup_across_restart_with_and_without_the_filter(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    log = store.create_log("t", "bucket.example/logs/t")
    leaves = [os.urandom(40) for _ in range(600)]
    assert log.append_many(leaves).indexes == list(range(600))
    store.close()

    store = Store.open(tmp_path)
    log = store.log("t")
    # Before or after the filter is built, an old leaf is found exactly.
    assert log.append_many([leaves[5], b"new-1"]).indexes == [5, 600]
    store._index_queue_drain()  # the start-up filter is built; the next batch trusts it
    assert log.append_many([leaves[599], b"new-1", b"new-2"]).indexes == [599, 600, 601]
    assert log._bloom_ready
    assert log.append_many([leaves[0], leaves[321], b"new-3"]).indexes == [0, 321, 602]
    assert log.size == 603
    assert log.index_of(leaf_hash(b"new-2")) == 601
    assert log.index_of(leaf_hash(leaves[123])) == 123
    store._index_queue_drain()
    assert log._unindexed == {}
    store.close()


def test_filter_adopts_the_leaves_another_process_appended(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    log = store.create_log("t", "bucket.example/logs/t")
    log.append_many([os.urandom(40) for _ in range(300)])
    store.close()

    store = Store.open(tmp_path)
    try:
        log = store.log("t")
        store._index_queue_drain()  # the start-up filter is complete...
        assert not log._bloom_ready  # ...but the writer has not looked yet
        # Another process (as the tlog CLI does) appends a leaf this process never saw.
        other = b"appended by another process"
        assert append_elsewhere(tmp_path, other) == 300
        # The writer adopts the other process's leaf into its filter as well (otherwise,
        # trusting the filter, it would append that leaf a second time).
        assert log.append_many([other, b"new"]).indexes == [300, 301]
        assert log._bloom_ready and log._bloom is not None
        assert leaf_hash(other) in log._bloom
        assert log.append_many([other]).indexes == [300]
        assert log.size == 302
    finally:
        store.close()


def test_a_leaf_another_process_committed_but_never_indexed_is_found(tmp_path: Path) -> None:
    # Another process appends and dies after its durable commit, before its indexer ran
    # (simulated: its _index_later does nothing, and it exits without closing). The leaf
    # is then in no index: this process must still find it, for dedup and by hash.
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", "bucket.example/logs/t")
        log.append_many([os.urandom(40) for _ in range(10)])
        store._index_queue_drain()
        other = b"appended by a process that died"
        assert append_elsewhere(tmp_path, other, die_unindexed=True) == 10
        assert log.append_many([other, b"mine"]).indexes == [10, 11]
        assert log.index_of(leaf_hash(other)) == 10
        store._index_queue_drain()  # our indexer indexes the adopted leaf too
        assert log._unindexed == {}
        assert log.index_of(leaf_hash(other)) == 10
    finally:
        store.close()


def test_a_false_positive_of_the_filter_places_the_leaf_as_new(tmp_path: Path) -> None:
    # A "maybe" of the filter for a leaf the log does not hold is looked up and found
    # absent: the leaf is appended at the next index, alone or beside real duplicates.
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", "bucket.example/logs/t")
        assert log.append_many([b"a", b"b"]).indexes == [0, 1]
        assert log._bloom is not None and log._bloom_ready
        phantoms = [b"phantom-1", b"phantom-2", b"phantom-3"]
        log._bloom.add_many([leaf_hash(p) for p in phantoms])  # as a false positive
        assert log._bloom.maybe_many([leaf_hash(p) for p in phantoms]) == [0, 1, 2]
        batch = log.append_many([b"c", phantoms[0], b"d"])
        assert batch.indexes == [2, 3, 4] and batch.size == 5
        batch = log.append_many([phantoms[1], b"a", phantoms[2], phantoms[1], b"e"])
        assert batch.indexes == [5, 0, 6, 5, 7] and batch.size == 8
        assert [log.entry(i) for i in range(8)] == [
            b"a",
            b"b",
            b"c",
            phantoms[0],
            b"d",
            phantoms[1],
            phantoms[2],
            b"e",
        ]
        assert log.index_of(leaf_hash(phantoms[2])) == 6
    finally:
        store.close()
