"""Peers and physical floors, measured on this machine in the same run as our figures.

Floors (what this machine can do at best, with nothing of ours in the way):

* ``floor_frontier_append``: plain Python RFC 6962 append with hashlib into a compact
  range (the "frontier" of perfect-subtree roots), the root computed after every batch
  of 1,000 leaves of 200-500 bytes; no storage (entries/s).
* ``floor_lmdb_batched_puts``: raw LMDB (py-lmdb), one environment opened with
  ``sync=True``, batches of 1,000 leaves of 200-500 bytes under 8-byte keys
  (``putmulti(append=True)``), one fsync'd commit per batch (entries/s).
* ``floor_ed25519_sign`` / ``floor_ed25519_verify``: PyNaCl on a checkpoint-sized
  message (ops/s): one of each per batch and per receipt checked.
* ``floor_inclusion_proofs_memory``: RFC 6962 inclusion proofs from the binary levels of
  a tree held in memory (pure Python, complete subtrees read from lists, ragged
  right-edge subtrees memoised), at the size of bench/append.py's proof figure.
* ``floor_inclusion_verify``: the RFC 9162 §2.1.3.2 verification loop in plain
  hashlib, on the paths of the same tree (verifications/s); beside it
  ``verifier_inclusion_verify`` (our ``verifier.proof.verify_inclusion``).

Peer, pymerkle (PyPI; ``.[bench]`` extra), both of its backends, at the same tree
sizes as bench/scale.py (10^4, 10^5, 10^6; full mode 10^7 for SQLite), with the same
leaves and batches of 1,000 (``append_entries``, one SQLite transaction each):

* ``pymerkle_{sqlite,memory}_append_n1eK`` (entries/s),
* ``pymerkle_{sqlite,memory}_inclusion_proofs_n1eK`` (proofs/s) and ``_p50``/``_p99``
  (µs), ``pymerkle_{sqlite,memory}_consistency_proofs_n1eK`` (proofs/s),
* ``pymerkle_sqlite_inclusion_proofs_cold_n1eK``: after ``cache_clear()`` (as after a
  restart), at the largest size only,
* ``pymerkle_sqlite_disk_bytes_per_entry_n1eK`` and ``pymerkle_inclusion_verify``.

pymerkle counts leaves from 1: our index i is its index i + 1. Before timing anything
the script checks, on 1,000 leaves, that pymerkle's root and inclusion paths equal
RFC 6962's (the frontier, the in-memory tree and ``verifier``), and says so in
``params.rfc6962_checked``. pymerkle SQLite keeps interior nodes only in an in-process
LRU cache, so its proof figures are measured after warming that cache (every cacheable
subroot computed), its best case; the cold figure shows the other side.

    .venv/bin/python bench/peers.py --quick     # about 1-2 minutes
    .venv/bin/python bench/peers.py             # about 10 minutes (pymerkle to 10^7)

If pymerkle is not installed, its figures are skipped: one ``{"name", "skipped"}`` line
says why. Data goes to temporary directories, removed at exit (also on Ctrl-C and
SIGTERM). Every figure is the median of at least 5 runs (the disk figure: one
deterministic measurement).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]


def _load(name: str) -> Any:
    """Load bench/<name>.py as module `name` (bench/ is not on sys.path, see above)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_load("_common")
_scale = _load("scale")

from _common import (  # noqa: E402
    emit,
    figure,
    machine,
    machine_line,
    percentile,
    progress,
    temp_dir,
)

BATCH = _scale.BATCH
LEAF_MIN, LEAF_MAX = _scale.LEAF_MIN, _scale.LEAF_MAX
Leaves = _scale.Leaves
size_tag = _scale.size_tag
batches_per_run = _scale.batches_per_run

_sha256 = hashlib.sha256


@dataclass(frozen=True)
class Mode:
    quick: bool
    runs: int
    frontier_leaves: int  # leaves per run of the frontier floor
    lmdb_batches: int  # batches per run of the LMDB floor
    ed25519_ops: int  # signatures (and verifications) per run
    proof_tree: int  # size of the in-memory tree (= bench/append.py's proof size)
    proofs: int  # proofs (or verifications) per run
    sqlite_sizes: tuple[int, ...]
    memory_sizes: tuple[int, ...]
    cold_proofs: int  # proofs per run of the cold pymerkle SQLite figure


QUICK = Mode(
    quick=True,
    runs=5,
    frontier_leaves=100_000,
    lmdb_batches=200,
    ed25519_ops=2_000,
    proof_tree=1_000_000,
    proofs=2_000,
    sqlite_sizes=(10**4, 10**5, 10**6),
    memory_sizes=(10**4, 10**5, 10**6),
    cold_proofs=5,
)
FULL = Mode(
    quick=False,
    runs=7,
    frontier_leaves=1_000_000,
    lmdb_batches=200,
    ed25519_ops=10_000,
    proof_tree=10_000_000,
    proofs=5_000,
    sqlite_sizes=(10**4, 10**5, 10**6, 10**7),
    # pymerkle's InmemoryTree keeps two Python objects per leaf (~760 MB at 10^6,
    # measured): 10^7 would take ~8 GB and minutes; it stops at 10^6.
    memory_sizes=(10**4, 10**5, 10**6),
    cold_proofs=3,
)


def rates_of(runs: int, count: int, fn: Callable[[], Any]) -> list[float]:
    """Run fn() `runs` times; return count / seconds of each run."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(count / (time.perf_counter() - t0))
    return out


# -- RFC 6962 in plain Python (the floors) -------------------------------------------


def frontier_append(frontier: list[bytes], size: int, leaves: Sequence[bytes]) -> int:
    """Append leaves to a compact range (roots of the perfect subtrees, left to right);
    return the new size."""
    sha = _sha256
    for leaf in leaves:
        h = sha(b"\x00" + leaf).digest()
        n = size
        while n & 1:
            h = sha(b"\x01" + frontier.pop() + h).digest()
            n >>= 1
        frontier.append(h)
        size += 1
    return size


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    """Return the RFC 6962 root of the tree whose compact range is frontier."""
    if not frontier:
        return _sha256(b"").digest()
    root = frontier[-1]
    for h in reversed(frontier[:-1]):
        root = _sha256(b"\x01" + h + root).digest()
    return root


class MemoryTree:
    """The binary levels of a tree in memory: ``levels[k]`` lists the roots of the
    complete aligned subtrees of 2**k leaves. Ragged right-edge subtrees are hashed
    once and memoised, as a real log would."""

    def __init__(self, leaf_hashes: list[bytes]) -> None:
        self.size = len(leaf_hashes)
        self.levels = [leaf_hashes]
        level = leaf_hashes
        while len(level) >= 2:
            level = [
                _sha256(b"\x01" + level[i] + level[i + 1]).digest()
                for i in range(0, len(level) - 1, 2)
            ]
            self.levels.append(level)
        self._memo: dict[tuple[int, int], bytes] = {}

    def subtree(self, lo: int, hi: int) -> bytes:
        """Return MTH(D[lo:hi])."""
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            return self.levels[n.bit_length() - 1][lo // n]
        key = (lo, hi)
        h = self._memo.get(key)
        if h is None:
            k = 1 << ((n - 1).bit_length() - 1)
            h = _sha256(b"\x01" + self.subtree(lo, lo + k) + self.subtree(lo + k, hi)).digest()
            self._memo[key] = h
        return h

    def inclusion_path(self, index: int, size: int) -> list[bytes]:
        """Return PATH(index, D[0:size]) (RFC 6962 §2.1.1), leaf's sibling first."""
        path: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if index < lo + k:
                path.append(self.subtree(lo + k, hi))
                hi = lo + k
            else:
                path.append(self.subtree(lo, lo + k))
                lo = lo + k
        path.reverse()
        return path


_NODE = _sha256(b"\x01")  # a SHA-256 state that has absorbed the node prefix


def verify_path_plain(
    index: int, size: int, leaf_hash: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2 in plain hashlib, interior nodes hashed from a copy of a
    prefixed state (no concatenation): the least an inclusion check costs in Python."""
    fn, sn = index, size - 1
    r = leaf_hash
    node = _NODE.copy
    for p in path:
        if sn == 0:
            return False
        h = node()
        if fn & 1 or fn == sn:
            h.update(p)
            h.update(r)
            r = h.digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            h.update(r)
            h.update(p)
            r = h.digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# -- floors ---------------------------------------------------------------------------


def floor_frontier(mode: Mode, m: dict[str, Any]) -> None:
    gen = Leaves(seed=11)
    rates = []
    for _ in range(mode.runs):
        work = [gen.batch() for _ in range(mode.frontier_leaves // BATCH)]
        frontier: list[bytes] = []
        size = 0
        t0 = time.perf_counter()
        for leaves in work:
            size = frontier_append(frontier, size, leaves)
            frontier_root(frontier)  # the checkpoint of the batch
        rates.append(size / (time.perf_counter() - t0))
    emit(
        figure(
            "floor_frontier_append",
            rates,
            "entries/s",
            {
                "what": "plain Python RFC 6962 compact-range append with hashlib, root after "
                "each batch, no storage",
                "entries_per_run": mode.frontier_leaves,
                "batch": BATCH,
                "leaf_bytes": [LEAF_MIN, LEAF_MAX],
            },
            m,
        )
    )
    progress(f"floor: frontier append {statistics.median(rates):,.0f} entries/s")


def floor_lmdb(mode: Mode, m: dict[str, Any]) -> None:
    import lmdb

    gen = Leaves(seed=12)
    rates = []
    for _ in range(mode.runs):
        with temp_dir("bucket-bench-peers-lmdb-") as d:
            env = lmdb.open(str(d), map_size=8 << 30, sync=True, metasync=True)
            try:
                work = []
                for b in range(mode.lmdb_batches + 2):
                    leaves = gen.batch()
                    work.append(
                        [((b * BATCH + i).to_bytes(8, "big"), v) for i, v in enumerate(leaves)]
                    )
                for items in work[:2]:  # warm up: first pages
                    with env.begin(write=True) as txn:
                        txn.cursor().putmulti(items, append=True)
                t0 = time.perf_counter()
                for items in work[2:]:
                    with env.begin(write=True) as txn:
                        txn.cursor().putmulti(items, append=True)
                rates.append(mode.lmdb_batches * BATCH / (time.perf_counter() - t0))
            finally:
                env.close()
    emit(
        figure(
            "floor_lmdb_batched_puts",
            rates,
            "entries/s",
            {
                "what": "raw py-lmdb, sync=True, one write transaction (one fsync'd commit) "
                "per batch, putmulti(append=True) of 8-byte keys",
                "batches_per_run": mode.lmdb_batches,
                "batch": BATCH,
                "leaf_bytes": [LEAF_MIN, LEAF_MAX],
            },
            m,
        )
    )
    progress(f"floor: raw LMDB batched puts {statistics.median(rates):,.0f} entries/s")


def floor_ed25519(mode: Mode, m: dict[str, Any]) -> None:
    from nacl.signing import SigningKey

    key = SigningKey(_sha256(b"bench/peers.py").digest())
    verify_key = key.verify_key
    root = _sha256(b"root").digest()
    import base64

    body = f"bench.example/logs/peers\n1000000\n{base64.b64encode(root).decode()}\n".encode()
    n = mode.ed25519_ops

    def sign() -> None:
        for _ in range(n):
            key.sign(body)

    signed = key.sign(body)

    def verify() -> None:
        for _ in range(n):
            verify_key.verify(signed)

    params = {"library": "PyNaCl (libsodium)", "message_bytes": len(body), "ops_per_run": n}
    sign()  # warm up
    s = rates_of(mode.runs, n, sign)
    v = rates_of(mode.runs, n, verify)
    emit(figure("floor_ed25519_sign", s, "signatures/s", {**params, "what": "SigningKey.sign"}, m))
    emit(
        figure(
            "floor_ed25519_verify", v, "verifications/s", {**params, "what": "VerifyKey.verify"}, m
        )
    )
    progress(
        f"floor: Ed25519 sign {statistics.median(s):,.0f}/s, verify {statistics.median(v):,.0f}/s"
    )


def floor_proofs_and_verify(mode: Mode, m: dict[str, Any]) -> MemoryTree:
    """The in-memory proof floor and the three verification rates; return the tree."""
    from verifier.proof import verify_inclusion

    size = mode.proof_tree
    gen = Leaves(seed=13)
    progress(f"building an in-memory tree of {size:,} leaves")
    hashes = []
    while len(hashes) < size:
        hashes += [
            _sha256(b"\x00" + leaf).digest() for leaf in gen.batch(min(BATCH, size - len(hashes)))
        ]
    tree = MemoryTree(hashes)
    root = tree.subtree(0, size)
    rnd = random.Random(14)
    p50s, p99s, rates = [], [], []
    clock = time.perf_counter_ns
    for _ in range(mode.runs):
        indexes = [rnd.randrange(size) for _ in range(mode.proofs)]
        lat = []
        t_start = clock()
        for i in indexes:
            t0 = clock()
            tree.inclusion_path(i, size)
            lat.append(clock() - t0)
        rates.append(len(indexes) / ((clock() - t_start) / 1e9))
        p50s.append(percentile(lat, 50) / 1000)
        p99s.append(percentile(lat, 99) / 1000)
    params = {
        "tree_size": size,
        "proofs_per_run": mode.proofs,
        "what": "pure Python, binary levels in lists, memoised right edge, no storage",
        "p50_us": round(statistics.median(p50s), 2),
        "p99_us": round(statistics.median(p99s), 2),
    }
    emit(figure("floor_inclusion_proofs_memory", rates, "proofs/s", params, m))

    cases = []
    for _ in range(mode.proofs):
        i = rnd.randrange(size)
        cases.append((i, hashes[i], tree.inclusion_path(i, size)))
    for i, h, path in cases[:50]:  # the floor's proofs are right, by our verifier
        verify_inclusion(i, size, h, path, root)
        assert verify_path_plain(i, size, h, path, root)
    n = len(cases)

    def plain() -> None:
        for i, h, path in cases:
            verify_path_plain(i, size, h, path, root)

    def ours() -> None:
        for i, h, path in cases:
            verify_inclusion(i, size, h, path, root)

    vparams = {
        "tree_size": size,
        "verifications_per_run": n,
        "proof_hashes_mean": round(sum(len(c[2]) for c in cases) / n, 2),
    }
    plain_rates = rates_of(mode.runs, n, plain)
    our_rates = rates_of(mode.runs, n, ours)
    emit(
        figure(
            "floor_inclusion_verify",
            plain_rates,
            "verifications/s",
            {**vparams, "what": "RFC 9162 §2.1.3.2 loop in plain hashlib"},
            m,
        )
    )
    emit(
        figure(
            "verifier_inclusion_verify",
            our_rates,
            "verifications/s",
            {**vparams, "what": "verifier.proof.verify_inclusion (ours)"},
            m,
        )
    )
    progress(
        f"floor: in-memory proofs at {size:,}: {statistics.median(rates):,.0f}/s; verify: plain "
        f"{statistics.median(plain_rates):,.0f}/s, ours {statistics.median(our_rates):,.0f}/s"
    )
    tree.cases = cases  # type: ignore[attr-defined]
    tree.root = root  # type: ignore[attr-defined]
    return tree


# -- pymerkle -------------------------------------------------------------------------


def pymerkle_root(tree: Any, size: int) -> bytes:
    get_root = getattr(tree, "get_root", None)  # pymerkle 7
    if get_root is None:
        get_root = tree.get_state  # pymerkle 6
    return bytes(get_root(size))


def check_pymerkle(pymerkle: Any) -> str:
    """Check pymerkle against RFC 6962 on 1,000 leaves; return what was checked."""
    gen = Leaves(seed=15)
    leaves = gen.batch(1000)
    hashes = [_sha256(b"\x00" + leaf).digest() for leaf in leaves]
    memory = MemoryTree(hashes)
    frontier: list[bytes] = []
    frontier_append(frontier, 0, leaves)
    with temp_dir("bucket-bench-peers-check-") as d:
        sqlite_tree = pymerkle.SqliteTree(str(d / "check.db"))
        try:
            for tree in (pymerkle.InmemoryTree(), sqlite_tree):
                _check_tree(tree, leaves, hashes, memory)
        finally:
            sqlite_tree.close()
    if frontier_root(frontier) != memory.subtree(0, 1000):
        raise AssertionError("frontier root differs")
    return (
        "pymerkle roots and inclusion paths (InmemoryTree and SqliteTree) equal RFC 6962's "
        "(in-memory tree, frontier, verifier.proof) on 1,000 leaves; index i here is "
        "pymerkle's i + 1"
    )


def _check_tree(tree: Any, leaves: list[bytes], hashes: list[bytes], memory: MemoryTree) -> None:
    from verifier.proof import verify_inclusion

    tree.append_entries(leaves)
    for size in (1, 2, 3, 255, 256, 257, 999, 1000):
        expect = memory.subtree(0, size)
        if pymerkle_root(tree, size) != expect:
            raise AssertionError(f"pymerkle root at size {size} differs from RFC 6962")
        for index in {0, size // 2, size - 1}:
            proof = tree.prove_inclusion(index + 1, size)  # pymerkle counts from 1
            path = [bytes(p) for p in proof.path]
            if path[0] != hashes[index] or path[1:] != memory.inclusion_path(index, size):
                raise AssertionError(f"pymerkle path ({index}, {size}) is not RFC 6962's")
            verify_inclusion(index, size, hashes[index], path[1:], expect)


def sqlite_settings(tree: Any) -> dict[str, Any]:
    con = tree.con
    out: dict[str, Any] = {}
    for pragma in ("synchronous", "journal_mode", "page_size"):
        row = con.execute(f"PRAGMA {pragma}").fetchone()
        out[pragma] = row if not isinstance(row, tuple) else row[0]
    out["synchronous"] = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
        out["synchronous"], out["synchronous"]
    )
    return out


def warm_sqlite_cache(tree: Any, size: int) -> float:
    """Compute every cacheable subroot (width >= the cache threshold) of the tree of
    `size` by proving one leaf in every 128; return the seconds it took."""
    t0 = time.perf_counter()
    step = getattr(tree, "threshold", 128)
    for i in range(1, size + 1, step):
        tree.prove_inclusion(i, size)
    return time.perf_counter() - t0


def bench_pymerkle_backend(
    mode: Mode,
    backend: str,
    sizes: Sequence[int],
    make_tree: Callable[[Path], Any],
    checked: str,
    m: dict[str, Any],
) -> None:
    gen = Leaves(seed=16)
    rnd = random.Random(17)
    with temp_dir(f"bucket-bench-peers-pymerkle-{backend}-") as d:
        tree = make_tree(d)
        try:
            settings = sqlite_settings(tree) if backend == "sqlite" else {}
            base = {
                "backend": "SqliteTree" if backend == "sqlite" else "InmemoryTree",
                "batch": BATCH,
                "leaf_bytes": [LEAF_MIN, LEAF_MAX],
                "rfc6962_checked": checked,
                **({"sqlite": settings} if settings else {}),
            }
            size = 0
            for target in sizes:
                tag = size_tag(target)
                # Grow to the window, then time the last runs x batches up to target.
                nb = batches_per_run(target)
                start = max(size, target - mode.runs * nb * BATCH)
                t0 = time.perf_counter()
                while size < start:
                    size = tree.append_entries(gen.batch(min(BATCH, start - size)))
                build = time.perf_counter() - t0
                arates = []
                for _ in range(mode.runs):
                    work = [gen.batch(min(BATCH, target - size - k * BATCH)) for k in range(nb)]
                    work = [w for w in work if w]
                    if not work:
                        break
                    t0 = time.perf_counter()
                    for leaves in work:
                        size = tree.append_entries(leaves)
                    arates.append(sum(map(len, work)) / (time.perf_counter() - t0))
                common = {**base, "tree_size": size}
                emit(
                    figure(
                        f"pymerkle_{backend}_append_{tag}",
                        arates,
                        "entries/s",
                        {
                            **common,
                            "what": "append_entries of the last batches before the tree "
                            "reached size"
                            + (" (one SQLite transaction per batch)" if settings else ""),
                            "window": [start, size],
                            "batches_per_run": nb,
                            "build_seconds_before_window": round(build, 2),
                        },
                        m,
                    )
                )
                if backend == "sqlite":
                    db = Path(tree.dbfile)
                    disk = sum(p.stat().st_blocks * 512 for p in db.parent.iterdir() if p.is_file())
                    emit(
                        figure(
                            f"pymerkle_sqlite_disk_bytes_per_entry_{tag}",
                            [disk / size],
                            "bytes",
                            {
                                **common,
                                "what": "SQLite file blocks / entries (deterministic: one "
                                "measurement); interior nodes are not stored",
                                "mean_leaf_bytes": round(gen.mean_size, 2),
                            },
                            m,
                        )
                    )
                    warm = warm_sqlite_cache(tree, size)
                    progress(f"pymerkle sqlite at {size:,}: subroot cache warmed in {warm:.1f} s")
                    common["subroot_cache"] = f"warm (every cacheable subroot, {warm:.1f} s)"
                p50s, p99s, irates, crates = [], [], [], []
                clock = time.perf_counter_ns
                for _ in range(mode.runs):
                    indexes = [rnd.randrange(size) + 1 for _ in range(mode.proofs)]
                    lat = []
                    t_start = clock()
                    for i in indexes:
                        t0 = clock()
                        tree.prove_inclusion(i, size)
                        lat.append(clock() - t0)
                    irates.append(len(indexes) / ((clock() - t_start) / 1e9))
                    p50s.append(percentile(lat, 50) / 1000)
                    p99s.append(percentile(lat, 99) / 1000)
                    olds = [rnd.randrange(1, size) for _ in range(mode.proofs)]
                    t0 = time.perf_counter()
                    for old in olds:
                        tree.prove_consistency(old, size)
                    crates.append(len(olds) / (time.perf_counter() - t0))
                pp = {**common, "proofs_per_run": mode.proofs}
                name = f"pymerkle_{backend}"
                emit(figure(f"{name}_inclusion_proofs_{tag}", irates, "proofs/s", pp, m))
                emit(figure(f"{name}_inclusion_p50_{tag}", p50s, "µs", pp, m))
                emit(figure(f"{name}_inclusion_p99_{tag}", p99s, "µs", pp, m))
                emit(figure(f"{name}_consistency_proofs_{tag}", crates, "proofs/s", pp, m))
                progress(
                    f"pymerkle {backend} at {size:,}: append {statistics.median(arates):,.0f}/s, "
                    f"inclusion {statistics.median(irates):,.0f}/s (p50 "
                    f"{statistics.median(p50s):.0f} µs), consistency "
                    f"{statistics.median(crates):,.0f}/s"
                )
                if backend == "sqlite" and target == sizes[-1]:
                    cold = []
                    for _ in range(mode.runs):
                        tree.cache_clear()
                        indexes = [rnd.randrange(size) + 1 for _ in range(mode.cold_proofs)]
                        t0 = time.perf_counter()
                        for i in indexes:
                            tree.prove_inclusion(i, size)
                        cold.append(len(indexes) / (time.perf_counter() - t0))
                    emit(
                        figure(
                            f"pymerkle_sqlite_inclusion_proofs_cold_{tag}",
                            cold,
                            "proofs/s",
                            {
                                **base,
                                "tree_size": size,
                                "proofs_per_run": mode.cold_proofs,
                                "subroot_cache": "cleared before each run (as after a restart)",
                            },
                            m,
                        )
                    )
                    progress(f"pymerkle sqlite cold proofs: {statistics.median(cold):,.1f}/s")
        finally:
            close = getattr(tree, "close", None)
            if close is not None:
                close()


def bench_pymerkle_verify(
    mode: Mode, pymerkle: Any, memory: MemoryTree, checked: str, m: dict[str, Any]
) -> None:
    """pymerkle.verify_inclusion on the in-memory tree's paths (the same as
    floor_inclusion_verify's), wrapped in its InclusionProof objects untimed."""
    size = memory.size
    root = memory.root  # type: ignore[attr-defined]
    proofs = []
    for i, h, path in memory.cases:  # type: ignore[attr-defined]
        proof = pymerkle.InclusionProof("sha256", True, size, i + 1, _rule(i + 1, size), [h, *path])
        proofs.append((h, proof))
    for h, proof in proofs[:20]:
        pymerkle.verify_inclusion(h, root, proof)

    def run() -> None:
        for h, proof in proofs:
            pymerkle.verify_inclusion(h, root, proof)

    rates = rates_of(mode.runs, len(proofs), run)
    emit(
        figure(
            "pymerkle_inclusion_verify",
            rates,
            "verifications/s",
            {
                "tree_size": size,
                "verifications_per_run": len(proofs),
                "what": "pymerkle.verify_inclusion on the floor's paths",
                "rfc6962_checked": checked,
            },
            m,
        )
    )
    progress(f"pymerkle verify_inclusion: {statistics.median(rates):,.0f}/s")


def _rule(index: int, size: int) -> list[int]:
    from pymerkle.core import _inclusion_path_layout

    rule, _ = _inclusion_path_layout(index, size)
    return list(rule)


def bench_pymerkle(mode: Mode, memory: MemoryTree | None, m: dict[str, Any]) -> None:
    try:
        import pymerkle
    except ImportError as exc:
        reason = f"pymerkle is not installed ({exc}); install the extra: pip install -e '.[bench]'"
        progress(f"skipped: {reason}")
        emit({"name": "pymerkle", "skipped": reason, "machine": m})
        return
    version = getattr(pymerkle, "__version__", "?")
    checked = check_pymerkle(pymerkle)
    progress(f"pymerkle {version}: {checked}")
    checked = f"pymerkle {version}: {checked}"
    if memory is not None:
        try:
            bench_pymerkle_verify(mode, pymerkle, memory, checked, m)
        except (ImportError, AttributeError, TypeError) as exc:  # private API moved
            emit({"name": "pymerkle_inclusion_verify", "skipped": repr(exc), "machine": m})
    bench_pymerkle_backend(
        mode,
        "sqlite",
        mode.sqlite_sizes,
        lambda d: pymerkle.SqliteTree(str(d / "tree.db")),
        checked,
        m,
    )
    bench_pymerkle_backend(
        mode, "memory", mode.memory_sizes, lambda d: pymerkle.InmemoryTree(), checked, m
    )
    if not mode.quick:
        emit(
            {
                "name": "pymerkle_memory_n1e7",
                "skipped": "InmemoryTree keeps two Python objects per leaf (~760 MB at 10^6); "
                "10^7 would need ~8 GB and minutes, so it stops at 10^6",
                "machine": m,
            }
        )


# -- main -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pymerkle to 10^6, shorter runs")
    parser.add_argument("--runs", type=int, help="runs per figure (at least 5)")
    parser.add_argument(
        "--only",
        default="floors,pymerkle",
        help="comma-separated groups: floors, pymerkle",
    )
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    if args.runs is not None:
        if args.runs < 5:
            parser.error("--runs must be at least 5 (the value is a median of runs)")
        mode = replace(mode, runs=args.runs)
    only = {part.strip() for part in args.only.split(",")}
    m = machine()
    progress(machine_line(m))
    progress(f"mode: {'quick' if mode.quick else 'full'} {mode}")
    t0 = time.perf_counter()
    try:
        memory = None
        if "floors" in only:
            floor_frontier(mode, m)
            floor_lmdb(mode, m)
            floor_ed25519(mode, m)
            memory = floor_proofs_and_verify(mode, m)
        if "pymerkle" in only:
            bench_pymerkle(mode, memory, m)
    except KeyboardInterrupt:
        progress("interrupted; temporary data removed")
        return 130
    progress(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
