"""bench/append.py's floor verdicts: below the issue's tree size they say so."""

from __future__ import annotations

from tests.bench import load

append = load("append")


def test_floor_text_says_when_judged_below_the_issue_size() -> None:
    assert append.at_size(">= 20000", append.ISSUE_TREE_SIZE) == ">= 20000"
    assert append.at_size(">= 20000", append.ISSUE_TREE_SIZE + 7) == ">= 20000"
    quick = append.at_size(">= 0.90 (within 10%)", append.QUICK.full_size)
    assert quick.startswith(">= 0.90 (within 10%), set at 10,000,000")
    assert "measured at 1,000,000 only, indicative" in quick
    assert append.FULL.full_size == append.ISSUE_TREE_SIZE
