"""bench/report.py: the generated block of docs/benchmarks.md from a results file.

Synthetic results only (a few figures with known values), so the ratios can be checked
by hand; no benchmark runs and matplotlib is made unimportable (the plots are skipped,
as on a machine without the [bench] extra).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bench import load

report = load("report")

MACHINE = {"cores": 2, "cpu_model": "Test CPU", "os": "Linux", "python": "CPython 3.11"}

HEAD = (
    "# Benchmarks\n\nHand-written intro, kept byte for byte: ✓ trailing spaces  \n"
    "\n<!-- notes about the block below -->\n\n"
)
TAIL = (
    "\n\n## Log engine (bench/append.py)\n\nHand-written section | with a pipe.\n"
    "\n### Results\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
)
OLD_BLOCK = f"{report.START}\nstale generated text\n{report.END}"


def fig(name: str, value: float, unit: str, script: str, **params: Any) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "median": value,
        "min": value * 0.9,
        "max": value * 1.1,
        "runs": 5,
        "params": params,
        "machine": MACHINE,
        "script": script,
    }


def results(
    mode: str, finished: str, figures: list[dict[str, Any]], scripts: dict[str, str]
) -> dict[str, Any]:
    return {
        "schema": 1,
        "date": finished[:10],
        "mode": mode,
        "command": "bench/run_all.py --quick" if mode == "quick" else "bench/run_all.py",
        "started": finished,
        "finished": finished,
        "seconds": 12.0,
        "revision": "abc1234",
        "machine": MACHINE,
        "tools": {},
        "scripts": [
            {"script": s, "status": status, "returncode": 0 if status == "ok" else 1}
            | {"seconds": 1.0, "figures": 1, "stderr_tail": ["boom"]}
            for s, status in scripts.items()
        ],
        "skipped": [],
        "figures": figures,
    }


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails


def write(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def block_of(text: str) -> str:
    return text[text.index(report.START) : text.index(report.END)]


def row(block: str, name: str) -> str:
    (line,) = [x for x in block.splitlines() if x.startswith(f"| `{name}` |")]
    return line


def test_regeneration_keeps_hand_written_text_and_renders_ratios(
    tmp_path: Path, no_matplotlib: None
) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(HEAD + OLD_BLOCK + TAIL)
    figures = [
        fig("append_many_durable", 100_000.0, "entries/s", "bench/append.py"),
        fig("submit_lone_latency", 0.5, "ms", "bench/append.py"),
        fig("fsync_small_file", 0.1, "ms", "bench/append.py"),
        fig("floor_lmdb_batched_puts", 400_000.0, "entries/s", "bench/peers.py"),
        fig("floor_frontier_append", 200_000.0, "entries/s", "bench/peers.py"),
        fig("pymerkle_sqlite_append_n1e4", 50_000.0, "entries/s", "bench/peers.py"),
    ]
    path = write(
        tmp_path / "results" / "2026-01-02.json",
        results("quick", "2026-01-02T10:00:00+0000", figures, {"bench/append.py": "ok"}),
    )
    notes = report.generate(path, doc, tmp_path / "plots")

    text = doc.read_text()
    assert text.startswith(HEAD + report.START)
    assert text.endswith(report.END + TAIL)
    assert "stale generated text" not in text
    block = block_of(text)
    # Ratios, oriented so that > 1 means ours is better (a latency: the floor / ours).
    durable = row(block, "append_many_durable")
    assert "**100,000 entries/s**" in durable and "90,000 – 110,000" in durable
    assert "0.25× of raw LMDB puts" in durable
    assert "0.50× of the hashlib frontier" in durable
    assert "2.00× pymerkle SQLite @10^4" in durable
    assert "0.20× of one fsync" in row(block, "submit_lone_latency")
    assert "#### Log engine, in process (bench/append.py): quick mode\n" in block
    assert "matplotlib is not installed" in block
    assert notes["plots"] == [] and notes["skipped"][0]["name"] == "plots"
    assert not (tmp_path / "plots").exists()
    # Regenerating from the same results changes nothing.
    report.generate(path, doc, tmp_path / "plots")
    assert doc.read_text() == text


def test_without_markers_the_block_goes_before_the_first_section(tmp_path: Path) -> None:
    doc = "# Benchmarks\n\nIntro.\n\n## Engine\n\nText.\n"
    out = report.splice(doc, f"{report.START}\nnew\n{report.END}\n")
    block = f"{report.START}\nnew\n{report.END}\n"
    assert out == f"# Benchmarks\n\nIntro.\n\n{block}\n## Engine\n\nText.\n"
    assert report.splice(out, f"{report.START}\nnewer\n{report.END}\n") == out.replace(
        "\nnew\n", "\nnewer\n"
    )


def test_a_partial_run_is_filled_in_and_each_table_names_its_mode(
    tmp_path: Path, no_matplotlib: None
) -> None:
    """A quick run of http_service alone on a day with a full run: the HTTP figures come
    from the quick run, the others from the full one (older name of the HTTP script
    included), and every table says which mode and file its figures came from. A
    script the primary run tried and failed is not filled in from elsewhere."""
    res = tmp_path / "results"
    write(
        res / "2026-01-02.json",
        results(
            "full",
            "2026-01-02T09:00:00+0000",
            [
                fig("append_many_durable", 100_000.0, "entries/s", "bench/append.py"),
                fig("http_submit_single", 1_000.0, "requests/s", "bench/http.py"),
                fig("receipt_parse", 9.0, "receipts/s", "bench/verify.py"),
            ],
            {"bench/append.py": "ok", "bench/http.py": "ok", "bench/verify.py": "ok"},
        ),
    )
    write(  # older, and a quick run: not chosen over the newer full run
        res / "2026-01-01.json",
        results(
            "quick",
            "2026-01-01T09:00:00+0000",
            [fig("append_many_durable", 1.0, "entries/s", "bench/append.py")],
            {"bench/append.py": "ok"},
        ),
    )
    storm = fig(
        "http_refusal_storm",
        3_000.0,
        "refusals/s",
        "bench/http_service.py",
        requests=10_000,
        connections=64,
        refused_by_status={"401": 6_000, "429": 4_000},
        refusal_records=10_000,
        all_recorded=True,
        audit_clean=True,
    )
    primary = write(
        res / "2026-01-02-quick-only-http_service+verify.json",
        results(
            "quick",
            "2026-01-02T11:00:00+0000",
            [storm, fig("http_submit_single", 2_000.0, "requests/s", "bench/http_service.py")],
            {"bench/http_service.py": "ok", "bench/verify.py": "failed"},
        )
        | {"command": "bench/run_all.py --quick --only http_service,verify"},
    )
    doc = tmp_path / "benchmarks.md"
    doc.write_text(HEAD + OLD_BLOCK + TAIL)
    notes = report.generate(primary, doc, tmp_path / "plots")

    assert notes["filled_in"] == [
        {"script": "bench/append.py", "mode": "full", "results": "2026-01-02.json"}
    ]
    block = block_of(doc.read_text())
    assert "Run: `bench/run_all.py --quick --only http_service,verify` (quick mode)" in block
    assert (
        "#### Log engine, in process (bench/append.py): full mode, from "
        "[`bench/results/2026-01-02.json`](../bench/results/2026-01-02.json)\n"
    ) in block
    assert "#### HTTP service (bench/http_service.py): quick mode\n" in block
    assert "**100,000 entries/s**" in row(block, "append_many_durable")
    assert "**2,000 requests/s**" in row(block, "http_submit_single")  # not the full run's
    assert "receipt_parse" not in block  # verify failed in the primary run: not filled in
    assert "| `bench/append.py` | full (from `2026-01-02.json`) | ok |" in block
    assert "| `bench/verify.py` | quick | failed (exit 1) |" in block
    storm_row = row(block, "http_refusal_storm")
    assert "**3,000 refusals/s**" in storm_row and "all_recorded=True" in storm_row
    assert "10,000 refused requests (6,000 × 401, 4,000 × 429)" in block
    assert "one per refusal, and the audit log audits clean" in block


def test_a_storm_with_missing_records_is_reported_as_such(
    tmp_path: Path, no_matplotlib: None
) -> None:
    storm = fig(
        "http_refusal_storm",
        3_000.0,
        "refusals/s",
        "bench/http_service.py",
        requests=10_000,
        refused_by_status={"401": 10_000},
        refusal_records=9_999,
        missing_records={"401 GET /logs/gurukul/checkpoint": 1},
        all_recorded=False,
        audit_clean=True,
        floor="all 10,000 refusals have their audit record",
        meets_floor=False,
    )
    path = write(
        tmp_path / "r.json",
        results("full", "2026-01-02T11:00:00+0000", [storm], {"bench/http_service.py": "ok"}),
    )
    doc = tmp_path / "benchmarks.md"
    report.generate(path, doc, tmp_path / "plots")
    block = block_of(doc.read_text())
    assert "NOT every refusal has its record" in block
    assert "issue floor all 10,000 refusals have their audit record: MISSED" in block


def test_governance_overhead_rows_and_reading(tmp_path: Path, no_matplotlib: None) -> None:
    """The governed and ungoverned submission figures and governance's cost (issue #6: at
    most 10%) get their table rows, floors and a sentence in the reading."""
    http = "bench/http_service.py"
    single = fig("http_submit_single", 2_000.0, "requests/s", http)
    free = fig("http_submit_single_ungoverned", 2_100.0, "requests/s", http)
    bare = fig("bare_submit", 10_000.0, "requests/s", http)
    overhead = fig(
        "http_governance_overhead",
        0.05,
        "fraction",
        http,
        rate_unit="requests/s",
        governed_median=2_000.0,
        ungoverned_median=2_100.0,
        overhead_per_server_core=0.04,
        floor="<= 0.10",
        meets_floor=True,
    )
    batch_overhead = fig(
        "http_batch_governance_overhead",
        0.2,
        "fraction",
        http,
        rate_unit="entries/s",
        governed_median=8_000.0,
        ungoverned_median=10_000.0,
        floor="<= 0.10",
        meets_floor=False,
    )
    path = write(
        tmp_path / "r.json",
        results(
            "quick",
            "2026-01-02T11:00:00+0000",
            [single, free, bare, overhead, batch_overhead],
            {http: "ok"},
        ),
    )
    doc = tmp_path / "benchmarks.md"
    report.generate(path, doc, tmp_path / "plots")
    block = block_of(doc.read_text())
    assert "**2,100 requests/s**" in row(block, "http_submit_single_ungoverned")
    assert "0.21× of the bare app" in row(block, "http_submit_single_ungoverned")
    gov_row = row(block, "http_governance_overhead")
    assert "**0.05 fraction**" in gov_row
    assert "governed_median=2,000; ungoverned_median=2,100" in gov_row
    assert "issue floor <= 0.10: met" in gov_row
    assert "issue floor <= 0.10: MISSED" in row(block, "http_batch_governance_overhead")
    assert "**Governance's cost**: 5.0% of the rate of single submissions" in block
    assert "governed 2,000/s against 2,100/s ungoverned" in block
    assert "per fully used server core 4.0%" in block
    assert "20.0% of the rate of batches of 100" in block
    assert "governed 8,000 entries/s against 10,000 entries/s ungoverned" in block
    assert "issue floor <= 0.10 MISSED" in block
