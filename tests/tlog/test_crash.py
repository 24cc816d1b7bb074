"""Crash safety: a writer process (``crash_writer.py``) is killed with SIGKILL at random
moments; the log must keep every acknowledged entry and expose no half batch.

The durability contract (DESIGN.md, "Write path and the durability contract"): an
acknowledged entry is fsync'd at a fixed index under a stored signed checkpoint; a
crash loses nothing acknowledged and exposes nothing half-written; no checkpoint is
ever inconsistent with an earlier one. After each kill the parent reopens the store
and checks exactly that, and that the derived index env caught up. Some kills also
play a *machine* crash for the index env: its state record is rewritten to say
"unclean, on another boot" (and its contents damaged), which must make the store
rebuild it from the log.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

from tests.reference import mth_of_hashes
from tlog.log import Store
from tlog.storage import hash_db_name, hash_key
from verifier.checkpoint import open_checkpoint
from verifier.hashing import leaf_hash
from verifier.note import parse_vkey
from verifier.proof import verify_consistency
from verifier.tiles import decode_bundle

WRITER = Path(__file__).with_name("crash_writer.py")
REPO = Path(__file__).resolve().parents[2]
ORIGIN = "bucket.example/logs/crash"


@dataclass
class DirState:
    """What the parent knows about one data directory across writer runs."""

    path: Path
    leaves: list[bytes] = field(default_factory=list)  # durable and acknowledged, in order
    checkpoints: list[str] = field(default_factory=list)  # every checkpoint handed out
    vkey: str = ""
    log_id: int = 0
    runs: int = 0


@dataclass
class Run:
    """What one writer run said before it died."""

    ready: int | None = None
    acked: list[tuple[list[bytes], dict[str, object]]] = field(default_factory=list)
    pending: list[bytes] | None = None


def run_writer(d: DirState, seed: int, rng: random.Random) -> Run:
    """Start the writer on d, SIGKILL it at a random moment, return what it reported."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(d.path), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[bytes] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(b"R "):
                ready.set()

    reader = threading.Thread(target=read)
    reader.start()
    if d.runs == 0:
        # A fresh directory: let the writer create its log first (a kill between the
        # key file and the log record would leave an orphan key, see the report).
        assert ready.wait(20), proc.stderr.read().decode()
        time.sleep(rng.uniform(0.0, 0.3))
    else:
        # Reused: anywhere from startup (recovery, index catch-up) to mid-stream.
        time.sleep(rng.uniform(0.02, 0.45))
    proc.kill()
    proc.wait()
    reader.join()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    proc.stdout.close()
    assert "Traceback" not in err, err
    d.runs += 1

    run = Run()
    for line in lines:
        if not line.endswith(b"\n"):
            break  # cut off by the kill: not an acknowledgement
        kind, _, payload = line.decode().rstrip("\n").partition(" ")
        if kind == "R":
            run.ready = int(payload)
        elif kind == "P":
            run.pending = [bytes.fromhex(h) for h in json.loads(payload)]
        elif kind == "A":
            assert run.pending is not None
            run.acked.append((run.pending, json.loads(payload)))
            run.pending = None
    return run


def simulate_machine_crash(d: DirState) -> None:
    """Make the index env look torn by a machine crash: unclean, on another boot; damage it
    too, so that only a rebuild from the log answers lookups correctly."""
    env = lmdb.open(str(d.path / "index"), max_dbs=16, subdir=True)
    try:
        meta = env.open_db(b"meta")
        hashes = env.open_db(f"{d.log_id}/".encode() + hash_db_name(), dupsort=True, dupfixed=True)
        with env.begin(write=True) as txn:
            txn.put(
                b"state", json.dumps({"boot": "another-boot", "clean": False}).encode(), db=meta
            )
            if len(d.leaves) >= 2:
                # A lie: the first leaf is said to be at the last index; the second is gone.
                last = (len(d.leaves) - 1).to_bytes(8, "big")
                first_key = hash_key(0, leaf_hash(d.leaves[0]))
                txn.delete(first_key, db=hashes)  # (the index may not have got that far)
                txn.put(first_key, last, db=hashes)
                txn.delete(hash_key(1, leaf_hash(d.leaves[1])), db=hashes)
    finally:
        env.close()


def check_after_crash(d: DirState, run: Run, machine_crash: bool, rng: random.Random) -> None:
    """Reopen the store and check the durability contract against what the writer said."""
    # 1. Every acknowledgement is consistent with what was submitted, in order.
    for batch, ack in run.acked:
        first = len(d.leaves)
        assert ack["entries"] == [
            [first + i, leaf_hash(leaf).hex()] for i, leaf in enumerate(batch)
        ], "an acknowledgement must give the next indexes, in order"
        d.leaves.extend(batch)
        assert ack["size"] == len(d.leaves)
        d.checkpoints.append(str(ack["checkpoint"]))
    acked_size = len(d.leaves)

    store = Store.open(d.path)
    try:
        log = store.log("crash")
        assert store.storage.index_rebuilt is machine_crash
        if not d.vkey:
            d.vkey, d.log_id = log.vkey, log.log_id
        assert log.vkey == d.vkey
        key = parse_vkey(d.vkey)

        # 2. No half batch: the size is the acknowledged size, or the in-flight batch
        #    became durable in full just before the kill.
        if log.size != acked_size:
            assert run.pending is not None, f"size {log.size}, acknowledged {acked_size}"
            assert log.size == acked_size + len(run.pending), "a half batch is visible"
            d.leaves.extend(run.pending)
            d.checkpoints.append(log.checkpoint())

        # 3. Every entry sits at its index (read through the entry bundles).
        hashes = [leaf_hash(leaf) for leaf in d.leaves]
        size = len(d.leaves)
        for n in range(0, size, 256):
            width = min(256, size - n)
            assert decode_bundle(log.bundle(n // 256, width), width) == d.leaves[n : n + width]

        # 4. The tree is the reference tree, and consistent with every checkpoint handed
        #    out (all of this run's, a sample of older ones); none was re-signed.
        latest = open_checkpoint(log.checkpoint(), [key], origin=ORIGIN)
        assert latest.size == size
        assert latest.root == mth_of_hashes(hashes)
        older = len(d.checkpoints) - len(run.acked) - 1
        sample = set(range(max(0, older), len(d.checkpoints)))
        sample.update(rng.sample(range(len(d.checkpoints)), k=min(25, len(d.checkpoints))))
        for i in sorted(sample):
            note = d.checkpoints[i]
            cp = open_checkpoint(note, [key], origin=ORIGIN)
            assert log.checkpoint_at(cp.size) == note
            proof = log.consistency_proof(cp.size, size)
            verify_consistency(cp.size, size, proof, cp.root, latest.root)

        # 5. The index env caught up (or was rebuilt): every leaf hash finds its index.
        for index, h in enumerate(hashes):
            assert log.index_of(h) == index

        # 6. Still writable.
        fresh = rng.randbytes(24)
        got = log.append_many([fresh])
        assert got.indexes == [size]
        d.leaves.append(fresh)
        d.checkpoints.append(got.checkpoint)
    finally:
        store.close()


def test_sigkill_loses_nothing_acknowledged_and_shows_no_half_batch(tmp_path: Path) -> None:
    rng = random.Random(20240607)
    dirs = [DirState(tmp_path / f"d{i}") for i in range(4)]
    kills = machine_crashes = acked_batches = 0
    # Fresh and reused directories, interleaved: 4 x 6 = 24 kills.
    for round_ in range(6):
        for d in dirs:
            run = run_writer(d, seed=rng.getrandbits(32), rng=rng)
            kills += 1
            acked_batches += len(run.acked)
            machine = round_ in (2, 4) and d.log_id != 0
            if machine:
                simulate_machine_crash(d)
                machine_crashes += 1
            check_after_crash(d, run, machine, rng)
    assert kills >= 20
    assert machine_crashes >= 4
    # The kills must have hit a busy writer, not only idle startups.
    assert acked_batches >= 50, acked_batches
