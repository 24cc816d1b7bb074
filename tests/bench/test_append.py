"""bench/append.py: floor verdicts below the issue's tree size say so; figure 5's
schedule of windows."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.bench import load

append = load("append")


def test_floor_text_says_when_judged_below_the_issue_size() -> None:
    assert append.at_size(">= 20000", append.ISSUE_TREE_SIZE) == ">= 20000"
    assert append.at_size(">= 20000", append.ISSUE_TREE_SIZE + 7) == ">= 20000"
    quick = append.at_size(">= 0.90 (within 10%)", append.QUICK.full_size)
    assert quick.startswith(">= 0.90 (within 10%), set at 10,000,000")
    assert "measured at 1,000,000 only, indicative" in quick
    assert append.FULL.full_size == append.ISSUE_TREE_SIZE


def test_figure_5_alternates_the_sizes_and_deletes_no_tree_until_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The schedule is the point of fig5_pairs (its docstring says why): record which
    # tree each window ran on and which 100k trees were on disk at that moment.
    windows: list[tuple[str, list[str]]] = []

    def record(store: Any, log: Any, gen: Any, batches: int) -> float:
        on_disk = sorted(p.name for p in tmp_path.glob("at-100k-*"))
        windows.append((store.storage.path.name, on_disk))
        return 1000.0 + len(windows)

    real_grow = append.grow
    monkeypatch.setattr(append, "append_rate", record)
    monkeypatch.setattr(append, "grow", lambda s, lg, g, target: real_grow(s, lg, g, 300))
    mode = dataclasses.replace(append.QUICK, runs=3, fig5_batches=1)
    gen = append.Leaves(seed=5)
    with append.open_log(tmp_path / "big") as (store, log):
        log.append_many(gen.batch(10))
        at_100k, at_full = append.fig5_pairs(mode, tmp_path, gen, store, log)
    assert [name for name, _ in windows] == [
        "at-100k-0",
        "big",
        "big",
        "at-100k-1",
        "at-100k-2",
        "big",
    ]
    assert windows[-1][1] == ["at-100k-0", "at-100k-1", "at-100k-2"]  # nothing deleted yet
    assert at_100k == [1001.0, 1004.0, 1005.0] and at_full == [1002.0, 1003.0, 1006.0]
    assert not list(tmp_path.glob("at-100k-*"))  # deleted once all windows are done
