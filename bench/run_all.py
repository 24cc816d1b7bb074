"""Run the whole benchmark suite, keep the results and regenerate docs/benchmarks.md.

Runs bench/append.py, http_service.py, verify.py, peers.py and scale.py one after the other,
each as a subprocess in its own session (so its own process group), collects the JSON
lines they print, writes ``bench/results/<date>.json`` (``<date>-quick.json`` for a quick
run on a day that has a full one; ``<date>-<mode>-only-<scripts>.json`` for ``--only``)
and then runs bench/report.py, which regenerates the generated part of
docs/benchmarks.md and its plots.

    .venv/bin/python bench/run_all.py --quick     # make bench: under 10 minutes
    .venv/bin/python bench/run_all.py             # make bench-full: ~40 min (10^8)
    .venv/bin/python bench/run_all.py --scale-max-size 10000000   # full, curves to 10^7
    .venv/bin/python bench/run_all.py --quick --only peers,scale

A script that fails (or runs past its time limit) is recorded with its exit status and
the tail of its stderr, and the suite goes on. Figures a script could not measure
(pymerkle missing, say) come as ``{"name", "skipped"}`` lines and are listed under
``skipped``, as are missing tools (wrk, matplotlib, pymerkle).

Nothing is left behind: every script gets TMPDIR pointing into one directory of this
run, removed at the end whatever happened; on exit, Ctrl-C or SIGTERM the running
script's process group and every process descended from it get SIGTERM (the scripts
then stop their servers and remove their data), then SIGKILL after a grace period.
If an interrupted run has nothing to write, no results file is written.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

_BENCH = Path(__file__).resolve().parent
ROOT = _BENCH.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
RESULTS = _BENCH / "results"
QUICK_BUDGET_S = 600.0
ALIASES = {"http": "http_service"}  # the script's name before it stopped shadowing `http`
GRACE_S = 20.0


def _load(name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass(frozen=True)
class Script:
    name: str
    quick_args: tuple[str, ...]
    full_args: tuple[str, ...]
    quick_timeout: float
    full_timeout: float


# Order: the cheap engine figures first, then HTTP (the most sensitive to load), the
# auditor, the peers and floors, and the scale curves (the longest in full mode).
SCRIPTS = (
    Script("append", ("--quick",), (), 180, 1800),
    Script("http_service", ("--quick",), (), 480, 2400),
    Script("verify", ("--quick",), (), 120, 900),
    Script("peers", ("--quick",), (), 240, 2400),
    Script("scale", ("--quick",), (), 120, 5400),
)


@dataclass
class Outcome:
    name: str
    argv: list[str]
    status: str = "not run"  # ok | failed | timeout | interrupted | missing
    returncode: int | None = None
    seconds: float = 0.0
    figures: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)
    bad_lines: int = 0
    script_cpu_cores: float | None = None  # the script and everything it waited for
    other_cpu_cores: float | None = None  # the rest of the machine meanwhile

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "script": f"bench/{self.name}.py",
            "argv": self.argv,
            "status": self.status,
            "returncode": self.returncode,
            "seconds": round(self.seconds, 1),
            "figures": len(self.figures),
        }
        if self.skipped:
            out["skipped"] = len(self.skipped)
        if self.bad_lines:
            out["non_json_stdout_lines"] = self.bad_lines
        if self.script_cpu_cores is not None:
            out["script_cpu_cores"] = self.script_cpu_cores
            out["other_cpu_cores"] = self.other_cpu_cores
        if self.status != "ok":
            out["stderr_tail"] = self.stderr_tail[-40:]
        return out


# -- processes ------------------------------------------------------------------------


def _children_of() -> dict[int, list[int]]:
    """Return {ppid: [pid, ...]} of every process now, from /proc."""
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def descendants(pid: int) -> list[int]:
    """Return the pids descended from pid (children, grandchildren, ...)."""
    tree = _children_of()
    out, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)  # its group, if it leads one (servers run in their own)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def become_subreaper() -> bool:
    """Ask Linux to reparent our orphaned descendants (a server whose script died) to
    this process instead of init, so they can still be found and stopped."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # CHILD_SUBREAPER
    except Exception:
        return False


def _alive(pid: int) -> bool:
    """True if pid runs (a zombie child of ours is reaped and counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a script we started and anything it left: SIGTERM to its group and to every
    descendant of ours (whose own sessions, e.g. http_service.py's servers, a group signal would
    miss); SIGKILL after GRACE_S seconds. The scripts turn SIGTERM into cleanup (servers
    stopped, temp dirs removed)."""
    family = [*([proc.pid] if proc.poll() is None else []), *descendants(os.getpid())]
    if not family:
        return
    _signal_all(family, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        proc.poll()
        family = [p for p in family if _alive(p)]
        if not family:
            return
        time.sleep(0.1)
    _signal_all([*family, *descendants(os.getpid())], signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    for pid in family:
        _alive(pid)


def _pump_stdout(stream: IO[bytes], outcome: Outcome, script: str) -> None:
    for raw in stream:
        line = raw.decode(errors="replace").strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            outcome.bad_lines += 1
            continue
        if not isinstance(obj, dict) or "name" not in obj:
            outcome.bad_lines += 1
            continue
        obj["script"] = script
        if "skipped" in obj:
            outcome.skipped.append(obj)
        else:
            outcome.figures.append(obj)


def _pump_stderr(stream: IO[bytes], tail: deque[str], prefix: str) -> None:
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        tail.append(line)
        sys.stderr.write(f"{prefix}{line}\n")
        sys.stderr.flush()


_CURRENT: subprocess.Popen[bytes] | None = None


def run_script(
    script: Script, quick: bool, env: dict[str, str], extra: tuple[str, ...] = ()
) -> Outcome:
    """Run one bench script (its quick or full arguments, then ``extra``) to the end or
    its timeout, and return what it printed and how it ended."""
    global _CURRENT
    path = _BENCH / f"{script.name}.py"
    args = [*(script.quick_args if quick else script.full_args), *extra]
    argv = [sys.executable, str(path), *args]
    outcome = Outcome(script.name, [f"bench/{script.name}.py", *args])
    if not path.exists():
        outcome.status = "missing"
        outcome.stderr_tail = [f"{path} does not exist"]
        return outcome
    timeout = script.quick_timeout if quick else script.full_timeout
    tail: deque[str] = deque(maxlen=200)
    t0 = time.perf_counter()
    busy0, kids0 = machine_busy_seconds(), children_cpu_seconds()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group; Ctrl-C reaches only us
    )
    _CURRENT = proc
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=_pump_stdout, args=(proc.stdout, outcome, outcome.argv[0])),
        threading.Thread(target=_pump_stderr, args=(proc.stderr, tail, f"[{script.name}] ")),
    ]
    for t in readers:
        t.daemon = True
        t.start()
    try:
        proc.wait(timeout)
        outcome.status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        outcome.status = "timeout"
        tail.append(f"run_all: stopped after the {timeout:.0f} s limit")
        stop(proc)
    except BaseException:
        outcome.status = "interrupted"
        stop(proc)
        raise
    finally:
        for t in readers:
            t.join(5)
        outcome.returncode = proc.returncode
        outcome.seconds = time.perf_counter() - t0
        if proc.returncode is not None and outcome.seconds > 0:
            mine = children_cpu_seconds() - kids0
            other = machine_busy_seconds() - busy0 - mine
            outcome.script_cpu_cores = round(mine / outcome.seconds, 2)
            outcome.other_cpu_cores = round(max(0.0, other) / outcome.seconds, 2)
        outcome.stderr_tail = list(tail)
        stop(proc)  # anything it left running (a server whose parent died)
        _CURRENT = None
    return outcome


# -- the run --------------------------------------------------------------------------


def revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "tlog", "verifier", "bench"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes' if dirty else ''}"


def tools() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return the optional tools found and a skipped record for each one missing."""
    found: dict[str, Any] = {"wrk": shutil.which("wrk")}
    skipped = []
    if found["wrk"] is None:
        skipped.append(
            {
                "name": "wrk",
                "script": "bench/http_service.py",
                "skipped": "wrk is not on PATH: bench/http_service.py drives the load with its "
                "built-in asyncio generator instead",
            }
        )
    for module in ("matplotlib", "pymerkle"):
        spec = importlib.util.find_spec(module)
        if spec is None:
            found[module] = None
            what = "no plots" if module == "matplotlib" else "no pymerkle figures"
            skipped.append(
                {
                    "name": module,
                    "script": "bench/run_all.py",
                    "skipped": f"{module} is not installed ({what}); "
                    "`make bench` installs the [bench] extra",
                }
            )
        else:
            try:
                from importlib.metadata import version

                found[module] = version(module)
            except Exception:
                found[module] = "installed"
    return found, skipped


def results_path(
    date: str, quick: bool, only: list[str] | None = None, directory: Path = RESULTS
) -> Path:
    """bench/results/<date>.json for the whole suite; a quick run never replaces a full
    run of the same day: it goes to <date>-quick.json instead. A run of some scripts
    only (``--only``) never replaces a whole suite's results either: it goes to
    <date>-<mode>-only-<script>[+<script>...].json (report.py fills the other scripts
    in from the newest results that have them, and says so)."""
    if only:
        mode = "quick" if quick else "full"
        return directory / f"{date}-{mode}-only-{'+'.join(only)}.json"
    path = directory / f"{date}.json"
    if quick and path.exists():
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("mode") == "full":
                return directory / f"{date}-quick.json"
    return path


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick suite (make bench)")
    parser.add_argument(
        "--only",
        help="comma-separated scripts (append, http_service, verify, peers, scale; "
        "http is short for http_service)",
    )
    parser.add_argument("--no-report", action="store_true", help="do not regenerate the docs")
    parser.add_argument(
        "--scale-max-size",
        type=int,
        metavar="N",
        help="largest tree bench/scale.py builds (its --max-size; by default full mode goes "
        "to 10^8 if the disk has room, about 18 minutes of the suite's 40 on 2 cores)",
    )
    parser.add_argument("--output", type=Path, help="results file (default bench/results/)")
    args = parser.parse_args(argv)
    names = [s.name for s in SCRIPTS]
    only = names if not args.only else [n.strip() for n in args.only.split(",")]
    only = [ALIASES.get(n, n) for n in only]
    unknown = set(only) - set(names)
    if unknown:
        parser.error(f"unknown scripts: {', '.join(sorted(unknown))}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, _on_signal)

    common = _load("_common")
    become_subreaper()
    mode = "quick" if args.quick else "full"
    started = time.time()
    # The code measured is the code at the start: later commits do not change scripts
    # already running, so the revision is read now (and again at the end, below).
    measured = revision()
    date = time.strftime("%Y-%m-%d", time.localtime(started))
    run_tmp = Path(tempfile.mkdtemp(prefix="bucket-bench-run-"))
    env = dict(os.environ, TMPDIR=str(run_tmp), PYTHONUNBUFFERED="1")
    outcomes: list[Outcome] = []
    found, skipped = tools()
    try:
        m = common.machine(run_tmp)
        m["background_cpu_cores"] = _background_cpu()
        common.progress(common.machine_line(m))
        common.progress(
            f"bench/run_all.py: {mode} suite, scripts {', '.join(only)}; "
            f"background load {m['background_cpu_cores']:.2f} cores; tools: "
            + ", ".join(f"{k} {v or 'missing'}" for k, v in found.items())
        )
        for script in SCRIPTS:
            if script.name not in only:
                continue
            common.progress(f"--- bench/{script.name}.py ({mode})")
            extra: tuple[str, ...] = ()
            if script.name == "scale" and args.scale_max_size is not None:
                extra = ("--max-size", str(args.scale_max_size))
            outcome = run_script(script, args.quick, env, extra)
            outcomes.append(outcome)
            common.progress(
                f"--- bench/{script.name}.py: {outcome.status} in {outcome.seconds:.0f} s, "
                f"{len(outcome.figures)} figures, {len(outcome.skipped)} skipped; "
                f"other work on the machine meanwhile: {outcome.other_cpu_cores} cores"
            )
    except KeyboardInterrupt:
        common.progress("interrupted: the running script was stopped; nothing written")
        return 130
    finally:
        if _CURRENT is not None:
            stop(_CURRENT)
        shutil.rmtree(run_tmp, ignore_errors=True)

    finished = time.time()
    seconds = finished - started
    for o in outcomes:
        skipped += o.skipped
    results: dict[str, Any] = {
        "schema": 1,
        "date": date,
        "mode": mode,
        "command": " ".join(["bench/run_all.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(finished)),
        "seconds": round(seconds, 1),
        "revision": measured,
        "machine": m,
        "tools": found,
        "scripts": [o.record() for o in outcomes],
        "skipped": skipped,
        "figures": [f for o in outcomes for f in o.figures],
    }
    at_end = revision()
    if at_end != measured:
        # Scripts that started after the change ran it: say so rather than pick one.
        results["revision_at_end"] = at_end
    if args.quick:
        results["quick_budget_s"] = QUICK_BUDGET_S
        results["within_budget"] = seconds <= QUICK_BUDGET_S
    partial = None if set(only) == set(names) else [n for n in names if n in only]
    out = args.output or results_path(date, args.quick, partial)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write(out, results)
    common.progress(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")

    if not args.no_report:
        try:
            report = _load("report")
            notes = report.generate(out)
        except Exception as exc:  # the results are kept; say why the docs were not
            notes = {"error": f"{type(exc).__name__}: {exc}"}
            common.progress(f"report failed: {notes['error']}")
        results["report"] = notes
        _write(out, results)

    failed = [o for o in outcomes if o.status != "ok"]
    for o in failed:
        common.progress(f"FAILED: bench/{o.name}.py ({o.status}, exit {o.returncode})")
    for s in skipped:
        common.progress(f"skipped: {s['name']} ({s.get('script', '?')}): {s['skipped']}")
    verdict = ""
    if args.quick:
        verdict = " (within" if seconds <= QUICK_BUDGET_S else " (OVER"
        verdict += f" the {QUICK_BUDGET_S:.0f} s budget)"
    common.progress(f"suite done in {seconds:.0f} s{verdict}")
    return 1 if failed else 0


def _write(path: Path, results: dict[str, Any]) -> None:
    """Write results: the header pretty, one figure per line (diffable, small)."""
    head = {k: v for k, v in results.items() if k != "figures"}
    text = json.dumps(head, indent=1, ensure_ascii=False)
    lines = [json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in results["figures"]]
    body = ",\n".join(f"  {line}" for line in lines)
    text = text[: text.rindex("}")].rstrip() + ',\n "figures": [\n' + body + "\n ]\n}\n"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def machine_busy_seconds() -> float:
    """Return the busy CPU seconds of the whole machine so far (all cores, /proc/stat)."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of our waited-for descendants (each script counts its own)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _background_cpu(seconds: float = 2.0) -> float:
    """Return the cores the machine is busy with (other work) before the suite starts."""
    t0, c0 = time.perf_counter(), machine_busy_seconds()
    time.sleep(seconds)
    return round((machine_busy_seconds() - c0) / (time.perf_counter() - t0), 2)


if __name__ == "__main__":
    sys.exit(main())
