"""Tests for tlog.log on real LMDB: the durable Merkle log, differential against the
naive RFC 6962 reference (``tests/reference.py``) and byte for byte against Tessera.

Recipe of the Tessera vector (``tessera-testdata-log/``, see the vectors' README): the
leaves are the ASCII words ``one``, ``two``, ... ``fivten`` (15 leaves, no newline),
appended one at a time to a log with origin ``example.com/log/testdata``; after leaf W
Tessera wrote ``checkpoint.W``, ``tile/0/000.p/W`` and ``tile/entries/000.p/W``. Its
signing key is the published test key of Tessera's ``testdata/build_log.sh``
(transparency-dev/tessera @ 1811ae1a, Apache-2.0); the test first checks that it
derives the vector's vkey, and Ed25519 is deterministic, so the signed checkpoints
must be identical too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import random
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tlog.log as tlog_log
from tests.conftest import VECTORS
from tests.reference import (
    consistency_proof_of_hashes,
    inclusion_path_of_hashes,
    mth_of_hashes,
)
from tests.tlog.support import note_body, open_with_signer, ref_bundle, ref_tile
from tlog.entry import MAX_LEAF_BYTES, decode_envelope
from tlog.errors import (
    BadRequest,
    Conflict,
    EntryLimit,
    InvalidEntry,
    KeyProblem,
    NotFound,
    TlogError,
)
from tlog.log import ENVELOPE, RAW, Appended, Draft, Log, Outcome, Store
from tlog.storage import (
    GENERATION_BITS,
    MAX_ARTIFACT_ID_BYTES,
    StorageError,
    hash_db_name,
    put_idempotency_many,
)
from verifier.checkpoint import open_checkpoint
from verifier.hashing import EMPTY_ROOT, leaf_hash
from verifier.note import Signer, VerifierKey, format_signer_key, parse_signer_key, parse_vkey
from verifier.proof import verify_consistency, verify_inclusion
from verifier.receipt import verify_receipt
from verifier.tiles import bundles_for_size, tiles_for_size

ORIGIN = "bucket.example/logs/test"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "data")
    yield s
    s.close()


def key_of(log: Log) -> VerifierKey:
    """Return the log's verifier key, parsed from the vkey string it advertises."""
    return parse_vkey(log.vkey)


# -- the reference model ------------------------------------------------------------------


class Model:
    """What the log must hold: leaves in order, and the first index of each leaf."""

    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self.hashes: list[bytes] = []
        self.first: dict[bytes, int] = {}

    def append(self, batch: list[bytes]) -> list[int]:
        out = []
        for leaf in batch:
            if leaf not in self.first:
                self.first[leaf] = len(self.leaves)
                self.leaves.append(leaf)
                self.hashes.append(leaf_hash(leaf))
            out.append(self.first[leaf])
        return out

    def root(self, size: int) -> bytes:
        return mth_of_hashes(self.hashes[:size])


def check_log(
    log: Log, model: Model, published: dict[int, str], rng: random.Random, *, proofs: int = 6
) -> None:
    """Check everything the log serves against the reference model.

    ``published`` maps each tree size a checkpoint was handed out for to that note.
    """
    key = key_of(log)
    size = len(model.leaves)
    assert log.size == size
    roots = {n: model.root(n) for n in {0, size, *published}}
    assert log.root(size) == roots[size]
    # Every checkpoint verifies, names our origin and commits to the reference root.
    for n, note in published.items():
        cp = open_checkpoint(note, [key], origin=log.origin)
        assert (cp.size, cp.root) == (n, roots[n])
        assert log.checkpoint_at(n) == note
        assert log.root(n) == roots[n]
    if size:
        assert log.checkpoint() == published[size]
    # Inclusion proofs and receipts at every published size.
    for n in published:
        for index in {0, n - 1, *(rng.randrange(n) for _ in range(proofs))}:
            proof = log.inclusion_proof(index, n)
            assert proof == inclusion_path_of_hashes(index, model.hashes[:n])
            verify_inclusion(index, n, model.hashes[index], proof, roots[n])
            got = verify_receipt(log.receipt(index, n), [key], origin=log.origin)
            assert (got.index, got.size, got.root, got.leaf) == (
                index,
                n,
                roots[n],
                model.leaves[index],
            )
        # A receipt without a size uses the latest checkpoint.
        got = verify_receipt(log.receipt(n - 1), [key], origin=log.origin)
        assert (got.size, got.leaf) == (size, model.leaves[n - 1])
    # Consistency between every pair of published checkpoints (and from the empty tree).
    sizes = sorted({0, *published})
    for i, old in enumerate(sizes):
        for new in sizes[i:]:
            proof = log.consistency_proof(old, new)
            verify_consistency(old, new, proof, roots[old], roots[new])
            if rng.random() < 0.2:
                assert proof == consistency_proof_of_hashes(old, model.hashes[:new])
    # Every hash tile and entry bundle of every published size, byte for byte.
    tiles = {t for n in published for t in (*tiles_for_size(n), *bundles_for_size(n))}
    for t in sorted(tiles, key=lambda t: (t.entries, t.level, t.index, t.width)):
        if t.entries:
            assert log.bundle(t.index, t.width) == ref_bundle(model.leaves, t.index, t.width)
        else:
            tile = log.tile(t.level, t.index, t.width)
            assert tile == ref_tile(model.hashes, t.level, t.index, t.width), t.path
    # Entries and leaf-hash lookups.
    for index in {0, size - 1, *(rng.randrange(size) for _ in range(proofs))} if size else ():
        assert log.entry(index) == model.leaves[index]
        assert log.index_of(model.hashes[index]) == index


# -- the empty log, known answers ---------------------------------------------------------


def test_empty_log(store: Store) -> None:
    log = store.create_log("t", ORIGIN)
    assert log.size == 0
    # A new log signs the empty tree at once (C2SP: size 0 with the empty-tree root).
    empty = open_checkpoint(log.checkpoint(), [parse_vkey(log.vkey)], origin=ORIGIN)
    assert (empty.size, empty.root) == (0, EMPTY_ROOT)
    assert log.checkpoint_at(0) == log.checkpoint()
    assert log.root(0) == EMPTY_ROOT
    assert log.consistency_proof(0, 0) == []
    with pytest.raises(BadRequest):
        log.root(1)
    with pytest.raises(BadRequest):
        log.inclusion_proof(0, 0)
    with pytest.raises(NotFound):
        log.tile(0, 0, 1)
    with pytest.raises(NotFound):
        log.bundle(0, 1)
    with pytest.raises(NotFound):
        log.entry(0)
    with pytest.raises(NotFound):
        log.index_of(leaf_hash(b"nothing"))


def test_rfc6962_known_answers(store: Store) -> None:
    """The 8 standard RFC 6962 test leaves (transparency-dev/merkle testonly constants)."""
    vec = json.loads((VECTORS / "rfc6962-8-leaves.json").read_text())
    leaves = [bytes.fromhex(h) for h in vec["leaves_hex"]]
    log = store.create_log("t", ORIGIN)
    log.append_many(leaves[:3])
    log.append_many(leaves[3:])
    for n, root in enumerate(vec["roots"]):
        assert log.root(n).hex() == root, n
    for level, row in enumerate(vec["node_hashes"]):
        for i, h in enumerate(row):
            # A complete subtree is the root of its leaves as a tree of their own.
            lo = i << level
            assert mth_of_hashes([leaf_hash(x) for x in leaves[lo : lo + (1 << level)]]).hex() == h
            if lo == 0:
                assert log.root(1 << level).hex() == h
    assert log.tile(0, 0, 8) == b"".join(bytes.fromhex(h) for h in vec["node_hashes"][0])


# -- differential, hypothesis -------------------------------------------------------------


def random_batches(rng: random.Random, n: int) -> list[list[bytes]]:
    """Return about n leaves (short random byte strings, some repeated) in random batches."""
    leaves: list[bytes] = []
    for _ in range(n):
        if leaves and rng.random() < 0.05:
            leaves.append(rng.choice(leaves))  # an exact duplicate
        else:
            leaves.append(rng.randbytes(rng.choice([0, 1, 2, 8, 16, 33, 100])))
    cuts = sorted(rng.sample(range(1, n), k=min(n - 1, rng.randint(0, 12)))) if n > 1 else []
    return [leaves[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(n=st.integers(1, 3000), seed=st.integers(0, 2**32 - 1))
def test_log_matches_reference(tmp_path_factory: pytest.TempPathFactory, n: int, seed: int) -> None:
    rng = random.Random(seed)
    store = Store.open(tmp_path_factory.mktemp("diff"))
    try:
        log = store.create_log("t", ORIGIN)
        model = Model()
        published: dict[int, str] = {}
        for batch in random_batches(rng, n):
            before = log.size
            expected = model.append(batch)
            got = log.append_many(batch)
            assert got.indexes == expected
            assert got.size == log.size == len(model.leaves)
            if got.size > before:
                assert got.size not in published, "a size is signed once"
                published[got.size] = got.checkpoint
            else:  # only duplicates: nothing new is signed
                assert got.checkpoint == published[before]
        check_log(log, model, published, rng)
    finally:
        store.close()


def test_duplicates_return_the_earlier_index_and_do_not_grow_the_tree(store: Store) -> None:
    log = store.create_log("t", ORIGIN)
    first = log.append_many([b"a", b"b", b"c"])
    assert first.indexes == [0, 1, 2]
    # Duplicates of earlier batches and within the batch itself.
    again = log.append_many([b"b", b"d", b"d", b"a", b"e"])
    assert again.indexes == [1, 3, 3, 0, 4]
    assert again.size == log.size == 5
    only_dups = log.append_many([b"c", b"e"])
    assert only_dups.indexes == [2, 4]
    assert only_dups.size == 5
    assert only_dups.checkpoint == again.checkpoint
    # A repeat within a batch of leaves the log has never seen (no filter "maybe").
    within = log.append_many([b"x", b"y", b"x", b"z", b"y"])
    assert within.indexes == [5, 6, 5, 7, 6]
    assert within.size == log.size == 8
    for index, leaf in enumerate([b"a", b"b", b"c", b"d", b"e", b"x", b"y", b"z"]):
        assert log.index_of(leaf_hash(leaf)) == index
        assert log.entry(index) == leaf
    with pytest.raises(NotFound):
        log.index_of(leaf_hash(b"f"))

    async def resubmit() -> Appended:
        return await log.submit(b"d")

    replay = asyncio.run(resubmit())
    assert (replay.index, replay.replayed, replay.size, replay.leaf) == (3, True, 8, b"d")
    verify_receipt(replay.receipt(), [key_of(log)])
    assert log.size == 8


def test_logs_in_one_store_are_independent(store: Store) -> None:
    a = store.create_log("a", "bucket.example/logs/a")
    b = store.create_log("b", "bucket.example/logs/b")
    a.append_many([b"x", b"y"])
    assert b.append_many([b"y"]).indexes == [0]
    assert a.index_of(leaf_hash(b"y")) == 1
    assert b.index_of(leaf_hash(b"y")) == 0
    with pytest.raises(NotFound):
        b.index_of(leaf_hash(b"x"))
    assert a.vkey != b.vkey
    assert store.log("a") is a
    with pytest.raises(NotFound):
        store.log("c")
    with pytest.raises(StorageError):
        store.create_log("a", "bucket.example/logs/a")


def test_reads_out_of_range(store: Store) -> None:
    log = store.create_log("t", ORIGIN)
    log.append_many([i.to_bytes(2, "big") for i in range(10)])
    log.append_many([i.to_bytes(2, "big") for i in range(10, 300)])
    with pytest.raises(BadRequest):
        log.inclusion_proof(300, 300)
    with pytest.raises(BadRequest):
        log.inclusion_proof(0, 301)
    with pytest.raises(BadRequest):
        log.consistency_proof(5, 301)
    with pytest.raises(BadRequest):
        log.consistency_proof(6, 5)
    with pytest.raises(NotFound):
        log.receipt(3, 7)  # no checkpoint was published for size 7
    with pytest.raises(BadRequest):
        log.receipt(300)
    with pytest.raises(NotFound):
        log.checkpoint_at(7)
    with pytest.raises(NotFound):
        log.entry(300)
    assert len(log.tile(0, 1, 44)) == 44 * 32
    for level, index, width in [(0, 1, 45), (0, 2, 1), (1, 0, 2), (0, 0, 0), (0, 0, 257)]:
        with pytest.raises(NotFound):
            log.tile(level, index, width)
    with pytest.raises(NotFound):
        log.bundle(1, 45)


def test_tiles_up_to_level_two(store: Store) -> None:
    """65,536 leaves fill tile 1/0 and start tile 2/0 (its one hash is the root of 2**16)."""
    log = store.create_log("t", ORIGIN)
    model = Model()
    n = 256**2 + 300
    leaves = [i.to_bytes(3, "big") for i in range(n)]
    for lo, hi in [(0, 1), (1, 40_000), (40_000, 65_535), (65_535, 65_537), (65_537, n)]:
        assert log.append_many(leaves[lo:hi]).indexes == model.append(leaves[lo:hi])
    assert log.size == n
    assert log.tile(2, 0, 1) == log.root(256**2) == model.root(256**2)
    assert log.tile(1, 0, 256) == ref_tile(model.hashes, 1, 0, 256)
    assert log.tile(1, 1, 1) == ref_tile(model.hashes, 1, 1, 1)
    assert log.tile(0, 256, 256) == ref_tile(model.hashes, 0, 256, 256)
    assert log.tile(0, 257, 44) == ref_tile(model.hashes, 0, 257, 44)
    with pytest.raises(NotFound):
        log.tile(2, 0, 2)
    with pytest.raises(NotFound):
        log.tile(1, 1, 2)
    root = model.root(n)
    assert log.root(n) == root
    key = key_of(log)
    for index in (0, 65_535, 65_536, n - 1):
        got = verify_receipt(log.receipt(index), [key], origin=ORIGIN)
        assert (got.root, got.leaf) == (root, leaves[index])
    for old in (1, 40_000, 65_535, 65_537):
        proof = log.consistency_proof(old, n)
        verify_consistency(old, n, proof, model.root(old), root)


# -- restart --------------------------------------------------------------------------------


def snapshot(log: Log, published: dict[int, str]) -> dict[str, object]:
    """Return everything the log serves (for comparing before and after a restart)."""
    size = log.size
    out: dict[str, object] = {
        "size": size,
        "checkpoint": log.checkpoint(),
        "vkey": log.vkey,
        "checkpoints": {n: log.checkpoint_at(n) for n in published},
        "roots": [log.root(n) for n in range(0, size + 1, 7)],
        "inclusion": [log.inclusion_proof(i, size) for i in range(0, size, 5)],
        "consistency": [log.consistency_proof(n, size) for n in published],
        "receipts": [log.receipt(i) for i in range(0, size, 11)],
        "tiles": [log.tile(t.level, t.index, t.width) for t in tiles_for_size(size)],
        "bundles": [log.bundle(t.index, t.width) for t in bundles_for_size(size)],
        "entries": [log.entry(i) for i in range(size)],
    }
    return out


def test_restart_serves_everything_identically_and_keeps_appending(tmp_path: Path) -> None:
    rng = random.Random(5)
    model = Model()
    published: dict[int, str] = {}
    store = Store.open(tmp_path)
    log = store.create_log("t", ORIGIN)
    for n in (3, 250, 10, 300):  # ends mid-tile: 563 leaves, tile 0/2 partial
        batch = [rng.randbytes(12) for _ in range(n)]
        model.append(batch)
        got = log.append_many(batch)
        published[got.size] = got.checkpoint
    before = snapshot(log, published)
    store.close()

    store = Store.open(tmp_path)
    try:
        log = store.log("t")
        assert snapshot(log, published) == before
        for index, h in enumerate(model.hashes):
            assert log.index_of(h) == index
        # The writer reloads the partial right-edge tile records from disk.
        for n in (1, 200, 60):
            batch = [rng.randbytes(12) for _ in range(n)]
            model.append(batch)
            got = log.append_many(batch)
        published[got.size] = got.checkpoint
        check_log(log, model, published, rng)
    finally:
        store.close()
    store = Store.open(tmp_path)
    try:
        check_log(store.log("t"), model, published, rng)
    finally:
        store.close()


# -- envelope logs: versions, bodies, idempotency ------------------------------------------


def envelope_log(store: Store) -> Log:
    """Return a new envelope log (artifact submissions) in store."""
    return store.create_log("gurukul", "bucket.example/logs/gurukul", kind=ENVELOPE)


def draft(artifact_id: str, body: bytes, **kw: object) -> Draft:
    return Draft(
        product="gurukul",
        artifact_type="lesson",
        artifact_id=artifact_id,
        principal="key:3f2a9c1d",
        body=body,
        body_sha256=hashlib.sha256(body).digest(),
        **kw,  # type: ignore[arg-type]
    )


def submit(log: Log, *items: bytes | Draft) -> list[Appended]:
    async def run() -> list[Appended]:
        return [await log.submit(item) for item in items]

    return asyncio.run(run())


def test_artifact_versions_chain_with_prev_index(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    log = store.create_log("gurukul", "bucket.example/logs/gurukul", kind=ENVELOPE)
    key = key_of(log)
    (v1,) = submit(log, draft("algebra/1", b"first"))
    submit(log, draft("geometry/1", b"other"))
    (v2,) = submit(log, draft("algebra/1", b"second"))

    async def many() -> list[Outcome]:
        return await log.submit_many(
            [draft("algebra/1", b"third"), draft("geometry/1", b""), draft("algebra/1", b"4th")]
        )

    v3, g2, v4 = asyncio.run(many())
    assert isinstance(v3, Appended) and isinstance(g2, Appended) and isinstance(v4, Appended)
    chain = [v1, v2, v3, v4]
    assert [a.version for a in chain] == [1, 2, 3, 4]
    assert all(a.artifact_id == "algebra/1" and not a.replayed for a in chain)
    prev = None
    for a, body in zip(chain, [b"first", b"second", b"third", b"4th"], strict=True):
        env = decode_envelope(a.leaf)
        assert (env.artifact_id, env.version, env.prev_index) == ("algebra/1", a.version, prev)
        assert env.body_sha256 == hashlib.sha256(body).digest()
        assert env.body_size == len(body)
        assert log.body(a.index) == body
        assert log.entry(a.index) == a.leaf
        got = verify_receipt(a.receipt(), [key], origin=log.origin)
        assert (got.index, got.leaf) == (a.index, a.leaf)
        prev = a.index
    assert log.versions("algebra/1") == [(a.version, a.index) for a in chain]
    assert log.versions("geometry/1") == [(1, 1), (2, g2.index)]
    assert log.body(g2.index) is None  # an empty body is not stored
    with pytest.raises(NotFound):
        log.versions("algebra/2")
    store.close()

    # After a restart the chain continues from the stored versions.
    store = Store.open(tmp_path)
    try:
        log = store.log("gurukul")
        (v5,) = submit(log, draft("algebra/1", b"fifth"))
        assert v5.version == 5
        assert decode_envelope(v5.leaf).prev_index == v4.index
        assert log.versions("algebra/1")[-1] == (5, v5.index)
    finally:
        store.close()


def test_audit_hook_counts_only_this_batch_after_another_process_appended(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", "bucket.example/logs/t")
        store.create_log("audit", "bucket.example/logs/audit")
        seen: list[tuple[str, int, int]] = []

        def hook(name: str, first: int, size: int, root: bytes, principals: list[str]) -> bytes:
            seen.append((name, first, size))
            return f"{name} {first} {size} {os.urandom(8).hex()}".encode()

        store.audit_log, store.audit_hook = "audit", hook
        log.append_many([os.urandom(40) for _ in range(10)])
        script = (
            "import os, sys; from pathlib import Path; from tlog.log import Store; "
            "s = Store.open(Path(sys.argv[1])); "
            "s.log('t').append_many([os.urandom(40) for _ in range(5)]); s.close()"
        )
        subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=60)
        assert log.append_many([b"one new leaf"]).indexes == [15]
        # The other process's five entries are its own to record, not this batch's.
        assert seen[-1] == ("t", 15, 16)
    finally:
        store.close()


def test_idempotency_keys_are_scoped_to_the_principal(store: Store) -> None:
    log = envelope_log(store)
    alice = draft("doc", b"one", idempotency_key="1", request_digest=b"\x01" * 32)
    bob = dataclasses.replace(alice, principal="key:0b0b0b0b")
    carol = dataclasses.replace(alice, principal="key:0c0c0c0c", request_digest=b"\x02" * 32)
    (a,) = submit(log, alice)
    # Bob's equal key and content is his own request: a new entry, not Alice's receipt.
    (b,) = submit(log, bob)
    # Carol's equal key for another request is no conflict: she never used it, and a
    # 409 would tell her that somebody else did.
    (c,) = submit(log, carol)
    assert [(x.replayed, x.index) for x in (a, b, c)] == [(False, 0), (False, 1), (False, 2)]
    assert decode_envelope(b.leaf).principal == "key:0b0b0b0b"
    # Each principal's own retry still replays their own entry.
    assert [submit(log, d)[0].index for d in (carol, alice, bob)] == [2, 0, 1]
    assert log.size == 3


def test_idempotency_records_from_before_scoping_still_answer_their_principal(store: Store) -> None:
    log = envelope_log(store)
    digest = b"\x07" * 32
    (first,) = submit(log, draft("doc", b"one"))
    # The record as versions before this one stored it: under the key itself.
    with store.storage.write() as wtxn:
        put_idempotency_many(
            wtxn.main, log.dbs, [(b"req-9", {"digest": digest.hex(), "index": first.index})]
        )
    alice = draft("doc", b"one", idempotency_key="req-9", request_digest=digest)
    (again,) = submit(log, alice)
    assert again.replayed and again.index == first.index
    bob = dataclasses.replace(alice, principal="key:0b0b0b0b")
    (his,) = submit(log, bob)  # not his record: his own request, written
    assert not his.replayed and his.index == 1
    with pytest.raises(Conflict):  # alice's key for another request: still a conflict
        submit(log, dataclasses.replace(alice, request_digest=b"\x08" * 32))


def test_one_draft_too_long_for_the_indexes_fails_alone(store: Store) -> None:
    # 256 characters pass the envelope schema, but 1,024 bytes of UTF-8 exceed LMDB's
    # 511-byte keys: refused as that item's error, never the whole batch's.
    log = envelope_log(store)
    long_id = "\N{GRINNING FACE}" * 256
    at_limit = "\N{GRINNING FACE}" * (MAX_ARTIFACT_ID_BYTES // 4)
    long_key = draft("doc-2", b"2", idempotency_key="k" * 10_000, request_digest=b"\x01" * 32)

    async def many() -> list[Outcome]:
        return await log.submit_many(
            [draft("doc-1", b"1"), draft(long_id, b"x"), long_key, draft(at_limit, b"y")]
        )

    first, bad, second, third = asyncio.run(many())
    assert isinstance(bad, InvalidEntry) and "bytes of UTF-8" in str(bad)
    assert isinstance(first, Appended) and isinstance(second, Appended)
    assert isinstance(third, Appended) and third.artifact_id == at_limit
    assert log.size == 3
    assert log.versions(at_limit) == [(1, third.index)]
    with pytest.raises(NotFound):
        log.versions(long_id)  # a lookup of an unindexable id says "no such artifact"
    (again,) = submit(log, long_key)
    assert again.replayed and again.index == second.index


def test_a_job_queued_while_the_store_closes_is_answered(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    log = store.create_log("t", "bucket.example/logs/t")
    real = store._queue
    entered = threading.Event()

    class SlowQueue:
        """The writer's queue, slow to take a job: as if the caller's thread were
        switched out between _enqueue's check that the store is open and its put."""

        def put(self, job: object) -> None:
            if job is not None:
                entered.set()
                time.sleep(0.3)
            real.put(job)  # type: ignore[arg-type]

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    store._queue = SlowQueue()  # type: ignore[assignment]
    result: list[object] = []
    caller = threading.Thread(target=lambda: result.append(log.append_many([b"x"], timeout=10)))
    caller.start()
    assert entered.wait(5)
    store.close()  # must not stop the writer before the job being queued
    caller.join(15)
    assert not caller.is_alive()
    (batch,) = result
    assert batch.indexes == [0]  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match="closed"):
        log.append_many([b"y"])


def test_an_atomic_job_is_written_all_or_none(store: Store) -> None:
    log = envelope_log(store)
    key = draft("k", b"0", idempotency_key="req", request_digest=b"\x01" * 32)
    bad = [draft("a", b"1"), key, draft("b", b"2", expected_version=5), draft("a", b"3")]
    plain = [draft("a", b"4"), draft("c", b"5")]

    async def run() -> tuple[list[Outcome], list[Outcome]]:
        # Queued together, so the writer usually places both jobs in one batch: the
        # refused job's versions and idempotency key must not leak into the other's.
        return await asyncio.gather(log.submit_many(bad, atomic=True), log.submit_many(plain))

    refused, written = asyncio.run(run())
    assert [type(o).__name__ for o in refused] == [
        "NotWritten",
        "NotWritten",
        "VersionConflict",
        "NotWritten",
    ]
    assert all(isinstance(o, Appended) for o in written)
    assert [(o.artifact_id, o.version) for o in written] == [("a", 1), ("c", 1)]  # type: ignore[union-attr]
    assert log.size == 2 and log.versions("a") == [(1, written[0].index)]  # type: ignore[union-attr]
    for artifact in ("b", "k"):
        with pytest.raises(NotFound):
            log.versions(artifact)
    # The idempotency key was not recorded either: its retry is a fresh write.
    (again,) = submit(log, key)
    assert not again.replayed and again.index == 2
    # Without atomic, each item stands alone.
    loose = asyncio.run(log.submit_many([draft("d", b"6"), draft("e", b"7", expected_version=1)]))
    assert isinstance(loose[0], Appended) and isinstance(loose[1], Conflict)
    assert log.size == 4


def test_the_audit_record_names_only_principals_whose_entries_were_written(store: Store) -> None:
    log = envelope_log(store)
    store.create_log("audit", "bucket.example/logs/audit")
    seen: list[list[str]] = []

    def hook(name: str, first: int, size: int, root: bytes, principals: list[str]) -> bytes:
        seen.append(list(principals))
        return os.urandom(16)

    store.audit_log, store.audit_hook = "audit", hook
    mallory = [
        dataclasses.replace(draft("m", b"1"), principal="key:0m0m0m0m"),
        dataclasses.replace(draft("n", b"2", expected_version=3), principal="key:0m0m0m0m"),
    ]

    async def run() -> tuple[list[Outcome], list[Outcome]]:
        return await asyncio.gather(
            log.submit_many(mallory, atomic=True), log.submit_many([draft("p", b"3")])
        )

    refused, written = asyncio.run(run())
    assert all(isinstance(o, TlogError) for o in refused)
    assert isinstance(written[0], Appended)
    assert all("key:0m0m0m0m" not in p for p in seen) and ["key:3f2a9c1d"] in seen


def test_idempotency_keys(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    log = store.create_log("gurukul", "bucket.example/logs/gurukul", kind=ENVELOPE)
    d1 = draft("doc", b"one", idempotency_key="req-1", request_digest=b"\x01" * 32)
    (first,) = submit(log, d1)
    assert not first.replayed and first.version == 1
    (again,) = submit(log, d1)
    assert again.replayed
    assert (again.index, again.version, again.leaf) == (first.index, 1, first.leaf)
    assert log.size == 1
    verify_receipt(again.receipt(), [key_of(log)])
    # The same key for a different request is a conflict; nothing is written.
    other = draft("doc", b"two", idempotency_key="req-1", request_digest=b"\x02" * 32)
    with pytest.raises(Conflict):
        submit(log, other)
    assert log.size == 1

    # Within one batch: the second use of a new key replays the first.
    d2 = draft("doc", b"two", idempotency_key="req-2", request_digest=b"\x03" * 32)

    async def both() -> list[Outcome]:
        return await log.submit_many([d2, d2, other])

    a, b, c = asyncio.run(both())
    assert isinstance(a, Appended) and isinstance(b, Appended)
    assert (a.replayed, b.replayed, b.index, b.version) == (False, True, a.index, 2)
    assert isinstance(c, Conflict)
    assert log.size == 2
    store.close()

    store = Store.open(tmp_path)
    try:
        log = store.log("gurukul")
        (replay,) = submit(log, d1)
        assert (replay.replayed, replay.index) == (True, first.index)
        with pytest.raises(Conflict):
            submit(log, other)
        assert log.size == 2
    finally:
        store.close()


def test_raw_leaf_on_envelope_log_and_draft_on_raw_log_are_bad_requests(store: Store) -> None:
    env_log = store.create_log("e", "bucket.example/logs/e", kind=ENVELOPE)
    raw_log = store.create_log("r", "bucket.example/logs/r", kind=RAW)
    with pytest.raises(BadRequest):
        submit(env_log, b"raw leaf")
    with pytest.raises(BadRequest):
        env_log.append_many([b"raw leaf"])
    with pytest.raises(BadRequest):
        submit(raw_log, draft("doc", b"x"))
    assert env_log.size == raw_log.size == 0
    # Both logs still take what they are for.
    assert submit(env_log, draft("doc", b"x"))[0].index == 0
    assert raw_log.append_many([b"raw leaf"]).indexes == [0]
    with pytest.raises(BadRequest):
        store.create_log("k", "bucket.example/logs/k", kind="weird")


# -- signing keys ---------------------------------------------------------------------------


def test_key_file_is_private(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", ORIGIN)
        path = tmp_path / "keys" / "t.key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
        signer = parse_signer_key(path.read_text().strip())
        assert signer.vkey == log.vkey
        assert signer.name == ORIGIN == log.origin
    finally:
        store.close()


def make_log(tmp_path: Path) -> str:
    """Create a store with log 't' holding a few leaves; return its checkpoint."""
    store = Store.open(tmp_path)
    try:
        log = store.create_log("t", ORIGIN)
        log.append_many([b"a", b"b", b"c"])
        return log.checkpoint()
    finally:
        store.close()


def write_key(path: Path, signer: Signer, mode: int = 0o600) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(format_signer_key(signer) + "\n")
    os.chmod(path, mode)


def test_missing_key_file_refuses_to_open(tmp_path: Path) -> None:
    make_log(tmp_path)
    (tmp_path / "keys" / "t.key").unlink()
    with pytest.raises(KeyProblem, match="missing"):
        Store.open(tmp_path)


@pytest.mark.parametrize("name", [ORIGIN, "bucket.example/logs/other"])
def test_replaced_key_file_refuses_to_open(tmp_path: Path, name: str) -> None:
    make_log(tmp_path)
    path = tmp_path / "keys" / "t.key"
    impostor = Signer.generate(name)
    write_key(path, impostor)
    with pytest.raises(KeyProblem) as info:
        Store.open(tmp_path)
    # The secret never reaches an error message. It is everything after the fourth "+"
    # (PRIVATE+KEY+<name>+<key id>+<base64>); base64 may itself hold a "+", even last.
    secret = format_signer_key(impostor).split("+", 4)[4]
    assert len(secret) > 40
    assert secret not in str(info.value)


def test_key_file_readable_by_others_refuses_to_open(tmp_path: Path) -> None:
    make_log(tmp_path)
    path = tmp_path / "keys" / "t.key"
    os.chmod(path, 0o644)
    with pytest.raises(KeyProblem, match="readable"):
        Store.open(tmp_path)
    os.chmod(path, 0o600)
    Store.open(tmp_path).close()


def test_key_and_log_record_both_replaced_refuses_to_open(tmp_path: Path) -> None:
    """Second line of defence: the stored checkpoints must verify with the key."""
    make_log(tmp_path)
    impostor = Signer.generate(ORIGIN)
    write_key(tmp_path / "keys" / "t.key", impostor)
    env = lmdb.open(str(tmp_path / "lmdb"), max_dbs=16, subdir=True)
    try:
        meta = env.open_db(b"meta")
        with env.begin(write=True, db=meta) as txn:
            raw = txn.get(b"log/t")
            assert raw is not None
            record = json.loads(raw)
            record["vkey"] = impostor.vkey
            txn.put(b"log/t", json.dumps(record, sort_keys=True).encode())
    finally:
        env.close()
    with pytest.raises(KeyProblem, match="does not verify"):
        Store.open(tmp_path)


def test_create_log_reuses_an_orphan_key_file_only_if_it_fits(tmp_path: Path) -> None:
    # A crash between writing a log's key and recording the log leaves the key behind.
    # Nothing was signed with it, so create_log reuses it, but only under the right name.
    (tmp_path / "keys").mkdir(mode=0o700)
    orphan = Signer.generate(ORIGIN)
    write_key(tmp_path / "keys" / "t.key", orphan)
    write_key(tmp_path / "keys" / "u.key", Signer.generate("someone.else/logs/u"))
    store = Store.open(tmp_path)
    try:
        assert store.create_log("t", ORIGIN).vkey == orphan.vkey
        with pytest.raises(KeyProblem):
            store.create_log("u", "bucket.example/logs/u")
        assert "u" not in store.logs
    finally:
        store.close()


# -- byte for byte: the Tessera test log ----------------------------------------------------

TESSERA = VECTORS / "tessera-testdata-log"
TESSERA_SKEY = (
    "PRIVATE+KEY+example.com/log/testdata+33d7b496+AeymY/SZAX0jZcJ8enZ5FY1Dz+wTML2yWSkK+9DSF3eg"
)


def tessera() -> tuple[str, str, list[bytes]]:
    vec = json.loads((VECTORS / "tessera-testdata-log.json").read_text())
    return vec["origin_line"], vec["vkey"], [w.encode() for w in vec["leaves_text"]]


def test_tessera_log_tiles_bundles_and_checkpoint_bodies(tmp_path: Path) -> None:
    origin, vkey, leaves = tessera()
    store = Store.open(tmp_path)
    try:
        log = store.create_log("testdata", origin)
        theirs = parse_vkey(vkey)
        for width, leaf in enumerate(leaves, 1):
            assert log.append_many([leaf]).indexes == [width - 1]
            tile = (TESSERA / f"tile/0/000.p/{width}").read_bytes()
            bundle = (TESSERA / f"tile/entries/000.p/{width}").read_bytes()
            assert log.tile(0, 0, width) == tile
            assert log.bundle(0, width) == bundle
            vector = (TESSERA / f"checkpoint.{width}").read_text()
            ours = log.checkpoint()
            assert note_body(ours) == note_body(vector)
            assert open_checkpoint(ours, [key_of(log)], origin=origin).size == width
            assert open_checkpoint(vector, [theirs], origin=origin).root == log.root(width)
        # Older partial tiles stay available with the same bytes.
        for width in range(1, len(leaves) + 1):
            assert log.tile(0, 0, width) == (TESSERA / f"tile/0/000.p/{width}").read_bytes()
            assert log.bundle(0, width) == (TESSERA / f"tile/entries/000.p/{width}").read_bytes()
    finally:
        store.close()


def test_tessera_log_signed_checkpoints_byte_for_byte(tmp_path: Path) -> None:
    _, vkey, leaves = tessera()
    signer = parse_signer_key(TESSERA_SKEY)
    assert signer.vkey == vkey, "the transcribed test key must be the vector's key"
    store = open_with_signer(tmp_path, "testdata", signer)
    try:
        log = store.log("testdata")
        assert log.vkey == vkey
        for width, leaf in enumerate(leaves, 1):
            batch = log.append_many([leaf])
            vector = (TESSERA / f"checkpoint.{width}").read_text()
            assert batch.checkpoint == vector
            assert log.checkpoint() == vector
        assert log.checkpoint() == (TESSERA / "checkpoint").read_text()
        for width in range(1, len(leaves) + 1):
            assert log.checkpoint_at(width) == (TESSERA / f"checkpoint.{width}").read_text()
    finally:
        store.close()


def run_pair(tmp_path: Path, script: str, data: Path, *extra: str) -> list[str]:
    """Run ``python -c script DATA BARRIER ME *extra`` as two processes at once, ME being
    "one" and "two" (they meet at the BARRIER directory); return each one's stdout.
    Fails the test if either exits non-zero."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(data), str(barrier), me, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in ("one", "two")
    ]
    answers = [child.communicate(timeout=120) for child in children]
    for child, (_, err) in zip(children, answers, strict=True):
        assert child.returncode == 0, err
    return [out for out, _ in answers]


_CATCH_UP_CHILD = """
import sys, time
from pathlib import Path
from tlog import storage
from tlog.log import Store

data, barrier, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
real = storage.Storage.write_index

def late(self):
    # A slow machine: every index transaction of the catch-up starts 0.5 s late, so both
    # openers have decided how far the index goes before either extends it.
    time.sleep(0.5)
    return real(self)

storage.Storage.write_index = late
(barrier / me).touch()
deadline = time.monotonic() + 30
while len(list(barrier.iterdir())) < 2:
    if time.monotonic() > deadline:
        sys.exit(f"{me}: the other process never started")
    time.sleep(0.005)
s = Store.open(data)
log = s.log("gurukul")
print(log.versions("a/0"), log.versions("a/1"), log.index_of(bytes.fromhex(sys.argv[4])))
s.close()
"""


def test_two_processes_catching_up_one_index_write_each_version_once(tmp_path: Path) -> None:
    # The index env is derived and caught up on open. Two processes opening the same
    # directory (the server and the tlog CLI) used to read how far it went before taking
    # its write lock: both then wrote the same versions and the second failed to open
    # ("bad math: version 1 of 'a/0' exists").
    data = tmp_path / "data"
    store = Store.open(data)
    log = envelope_log(store)
    outcomes = [submit(log, draft(f"a/{i % 2}", bytes([i])))[0] for i in range(6)]
    log_id = log.log_id
    store.close()
    env = lmdb.open(str(data / "index"), max_dbs=16, subdir=True)
    with env.begin(write=True) as txn:  # the index as if its commits had been lost
        for name in ("artifacts", hash_db_name().decode()):
            txn.drop(env.open_db(f"{log_id}/{name}".encode(), txn=txn), delete=False)
        meta = env.open_db(b"meta", txn=txn)
        txn.put(f"indexed/{log_id}".encode(), b"0", db=meta)
        txn.put(f"hashgen{GENERATION_BITS}/{log_id}".encode(), b"0", db=meta)
    env.close()
    outs = run_pair(tmp_path, _CATCH_UP_CHILD, data, outcomes[-1].leaf_hash.hex())
    for out in outs:
        assert out.split("\n")[0] == "[(1, 0), (2, 2), (3, 4)] [(1, 1), (2, 3), (3, 5)] 5"


def test_an_index_beyond_the_stored_log_refuses_to_open(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store.open(data)
    log = envelope_log(store)
    submit(log, draft("a/0", b"x"))
    log_id = log.log_id
    store.close()
    env = lmdb.open(str(data / "index"), max_dbs=16, subdir=True)
    with env.begin(write=True) as txn:
        txn.put(f"indexed/{log_id}".encode(), b"7", db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(StorageError, match="index covers 7 of 1 leaves"):
        Store.open(data)


_TORN_CHILD = """
import json, sys, time
from pathlib import Path
from tlog import storage
from tlog.log import Store

data, barrier, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]


class SlowJson:
    # A slow machine: 0.5 s between reading the index env's state and acting on it, so
    # both openers have found the index torn before either rebuilds it.
    dumps = staticmethod(json.dumps)

    @staticmethod
    def loads(raw):
        time.sleep(0.5)
        return json.loads(raw)


def wait_for(n):
    deadline = time.monotonic() + 30
    while len(list(barrier.iterdir())) < n:
        if time.monotonic() > deadline:
            sys.exit(f"{me}: the other process never got this far")
        time.sleep(0.005)


storage.json = SlowJson
(barrier / me).touch()
wait_for(2)
s = Store.open(data)
storage.json = json
with s.storage.write_index() as itxn:
    itxn.put(b"seen-by-" + me.encode(), b"1", db=s.storage._imeta)
(barrier / (me + "-wrote")).touch()
wait_for(4)
with s.storage.read_index() as itxn:
    keys = [bytes(k).decode() for k, _ in itxn.cursor(db=s.storage._imeta)]
print([k for k in keys if k.startswith("seen-by-")])
print(s.log("gurukul").versions("a/0"))
s.close()
"""


def test_two_processes_rebuilding_a_torn_index_share_one(tmp_path: Path) -> None:
    # After a machine crash the unsynced index env is rebuilt on open. Two processes
    # starting together (the server and the tlog CLI) both found it torn, and the second
    # deleted the files the first had just rebuilt: the first went on alone with an
    # unlinked index whose writes nobody else saw.
    data = tmp_path / "data"
    store = Store.open(data)
    log = envelope_log(store)
    for i in range(3):
        submit(log, draft("a/0", bytes([i])))
    store.close()
    env = lmdb.open(str(data / "index"), max_dbs=16, subdir=True)
    with env.begin(write=True) as txn:  # unclean, on another boot: torn
        state = json.dumps({"boot": "another-boot", "open": 1}).encode()
        txn.put(b"state", state, db=env.open_db(b"meta", txn=txn))
    env.close()
    for out in run_pair(tmp_path, _TORN_CHILD, data):
        assert out.splitlines() == ["['seen-by-one', 'seen-by-two']", "[(1, 0), (2, 1), (3, 2)]"]


def test_an_index_lock_that_cannot_be_taken_is_a_storage_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Store.open(data).close()
    (data / "index.lock").unlink()
    (data / "index.lock").mkdir()  # not a file: cannot be opened, let alone locked
    with pytest.raises(StorageError, match=r"cannot lock .*index\.lock"):
        Store.open(data)


@pytest.mark.parametrize("slow", [False, True])
def test_raw_batch_paths_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow: bool) -> None:
    # The batch path (_place_raw) and the general loop (forced: _plain_leaves says no)
    # give the same answers: filter not ready, repeats old and new, leaves of every
    # accepted type and the largest size, and the entry limit exactly met and exceeded.
    if slow:
        monkeypatch.setattr(tlog_log, "_plain_leaves", lambda items: None)
    store = Store.open(tmp_path)
    log = store.create_log("t", "bucket.example/t")
    old = [os.urandom(30) for _ in range(300)]
    assert log.append_many(old).indexes == list(range(300))
    store.close()
    store = Store.open(tmp_path)  # filter not ready for the first batch(es)
    try:
        log = store.log("t")
        big = b"\0" * MAX_LEAF_BYTES
        batch = [old[7], b"n1", bytearray(b"n2"), memoryview(b"n1"), big, old[7], b"n3"]
        assert log.append_many(batch).indexes == [7, 300, 301, 300, 302, 7, 303]
        store._index_queue_drain()
        assert log.append_many([b"n3", old[299], b"n4", b"n4"]).indexes == [303, 299, 304, 304]
        assert log._bloom_ready
        store.entry_limits = (log.size + 2, 10**9)  # exactly full, then one short
        assert log.append_many([b"n5", b"n1", b"n6"]).indexes == [305, 300, 306]
        store.entry_limits = (log.size + 2, 10**9)  # one short: two written, third refused
        with pytest.raises(EntryLimit):
            log.append_many([b"n7", b"n8", b"n9"])
        assert log.size == 309
    finally:
        store.close()
