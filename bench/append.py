"""Benchmark the log engine (tlog.log): appends, submits, proofs, growth, disk.

Prints one JSON object per line per figure on stdout (progress goes to stderr):

1. ``append_many_durable``: Log.append_many of batches of 1,000 random leaves of
   200-500 bytes, each batch committed with fsync, one caller (entries/s).
2. ``submit_concurrent_1000``: asyncio.gather of 1,000 Log.submit on distinct leaves,
   repeated (entries/s; each answer carries its inclusion proof, as over HTTP).
3. ``submit_lone_latency`` / ``submit_lone_latency_p99``: one submit at a time on an
   idle log (ms), next to ``fsync_small_file``: pwrite 4 KiB + os.fsync on the same disk.
4. ``inclusion_proofs`` / ``consistency_proofs`` at the full tree size (proofs/s).
5. ``append_rate_at_100k``, ``append_rate_at_full`` and ``append_rate_ratio``: the
   append_many rate of a window of batches at 100k entries (each run on a fresh tree)
   and at the full size, the two in alternation (``fig5_pairs`` says why); the ratio is
   each full-size run over the median at 100k.
   Every append rate here (figures 1 and 5, the build) is timed from an idle indexer
   until the indexer has indexed the window's last leaf, so it includes the index work.
6. ``disk_per_entry_overhead``: (bytes in use by both LMDB envs) / entries minus the
   mean leaf size, with the split per named database (measured once the indexer has
   caught up).

Also ``append_many_build``: the rate of each tenth of the build to the full size.

    .venv/bin/python bench/append.py --quick     # 1,000,000 entries, ~20 s
    .venv/bin/python bench/append.py             # 10,000,000 entries, ~2-3 minutes

The value of each figure is the median of its runs (at least 5, except the disk
figure, which is a single deterministic measurement). Data goes to a temporary
directory, removed at exit (also on Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import random
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# bench/ holds scripts named like standard modules (e.g. bench/http.py), and Python puts
# a script's directory first on sys.path, where it would shadow them (verifier imports
# http.client). Take bench/ off the path and load the shared helpers by file name.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
if "_common" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("_common", _BENCH / "_common.py")
    assert _spec is not None and _spec.loader is not None
    sys.modules["_common"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["_common"])

from _common import (  # noqa: E402
    emit,
    figure,
    fsync_ms,
    machine,
    machine_line,
    percentile,
    progress,
    temp_dir,
)

from tlog.log import RAW, Log, Store  # noqa: E402

BATCH = 1000
LEAF_MIN, LEAF_MAX = 200, 500
MAP_SIZE = 64 << 30


# -- workload -------------------------------------------------------------------------


class Leaves:
    """Distinct pseudo-random leaves of LEAF_MIN..LEAF_MAX bytes, made fast.

    Each leaf is an 8-byte counter (so no two are equal and none is deduplicated)
    followed by a slice of a random pool, at a random offset, of a random length.
    """

    _SLOTS = 1 << 16
    _POOL = 1 << 20

    def __init__(self, seed: int) -> None:
        rnd = random.Random(seed)
        self._pool = rnd.randbytes(self._POOL + LEAF_MAX)
        self._lengths = [rnd.randint(LEAF_MIN, LEAF_MAX) - 8 for _ in range(self._SLOTS)]
        self._offsets = [rnd.randrange(self._POOL) for _ in range(self._SLOTS)]
        self._next = seed << 40
        self.count = 0
        self.nbytes = 0

    def batch(self, n: int = BATCH) -> list[bytes]:
        """Return n new leaves."""
        pool, lengths, offsets, slots = self._pool, self._lengths, self._offsets, self._SLOTS - 1
        start = self._next
        out = []
        for i in range(start, start + n):
            off = offsets[(i * 40503) & slots]
            out.append(i.to_bytes(8, "big") + pool[off : off + lengths[i & slots]])
        self._next += n
        self.count += n
        self.nbytes += sum(map(len, out))
        return out

    @property
    def mean_size(self) -> float:
        return self.nbytes / self.count if self.count else 0.0


@contextlib.contextmanager
def open_log(directory: Path, name: str = "bench") -> Iterator[tuple[Store, Log]]:
    """Yield a new store in directory with one RAW log; close it (writer stopped) on exit."""
    store = Store.open(directory, map_size=MAP_SIZE)
    try:
        yield store, store.create_log(name, f"bench.example/logs/{name}", kind=RAW)
    finally:
        store.close()


def drain(store: Store) -> None:
    """Wait until the background indexer has indexed every committed leaf hash."""
    store._index_queue_drain(timeout=600.0)


def append_rate(store: Store, log: Log, gen: Leaves, batches: int) -> float:
    """Append `batches` batches of BATCH leaves (generated untimed); return entries/s.

    The window starts with the indexer idle and ends when it has indexed every leaf
    appended in it: the rate includes the index work, wherever it runs.
    """
    work = [gen.batch() for _ in range(batches)]
    drain(store)
    t0 = time.perf_counter()
    for leaves in work:
        log.append_many(leaves)
    drain(store)
    return batches * BATCH / (time.perf_counter() - t0)


def grow(store: Store, log: Log, gen: Leaves, target: int) -> float:
    """Append batches until log.size >= target, then wait for the indexer; return the
    seconds spent in append_many and in that wait (leaf generation excluded)."""
    elapsed = 0.0
    while log.size < target:
        leaves = gen.batch(min(BATCH, target - log.size))
        t0 = time.perf_counter()
        log.append_many(leaves)
        elapsed += time.perf_counter() - t0
    t0 = time.perf_counter()
    drain(store)
    return elapsed + time.perf_counter() - t0


@dataclass(frozen=True)
class Mode:
    runs: int
    full_size: int
    fig1_batches: int  # batches per run of figure 1
    fig2_rounds: int  # rounds of 1,000 concurrent submits per run
    fig3_submits: int  # sequential submits per run
    fig4_proofs: int  # proofs per run
    fig5_batches: int  # batches per run at each size


QUICK = Mode(
    runs=5,
    full_size=1_000_000,
    fig1_batches=40,
    fig2_rounds=10,
    fig3_submits=200,
    fig4_proofs=5_000,
    fig5_batches=30,
)
FULL = Mode(
    runs=7,
    full_size=10_000_000,
    fig1_batches=100,
    fig2_rounds=20,
    fig3_submits=200,
    fig4_proofs=20_000,
    fig5_batches=50,
)


ISSUE_TREE_SIZE = 10_000_000
"""The tree size at which the issue sets figures 4 and 5's floors."""


def floor_params(floor: str, ok: bool) -> dict[str, Any]:
    return {"floor": floor, "meets_floor": ok}


def at_size(floor: str, size: int) -> str:
    """Return a floor's text, saying so when it is judged below the issue's tree size
    (quick mode): such a verdict is indicative only, never the issue's."""
    if size >= ISSUE_TREE_SIZE:
        return floor
    return f"{floor}, set at {ISSUE_TREE_SIZE:,}: measured at {size:,} only, indicative"


# -- figures --------------------------------------------------------------------------


def fig_append_many(mode: Mode, m: dict[str, Any]) -> None:
    rates = []
    for run in range(mode.runs):
        gen = Leaves(seed=100 + run)
        with temp_dir() as d, open_log(d) as (store, log):
            append_rate(store, log, gen, 2)  # warm up (first pages, first tiles)
            rates.append(append_rate(store, log, gen, mode.fig1_batches))
        progress(f"append_many run {run + 1}/{mode.runs}: {rates[-1]:,.0f} entries/s")
    median = statistics.median(rates)
    emit(
        figure(
            "append_many_durable",
            rates,
            "entries/s",
            {
                "batch": BATCH,
                "leaf_bytes": [LEAF_MIN, LEAF_MAX],
                "entries_per_run": mode.fig1_batches * BATCH,
                "callers": 1,
                "fsync": "every batch",
                **floor_params(">= 100000 (goal 150000)", median >= 100_000),
                "meets_goal": median >= 150_000,
            },
            m,
        )
    )


def fig_submit_concurrent(mode: Mode, m: dict[str, Any]) -> None:
    async def run_rounds(log: Log, gen: Leaves, rounds: int) -> float:
        await asyncio.gather(*(log.submit(leaf) for leaf in gen.batch()))  # warm up
        elapsed = 0.0
        for _ in range(rounds):
            leaves = gen.batch()
            t0 = time.perf_counter()
            await asyncio.gather(*(log.submit(leaf) for leaf in leaves))
            elapsed += time.perf_counter() - t0
        return rounds * BATCH / elapsed

    rates = []
    for run in range(mode.runs):
        gen = Leaves(seed=200 + run)
        with temp_dir() as d, open_log(d) as (_store, log):
            rates.append(asyncio.run(run_rounds(log, gen, mode.fig2_rounds)))
        progress(f"submit x1000 run {run + 1}/{mode.runs}: {rates[-1]:,.0f} entries/s")
    emit(
        figure(
            "submit_concurrent_1000",
            rates,
            "entries/s",
            {
                "waiters": BATCH,
                "rounds_per_run": mode.fig2_rounds,
                "leaf_bytes": [LEAF_MIN, LEAF_MAX],
                "proof": True,
                **floor_params(">= 30000", statistics.median(rates) >= 30_000),
            },
            m,
        )
    )


def fig_submit_lone(mode: Mode, m: dict[str, Any]) -> None:
    async def sequential(log: Log, gen: Leaves, n: int) -> list[float]:
        leaves = gen.batch(n + 10)
        for leaf in leaves[:10]:  # warm up
            await log.submit(leaf)
        out = []
        for leaf in leaves[10:]:
            t0 = time.perf_counter()
            await log.submit(leaf)
            out.append((time.perf_counter() - t0) * 1000)
        return out

    medians, p99s, fsyncs = [], [], []
    for run in range(mode.runs):
        gen = Leaves(seed=300 + run)
        with temp_dir() as d:
            fsyncs.append(statistics.median(fsync_ms(d, samples=50)))
            with open_log(d / "store") as (_store, log):
                log.append_many(gen.batch())  # a small, non-empty tree
                lat = asyncio.run(sequential(log, gen, mode.fig3_submits))
        medians.append(statistics.median(lat))
        p99s.append(percentile(lat, 99))
        progress(
            f"lone submit run {run + 1}/{mode.runs}: median {medians[-1]:.2f} ms, "
            f"p99 {p99s[-1]:.2f} ms, fsync {fsyncs[-1]:.2f} ms"
        )
    fsync = statistics.median(fsyncs)
    latency = statistics.median(medians)
    bound = 2.0 + fsync
    emit(
        figure(
            "fsync_small_file",
            fsyncs,
            "ms",
            {"write_bytes": 4096, "samples_per_run": 50, "what": "pwrite + os.fsync, median"},
            m,
        )
    )
    common = {
        "submits_per_run": mode.fig3_submits,
        "tree_size": BATCH,
        "fsync_ms": round(fsync, 4),
    }
    emit(
        figure(
            "submit_lone_latency",
            medians,
            "ms",
            {
                **common,
                "what": "median per run",
                "overhead_over_fsync_ms": round(latency - fsync, 3),
                **floor_params(f"<= 2 ms + one fsync = {bound:.2f} ms", latency <= bound),
            },
            m,
        )
    )
    emit(figure("submit_lone_latency_p99", p99s, "ms", {**common, "what": "p99 per run"}, m))


def fig_big_tree(mode: Mode, m: dict[str, Any], d: Path) -> None:
    """Figures 4-6 (and 5's two rates) on one tree built to mode.full_size."""
    gen = Leaves(seed=1)
    full = mode.full_size
    with open_log(d / "big") as (store, log):
        grow(store, log, gen, 100_000)
        # Build to the full size, timing each tenth.
        segments: list[float] = []
        start = log.size
        step = (full - start) // 10
        for k in range(1, 11):
            target = full if k == 10 else start + k * step
            before = log.size
            seconds = grow(store, log, gen, target)
            segments.append((log.size - before) / seconds)
            progress(f"built to {log.size:,}: {segments[-1]:,.0f} entries/s")
        size = log.size

        # Figure 4: proofs at the full size.
        rnd = random.Random(4)
        incl, cons = [], []
        for _ in range(mode.runs):
            indexes = [rnd.randrange(size) for _ in range(mode.fig4_proofs)]
            t0 = time.perf_counter()
            for i in indexes:
                log.inclusion_proof(i, size)
            incl.append(len(indexes) / (time.perf_counter() - t0))
            olds = [rnd.randrange(1, size) for _ in range(mode.fig4_proofs)]
            t0 = time.perf_counter()
            for old in olds:
                log.consistency_proof(old, size)
            cons.append(len(olds) / (time.perf_counter() - t0))
        progress(
            f"proofs at {size:,}: inclusion {statistics.median(incl):,.0f}/s, "
            f"consistency {statistics.median(cons):,.0f}/s"
        )

        # Figure 6: disk per entry, while the store is open (stats need the envs).
        disk = disk_split(store, log, gen.mean_size)

        # Figure 5 (after 4 and 6, which are measured at exactly the full size): the
        # rate at 100k and at the full size, in alternation (see fig5_pairs).
        base = log.size
        at_100k, at_full = fig5_pairs(mode, d, gen, store, log)
        progress(
            f"append rate at 100k: {statistics.median(at_100k):,.0f} entries/s, "
            f"at ~{base:,}: {statistics.median(at_full):,.0f} entries/s"
        )
    # The store is closed: actual file sizes on disk, for the record.
    disk["files_bytes"] = {
        env: (d / "big" / env / "data.mdb").stat().st_blocks * 512 for env in ("lmdb", "index")
    }

    emit(
        figure(
            "append_many_build",
            segments,
            "entries/s",
            {
                "from_size": start,
                "to_size": full,
                "what": "one run per tenth of the build",
                "batch": BATCH,
            },
            m,
        )
    )
    r100 = statistics.median(at_100k)
    rfull = statistics.median(at_full)
    p5 = {"batches_per_run": mode.fig5_batches, "batch": BATCH}
    emit(figure("append_rate_at_100k", at_100k, "entries/s", {**p5, "tree_size": 100_000}, m))
    emit(figure("append_rate_at_full", at_full, "entries/s", {**p5, "tree_size": base}, m))
    # Each full-size run is set against the median rate at 100k (not against its partner
    # in time, whose tree is another one), so the figure's value (the median of these
    # ratios) is the ratio of the two medians.
    ratios = [f / r100 for f in at_full]
    emit(
        figure(
            "append_rate_ratio",
            ratios,
            "ratio",
            {
                "what": f"rate at {base:,} (each run) / median rate at 100,000",
                "ratio_of_medians": round(rfull / r100, 4),
                **floor_params(
                    at_size(">= 0.90 (within 10%)", base), statistics.median(ratios) >= 0.9
                ),
            },
            m,
        )
    )
    pproof = {"tree_size": size, "proofs_per_run": mode.fig4_proofs}
    emit(
        figure(
            "inclusion_proofs",
            incl,
            "proofs/s",
            {
                **pproof,
                "index": "uniform random",
                **floor_params(at_size(">= 20000", size), statistics.median(incl) >= 20_000),
            },
            m,
        )
    )
    emit(
        figure(
            "consistency_proofs",
            cons,
            "proofs/s",
            {**pproof, "old": "uniform random in [1, size)", "new": "size"},
            m,
        )
    )
    overhead = disk.pop("overhead_per_entry")
    emit(
        figure(
            "disk_per_entry_overhead",
            [overhead],
            "bytes",
            {
                **disk,
                "what": "(log env + index env bytes in use) / entries - mean leaf size",
                **floor_params("<= 160 bytes over the leaf", overhead <= 160),
            },
            m,
        )
    )


def fig5_pairs(
    mode: Mode, d: Path, gen: Leaves, store: Store, log: Log
) -> tuple[list[float], list[float]]:
    """Figure 5's windows: return (rates at 100k, rates on the big tree), one of each
    per run, taken in alternation (100k first in even runs, the big tree first in odd
    ones).

    Each 100k window is on a fresh tree grown to exactly 100,000 entries (windows on one
    tree would drift to larger sizes). The two sides are measured in the same minutes, so
    that the machine's drift (this VM's rates move by a fifth over minutes) falls on both,
    and no tree is deleted until all windows are done: on this VM a page the kernel has
    freed is soon handed back to the host, and the next first touch of fresh memory costs
    about 3.4 s per GiB, so a window writing into the page cache of a tree deleted just
    before runs faster than one writing into fresh memory. Deleting each 100k tree before
    the next was measured to flatter whichever side came right after a deletion (ratio
    0.77 and 0.82 with all 100k windows first, 1.14 when alternating; docs/benchmarks.md).
    """
    at_100k: list[float] = []
    at_full: list[float] = []
    for run in range(mode.runs):
        if run % 2:
            at_full.append(append_rate(store, log, gen, mode.fig5_batches))
        with open_log(d / f"at-100k-{run}") as (small_store, small_log):
            grow(small_store, small_log, gen, 100_000)
            at_100k.append(append_rate(small_store, small_log, gen, mode.fig5_batches))
        if not run % 2:
            at_full.append(append_rate(store, log, gen, mode.fig5_batches))
    for run in range(mode.runs):
        shutil.rmtree(d / f"at-100k-{run}")
    return at_100k, at_full


def disk_split(store: Store, log: Log, mean_leaf: float) -> dict[str, Any]:
    """Return bytes per entry of each named database and in total, from LMDB stats, once
    the indexer has caught up (every leaf hash is in the index env)."""
    drain(store)
    storage = store.storage
    entries = log.size
    in_use = storage.disk_bytes()
    total = sum(in_use.values())
    dbs = log.dbs
    split: dict[str, float] = {}
    for env_name, env, parts in (
        ("log", storage.env, ("leaves", "tiles", "checkpoints", "bodies", "idempotency")),
        ("index", storage.ienv, ("hashes", "artifacts")),
    ):
        psize = env.stat()["psize"]
        counted = 0
        with env.begin() as txn:
            for part in parts:
                s = txn.stat(getattr(dbs, part))
                pages = s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]
                counted += pages * psize
                if pages:
                    split[f"{env_name}.{part}"] = round(pages * psize / entries, 2)
        main = env.stat()
        counted += (main["branch_pages"] + main["leaf_pages"] + main["overflow_pages"]) * psize
        # The rest: the two meta pages, the free list and pages freed but not yet reused.
        split[f"{env_name}.free+meta"] = round((in_use[env_name] - counted) / entries, 2)
    per_entry = total / entries
    return {
        "entries": entries,
        "mean_leaf_bytes": round(mean_leaf, 2),
        "bytes_in_use": in_use,
        "bytes_per_entry": round(per_entry, 2),
        "split_bytes_per_entry": split,
        "overhead_per_entry": round(per_entry - mean_leaf, 2),
    }


# -- main -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="stop at 1,000,000 entries, fewer/shorter runs"
    )
    parser.add_argument("--runs", type=int, help="runs per figure (at least 5)")
    parser.add_argument("--size", type=int, help="full tree size (default 10M, quick 1M)")
    parser.add_argument(
        "--only",
        default="1,2,3,4",
        help="comma-separated figure groups: 1 append_many, 2 concurrent submit, "
        "3 lone submit, 4 the big tree (figures 4, 5, 6)",
    )
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    if args.runs is not None:
        if args.runs < 5:
            parser.error("--runs must be at least 5 (the value is a median of runs)")
        mode = Mode(**{**mode.__dict__, "runs": args.runs})
    if args.size is not None:
        if args.size < 200_000:
            parser.error("--size must be at least 200,000")
        mode = Mode(**{**mode.__dict__, "full_size": args.size})
    only = {part.strip() for part in args.only.split(",")}

    m = machine()
    progress(machine_line(m))
    progress(f"mode: {'quick' if args.quick else 'full'} {mode}")
    t0 = time.perf_counter()
    try:
        if "1" in only:
            fig_append_many(mode, m)
        if "2" in only:
            fig_submit_concurrent(mode, m)
        if "3" in only:
            fig_submit_lone(mode, m)
        if "4" in only:
            with temp_dir() as d:
                fig_big_tree(mode, m, d)
    except KeyboardInterrupt:
        progress("interrupted; temporary data removed")
        return 130
    progress(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
