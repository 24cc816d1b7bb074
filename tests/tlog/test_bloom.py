"""The dedup filter and the background indexer: no false negatives, few false positives,
and deduplication that holds across restarts whether or not the filter is ready."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tlog.bloom import Bloom
from tlog.log import Store
from verifier.hashing import leaf_hash


def test_bloom_has_no_false_negatives_and_few_false_positives() -> None:
    bloom = Bloom(bits_log2=20)
    added = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(20_000)]
    for h in added:
        bloom.add(h)
    assert all(h in bloom for h in added)
    others = [hashlib.sha256(b"x" + i.to_bytes(4, "big")).digest() for i in range(20_000)]
    false_positives = sum(h in bloom for h in others)
    # 4 probes, 20k keys in 2^20 bits: about 0.5% expected.
    assert false_positives < 0.02 * len(others)
    assert Bloom(bits_log2=10).__contains__(added[0]) is False
    merged = Bloom(bits_log2=20)
    other = Bloom(bits_log2=20)
    other.add(added[0])
    merged.add(added[1])
    merged.merge(other)
    assert added[0] in merged and added[1] in merged


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
    store._index_queue_drain()  # the start-up filter is built; the next batch merges it
    assert log.append_many([leaves[599], b"new-1", b"new-2"]).indexes == [599, 600, 601]
    assert log._bloom_ready
    assert log.append_many([leaves[0], leaves[321], b"new-3"]).indexes == [0, 321, 602]
    assert log.size == 603
    assert log.index_of(leaf_hash(b"new-2")) == 601
    assert log.index_of(leaf_hash(leaves[123])) == 123
    store._index_queue_drain()
    assert log._unindexed == {}
    store.close()
