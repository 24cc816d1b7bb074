"""Write the generated part of docs/benchmarks.md (and its plots) from a results file.

    .venv/bin/python bench/report.py                       # the newest bench/results/*.json
    .venv/bin/python bench/report.py bench/results/2026-11-28.json

The figures come from that results file. A script it did not run (a run with
``--only``) is filled in from the newest other results file in the same directory in
which that script ran and succeeded; every table says which mode (quick or full) and
which file its figures came from. Only the text between ``<!-- generated:start -->``
and ``<!-- generated:end -->`` is replaced; everything else in the file (the
hand-written sections of each script's owner) is kept byte for byte. Without the
markers, the generated block is inserted before the first ``## `` heading. Plots are
PNG files in docs/benchmarks/, drawn with matplotlib if it is installed
(``.[bench]``); without it the text says they were skipped. Published figures of
other logs are quoted with their source and hardware and marked as not measured here.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_BENCH = Path(__file__).resolve().parent
ROOT = _BENCH.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
RESULTS = _BENCH / "results"
DOC = ROOT / "docs" / "benchmarks.md"
PLOTS = ROOT / "docs" / "benchmarks"
START = "<!-- generated:start -->"
END = "<!-- generated:end -->"

LOWER_IS_BETTER = {"ms", "µs", "us", "s", "bytes"}
SIZES = (10**4, 10**5, 10**6, 10**7, 10**8)
SCRIPTS = (
    "bench/append.py",
    "bench/http_service.py",
    "bench/verify.py",
    "bench/peers.py",
    "bench/scale.py",
)
RENAMED = {"bench/http.py": "bench/http_service.py"}  # older results use the old names


def script_name(name: object) -> str:
    """Return a script's current name (results written before a rename use the old)."""
    return RENAMED.get(str(name), str(name))


# -- reading the results --------------------------------------------------------------


def newest_results(directory: Path = RESULTS) -> Path:
    """Return the results file that finished last."""
    best: tuple[str, Path] | None = None
    for path in directory.glob("*.json"):
        try:
            finished = str(json.loads(path.read_text()).get("finished", ""))
        except (OSError, ValueError):
            continue
        if best is None or finished > best[0]:
            best = (finished, path)
    if best is None:
        raise FileNotFoundError(f"no results in {directory}")
    return best[1]


def gather(primary: Path, directory: Path | None = None) -> dict[str, Any]:
    """Return the results in primary, each figure tagged with the ``mode`` and the
    ``results`` file it came from, and figures of the scripts primary did not run (a
    run with ``--only``) taken from the newest other results file in directory
    (default: primary's) where that script ran and succeeded; those are listed under
    ``filled_in``. A script primary ran, even one that failed, is never filled in."""
    results = json.loads(primary.read_text())
    mode = results.get("mode", "?")
    figures = [
        {**f, "script": script_name(f.get("script", "?")), "mode": mode, "results": primary.name}
        for f in results.get("figures", [])
    ]
    ran = {script_name(s.get("script")) for s in results.get("scripts", [])}
    ran |= {f["script"] for f in figures}
    others = []
    for path in (primary.parent if directory is None else directory).glob("*.json"):
        if path.resolve() == primary.resolve():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("figures"), list):
            others.append((str(data.get("finished", "")), path, data))
    others.sort(key=lambda t: (t[0], t[1].name), reverse=True)
    filled: list[dict[str, Any]] = []
    for script in SCRIPTS:
        if script in ran:
            continue
        for _, path, data in others:
            record = next(
                (
                    s
                    for s in data.get("scripts", [])
                    if script_name(s.get("script")) == script and s.get("status") == "ok"
                ),
                None,
            )
            found = [f for f in data["figures"] if script_name(f.get("script")) == script]
            if record is None or not found:
                continue
            other_mode = data.get("mode", "?")
            figures += [
                {**f, "script": script, "mode": other_mode, "results": path.name} for f in found
            ]
            filled.append(
                {
                    **record,
                    "script": script,
                    "mode": other_mode,
                    "results": path.name,
                    "started": data.get("started", "?"),
                    "revision": data.get("revision", "?"),
                }
            )
            break
    return {**results, "figures": figures, "filled_in": filled}


class Figures:
    """The figures of a run, by name."""

    def __init__(self, figures: Iterable[dict[str, Any]]) -> None:
        self.all = [f for f in figures if "value" in f]
        self.by_name = {f["name"]: f for f in self.all}

    def get(self, name: str) -> dict[str, Any] | None:
        return self.by_name.get(name)

    def value(self, name: str) -> float | None:
        f = self.by_name.get(name)
        return None if f is None else float(f["value"])

    def param(self, name: str, key: str) -> Any:
        f = self.by_name.get(name)
        return None if f is None else f.get("params", {}).get(key)


def size_tag(n: int) -> str:
    exp = len(str(n)) - 1
    return f"n1e{exp}" if n == 10**exp else f"n{n}"


def pow10(n: int) -> str:
    exp = len(str(n)) - 1
    return f"10^{exp}" if n == 10**exp else f"{n:,}"


# -- numbers --------------------------------------------------------------------------


def num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def ratio_text(r: float | None) -> str:
    if r is None or r <= 0 or math.isnan(r):
        return "–"
    if r >= 100:
        return f"{r:,.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    return f"{r:.2f}×"


def advantage(ours: float, ref: float, unit: str) -> float | None:
    """How ours compares with ref, oriented so that > 1 means ours is better."""
    if not ours or not ref:
        return None
    return ref / ours if unit in LOWER_IS_BETTER else ours / ref


@dataclass
class Cell:
    label: str
    ratio: float | None

    def text(self) -> str:
        return f"{ratio_text(self.ratio)} {self.label}" if self.ratio else ""


# -- which figure compares with which -------------------------------------------------


def comparisons(figs: Figures) -> dict[str, tuple[list[Cell], list[Cell]]]:
    """Return {figure name: (cells against floors, cells against pymerkle)}."""
    out: dict[str, tuple[list[Cell], list[Cell]]] = {}

    def fig_cmp(
        name: str,
        floors: Iterable[tuple[str, str | float | None]] = (),
        peers: Iterable[tuple[str, str | float | None]] = (),
    ) -> None:
        f = figs.get(name)
        if f is None:
            return
        unit = f["unit"]
        ours = float(f["value"])

        def cells(refs: Iterable[tuple[str, str | float | None]]) -> list[Cell]:
            result = []
            for label, ref in refs:
                value = figs.value(ref) if isinstance(ref, str) else ref
                if value:
                    result.append(Cell(label, advantage(ours, value, unit)))
            return result

        out[name] = (cells(floors), cells(peers))

    lmdb = ("of raw LMDB puts", "floor_lmdb_batched_puts")
    frontier = ("of the hashlib frontier", "floor_frontier_append")
    fsync = ("of one fsync", "fsync_small_file")

    # Engine (bench/append.py).
    fig_cmp(
        "append_many_durable",
        [lmdb, frontier],
        [
            ("pymerkle SQLite @10^4", "pymerkle_sqlite_append_n1e4"),
            ("pymerkle memory @10^4", "pymerkle_memory_append_n1e4"),
        ],
    )
    fig_cmp("submit_concurrent_1000", [lmdb, frontier])
    fig_cmp("submit_lone_latency", [fsync])
    fig_cmp("submit_lone_latency_p99", [fsync])
    fig_cmp("append_rate_at_100k", [lmdb])
    fig_cmp("append_rate_at_full", [lmdb])
    fig_cmp("append_many_build", [lmdb])
    size = figs.param("inclusion_proofs", "tree_size")
    if size:
        tag = size_tag(int(size))
        mem = (
            "floor_inclusion_proofs_memory"
            if figs.param("floor_inclusion_proofs_memory", "tree_size") == size
            else None
        )
        fig_cmp(
            "inclusion_proofs",
            [("of in-memory proofs", mem)],
            [
                ("pymerkle SQLite (warm)", f"pymerkle_sqlite_inclusion_proofs_{tag}"),
                ("pymerkle SQLite (cold)", f"pymerkle_sqlite_inclusion_proofs_cold_{tag}"),
                ("pymerkle memory", f"pymerkle_memory_inclusion_proofs_{tag}"),
            ],
        )
        fig_cmp(
            "consistency_proofs",
            [],
            [
                ("pymerkle SQLite (warm)", f"pymerkle_sqlite_consistency_proofs_{tag}"),
                ("pymerkle memory", f"pymerkle_memory_consistency_proofs_{tag}"),
            ],
        )
    over = figs.get("disk_per_entry_overhead")
    if over:
        tag = size_tag(int(over["params"].get("entries", 0) or 1))
        pm = figs.get(f"pymerkle_sqlite_disk_bytes_per_entry_{tag}")
        if pm:
            pm_over = float(pm["value"]) - float(pm["params"].get("mean_leaf_bytes", 0))
            fig_cmp("disk_per_entry_overhead", [], [("pymerkle SQLite", pm_over)])

    # HTTP (bench/http_service.py).
    bare = ("of the bare app", "bare_submit")
    fig_cmp("http_submit_single", [bare])
    fig_cmp("http_submit_single_ungoverned", [bare])
    for p in ("p50", "p99"):
        fig_cmp(
            f"http_submit_single_{p}",
            [("of the bare app", figs.param("bare_submit", f"{p}_ms"))],
        )
    fig_cmp("http_submit_batch100", [lmdb])
    fig_cmp("http_submit_batch100_ungoverned", [lmdb])
    for what in ("checkpoint", "tile", "inclusion"):
        fig_cmp(f"http_read_{what}", [("of the bare GET", "bare_get")])

    # Auditor (bench/verify.py) and the verifier.
    ed = ("of Ed25519 verify", "floor_ed25519_verify")
    plain = ("of the hashlib loop", "floor_inclusion_verify")
    pmv = [("pymerkle verify", "pymerkle_inclusion_verify")]
    fig_cmp("receipt_verify_no_cache", [ed])
    fig_cmp("receipt_verify_cached", [plain], pmv)
    fig_cmp("verifier_inclusion_verify", [plain], pmv)
    fig_cmp("audit_local_dir", [frontier])

    # Scale curves (bench/scale.py) against pymerkle at the same sizes.
    for n in SIZES:
        tag = size_tag(n)
        mem_here = figs.param("floor_inclusion_proofs_memory", "tree_size") == n
        fig_cmp(
            f"scale_append_rate_{tag}",
            [lmdb],
            [
                ("pymerkle SQLite", f"pymerkle_sqlite_append_{tag}"),
                ("pymerkle memory", f"pymerkle_memory_append_{tag}"),
            ],
        )
        fig_cmp(
            f"scale_inclusion_proofs_{tag}",
            [("of in-memory proofs", "floor_inclusion_proofs_memory" if mem_here else None)],
            [
                ("pymerkle SQLite (warm)", f"pymerkle_sqlite_inclusion_proofs_{tag}"),
                ("pymerkle SQLite (cold)", f"pymerkle_sqlite_inclusion_proofs_cold_{tag}"),
                ("pymerkle memory", f"pymerkle_memory_inclusion_proofs_{tag}"),
            ],
        )
        for p in ("p50", "p99"):
            floor_p = figs.param("floor_inclusion_proofs_memory", f"{p}_us") if mem_here else None
            fig_cmp(
                f"scale_inclusion_{p}_{tag}",
                [("of in-memory proofs", floor_p)],
                [
                    ("pymerkle SQLite (warm)", f"pymerkle_sqlite_inclusion_{p}_{tag}"),
                    ("pymerkle memory", f"pymerkle_memory_inclusion_{p}_{tag}"),
                ],
            )
        fig_cmp(
            f"scale_consistency_proofs_{tag}",
            [],
            [
                ("pymerkle SQLite (warm)", f"pymerkle_sqlite_consistency_proofs_{tag}"),
                ("pymerkle memory", f"pymerkle_memory_consistency_proofs_{tag}"),
            ],
        )
        fig_cmp(
            f"scale_disk_bytes_per_entry_{tag}",
            [
                (
                    "of the leaf bytes",
                    figs.param(f"scale_disk_bytes_per_entry_{tag}", "mean_leaf_bytes"),
                )
            ],
            [("pymerkle SQLite", f"pymerkle_sqlite_disk_bytes_per_entry_{tag}")],
        )
    return out


# -- the tables -----------------------------------------------------------------------

GROUPS = (
    ("Log engine, in process (bench/append.py)", "bench/append.py", None),
    ("HTTP service (bench/http_service.py)", "bench/http_service.py", None),
    ("Auditor (bench/verify.py)", "bench/verify.py", None),
    ("Scale curves (bench/scale.py)", "bench/scale.py", None),
    ("Floors of this machine (bench/peers.py)", "bench/peers.py", "floor_"),
    ("Verifier next to the floors (bench/peers.py)", "bench/peers.py", "verifier_"),
    ("pymerkle (bench/peers.py)", "bench/peers.py", "pymerkle_"),
)

PARAM_KEYS = (
    "tree_size",
    "window",
    "entries_per_run",
    "batches_per_run",
    "proofs_per_run",
    "verifications_per_run",
    "rounds_per_run",
    "submits_per_run",
    "ops_per_run",
    "entries",
    "receipts",
    "connections",
    "duration_s",
    "percent_of_peak",
    "target_requests_per_s",
    "achieved_requests_per_s",
    "entries_per_request",
    "subroot_cache",
    "requests",
    "refusal_records",
    "all_recorded",
    "audit_clean",
    "governed_median",
    "ungoverned_median",
    "overhead_of_medians",
    "overhead_per_server_core",
)


def short_params(f: dict[str, Any]) -> str:
    params = f.get("params", {})
    parts = []
    for key in PARAM_KEYS:
        if key in params:
            v = params[key]
            if isinstance(v, int | float) and not isinstance(v, bool):
                v = f"{v:,}" if isinstance(v, int) else num(float(v))
            elif isinstance(v, list):
                v = "–".join(f"{x:,}" if isinstance(x, int) else str(x) for x in v)
            parts.append(f"{key}={v}")
    if "floor" in params:
        ok = params.get("meets_floor")
        parts.append(f"issue floor {params['floor']}: {'met' if ok else 'MISSED'}")
    return "; ".join(parts)


def _deterministic(f: dict[str, Any]) -> bool:
    """A one-measurement figure by design (disk bytes) or a ratio of medians."""
    what = str(f.get("params", {}).get("what", "")) + str(f.get("params", {}).get("of", ""))
    return int(f.get("runs", 0)) == 1 and (
        "deterministic" in what or "derived" in what or "median" in what or f["unit"] == "bytes"
    )


def _noisy(f: dict[str, Any]) -> bool:
    try:
        med, lo, hi = float(f["median"]), float(f["min"]), float(f["max"])
    except (KeyError, TypeError, ValueError):
        return False
    return med > 0 and (hi - lo) / med > 0.5


def _order(name: str) -> tuple[int, str]:
    """Scale figures by kind then size; the rest as they came."""
    for i, n in enumerate(SIZES):
        if name.endswith("_" + size_tag(n)):
            return (i, name.rsplit("_", 1)[0])
    return (-1, "")


def source_text(rows: Iterable[dict[str, Any]], primary: str | None = None) -> str:
    """Return "quick mode", or "full mode, from `file`" for figures of another run."""
    parts = []
    pairs = {(str(f.get("mode", "?")), f.get("results")) for f in rows}
    for mode, results in sorted(pairs, key=lambda t: (t[0], str(t[1]))):
        text = f"{mode} mode"
        if results is not None and results != primary:
            text += f", from [`bench/results/{results}`](../bench/results/{results})"
        parts.append(text)
    return "; ".join(parts)


def figure_tables(
    figs: Figures, cmp: dict[str, tuple[list[Cell], list[Cell]]], primary: str | None = None
) -> list[str]:
    lines: list[str] = []
    seen: set[str] = set()
    for title, script, prefix in GROUPS:
        rows = [
            f
            for f in figs.all
            if f.get("script") == script
            and (prefix is None or f["name"].startswith(prefix))
            and f["name"] not in seen
        ]
        if script == "bench/scale.py":
            rows.sort(key=lambda f: (_order(f["name"])[1], _order(f["name"])[0]))
        elif prefix == "pymerkle_":
            rows.sort(key=lambda f: (f["name"].rsplit("_", 1)[0], _order(f["name"])[0]))
        if not rows:
            continue
        lines += [
            f"#### {title}: {source_text(rows, primary)}",
            "",
            "| figure | value (median) | min – max | runs | vs floor | vs pymerkle | parameters |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in rows:
            seen.add(f["name"])
            floors, peers = cmp.get(f["name"], ([], []))
            unit = f["unit"]
            lines.append(
                "| `{}` | **{} {}** | {} – {}{} | {} | {} | {} | {} |".format(
                    f["name"],
                    num(float(f["value"])),
                    unit,
                    num(float(f["min"])),
                    num(float(f["max"])),
                    " ⚠" if _noisy(f) else "",
                    f["runs"],
                    "<br>".join(c.text() for c in floors if c.text()) or "",
                    "<br>".join(c.text() for c in peers if c.text()) or "",
                    short_params(f).replace("|", "/"),
                )
            )
        lines.append("")
    return lines


# -- plots ----------------------------------------------------------------------------


def _series(figs: Figures, pattern: str) -> tuple[list[int], list[float], list[float], list[float]]:
    xs, ys, lo, hi = [], [], [], []
    for n in SIZES:
        f = figs.get(pattern.format(tag=size_tag(n)))
        if f is None:
            continue
        xs.append(int(f["params"].get("tree_size", n)))
        ys.append(float(f["value"]))
        lo.append(float(f["value"]) - float(f["min"]))
        hi.append(float(f["max"]) - float(f["value"]))
    return xs, ys, lo, hi


def plots(figs: Figures, out_dir: Path, caption: str) -> tuple[list[tuple[str, str]], str | None]:
    """Draw the PNGs; return [(file name, alt text)] and a reason if skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return [], f"matplotlib is not installed ({exc}); install the [bench] extra for plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, str]] = []

    def save(fig: Any, name: str, alt: str) -> None:
        fig.text(0.01, 0.01, caption, fontsize=6, color="gray")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        made.append((name, alt))

    colors = {"ours": "tab:blue", "pymerkle_sqlite": "tab:orange", "pymerkle_memory": "tab:green"}

    def curve(ax: Any, pattern: str, label: str, style: str) -> bool:
        xs, ys, lo, hi = _series(figs, pattern)
        if not xs:
            return False
        who = "ours" if pattern.startswith("scale_") else pattern.split("_", 2)[0]
        if pattern.startswith("pymerkle_"):
            who = "_".join(pattern.split("_", 2)[:2])
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt=style, capsize=3, label=label, color=colors.get(who))
        return True

    def hline(ax: Any, value: float | None, label: str, color: str) -> None:
        if value:
            ax.axhline(value, linestyle=":", color=color, label=label)

    # 1. Append rate by tree size.
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    drawn = curve(ax, "scale_append_rate_{tag}", "ours: Log.append_many (fsync per batch)", "o-")
    curve(ax, "pymerkle_sqlite_append_{tag}", "pymerkle SqliteTree (commit per batch)", "s--")
    curve(ax, "pymerkle_memory_append_{tag}", "pymerkle InmemoryTree (not durable)", "^--")
    hline(ax, figs.value("floor_lmdb_batched_puts"), "floor: raw LMDB puts", "gray")
    hline(ax, figs.value("floor_frontier_append"), "floor: hashlib frontier", "silver")
    if drawn:
        ax.set(xscale="log", yscale="log", xlabel="tree size (entries)", ylabel="entries/s")
        ax.set_title("Append rate by tree size (batches of 1,000 leaves of 200-500 bytes)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, "scale_append.png", "Append rate by tree size, ours and pymerkle, with floors")
    else:
        plt.close(fig)

    # 2. Inclusion-proof latency by tree size.
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    drawn = curve(ax, "scale_inclusion_p50_{tag}", "ours p50", "o-")
    curve(ax, "scale_inclusion_p99_{tag}", "ours p99", "o:")
    curve(ax, "pymerkle_sqlite_inclusion_p50_{tag}", "pymerkle SQLite p50 (warm cache)", "s--")
    curve(ax, "pymerkle_sqlite_inclusion_p99_{tag}", "pymerkle SQLite p99 (warm cache)", "s:")
    curve(ax, "pymerkle_memory_inclusion_p50_{tag}", "pymerkle memory p50", "^--")
    mem = figs.get("floor_inclusion_proofs_memory")
    if mem and drawn:
        ax.plot(
            [mem["params"]["tree_size"]],
            [mem["params"].get("p50_us")],
            "kx",
            label="floor: in-memory proof p50",
        )
    if drawn:
        ax.set(xscale="log", yscale="log", xlabel="tree size (entries)", ylabel="µs per proof")
        ax.set_title("Inclusion-proof latency by tree size (uniform random index)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, "scale_inclusion.png", "Inclusion proof latency p50 and p99 by tree size")
    else:
        plt.close(fig)

    # 3. Disk bytes per entry.
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    drawn = curve(ax, "scale_disk_bytes_per_entry_{tag}", "ours: both LMDB envs", "o-")
    curve(ax, "pymerkle_sqlite_disk_bytes_per_entry_{tag}", "pymerkle SQLite file", "s--")
    leaf = None
    for n in SIZES:
        leaf = figs.param(f"scale_disk_bytes_per_entry_{size_tag(n)}", "mean_leaf_bytes") or leaf
    hline(ax, leaf, "the leaf itself (mean)", "gray")
    if drawn:
        ax.set(xscale="log", xlabel="tree size (entries)", ylabel="bytes per entry")
        ax.set_ylim(bottom=0)
        ax.set_title("Disk bytes per entry by tree size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, "scale_disk.png", "Disk bytes per entry by tree size")
    else:
        plt.close(fig)

    # 4. Submission latency under load (open loop).
    pcts = [10, 50, 90]
    p50 = [figs.value(f"http_submit_open_{p}pct_p50") for p in pcts]
    p99 = [figs.value(f"http_submit_open_{p}pct_p99") for p in pcts]
    if any(v is not None for v in p50):
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        peak = figs.value("http_submit_single")
        xs = [p for p, v in zip(pcts, p50, strict=True) if v is not None]
        ax.plot(xs, [v for v in p50 if v is not None], "o-", label="p50")
        ax.plot(xs, [v for v in p99 if v is not None], "o:", label="p99")
        ax.set(xlabel="offered load, % of the measured peak", ylabel="ms, submission to receipt")
        ax.set_yscale("log")
        ax.set_title(f"POST /entries latency under open-loop load (peak {num(peak)} requests/s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, "http_latency.png", "Submission-to-receipt latency at 10, 50 and 90% of peak")

    # 5. Ratios to the floors.
    cmp = comparisons(figs)
    bars = []
    for name, (floors, _) in cmp.items():
        if name.startswith("scale_") and not name.endswith(size_tag(10**6)):
            continue
        for c in floors:
            if c.ratio:
                bars.append((f"{name} ({c.label.replace('of ', '')})", c.ratio))
    if bars:
        fig, ax = plt.subplots(figsize=(7.5, 0.24 * len(bars) + 1.2))
        ax.barh([b[0] for b in bars], [b[1] for b in bars], color="tab:blue")
        for i, (_, r) in enumerate(bars):
            ax.text(r, i, f" {r:.2f}", va="center", fontsize=6)
        ax.axvline(1.0, color="gray", linestyle=":")
        ax.set_xscale("log")
        ax.set_xlabel("ours as a fraction of the floor (1 = the floor; > 1 = better)")
        ax.tick_params(axis="y", labelsize=6)
        ax.set_title("Each figure against this machine's floor")
        ax.grid(True, axis="x", which="both", alpha=0.3)
        save(fig, "floor_ratios.png", "Each figure as a fraction of its floor")
    return made, None


# -- published figures (NOT measured here) --------------------------------------------

PUBLISHED = (
    (
        "Tessera (POSIX storage)",
        "~2,900 writes/s sustained without antispam, ~1,600/s with antispam (badger); "
        "time to integrate avg 6.0 s and 3.2 s at those loads",
        "LXC container, 12 cores, 8 GB RAM; local ZFS mirror of two 6 TB SAS HDDs; "
        "writes fsync'd; load from Tessera's hammer over HTTP",
        "http_submit_single",
        "https://github.com/transparency-dev/tessera/blob/main/docs/performance.md, "
        "https://github.com/transparency-dev/tessera/blob/main/storage/posix/PERFORMANCE.md",
    ),
    (
        "Tessera (POSIX storage)",
        "> 1,500 writes/s; ~600 writes/s with antispam",
        "GCP e2-micro free tier (0.25-2 shared vCPU, 1 GB RAM)",
        "http_submit_single",
        "same two pages",
    ),
    (
        "Tessera (GCP: Spanner + GCS)",
        "> 3,000 writes/s without antispam and > 800 with it (100 Spanner PUs, 1 frontend); "
        "> 5,000 with antispam (300 PUs, 2 frontends)",
        "GCP managed services; frontends' machine type not given",
        "http_submit_single",
        "https://github.com/transparency-dev/tessera/blob/main/docs/performance.md",
    ),
    (
        "Tessera (MySQL storage)",
        "~2,000 writes/s with CloudSQL; ~300 writes/s with MySQL on the same e2-micro",
        "GCP e2-micro free tier VM (+ CloudSQL)",
        "http_submit_single",
        "https://github.com/transparency-dev/tessera/blob/main/docs/performance.md",
    ),
    (
        "Sunlight",
        "no throughput benchmark in its README or its launch post; sizing given instead: "
        "5-10 GB of tiles per million certificates, ~50 MB of dedup cache per million, "
        "shards planned for the CT submission rate of the time (~75/s)",
        "one Go process per instance; S3-compatible object storage (or POSIX) for tiles, "
        "local SQLite dedup cache",
        None,
        "https://github.com/FiloSottile/sunlight (README), "
        "https://letsencrypt.org/2024/03/14/introducing-sunlight/",
    ),
    (
        "Trillian (Let's Encrypt Oak CT log)",
        "sized for >= 2 million certificates/day per log (~23/s on average); storage "
        "~1 TB per 100 million entries (certificate chains); in 2022 the database grew "
        "~400 GB per month",
        "2x AWS RDS db.r5.4xlarge (8 vCPU, 128 GB) MariaDB per log, 4x c5.2xlarge "
        "(8 vCPU, 16 GB) for CTFE and Trillian",
        None,
        "https://letsencrypt.org/2019/11/20/how-le-runs-ct-logs/, "
        "https://github.com/letsencrypt/website/blob/main/content/en/post/"
        "2022-05-19-nurturing-ct-log-growth.md",
    ),
    (
        "immudb (embedded store)",
        "1.2 M entries/s (20 workers), 1.8 M/s (50 workers), 1.6 M/s (100 workers): "
        "1 M entries in batches of 1,000",
        "4-core Intel Xeon E3-1275 v6, SSD; in-process, no network",
        "append_many_durable",
        "https://github.com/codenotary/immudb#performance-figures",
    ),
)


def published_table(figs: Figures) -> list[str]:
    lines = [
        "**These are other projects' published figures, on their hardware, with their entry "
        "sizes (CT entries are certificate chains of a few KB) and their storage. None of them "
        "was measured here, and none is a like-for-like comparison; our nearest figure, "
        "measured on this 2-core VM, is given beside each for scale.**",
        "",
        "| system | published figure (NOT measured here) | their hardware / setup | "
        "our nearest figure (this run) | source |",
        "|---|---|---|---|---|",
    ]
    for system, figure, hardware, ours, source in PUBLISHED:
        our = "–"
        if ours and figs.get(ours):
            f = figs.get(ours)
            assert f is not None
            our = f"`{ours}` {num(float(f['value']))} {f['unit']}"
        lines.append(f"| {system} | {figure} | {hardware} | {our} | {source} |")
    lines.append("")
    return lines


# -- the reading ----------------------------------------------------------------------


def percent(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def governance_reading(figs: Figures) -> str | None:
    """Governance's cost on submissions (issue #6: at most 10%), or None if not measured."""
    parts = []
    for name, what in (
        ("http_governance_overhead", "single submissions"),
        ("http_batch_governance_overhead", "batches of 100"),
    ):
        f = figs.get(name)
        if f is None:
            continue
        p = f.get("params", {})
        unit = str(p.get("rate_unit", "/s")).replace("requests/s", "/s").replace(" ", "")
        unit = unit if unit.startswith("/") else f" {unit}"
        parts.append(
            f"{percent(float(f['value']))} of the rate of {what} "
            f"({percent(float(f['min']))} to {percent(float(f['max']))} over {f['runs']} "
            f"paired runs; governed {num(p.get('governed_median'))}{unit} against "
            f"{num(p.get('ungoverned_median'))}{unit} ungoverned; per fully used server core "
            f"{percent(p.get('overhead_per_server_core'))}): issue floor {p.get('floor', '?')} "
            f"{'met' if p.get('meets_floor') else 'MISSED'}"
        )
    if not parts:
        return None
    return (
        "**Governance's cost**: "
        + "; ".join(parts)
        + ". Measured against bench/ungoverned_app.py, the same `tlog serve` with the "
        "submission path's governance work as no-ops (a benchmark probe, never the "
        "service), the two servers alternating run by run."
    )


def reading(figs: Figures) -> list[str]:
    """Short, honest bullets computed from the figures (skipped where data is missing)."""
    out: list[str] = []
    v = figs.value

    def has(*names: str) -> bool:
        return all(v(n) for n in names)

    def lead(r: float) -> str:
        return "leads" if r >= 1.05 else ("trails" if r <= 0.95 else "is level with")

    if has("append_many_durable", "floor_lmdb_batched_puts", "floor_frontier_append"):
        ours, lm, fr = (
            v("append_many_durable"),
            v("floor_lmdb_batched_puts"),
            v("floor_frontier_append"),
        )
        assert ours and lm and fr
        per = 1e6 / ours
        out.append(
            f"**Durable append, in process**: {num(ours)} entries/s, {ratio_text(ours / lm)} raw "
            f"LMDB batched puts ({num(lm)}/s) and {ratio_text(ours / fr)} the plain hashlib "
            f"frontier ({num(fr)}/s). Per entry that is {per:.1f} µs, of which the RFC 6962 "
            f"hashing alone costs {1e6 / fr:.1f} µs and storing the leaf {1e6 / lm:.2f} µs; "
            f"the rest is the writer's Python bookkeeping (tile records, the dedup filter, "
            f"per-leaf objects and the per-batch signed checkpoint). We trail the floors by "
            f"construction; the gap is CPU in one Python thread, not the disk."
        )
    size_pm = None
    for n in SIZES:
        if has(f"scale_append_rate_{size_tag(n)}", f"pymerkle_sqlite_append_{size_tag(n)}"):
            size_pm = n
    if size_pm:
        tag = size_tag(size_pm)
        ours, pm = v(f"scale_append_rate_{tag}"), v(f"pymerkle_sqlite_append_{tag}")
        assert ours and pm
        r = ours / pm
        out.append(
            f"**Append vs pymerkle** (SQLite, at {pow10(size_pm)}): ours {num(ours)}/s, pymerkle "
            f"{num(pm)}/s, so ours {lead(r)} ({ratio_text(r)}). pymerkle's append is one "
            f"`executemany` of (entry, hash) rows per batch: no interior nodes, no tiles, no "
            f"dedup index and no signed checkpoint, so it has less to write; it pays later, "
            f"when proofs recompute the interior nodes."
        )
    size_pp = None
    for n in SIZES:
        if has(
            f"scale_inclusion_proofs_{size_tag(n)}",
            f"pymerkle_sqlite_inclusion_proofs_{size_tag(n)}",
        ):
            size_pp = n
    if size_pp:
        tag = size_tag(size_pp)
        ours = v(f"scale_inclusion_proofs_{tag}")
        warm = v(f"pymerkle_sqlite_inclusion_proofs_{tag}")
        cold = v(f"pymerkle_sqlite_inclusion_proofs_cold_{tag}")
        memp = v(f"pymerkle_memory_inclusion_proofs_{tag}")
        assert ours and warm
        text = (
            f"**Proofs vs pymerkle** (at {pow10(size_pp)}): {num(ours)} inclusion proofs/s, "
            f"{ratio_text(ours / warm)} pymerkle SQLite with its subroot cache warm "
            f"({num(warm)}/s)"
        )
        if cold:
            text += (
                f" and {ratio_text(ours / cold)} with it cold, as after a restart ({num(cold)}/s)"
            )
        if memp:
            text += f"; {ratio_text(ours / memp)} pymerkle's in-memory tree ({num(memp)}/s)"
        text += (
            ". Our tile records hold every complete subtree, so a proof is a few slices of a "
            "few LMDB records; pymerkle stores leaves only and rehashes up to 127 leaves per "
            "proof even when warm, and the whole tree when cold."
        )
        out.append(text)
    if has("inclusion_proofs", "floor_inclusion_proofs_memory") and figs.param(
        "inclusion_proofs", "tree_size"
    ) == figs.param("floor_inclusion_proofs_memory", "tree_size"):
        ours, fl = v("inclusion_proofs"), v("floor_inclusion_proofs_memory")
        assert ours and fl
        at = pow10(int(figs.param("inclusion_proofs", "tree_size")))
        out.append(
            f"**Proofs vs the in-memory floor** (at {at}): "
            f"{ratio_text(ours / fl)} of a pure-Python proof from lists in memory "
            f"({num(fl)}/s): the rest is the LMDB read transaction and record slicing."
        )
    sizes = [n for n in SIZES if v(f"scale_append_rate_{size_tag(n)}")]
    if len(sizes) >= 2:
        a0 = v(f"scale_append_rate_{size_tag(sizes[0])}")
        a1 = v(f"scale_append_rate_{size_tag(sizes[-1])}")
        d1 = v(f"scale_disk_bytes_per_entry_{size_tag(sizes[-1])}")
        leaf = figs.param(f"scale_disk_bytes_per_entry_{size_tag(sizes[-1])}", "mean_leaf_bytes")
        p99 = v(f"scale_inclusion_p99_{size_tag(sizes[-1])}")
        assert a0 and a1
        text = (
            f"**Scale**: the append rate goes from {num(a0)}/s at {pow10(sizes[0])} to "
            f"{num(a1)}/s at {pow10(sizes[-1])} ({ratio_text(a1 / a0)})"
        )
        if d1 and leaf:
            text += (
                f"; the tree takes {num(d1)} bytes per entry at {pow10(sizes[-1])}, "
                f"{num(d1 - leaf)} over the {num(leaf)}-byte leaf"
            )
            pmd = v(f"pymerkle_sqlite_disk_bytes_per_entry_{size_tag(sizes[-1])}")
            if pmd:
                text += f" (pymerkle SQLite: {num(pmd)}, with no interior nodes stored)"
        if p99:
            text += f"; inclusion p99 is {num(p99)} µs there"
        out.append(text + ".")
    if has("http_submit_single", "bare_submit"):
        ours, bare = v("http_submit_single"), v("bare_submit")
        assert ours and bare
        text = (
            f"**HTTP**: {num(ours)} single submissions/s, {ratio_text(ours / bare)} the bare "
            f"Starlette app that only group-commits the body to LMDB ({num(bare)}/s). Each of "
            f"ours also authenticates, validates, encodes a CBOR envelope, integrates, signs and "
            f"returns a receipt with its inclusion proof; with one Python process both spend "
            f"most of a core in the framework and the event loop."
        )
        if has("http_submit_batch100"):
            text += f" Batches of 100 reach {num(v('http_submit_batch100'))} entries/s."
        p99_90 = v("http_submit_open_90pct_p99")
        p50_10 = v("http_submit_open_10pct_p50")
        if p99_90 and p50_10:
            text += (
                f" Submission to receipt takes {num(p50_10)} ms (p50) at 10% of the peak and "
                f"{num(p99_90)} ms (p99) at 90%."
            )
        out.append(text)
    governance = governance_reading(figs)
    if governance:
        out.append(governance)
    storm = figs.get("http_refusal_storm")
    if storm:
        sp = storm.get("params", {})
        statuses = ", ".join(
            f"{n:,} × {code}" for code, n in sorted(sp.get("refused_by_status", {}).items())
        )
        text = (
            f"**Refusal storm**: {num(sp.get('requests'))} refused requests ({statuses}) over "
            f"{sp.get('connections', '?')} connections, answered at {num(float(storm['value']))} "
            f"refusals/s, each written durably to the audit log before its answer. Read back "
            f"over HTTP and audited with the verifier: {num(sp.get('refusal_records'))} refusal "
            "records"
        )
        if sp.get("all_recorded"):
            text += ", one per refusal, and the audit log audits clean."
        else:
            text += (
                f"; NOT every refusal has its record (missing: {sp.get('missing_records')}; "
                f"audit clean: {sp.get('audit_clean')}"
                + (f", {sp['audit_error']}" if sp.get("audit_error") else "")
                + ")."
            )
        out.append(text)
    if has("receipt_verify_no_cache", "floor_ed25519_verify"):
        ours, ed = v("receipt_verify_no_cache"), v("floor_ed25519_verify")
        assert ours and ed
        text = (
            f"**Auditor**: offline receipt verification runs at {num(ours)}/s, "
            f"{ratio_text(ours / ed)} the Ed25519 verify floor ({num(ed)}/s): the signature "
            f"check alone is {100 * ours / ed:.0f}% of the time per receipt"
        )
        if has("receipt_verify_cached"):
            text += f"; with the checkpoint cached, {num(v('receipt_verify_cached'))}/s"
        if has("verifier_inclusion_verify", "pymerkle_inclusion_verify"):
            vi, pv = v("verifier_inclusion_verify"), v("pymerkle_inclusion_verify")
            assert vi and pv
            text += (
                f". Bare inclusion verification: ours {num(vi)}/s, pymerkle's {num(pv)}/s "
                f"({ratio_text(vi / pv)})"
            )
        if has("audit_local_dir"):
            text += f"; a full-log audit checks {num(v('audit_local_dir'))} entries/s"
        out.append(text + ".")
    single = v("http_submit_single")
    if single:
        tessera = 2900.0
        where = (
            "in the same range"
            if 0.5 <= single / tessera <= 2
            else ("below it" if single < tessera else "above it")
        )
        fsync_ms = v("fsync_small_file")
        out.append(
            "**Published peers** (table below, not measured here) are Go services on other "
            "hardware: Tessera's POSIX backend sustains ~2,900 writes/s over HTTP on a 12-core "
            "VM with mirrored HDDs, where an fsync costs milliseconds"
            + (f"; this VM's fsync costs ~{num(fsync_ms)} ms" if fsync_ms else "")
            + f". Our single-submission rate ({num(single)}/s on 2 vCPUs) is {where}, but "
            "the setups (cores, disks, entry sizes, antispam) differ too much for a ratio to "
            "mean much; immudb's 1.2-1.8 M entries/s are for its embedded store with 20-100 "
            "concurrent writers on 4 cores, next to our single-writer in-process "
            f"{num(v('append_many_durable'))}/s."
        )
    return [f"- {line}" for line in out]


# -- the document ---------------------------------------------------------------------


def machine_line(m: dict[str, Any]) -> str:
    disk = m.get("disk", {})
    parts = [f"{m.get('cores')} cores ({m.get('cpu_model')})"]
    if m.get("memory_bytes"):
        parts.append(f"{m['memory_bytes'] / 2**30:.0f} GiB RAM")
    parts += [str(m.get("os")), str(m.get("python")), str(m.get("lmdb", "lmdb ?"))]
    where = f"data on {disk.get('device', '?')} ({disk.get('filesystem', '?')}"
    if "rotational" in disk:
        where += ", reports rotational" if disk["rotational"] else ", non-rotational"
    parts.append(where + ")")
    return ", ".join(parts)


def render(
    results: dict[str, Any],
    results_name: str,
    plot_files: list[tuple[str, str]],
    plot_note: str | None,
) -> str:
    figs = Figures(results.get("figures", []))
    cmp = comparisons(figs)
    m = results.get("machine", {})
    mode = results.get("mode", "?")
    command = str(results.get("command", ""))
    made_by = {"bench/run_all.py --quick": "make bench", "bench/run_all.py": "make bench-full"}
    filled = list(results.get("filled_in", []))
    lines = [
        START,
        f"<!-- Written by bench/report.py from bench/results/{results_name}; edit the script, "
        "not this block. Everything outside the markers is hand-written and kept. -->",
        "",
        "## Side by side: peers, floors and scale (generated)",
        "",
        f"Run: `{made_by.get(command, command or '?')}` ({mode} mode), "
        f"{results.get('started', '?')} – {results.get('finished', '?')}, "
        f"{num(results.get('seconds'))} s"
        + (
            f" ({'within' if results.get('within_budget') else 'OVER'} the "
            f"{num(results.get('quick_budget_s'))} s budget)"
            if mode == "quick" and results.get("quick_budget_s")
            else ""
        )
        + f", code at `{results.get('revision', '?')}`"
        + (
            f" (HEAD at the end: `{results['revision_at_end']}`)"
            if results.get("revision_at_end")
            else ""
        )
        + ". Results: "
        f"[`bench/results/{results_name}`](../bench/results/{results_name})."
        + (
            " Scripts this run did not run are filled in from earlier runs: "
            + "; ".join(
                f"`{f['script']}` from [`bench/results/{f['results']}`]"
                f"(../bench/results/{f['results']}) ({f['mode']} mode, {f['started']}, code at "
                f"`{f['revision']}`)"
                for f in filled
            )
            + "."
            if filled
            else ""
        ),
        "",
        "How to run: `make bench` (quick, under 10 minutes) or `make bench-full` (about 40 "
        "minutes on 2 cores; its scale curve goes to 10^8 entries when the disk has ~56 GB + "
        "10 GiB free, else stops at the largest size that fits and says so; "
        "`make bench-full SCALE_MAX_SIZE=10000000` stops it at 10^7, about 22 minutes). "
        "Some scripts only: "
        "`.venv/bin/python bench/run_all.py --quick --only peers,scale`. This block again "
        "from a results file: `.venv/bin/python bench/report.py bench/results/<file>.json`.",
        "",
        f"Machine: {machine_line(m)}; {num(m.get('background_cpu_cores'))} cores busy with other "
        "work just before the run (the figures share the 2 cores with it).",
        "",
        "Every figure is the median of its runs (at least 5, except where `runs` says "
        "otherwise: a disk size is one deterministic measurement, a ratio of two medians is "
        "derived, and each says so in its record), with min and max; each table says which "
        "mode (quick or full) and which results file its figures came from; every record in "
        "the results file carries the machine and its exact parameters. *vs floor* is ours "
        "as a fraction of what this machine does with nothing of ours in the way; *vs "
        "pymerkle* is ours as a multiple of pymerkle (PyPI) at the same tree size. Both are "
        "oriented so that **> 1 means ours is better** (for latencies and bytes the ratio is "
        "theirs / ours).",
        "",
        "| script | mode | status | seconds | figures | skipped | its CPU (cores) | "
        "other work meanwhile (cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [{**s, "mode": mode, "results": results_name} for s in results.get("scripts", [])]
    for s in rows + filled:
        lines.append(
            f"| `{script_name(s['script'])}` | {s['mode']}"
            + (f" (from `{s['results']}`)" if s["results"] != results_name else "")
            + f" | {s['status']}"
            + (f" (exit {s['returncode']})" if s["status"] != "ok" else "")
            + f" | {num(s['seconds'])} | {s['figures']} | {s.get('skipped', 0)} | "
            f"{num(s.get('script_cpu_cores'))} | {num(s.get('other_cpu_cores'))} |"
        )
    lines.append("")
    few: dict[str, list[str]] = {}
    for f in figs.all:
        if int(f.get("runs", 0)) < 5 and not _deterministic(f):
            few.setdefault(str(f.get("script", "?")), []).append(f"{f['name']} ({f['runs']})")
    if few:
        lines += [
            "**Fewer than 5 runs** (the issue asks for at least 5): "
            + "; ".join(f"`{k}`: {', '.join(v)}" for k, v in few.items())
            + ".",
            "",
        ]
    noisy = [f["name"] for f in figs.all if _noisy(f)]
    if noisy:
        lines += [
            "**Noisy** (max − min over half the median; marked ⚠ below; see the CPU of other "
            f"work above): {', '.join(f'`{n}`' for n in noisy)}.",
            "",
        ]
    skipped = list(results.get("skipped", []))
    if plot_note:
        skipped.append({"name": "plots", "script": "bench/report.py", "skipped": plot_note})
    failed = [s for s in results.get("scripts", []) if s["status"] != "ok"]
    if skipped or failed:
        lines += ["Skipped or failed:", ""]
        for s in failed:
            tail = [t for t in s.get("stderr_tail", []) if t.strip()][-1:] or ["?"]
            lines.append(f"- `{s['script']}` {s['status']}: `{tail[0][:200]}`")
        for s in skipped:
            lines.append(f"- {s['name']} (`{s.get('script', '?')}`): {s['skipped']}")
        lines.append("")
    lines += ["### Reading", ""]
    lines += reading(figs) or ["- (not enough figures in this run for a reading)"]
    lines += ["", "### Plots", ""]
    if plot_files:
        for name, alt in plot_files:
            lines += [f"![{alt}](benchmarks/{name})", ""]
    else:
        lines += [f"No plots: {plot_note}", ""]
    lines += ["### Every figure", ""]
    lines += figure_tables(figs, cmp, results_name)
    lines += ["### Published figures of other logs (NOT measured here)", ""]
    lines += published_table(figs)
    lines.append(END)
    return "\n".join(lines) + "\n"


def splice(doc: str, block: str) -> str:
    """Replace the generated block in doc, or insert it before the first '## ' heading."""
    if START in doc and END in doc:
        head, rest = doc.split(START, 1)
        _, tail = rest.split(END, 1)
        return head + block.rstrip("\n") + tail
    lines = doc.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("## "):
            return "".join(lines[:i]) + block + "\n" + "".join(lines[i:])
    return doc + ("\n" if doc and not doc.endswith("\n") else "") + "\n" + block


def generate(results_path: Path, doc: Path = DOC, plots_dir: Path = PLOTS) -> dict[str, Any]:
    """Regenerate doc's generated block and the plots from results_path; return notes."""
    results = gather(results_path)
    figs = Figures(results.get("figures", []))
    caption = f"bench/results/{results_path.name} ({results.get('mode', '?')} mode)"
    if results["filled_in"]:
        caption += " + " + ", ".join(f["results"] for f in results["filled_in"])
    made, note = plots(figs, plots_dir, caption)
    block = render(results, results_path.name, made, note)
    old = doc.read_text() if doc.exists() else "# Benchmarks\n"
    new = splice(old, block)
    if new != old:
        tmp = doc.with_suffix(".md.tmp")
        tmp.write_text(new)
        tmp.replace(doc)
    notes: dict[str, Any] = {
        "doc": str(doc.relative_to(ROOT)) if doc.is_relative_to(ROOT) else str(doc),
        "plots": [name for name, _ in made],
    }
    if note:
        notes["skipped"] = [{"name": "plots", "skipped": note}]
    if results["filled_in"]:
        notes["filled_in"] = [
            {k: f[k] for k in ("script", "mode", "results")} for f in results["filled_in"]
        ]
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path, help="results file (default: newest)")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--plots", type=Path, default=PLOTS)
    args = parser.parse_args(argv)
    path = args.results or newest_results()
    notes = generate(path, args.doc, args.plots)
    print(json.dumps(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
