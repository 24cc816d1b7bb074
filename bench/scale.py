"""Scale curves of the log engine: append rate, proof latency and disk per entry by tree size.

One RAW log (tlog.log.Store) is grown with Log.append_many in batches of 1,000 leaves of
200-500 bytes, each batch one fsync'd commit. At each tree size (10^4, 10^5, 10^6, and
in full mode 10^7 and 10^8 if the disk allows) it measures, in this order:

* ``scale_disk_bytes_per_entry_n1eK``: Storage.disk_bytes() of both LMDB environments
  (after the background indexer has caught up) / entries, next to the mean leaf size.
  Deterministic: one measurement.
* ``scale_inclusion_p50_n1eK`` / ``_p99_`` (µs) and ``scale_inclusion_proofs_n1eK``
  (proofs/s): Log.inclusion_proof(i, N) for uniform random i, at exactly N.
* ``scale_consistency_proofs_n1eK`` (proofs/s): Log.consistency_proof(m, N), random m.
* ``scale_append_rate_n1eK`` (entries/s): append_many of the last few batches that
  take the tree to N (measured first; ``params`` give the window, from/to).

Each figure but the disk one is the median of ``runs`` runs (at least 5).

    .venv/bin/python bench/scale.py --quick     # 10^4 .. 10^6, about 20 s
    .venv/bin/python bench/scale.py             # up to 10^8 if the disk has room

Full mode and 10^8: the tree takes about 530 bytes per entry (350-byte leaves + ~180
bytes of leaf keys, tile records and the hash index), so 10^8 entries need ~56 GB. The
script checks the free space of the temporary directory with shutil.disk_usage before
each size (estimate from the bytes per entry measured so far, +10%, and 10 GiB kept
free) and stops at the largest size that fits, saying so in a ``skipped`` record.
``--max-size`` caps it by hand. Data goes to a temporary directory, removed at exit
(also on Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# Python puts a script's directory first on sys.path, where a script named like a module
# would shadow it (bench/http.py did, before it became bench/http_service.py). Keep bench/
# off the path and load the shared helpers by file name.
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
    machine,
    machine_line,
    percentile,
    progress,
    temp_dir,
)

BATCH = 1000
LEAF_MIN, LEAF_MAX = 200, 500
GIB = 1 << 30
RESERVE_BYTES = 10 * GIB  # always leave this much of the disk free
BYTES_PER_ENTRY_GUESS = 560.0  # before anything is measured (530.7 measured at 10^7)


# -- workload (shared with bench/peers.py) --------------------------------------------


class Leaves:
    """Distinct pseudo-random leaves of LEAF_MIN..LEAF_MAX bytes, made fast.

    Each leaf is an 8-byte counter (so no two are equal and none is deduplicated)
    followed by a slice of a random pool at a random offset, of a random length.
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


def size_tag(n: int) -> str:
    """Return 'n1e6' for 1,000,000 (a power of ten), else 'n<digits>'."""
    exp = len(str(n)) - 1
    return f"n1e{exp}" if n == 10**exp else f"n{n}"


def batches_per_run(size: int) -> int:
    """Batches appended per append-rate run for a tree of `size`: the runs are the last
    batches before the tree reaches `size`, so few at small sizes (at 10^4, 5 runs of 2
    batches are the whole build)."""
    return max(2, min(20, size // 50_000))


# -- modes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    quick: bool
    runs: int
    sizes: tuple[int, ...]
    proofs: int  # proofs per run, each kind


QUICK = Mode(quick=True, runs=5, sizes=(10**4, 10**5, 10**6), proofs=5_000)
FULL = Mode(quick=False, runs=5, sizes=(10**4, 10**5, 10**6, 10**7, 10**8), proofs=10_000)


def disk_room(directory: Path) -> int:
    """Return the bytes free for an unprivileged writer in directory's filesystem."""
    return shutil.disk_usage(directory).free


def fits(size: int, current: int, bytes_per_entry: float, free: int) -> tuple[bool, dict[str, Any]]:
    """Decide whether growing the tree from `current` to `size` entries fits on the disk."""
    need = (size - current) * bytes_per_entry * 1.10
    info = {
        "size": size,
        "needs_bytes": int(need),
        "free_bytes": free,
        "reserve_bytes": RESERVE_BYTES,
        "bytes_per_entry_estimate": round(bytes_per_entry, 1),
    }
    return need + RESERVE_BYTES <= free, info


# -- the engine -----------------------------------------------------------------------


@contextmanager
def open_log(directory: Path, map_size: int) -> Iterator[tuple[Any, Any]]:
    from tlog.log import RAW, Store

    store = Store.open(directory, map_size=map_size)
    try:
        yield store, store.create_log("scale", "bench.example/logs/scale", kind=RAW)
    finally:
        store.close()


def grow(log: Any, gen: Leaves, target: int) -> float:
    """Append batches until log.size >= target; return the seconds spent in append_many."""
    elapsed = 0.0
    while log.size < target:
        leaves = gen.batch(min(BATCH, target - log.size))
        t0 = time.perf_counter()
        log.append_many(leaves)
        elapsed += time.perf_counter() - t0
    return elapsed


def drain_indexer(store: Any) -> None:
    """Wait for the background leaf-hash indexer (if the engine has one) to catch up,
    so the index env's pages are counted."""
    drain = getattr(store, "_index_queue_drain", None)
    if drain is not None:
        drain(timeout=600.0)


def append_window(
    mode: Mode, log: Any, gen: Leaves, size: int
) -> tuple[list[float], tuple[int, float]]:
    """Grow the tree to `size`: untimed-by-run up to the window, then the last
    runs x batches x 1,000 entries one run at a time. Return each run's rate, and the
    window's start with the build rate before it (0.0 if there was nothing to build)."""
    nb = batches_per_run(size)
    start = max(log.size, size - mode.runs * nb * BATCH)
    before = log.size
    seconds = grow(log, gen, start)
    build_rate = (start - before) / seconds if seconds else 0.0
    rates = []
    for _ in range(mode.runs):
        work = [gen.batch(min(BATCH, size - log.size - k * BATCH)) for k in range(nb)]
        work = [w for w in work if w]
        elapsed = 0.0
        for leaves in work:
            t0 = time.perf_counter()
            log.append_many(leaves)
            elapsed += time.perf_counter() - t0
        if work:
            rates.append(sum(map(len, work)) / elapsed)
    return rates, (start, build_rate)


def measure_size(
    mode: Mode,
    store: Any,
    log: Any,
    gen: Leaves,
    arates: list[float],
    window: tuple[int, float],
    m: dict[str, Any],
) -> float:
    """Emit the figures at the current tree size; return its bytes per entry."""
    size = log.size
    tag = size_tag(size)
    rnd = random.Random(size)
    common = {"tree_size": size, "batch": BATCH, "leaf_bytes": [LEAF_MIN, LEAF_MAX]}
    window_start, build_rate = window
    emit(
        figure(
            f"scale_append_rate_{tag}",
            arates,
            "entries/s",
            {
                **common,
                "what": "append_many rate of the last batches before the tree reached size",
                "window": [window_start, size],
                "batches_per_run": batches_per_run(size),
                "fsync": "every batch",
                "build_rate_before_window": round(build_rate, 1),
            },
            m,
        )
    )

    # Disk: both environments, indexer caught up.
    drain_indexer(store)
    in_use = store.storage.disk_bytes()
    total = sum(in_use.values())
    per_entry = total / size
    emit(
        figure(
            f"scale_disk_bytes_per_entry_{tag}",
            [per_entry],
            "bytes",
            {
                **common,
                "what": "Storage.disk_bytes() of both LMDB envs / entries (deterministic: "
                "one measurement)",
                "bytes_in_use": in_use,
                "mean_leaf_bytes": round(gen.mean_size, 2),
                "overhead_over_leaf": round(per_entry - gen.mean_size, 2),
            },
            m,
        )
    )

    # Inclusion proofs at exactly this size: latency of each, and the rate.
    p50s, p99s, rates = [], [], []
    for _ in range(mode.runs):
        indexes = [rnd.randrange(size) for _ in range(mode.proofs)]
        lat = []
        clock = time.perf_counter_ns
        t_start = clock()
        for i in indexes:
            t0 = clock()
            log.inclusion_proof(i, size)
            lat.append(clock() - t0)
        total_ns = clock() - t_start
        p50s.append(percentile(lat, 50) / 1000)
        p99s.append(percentile(lat, 99) / 1000)
        rates.append(len(indexes) / (total_ns / 1e9))
    pp = {**common, "proofs_per_run": mode.proofs, "index": "uniform random in [0, size)"}
    emit(figure(f"scale_inclusion_p50_{tag}", p50s, "µs", {**pp, "what": "p50 per run"}, m))
    emit(figure(f"scale_inclusion_p99_{tag}", p99s, "µs", {**pp, "what": "p99 per run"}, m))
    emit(figure(f"scale_inclusion_proofs_{tag}", rates, "proofs/s", pp, m))

    # Consistency proofs from a random older size to this one.
    crates = []
    for _ in range(mode.runs):
        olds = [rnd.randrange(1, size) for _ in range(mode.proofs)]
        t0 = time.perf_counter()
        for old in olds:
            log.consistency_proof(old, size)
        crates.append(len(olds) / (time.perf_counter() - t0))
    emit(
        figure(
            f"scale_consistency_proofs_{tag}",
            crates,
            "proofs/s",
            {**common, "proofs_per_run": mode.proofs, "old": "uniform random in [1, size)"},
            m,
        )
    )
    progress(
        f"{size:>11,}: append {statistics.median(arates):>9,.0f}/s, inclusion "
        f"p50 {statistics.median(p50s):.1f} µs p99 {statistics.median(p99s):.1f} µs "
        f"({statistics.median(rates):,.0f}/s), consistency {statistics.median(crates):,.0f}/s, "
        f"{per_entry:.1f} bytes/entry"
    )
    return per_entry


def run(mode: Mode, max_size: int | None, m: dict[str, Any]) -> None:
    sizes = [s for s in mode.sizes if max_size is None or s <= max_size]
    if max_size is not None and len(sizes) < len(mode.sizes):
        dropped = [s for s in mode.sizes if s > max_size]
        emit(
            {
                "name": "scale",
                "skipped": f"sizes {', '.join(f'{s:,}' for s in dropped)} left out by "
                f"--max-size {max_size:,}",
                "params": {"sizes": dropped},
                "machine": m,
            }
        )
    gen = Leaves(seed=7)
    tmp_root = Path(tempfile.gettempdir())
    map_size = max(64 * GIB, int(max(sizes, default=0) * BYTES_PER_ENTRY_GUESS * 1.5))
    with temp_dir("bucket-bench-scale-") as d, open_log(d, map_size) as (store, log):
        per_entry = BYTES_PER_ENTRY_GUESS
        for size in sizes:
            ok, info = fits(size, log.size, per_entry, disk_room(tmp_root))
            if not ok:
                reason = (
                    f"{size:,} entries would need ~{info['needs_bytes'] / 1e9:.1f} GB more at "
                    f"{per_entry:.0f} bytes/entry, plus {RESERVE_BYTES / GIB:.0f} GiB kept "
                    f"free; {info['free_bytes'] / 1e9:.0f} GB are free in {tmp_root}. "
                    f"Largest size measured: {log.size:,}."
                )
                progress(f"stopping: {reason}")
                emit(
                    {
                        "name": f"scale_{size_tag(size)}",
                        "skipped": reason,
                        "params": info,
                        "machine": m,
                    }
                )
                break
            arates, window = append_window(mode, log, gen, size)
            per_entry = measure_size(mode, store, log, gen, arates, window, m)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 10^4..10^6 only")
    parser.add_argument("--runs", type=int, help="runs per figure (at least 5)")
    parser.add_argument("--max-size", type=int, help="largest tree size to build")
    parser.add_argument("--proofs", type=int, help="proofs per run (default 5,000; full 10,000)")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    if args.runs is not None:
        if args.runs < 5:
            parser.error("--runs must be at least 5 (the value is a median of runs)")
        mode = replace(mode, runs=args.runs)
    if args.proofs is not None:
        mode = replace(mode, proofs=args.proofs)
    m = machine()
    progress(machine_line(m))
    progress(f"mode: {'quick' if mode.quick else 'full'} {mode}")
    t0 = time.perf_counter()
    try:
        run(mode, args.max_size, m)
    except KeyboardInterrupt:
        progress("interrupted; temporary data removed")
        return 130
    progress(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
