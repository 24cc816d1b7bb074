"""Benchmark the auditor's toolkit (verifier): receipts offline, and a full log audit.

Prints one JSON object per line per figure on stdout (progress goes to stderr):

1. ``receipt_verify_no_cache``: ``verify_receipt`` on distinct receipts of one tree of
   1,000,000 leaves (inclusion paths of ~20 hashes), each paying its own Ed25519
   check of the checkpoint (receipts/s).
2. ``receipt_verify_cached``: the same, with one shared ``CheckpointCache``, so the
   checkpoint's signature is checked once per run (receipts/s).
3. ``receipt_parse``: ``parse_receipt`` alone on the same receipts (receipts/s).
4. ``audit_local_dir``: ``audit_log`` of the whole log from a local directory (warm
   page cache): every bundle read and hashed, every tile compared, root checked
   (entries/s), with the peak Python heap of one audit (tracemalloc, separate run).

The log is generated here with ``verifier.tiles`` and ``hashlib``: 100-byte random
leaves, tiles of every level written from the binary Merkle levels, one signed
checkpoint. Receipts carry the leaf (``extra``) and a real inclusion path.

    .venv/bin/python bench/verify.py              # 1,000,000 entries, ~1-2 minutes
    .venv/bin/python bench/verify.py --quick      # 100,000 entries, a few seconds

The value of each figure is the median of its runs (at least 5). Data goes to a
temporary directory, removed at exit (also on Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import random
import sys
import time
import tracemalloc
from pathlib import Path

# Python puts a script's directory first on sys.path, where a script named like a module
# would shadow it (bench/http.py did, before it became bench/http_service.py: verifier.client
# imports http.client). Keep bench/ off the path; load the shared helpers by file name.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
if "_common" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("_common", _BENCH / "_common.py")
    assert _spec is not None and _spec.loader is not None
    sys.modules["_common"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["_common"])

from _common import emit, figure, machine, machine_line, progress, temp_dir  # noqa: E402

from verifier.audit import audit_log  # noqa: E402
from verifier.checkpoint import Checkpoint, sign_checkpoint  # noqa: E402
from verifier.note import Signer  # noqa: E402
from verifier.receipt import (  # noqa: E402
    CheckpointCache,
    Receipt,
    format_receipt,
    parse_receipt,
    verify_receipt,
)
from verifier.tiles import (  # noqa: E402
    TILE_HEIGHT,
    encode_bundle,
    iter_bundles_for_size,
    iter_tiles_for_size,
)

ORIGIN = "bench.example/logs/verify"
LEAF_SIZE = 100
_sha256 = hashlib.sha256


# -- the log ---------------------------------------------------------------------------


class Tree:
    """The binary Merkle levels of a tree (RFC 6962 §2.1): ``levels[k]`` holds the
    roots of the complete aligned subtrees of 2**k leaves, concatenated."""

    def __init__(self, leaves: bytes, size: int) -> None:
        level = b"".join(
            _sha256(b"\x00" + leaves[i : i + LEAF_SIZE]).digest()
            for i in range(0, size * LEAF_SIZE, LEAF_SIZE)
        )
        self.size = size
        self.levels = [level]
        while len(level) >= 64:
            level = b"".join(
                _sha256(b"\x01" + level[i : i + 64]).digest() for i in range(0, len(level) - 63, 64)
            )
            self.levels.append(level)

    def node(self, k: int, j: int) -> bytes:
        return self.levels[k][32 * j : 32 * j + 32]

    def subtree(self, lo: int, hi: int) -> bytes:
        """Return MTH(D[lo:hi]) (RFC 6962 §2.1), from stored levels where complete."""
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            return self.node(n.bit_length() - 1, lo // n)
        k = 1 << ((n - 1).bit_length() - 1)
        return _sha256(b"\x01" + self.subtree(lo, lo + k) + self.subtree(lo + k, hi)).digest()

    def inclusion_path(self, index: int, lo: int = 0, hi: int | None = None) -> list[bytes]:
        """Return PATH(index, D[lo:hi]) (RFC 6962 §2.1.1), leaf's sibling first."""
        hi = self.size if hi is None else hi
        n = hi - lo
        if n == 1:
            return []
        k = 1 << ((n - 1).bit_length() - 1)
        if index < lo + k:
            return [*self.inclusion_path(index, lo, lo + k), self.subtree(lo + k, hi)]
        return [*self.inclusion_path(index, lo + k, hi), self.subtree(lo, lo + k)]


def write_log(root: Path, leaves: bytes, tree: Tree, signer: Signer) -> str:
    """Write the C2SP tlog-tiles log of ``tree`` under ``root``; return its checkpoint."""
    size = tree.size
    for tile in iter_tiles_for_size(size):
        level = tree.levels[TILE_HEIGHT * tile.level]
        start = 32 * 256 * tile.index
        _write(root / tile.path, level[start : start + 32 * tile.width])
    for bundle in iter_bundles_for_size(size):
        first = 256 * bundle.index
        entries = [
            leaves[(first + i) * LEAF_SIZE : (first + i + 1) * LEAF_SIZE]
            for i in range(bundle.width)
        ]
        _write(root / bundle.path, encode_bundle(entries))
    note = sign_checkpoint(Checkpoint(ORIGIN, size, tree.subtree(0, size)), signer)
    _write(root / "checkpoint", note.encode())
    return note


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# -- the measurements -------------------------------------------------------------------


def rate(count: int, seconds: float) -> float:
    return count / seconds


def bench_receipts(
    texts: list[str], signer: Signer, runs: int, cached_rounds: int, params: dict[str, object]
) -> None:
    """Emit the receipt figures: wall-clock rates, and the same runs per CPU-second
    (``time.process_time``), which a busy machine disturbs much less."""
    keys = [signer.verifier_key]
    info = machine()

    def no_cache() -> int:
        for text in texts:
            verify_receipt(text, keys)
        return len(texts)

    def cached() -> int:
        cache = CheckpointCache()
        for _ in range(cached_rounds):
            for text in texts:
                verify_receipt(text, keys, cache=cache)
        return cached_rounds * len(texts)

    def parse_only() -> int:
        for _ in range(cached_rounds):
            for text in texts:
                parse_receipt(text)
        return cached_rounds * len(texts)

    cached()  # warm up (imports, allocator)
    for name, fn, note in (
        ("receipt_verify_no_cache", no_cache, "each receipt checks its Ed25519 signature"),
        ("receipt_verify_cached", cached, "one CheckpointCache shared by the run"),
        ("receipt_parse", parse_only, "parse_receipt only"),
    ):
        wall, cpu = [], []
        for i in range(runs):
            w0, c0 = time.perf_counter(), time.process_time()
            count = fn()
            wall.append(rate(count, time.perf_counter() - w0))
            cpu.append(rate(count, time.process_time() - c0))
            progress(
                f"{name} run {i + 1}/{runs}: {wall[-1]:,.0f} receipts/s "
                f"({cpu[-1]:,.0f} per CPU-second)"
            )
        emit(figure(name, wall, "receipts/s", {**params, "note": note}, info))
        emit(figure(f"{name}_cpu", cpu, "receipts/cpu-s", {**params, "note": note}, info))


def bench_audit(root: Path, signer: Signer, size: int, runs: int) -> None:
    keys = [signer.verifier_key]
    info = machine(root)
    audit_log(root, keys)  # warm the page cache
    results = []
    for i in range(runs):
        t0 = time.perf_counter()
        result = audit_log(root, keys)
        seconds = time.perf_counter() - t0
        if result.entries != size:
            raise AssertionError("bad bench: audit covered the wrong size")
        results.append(rate(size, seconds))
        progress(f"audit_local_dir run {i + 1}/{runs}: {results[-1]:,.0f} entries/s")
    gc.collect()
    tracemalloc.start()
    audit_log(root, keys)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    params = {
        "entries": size,
        "leaf_bytes": LEAF_SIZE,
        "bundles": result.bundles,
        "hash_tiles": result.tiles,
        "bytes_read": result.bytes_read,
        "page_cache": "warm",
        "peak_python_heap_bytes": peak,
    }
    emit(figure("audit_local_dir", results, "entries/s", params, info))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 entries, fewer receipts")
    parser.add_argument("--entries", type=int, help="log size (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (at least 5)")
    parser.add_argument("--receipts", type=int, help="distinct receipts (default 5,000)")
    args = parser.parse_args()
    size = args.entries or (100_000 if args.quick else 1_000_000)
    count = args.receipts or (1_000 if args.quick else 5_000)
    runs = max(5, args.runs)
    progress(machine_line(machine()))

    signer = Signer.from_seed(ORIGIN, hashlib.sha256(b"bench/verify.py").digest())
    rng = random.Random(6962)
    progress(f"building a tree of {size:,} leaves of {LEAF_SIZE} bytes")
    leaves = rng.randbytes(size * LEAF_SIZE)
    tree = Tree(leaves, size)
    with temp_dir("bucket-bench-verify-") as root:
        note = write_log(root, leaves, tree, signer)
        progress(f"wrote the log to {root}")

        indexes = [rng.randrange(size) for _ in range(count)]
        texts = []
        for index in indexes:
            leaf = leaves[index * LEAF_SIZE : (index + 1) * LEAF_SIZE]
            proof = tuple(tree.inclusion_path(index))
            texts.append(format_receipt(Receipt(index, proof, note, leaf)))
        depths = [len(parse_receipt(t).proof) for t in texts]
        params: dict[str, object] = {
            "tree_size": size,
            "receipts": count,
            "proof_hashes_mean": round(sum(depths) / len(depths), 2),
            "proof_hashes_max": max(depths),
            "leaf_bytes": LEAF_SIZE,
            "receipt_bytes_mean": round(sum(map(len, texts)) / len(texts)),
            "input": "str",
        }
        bench_receipts(texts, signer, runs, 4, params)
        del texts
        bench_audit(root, signer, size, runs)


if __name__ == "__main__":
    main()
