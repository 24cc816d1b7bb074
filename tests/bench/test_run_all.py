"""bench/run_all.py: where results go, and a missing optional dependency is a skip.

The suite itself is never run here: the one end-to-end check runs bench/peers.py with
``--only pymerkle`` while pymerkle cannot be imported, which makes the script skip at
once (no benchmark runs), in a subprocess so that run_all's signal handlers and
process-stopping stay out of pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import BENCH, load

run_all = load("run_all")

# Runs run_all.main() with one script (bench/peers.py --only pymerkle), the optional
# modules invisible to its tool check, and no 2-second background-load probe.
DRIVER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("run_all", sys.argv[1])
run_all = importlib.util.module_from_spec(spec)
sys.modules["run_all"] = run_all
spec.loader.exec_module(run_all)
real = importlib.util.find_spec
hidden = ("matplotlib", "pymerkle")
importlib.util.find_spec = lambda name, *a: None if name in hidden else real(name, *a)
run_all._background_cpu = lambda seconds=2.0: 0.0
run_all.SCRIPTS = (run_all.Script("peers", ("--quick", "--only", "pymerkle"), (), 60, 60),)
sys.exit(run_all.main(["--quick", "--no-report", "--output", sys.argv[2]]))
"""


def test_results_paths(tmp_path: Path) -> None:
    day = "2026-01-02"
    assert run_all.results_path(day, True, directory=tmp_path) == tmp_path / f"{day}.json"
    (tmp_path / f"{day}.json").write_text(json.dumps({"mode": "quick"}))
    # A quick run replaces a quick run of the same day...
    assert run_all.results_path(day, True, directory=tmp_path) == tmp_path / f"{day}.json"
    (tmp_path / f"{day}.json").write_text(json.dumps({"mode": "full"}))
    # ...but never a full one; a full run replaces whatever the day had.
    assert run_all.results_path(day, True, directory=tmp_path) == tmp_path / f"{day}-quick.json"
    assert run_all.results_path(day, False, directory=tmp_path) == tmp_path / f"{day}.json"
    # Some scripts only: never the whole suite's file.
    only = run_all.results_path(day, True, ["http_service", "verify"], directory=tmp_path)
    assert only == tmp_path / f"{day}-quick-only-http_service+verify.json"


def test_http_script_is_http_service() -> None:
    names = [s.name for s in run_all.SCRIPTS]
    assert "http_service" in names and "http" not in names
    assert (BENCH / "http_service.py").exists() and not (BENCH / "http.py").exists()
    assert run_all.ALIASES["http"] == "http_service"


def test_missing_optional_dependencies_are_skipped_not_fatal(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    for module in ("pymerkle", "matplotlib"):  # importing either fails, as when missing
        (shadow / module).mkdir(parents=True)
        (shadow / module / "__init__.py").write_text(f"raise ImportError('no {module} here')\n")
    empty = tmp_path / "bin"  # no wrk on PATH (nor anything else)
    empty.mkdir()
    out = tmp_path / "results.json"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(shadow), PATH=str(empty), TMPDIR=str(tmp))
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(BENCH / "run_all.py"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    (script,) = results["scripts"]
    assert script["status"] == "ok" and script["figures"] == 0 and script["skipped"] == 1
    skipped = {s["name"]: s for s in results["skipped"]}
    assert set(skipped) == {"wrk", "matplotlib", "pymerkle"}
    assert skipped["wrk"]["script"] == "bench/http_service.py"
    assert "built-in asyncio generator" in skipped["wrk"]["skipped"]
    assert "not installed" in skipped["matplotlib"]["skipped"]
    # Both the tool check and bench/peers.py itself said pymerkle was skipped.
    pymerkle = [s for s in results["skipped"] if s["name"] == "pymerkle"]
    assert {s["script"] for s in pymerkle} == {"bench/run_all.py", "bench/peers.py"}
    assert results["tools"] == {"wrk": None, "matplotlib": None, "pymerkle": None}
    assert results["figures"] == []
    assert "suite done" in proc.stderr and "skipped: pymerkle (bench/peers.py)" in proc.stderr
    assert list(tmp.iterdir()) == []  # the run's temporary directory is gone


@pytest.mark.parametrize("revisions", [("aaa1111", "aaa1111"), ("aaa1111", "bbb2222")])
def test_the_revision_is_the_code_at_the_start(tmp_path: Path, revisions: tuple[str, str]) -> None:
    # A commit made while the suite runs does not change the scripts already running:
    # the results name the revision at the start, and the one at the end if it moved.
    shadow = tmp_path / "shadow"
    (shadow / "pymerkle").mkdir(parents=True)
    (shadow / "pymerkle" / "__init__.py").write_text("raise ImportError('no pymerkle')\n")
    driver = DRIVER.replace(
        "sys.exit(", "revs = iter(sys.argv[3:])\nrun_all.revision = lambda: next(revs)\nsys.exit("
    )
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-c", driver, str(BENCH / "run_all.py"), str(out), *revisions],
        env=dict(os.environ, PYTHONPATH=str(shadow)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert results["revision"] == revisions[0]
    assert results.get("revision_at_end") == (
        None if revisions[0] == revisions[1] else revisions[1]
    )


def test_only_takes_the_old_http_name_and_refuses_unknown_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:  # refused before anything runs
        run_all.main(["--only", "http,verify,nope"])
    assert exc.value.code == 2
    assert "unknown scripts: nope" in capsys.readouterr().err
