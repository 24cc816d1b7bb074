"""Benchmark the HTTP service (``tlog serve``) over loopback, next to a bare peer.

Starts ``tlog serve`` on 127.0.0.1 on a free port with a fresh temporary data
directory, made by ``tlog init`` from the demo config with only its two write-rate
limits raised (BENCH_WRITE_RATE says why) and one API key per product from ``tlog keys
create``, and ``bench/bare_app.py`` (the bare peer: Starlette on
uvicorn with the same settings, a POST that only appends the body to LMDB through a
group-commit writer thread with fsync, and a constant GET), and
``bench/ungoverned_app.py`` (``tlog serve`` on its own fresh data directory with the
governance work of the submission path monkeypatched to no-ops in that process only:
a probe to measure governance's cost, never a way to run the service). All are always
stopped and the data removed at exit, also on an error, Ctrl-C or SIGTERM.

The load comes from ``wrk`` (with a generated Lua script) if it is on PATH, else
from the built-in generator: asyncio (uvloop) protocols speaking HTTP/1.1
keep-alive, one request in flight per connection, requests prepared in advance.
64 connections throughout. Figures, one JSON object per line on stdout::

    http_submit_single            POST /logs/gurukul/entries, closed loop (requests/s)
    http_submit_single_p50/_p99   its latency (ms)
    http_submit_batch100          POST .../entries/batch of 100 entries (entries/s)
    http_read_checkpoint          GET .../checkpoint (requests/s)
    http_read_tile                GET .../tile/0/000, a full tile of 256 hashes (requests/s)
    http_read_inclusion           GET .../proof/inclusion?index=I&size=N, random I (req/s)
    http_submit_open_<P>pct_p50/_p99
                                  open loop: submissions sent at a fixed rate, P% of the
                                  measured peak, time from the scheduled send to the
                                  receipt (ms; queueing in the client counts)
    bare_submit                   the bare peer's POST (requests/s)
    bare_get                      the bare peer's constant GET (requests/s)
    http_submit_vs_bare           http_submit_single / bare_submit, paired runs (ratio)
    http_submit_single_ungoverned the same POST, same runs, to bench/ungoverned_app.py: tlog
                                  serve with governance's submission-path work as
                                  no-ops (a benchmark probe only, never the service)
    http_governance_overhead      1 - http_submit_single / http_submit_single_ungoverned,
                                  run by run (the two servers alternate, A B A B ...);
                                  issue #6: at most 0.10 (fraction)
    http_submit_batch100_ungoverned, http_batch_governance_overhead
                                  the same for batches of 100
    http_checkpoint_vs_bare_get   http_read_checkpoint / bare_get, ratio of medians
    http_refusal_storm            10,000 refused requests (401, 403, 405, 413, 415, 422,
                                  429: a mix of what clients get wrong, over 64
                                  connections, measured as 5 windows of 2,000; refusals/s),
                                  then the audit log read back over HTTP with an
                                  audit-scoped key and audited with the verifier:
                                  ``params.all_recorded`` says whether every refusal has
                                  its audit record (counted by status, method and path)

``value`` is the median of the runs: 5 runs of 10 s per figure, 5 of 3 s with
``--quick`` (which says so in ``params``). Only 2xx answers count in rates and
latencies (but for the storm, where only refusals count); anything else
is listed in ``params.errors``. ``params`` also carry the CPU used during the measured
window, in cores, since the generator shares the machine's cores with the server: the
load generator's (``client_cpu_cores``), the server's (``server_cpu_cores``), the
rest of the machine's (``other_cpu_cores``: other processes, interrupts) and the
rate per fully used server core (``per_server_core_s``), which other load on the
machine disturbs far less than the rate itself. ``machine.background_cpu_cores`` is
the load measured for 2 s before the servers start; ``params.revision`` the commit.

    .venv/bin/python bench/http_service.py --quick      # ~3 minutes
    .venv/bin/python bench/http_service.py              # ~10 minutes
    .venv/bin/python bench/http_service.py --storm-only # the refusal storm alone, ~30 s
    .venv/bin/python bench/http_service.py --quick --governance-only  # governance's cost, ~2 min
    .venv/bin/python bench/http_service.py --quick --governance-only --ungoverned-stubs audit
                                                        # attribute it: skip only the audit record
    .venv/bin/python bench/http_service.py --profile /tmp/prof.txt   # + py-spy
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

# Python puts a script's directory first on sys.path. Move bench/ to the end: nothing
# in it may shadow an installed or standard module (this file was once bench/http.py,
# which shadowed the standard library's http package), and _common is still found.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

from _common import (  # noqa: E402
    emit,
    figure,
    machine,
    machine_line,
    percentile,
    progress,
    temp_dir,
)

from tlog.config import default_config_text, parse_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CONNECTIONS = 64
PRODUCT = "gurukul"
BODY_BYTES = 200
BATCH = 100
CLK_TCK = os.sysconf("SC_CLK_TCK")

PY_SPY_RECORD = ("record", "-f", "raw", "-r", "200", "--gil", "-o")

# The floors (2-core machine, 64 connections).
FLOOR_SUBMIT_RPS = 3_000
FLOOR_SUBMIT_P99_MS = 100.0
FLOOR_BATCH_EPS = 50_000
FLOOR_READ_RPS = 4_000
MAX_GOVERNANCE_OVERHEAD = 0.10  # issue #6: governance costs submissions at most 10%

BENCH_WRITE_RATE = 1_000_000
"""The write-rate limits (entries/s, per product and global) tlog serve runs with here.
Rate limits are policy: the demo config's 20,000/s per product (50,000/s in all) would
make the batch figure measure the policy rather than what the service can do, so both
are set far above this machine's capacity. Every request still pays for the checks."""


@dataclass(frozen=True)
class Mode:
    runs: int
    duration: float  # seconds measured per run
    warmup: float  # seconds of load before each measured window (not counted)
    quick: bool


QUICK = Mode(runs=5, duration=3.0, warmup=0.5, quick=True)
FULL = Mode(runs=5, duration=10.0, warmup=1.0, quick=False)


# -- servers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if this process dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    """A server process on 127.0.0.1:port, its output in files under a directory."""

    def __init__(self, name: str, argv: list[str], port: int, logs: Path) -> None:
        self.name = name
        self.port = port
        self.out = logs / f"{name}.stdout"
        self.err = logs / f"{name}.stderr"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # Ctrl-C reaches us; we stop it in order
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the port accepts connections. Raises RuntimeError if it dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on port {self.port}: {self.tail()}")

    def tail(self) -> str:
        try:
            return self.err.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """Return user + system CPU seconds of the process so far (all its threads)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        """Stop it: SIGTERM, then SIGKILL after 10 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def running(name: str, argv: list[str], port: int, logs: Path) -> Iterator[Server]:
    server = Server(name, argv, port, logs)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


_KEY_LINE = re.compile(r"^  ([a-z0-9][a-z0-9-]*): (bk_\S+)$", re.M)


def demo_keys(server: Server, timeout: float = 10.0) -> dict[str, str]:
    """Return {product: API key} from the demo keys tlog serve printed on first start."""
    deadline = time.monotonic() + timeout
    while True:
        keys = dict(_KEY_LINE.findall(server.out.read_text(errors="replace")))
        if PRODUCT in keys or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if PRODUCT not in keys:
        raise RuntimeError(f"no {PRODUCT} key in tlog serve's output: {server.out.read_text()}")
    return keys


def capacity_depository(data: Path, workdir: Path) -> dict[str, str]:
    """Initialise a depository in ``data`` from the demo config with the write-rate limits
    at BENCH_WRITE_RATE; return {product: API key} (scopes submit, read, audit, as the
    demo's). Raises RuntimeError if the demo config or the CLI does not cooperate."""
    text = default_config_text()
    for name in ("write_rate_per_product", "write_rate_global"):
        text, count = re.subn(rf"(?m)^{name}\s*=\s*\d+", f"{name} = {BENCH_WRITE_RATE}", text)
        if count != 1:
            raise RuntimeError(f"the demo config has no single {name} line to raise")
    config = workdir / "bench-config.toml"
    config.write_text(text, encoding="utf-8")
    tlog_cli(data, "init", "--config", str(config))
    return {
        product: tlog_cli(
            data, "keys", "create", "--product", product, "--scopes", "submit,read,audit"
        ).strip()
        for product in parse_config(text).products
    }


def machine_cpu_seconds() -> float:
    """Return the busy CPU seconds of the whole machine so far (all cores, /proc/stat)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    ticks = [int(x) for x in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / CLK_TCK


def background_cpu(seconds: float = 2.0) -> float:
    """Return the cores the machine is busy with before the benchmark starts."""
    t0, c0 = time.perf_counter(), machine_cpu_seconds()
    time.sleep(seconds)
    return (machine_cpu_seconds() - c0) / (time.perf_counter() - t0)


def revision() -> str:
    """Return the git commit of the code under test, noting uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "tlog", "verifier"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes in tlog/verifier' if dirty else ''}"


def self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# -- requests -------------------------------------------------------------------------


def http_request(
    method: str, path: str, port: int, key: str | None, body: bytes | None = None
) -> bytes:
    """Return the bytes of one HTTP/1.1 keep-alive request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def submission(rnd: random.Random, i: int) -> dict[str, Any]:
    """One gurukul lesson: small metadata, a BODY_BYTES body (base64), no artifact id
    (the server gives each a fresh UUID, so equal requests still make distinct leaves)."""
    return {
        "artifact_type": "lesson",
        "metadata": {"title": f"Lesson {i}: linear equations", "language": "en"},
        "body": base64.b64encode(rnd.randbytes(BODY_BYTES)).decode(),
    }


def submit_requests(port: int, key: str, n: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    path = f"/logs/{PRODUCT}/entries"
    return [
        http_request("POST", path, port, key, json.dumps(submission(rnd, i)).encode())
        for i in range(n)
    ]


def batch_requests(port: int, key: str, n: int, seed: int = 2) -> list[bytes]:
    rnd = random.Random(seed)
    path = f"/logs/{PRODUCT}/entries/batch"
    out = []
    for b in range(n):
        items = [submission(rnd, b * BATCH + i) for i in range(BATCH)]
        out.append(http_request("POST", path, port, key, json.dumps({"entries": items}).encode()))
    return out


def get_requests(paths: Sequence[str], port: int, key: str | None) -> list[bytes]:
    return [http_request("GET", p, port, key) for p in paths]


# -- the built-in load generator ------------------------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.remaining = -1  # body bytes still to come; -1: reading the head
        self.status = 0
        self.t0 = 0.0  # when the request was sent (closed loop) or due (open loop)
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def send(self, request: bytes, t0: float) -> None:
        self.t0 = t0
        if self.transport is None:
            self.load.fail(self, "connection closed by the server")
            return
        self.busy = True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        while True:
            if self.remaining < 0:
                head = self.head + data if self.head else data
                end = head.find(b"\r\n\r\n")
                if end < 0:
                    self.head = head
                    return
                self.head = b""
                self.status = int(head[9:12])
                lower = head[:end].lower()
                at = lower.find(b"\r\ncontent-length:")
                if at < 0:
                    self.load.fail(self, "response without Content-Length")
                    return
                stop = lower.find(b"\r\n", at + 17)
                self.remaining = int(lower[at + 17 : stop if stop >= 0 else end])
                data = head[end + 4 :]
            n = len(data)
            if n < self.remaining:
                self.remaining -= n
                return
            data = data[self.remaining :]
            self.remaining = -1
            self.busy = False
            self.load.done(self)
            if not data:
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            self.load.fail(self, f"connection lost: {exc!r}")


@dataclass
class RunResult:
    """One measured window."""

    seconds: float
    ok: int  # 2xx answers (only these count in rates and latencies)
    latencies: list[float]  # seconds
    bad: dict[str, int] = field(default_factory=dict)  # non-2xx statuses and failures
    client_cpu: float = 0.0  # cores
    server_cpu: float = 0.0
    machine_cpu: float = 0.0
    percentiles_ms: dict[float, float] | None = None  # from wrk, which keeps no samples

    @property
    def rate(self) -> float:
        return self.ok / self.seconds

    def latency_ms(self, p: float) -> float:
        if self.percentiles_ms is not None:
            return self.percentiles_ms[p]
        return percentile(self.latencies, p) * 1000 if self.latencies else float("nan")


class _CpuWindow:
    """CPU seconds of the client, the server and the machine between start() and stop()."""

    def __init__(self, server: Server, client: Callable[[], float]) -> None:
        self.server = server
        self.client = client
        self.begin: tuple[float, float, float, float] | None = None
        self.end: tuple[float, float, float, float] | None = None

    def _sample(self) -> tuple[float, float, float, float]:
        return (
            time.perf_counter(),
            self.client(),
            self.server.cpu_seconds(),
            machine_cpu_seconds(),
        )

    def start(self) -> None:
        self.begin = self._sample()

    def stop(self) -> None:
        self.end = self._sample()

    def fill(self, result: RunResult) -> None:
        if self.begin is None or self.end is None:
            return
        wall = max(self.end[0] - self.begin[0], 1e-9)
        result.client_cpu = (self.end[1] - self.begin[1]) / wall
        result.server_cpu = (self.end[2] - self.begin[2]) / wall
        result.machine_cpu = (self.end[3] - self.begin[3]) / wall


class Load:
    """The built-in generator: CONNECTIONS keep-alive connections to one server."""

    def __init__(self, server: Server, requests: Sequence[bytes], connections: int) -> None:
        self.server = server
        self.requests = requests
        self.connections = connections
        self.conns: list[_Conn] = []
        self._i = 0
        # per run
        self._open = False
        self._t_start = 0.0
        self._t_end = 0.0
        self._latencies: list[float] = []
        self._bad: dict[str, int] = {}
        self._in_flight = 0
        self._finished: asyncio.Future[None] | None = None
        self._pending: deque[float] = deque()
        self._idle: deque[_Conn] = deque()  # FIFO, so every connection stays in use
        self._left = 0

    def _next(self) -> bytes:
        self._i += 1
        return self.requests[self._i % len(self.requests)]

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.conns = []
        for _ in range(self.connections):
            _, conn = await loop.create_connection(lambda: _Conn(self), HOST, self.server.port)
            sock = conn.transport.get_extra_info("socket") if conn.transport else None
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns.append(conn)

    def close(self) -> None:
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
        self.conns = []

    def _count_bad(self, what: str) -> None:
        self._bad[what] = self._bad.get(what, 0) + 1

    def done(self, conn: _Conn) -> None:
        now = time.perf_counter()
        ok = conn.status < 300
        if not ok:
            self._count_bad(str(conn.status))
        if self._open:
            if ok:
                self._latencies.append(now - conn.t0)
            if self._pending:
                conn.send(self._next(), self._pending.popleft())
            else:
                self._idle.append(conn)
            self._left -= 1
            if self._left == 0 and self._finished is not None and not self._finished.done():
                self._finished.set_result(None)
            return
        if now < self._t_end:
            if now >= self._t_start and ok:
                self._latencies.append(now - conn.t0)
            conn.send(self._next(), now)
            return
        self._in_flight -= 1
        if self._in_flight == 0 and self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    def fail(self, conn: _Conn, why: str) -> None:
        self._count_bad(why)
        if conn.transport is not None:
            conn.transport.close()
        if self._open:
            self._left -= 1
            done = self._left == 0
        else:
            self._in_flight -= 1
            done = self._in_flight == 0
        if done and self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    def _reset(self) -> asyncio.Future[None]:
        self._latencies = []
        self._bad = {}
        self._pending = deque()
        self._idle = deque()
        self._finished = asyncio.get_running_loop().create_future()
        return self._finished

    async def _wait(
        self, finished: asyncio.Future[None], timeout: float, left: Callable[[], int]
    ) -> None:
        """Wait for the last answer; count the unanswered as timeouts after timeout s."""
        try:
            await asyncio.wait_for(asyncio.shield(finished), timeout)
        except TimeoutError:
            self._bad["no answer (timeout)"] = left()

    async def closed_loop(self, duration: float, warmup: float) -> RunResult:
        """Keep every connection busy for warmup + duration; measure the last duration."""
        await self.connect()
        try:
            loop = asyncio.get_running_loop()
            finished = self._reset()
            self._open = False
            cpu = _CpuWindow(self.server, self_cpu_seconds)
            now = time.perf_counter()
            self._t_start = now + warmup
            self._t_end = self._t_start + duration
            loop.call_later(warmup, cpu.start)
            loop.call_later(warmup + duration, cpu.stop)
            self._in_flight = len(self.conns)
            for conn in self.conns:
                conn.send(self._next(), now)
            await self._wait(finished, warmup + duration + 60, lambda: self._in_flight)
            result = RunResult(duration, len(self._latencies), self._latencies, self._bad)
            cpu.fill(result)
            return result
        finally:
            self.close()

    async def open_loop(self, rate: float, duration: float) -> RunResult:
        """Send rate requests per second for duration, whatever the answers' pace."""
        await self.connect()
        try:
            finished = self._reset()
            self._open = True
            total = max(1, int(rate * duration))
            self._left = total
            self._idle = deque(self.conns)
            cpu = _CpuWindow(self.server, self_cpu_seconds)
            start = time.perf_counter() + 0.01
            cpu.start()
            sent = 0
            while sent < total:
                due = min(total, int((time.perf_counter() - start) * rate) + 1)
                while sent < due:
                    t0 = start + sent / rate
                    while self._idle and self._idle[0].transport is None:
                        self._idle.popleft()  # closed by the server while idle: drop it
                    if self._idle:
                        self._idle.popleft().send(self._next(), t0)
                    else:
                        self._pending.append(t0)
                    sent += 1
                # Timers tick in whole milliseconds: never spin on shorter sleeps; send
                # what fell due in the meantime as one burst (latency counts from t0).
                await asyncio.sleep(max(0.001, start + sent / rate - time.perf_counter()))
            await self._wait(finished, duration + 60, lambda: self._left)
            cpu.stop()
            wall = time.perf_counter() - start
            result = RunResult(wall, len(self._latencies), self._latencies, self._bad)
            cpu.fill(result)
            return result
        finally:
            self._open = False
            self.close()


# -- wrk ------------------------------------------------------------------------------


def _lua_string(raw: bytes) -> str:
    out = []
    for b in raw:
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\{b:03d}")
    return '"' + "".join(out) + '"'


_WRK_DONE = """
done = function(summary, latency, requests)
  io.write(string.format(
    "BENCH {\\"requests\\":%d,\\"duration_us\\":%d,\\"status\\":%d,\\"connect\\":%d," ..
    "\\"read\\":%d,\\"write\\":%d,\\"timeout\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d}\\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_script(requests: Sequence[bytes], path: Path) -> Path:
    """Write a wrk Lua script that cycles through the prepared raw requests."""
    lines = ["local reqs = {"]
    lines += [f"  {_lua_string(r)}," for r in requests]
    lines += [
        "}",
        "local n = #reqs",
        "local i = 0",
        "request = function()",
        "  i = i + 1",
        "  return reqs[(i % n) + 1]",
        "end",
        _WRK_DONE,
    ]
    path.write_text("\n".join(lines))
    return path


async def wrk_run(
    wrk: str, server: Server, script: Path, duration: float, connections: int
) -> RunResult:
    """One wrk run (its own connections, no warm-up beyond the previous runs)."""
    argv = [
        wrk,
        f"-t{min(connections, os.cpu_count() or 2)}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        f"http://{HOST}:{server.port}/",
    ]
    cpu = _CpuWindow(server, children_cpu_seconds)
    cpu.start()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled (Ctrl-C): do not leave wrk running
            proc.kill()
            await asyncio.shield(proc.wait())
    cpu.stop()
    line = next((x for x in out.decode().splitlines() if x.startswith("BENCH ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode()[-500:]}")
    data = json.loads(line[6:])
    seconds = data["duration_us"] / 1e6
    bad = {k: data[k] for k in ("status", "connect", "read", "write", "timeout") if data[k]}
    percentiles: dict[float, float] = {50: data["p50_us"] / 1000, 99: data["p99_us"] / 1000}
    ok = data["requests"] - data["status"]
    result = RunResult(seconds, ok, [], bad, percentiles_ms=percentiles)
    cpu.fill(result)
    # wrk stops with requests in flight, which the server still finishes: let it drain
    # before the next run, or they count against its pending-write limit (429).
    await asyncio.sleep(min(5.0, max(0.2, 2 * percentiles[99] / 1000)))
    return result


# -- driving --------------------------------------------------------------------------


class Driver:
    """Closed-loop runs against one server with one set of requests, by wrk or built-in."""

    def __init__(
        self,
        name: str,
        server: Server,
        requests: Sequence[bytes],
        mode: Mode,
        wrk: str | None,
        scripts: Path,
    ) -> None:
        self.name = name
        self.server = server
        self.mode = mode
        self.wrk = wrk
        self.load = Load(server, requests, CONNECTIONS)
        self.script = wrk_script(requests, scripts / f"{name}.lua") if wrk else None

    async def run(self, duration: float | None = None) -> RunResult:
        duration = self.mode.duration if duration is None else duration
        if self.wrk is not None and self.script is not None:
            return await wrk_run(self.wrk, self.server, self.script, duration, CONNECTIONS)
        return await self.load.closed_loop(duration, self.mode.warmup)

    async def warm(self) -> None:
        await self.run(1.0)


def p50_ms(r: RunResult) -> float:
    return r.latency_ms(50)


def p99_ms(r: RunResult) -> float:
    return r.latency_ms(99)


def cpu_params(results: Sequence[RunResult]) -> dict[str, Any]:
    def med(xs: Iterator[float]) -> float:
        return round(statistics.median(xs), 2)

    return {
        # What one fully used server core answers: robust to other load on the machine.
        "per_server_core_s": round(
            statistics.median(r.rate / r.server_cpu for r in results if r.server_cpu > 0)
            if any(r.server_cpu > 0 for r in results)
            else 0.0,
            1,
        ),
        "client_cpu_cores": med(r.client_cpu for r in results),
        "server_cpu_cores": med(r.server_cpu for r in results),
        "machine_cpu_cores": med(r.machine_cpu for r in results),
        "other_cpu_cores": med(
            max(0.0, r.machine_cpu - r.client_cpu - r.server_cpu) for r in results
        ),
    }


def bad_params(results: Sequence[RunResult]) -> dict[str, Any]:
    bad: dict[str, int] = {}
    for r in results:
        for k, v in r.bad.items():
            bad[k] = bad.get(k, 0) + v
    return {"errors": bad} if bad else {}


def describe(r: RunResult) -> str:
    bad = f", errors {r.bad}" if r.bad else ""
    other = max(0.0, r.machine_cpu - r.client_cpu - r.server_cpu)
    return (
        f"{r.rate:,.0f}/s, p50 {p50_ms(r):.1f} ms, p99 {p99_ms(r):.1f} ms; cores: client "
        f"{r.client_cpu:.2f}, server {r.server_cpu:.2f}, other {other:.2f}{bad}"
    )


def floor(text: str, ok: bool) -> dict[str, Any]:
    return {"floor": text, "meets_floor": ok}


def profile_summary(path: Path, top: int = 20) -> list[str]:
    """Return the functions with the most samples (self and inclusive) of a py-spy raw
    profile (collapsed stacks: ``frame;frame;... count`` per line)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        return [f"no profile: {exc}"]
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in {re.sub(r":\d+\)$", ")", f) for f in frames}:  # per function
            inclusive[frame] = inclusive.get(frame, 0) + n
    if not total:
        return ["empty profile"]
    out = [f"profile: {total} samples holding the GIL; top functions by own samples:"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"  {n / total:6.1%}  {frame}")
    out.append("top tlog/verifier functions by inclusive samples:")
    ours = [(f, n) for f, n in inclusive.items() if "tlog/" in f or "verifier/" in f]
    for frame, n in sorted(ours, key=lambda kv: -kv[1])[:top]:
        out.append(f"  {n / total:6.1%}  {frame}")
    return out


async def get_text(server: Server, path: str, key: str) -> str:
    """GET path on a new connection; return the body (any status)."""
    reader, writer = await asyncio.open_connection(HOST, server.port)
    try:
        writer.write(http_request("GET", path, server.port, key))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        found = re.search(rb"(?i)content-length:\s*(\d+)", head)
        body = await reader.readexactly(int(found.group(1)) if found else 0)
    finally:
        writer.close()
    return body.decode(errors="replace")


async def checkpoint_size(server: Server, key: str) -> int:
    text = await get_text(server, f"/logs/{PRODUCT}/checkpoint", key)
    return int(text.split("\n")[1])


_REQUESTS_TOTAL = re.compile(
    r'^tlog_http_requests_total\{method="(\w+)",route="([^"]*)",status="(\d+)"\} ([0-9.e+]+)$',
    re.M,
)


async def server_statuses(server: Server, key: str) -> dict[str, int]:
    """Return the server's own count of answers by "METHOD route status" (/metrics), so
    that refusals are named whichever generator ran (wrk counts them without a status)."""
    try:
        text = await get_text(server, "/metrics", key)
    except (OSError, asyncio.IncompleteReadError):
        return {}
    return {
        f"{method} {route} {status}": int(float(n))
        for method, route, status, n in _REQUESTS_TOTAL.findall(text)
    }


def non_2xx(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """Return {"server_non_2xx": {...}} for answers that were not 2xx between snapshots."""
    out = {
        k: n - before.get(k, 0)
        for k, n in after.items()
        if not k.endswith((" 200", " 201")) and n > before.get(k, 0)
    }
    return {"server_non_2xx": out} if out else {}


async def audit_size(server: Server, key: str) -> int:
    """Return the size of the server's audit log (its checkpoint; needs the audit scope)."""
    text = await get_text(server, "/logs/_audit/checkpoint", key)
    return int(text.split("\n")[1])


UNGOVERNED = (
    "bench/ungoverned_app.py: tlog serve with the governance work of the submission path "
    "as no-ops (state check, pending/storage/entry-count limits, token buckets, scale "
    "monitor, per-batch audit record, cool-off check, integrity watch); a benchmark probe "
    "to measure governance's cost, never the service"
)


async def alternate(
    drivers: Sequence[tuple[str, Driver]], mode: Mode, note: Callable[[RunResult], str] = describe
) -> dict[str, list[RunResult]]:
    """Run each driver once per round, in the order given, for mode.runs rounds (A B A B
    ...), so that load from elsewhere on the machine hits each of them alike."""
    out: dict[str, list[RunResult]] = {label: [] for label, _ in drivers}
    for i in range(mode.runs):
        for label, d in drivers:
            out[label].append(await d.run())
            progress(f"{label} run {i + 1}/{mode.runs}: {note(out[label][-1])}")
    return out


def overhead_figure(
    name: str,
    governed: Sequence[float],
    ungoverned: Sequence[float],
    rate_unit: str,
    of: str,
    common: dict[str, Any],
    m: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """1 - governed / ungoverned, pair by pair (the runs alternated A B A B ...)."""
    pairs = [1 - g / u for g, u in zip(governed, ungoverned, strict=True) if u > 0]
    if not pairs:
        raise RuntimeError(f"{name}: no ungoverned run answered anything")
    gm, um = statistics.median(governed), statistics.median(ungoverned)
    value = statistics.median(pairs)
    params = {
        **common,
        "of": of,
        "governed": "tlog serve",
        "ungoverned": UNGOVERNED,
        "order": "governed, ungoverned, run by run (A B A B ...)",
        "rate_unit": rate_unit,
        "governed_median": round(gm, 1),
        "governed_min": round(min(governed), 1),
        "governed_max": round(max(governed), 1),
        "ungoverned_median": round(um, 1),
        "ungoverned_min": round(min(ungoverned), 1),
        "ungoverned_max": round(max(ungoverned), 1),
        "overhead_of_medians": round(1 - gm / um, 4) if um > 0 else None,
        **extra,
        **floor(f"<= {MAX_GOVERNANCE_OVERHEAD:.2f}", value <= MAX_GOVERNANCE_OVERHEAD),
    }
    return figure(name, pairs, "fraction", params, m)


def core_overhead(governed: Sequence[RunResult], ungoverned: Sequence[RunResult]) -> float | None:
    """1 - the ratio of the rates per fully used server core (robust to other load)."""
    g = cpu_params(governed)["per_server_core_s"]
    u = cpu_params(ungoverned)["per_server_core_s"]
    return round(1 - g / u, 4) if g and u else None


async def bench(
    mode: Mode,
    ours: Server,
    bare: Server | None,
    keys: dict[str, str],
    wrk: str | None,
    scripts: Path,
    m: dict[str, Any],
    profile: tuple[str, Path] | None,
    data: Path,
    storm: int,
    storm_only: bool = False,
    free: Server | None = None,
    free_keys: dict[str, str] | None = None,
    stubs: str | None = None,
) -> None:
    """Measure every figure; without ``bare`` (--governance-only) only the submission
    figures and governance's cost, without ``free`` none of the ungoverned figures."""
    key = keys[PRODUCT]
    demo = parse_config(default_config_text()).limits
    generator = "wrk" if wrk else "built-in asyncio (uvloop) generator"
    common = {
        "revision": revision(),
        "connections": CONNECTIONS,
        "duration_s": mode.duration,
        "generator": generator,
        "quick": mode.quick,
        "write_rate_limits": f"{BENCH_WRITE_RATE:,}/s per product and in all (demo config: "
        f"{demo.write_rate_per_product:,} and {demo.write_rate_global:,}): capacity, not policy",
    }
    if mode.quick:
        common["note"] = f"quick mode: {mode.runs} runs of {mode.duration:g} s (full: 5 of 10 s)"
    if storm_only or (bare is None and free is None):
        await refusal_storm(ours, data, keys, storm, m, common)
        return
    fkey = (free_keys or {}).get(PRODUCT, "")
    ungoverned = UNGOVERNED + (f"; ONLY the stubs {stubs}" if stubs else "")
    runs = range(mode.runs)

    # 1. single submissions, interleaved run by run with the ungoverned server's (A B A B)
    # and the bare peer's POST and GET (paired runs).
    single = Driver("submit", ours, submit_requests(ours.port, key, 1024), mode, wrk, scripts)
    drivers = [("submit single", single)]
    if free is not None:
        free_single = Driver(
            "submit_ungoverned", free, submit_requests(free.port, fkey, 1024), mode, wrk, scripts
        )
        drivers.append(("submit single ungoverned", free_single))
    if bare is not None:
        bare_post = Driver(
            "bare_post", bare, submit_requests(bare.port, key, 1024), mode, wrk, scripts
        )
        bare_get = Driver(
            "bare_get", bare, get_requests(["/bare"], bare.port, None), mode, wrk, scripts
        )
        drivers += [("bare POST", bare_post), ("bare GET", bare_get)]
    for _, d in drivers:
        await d.warm()
    seen = await server_statuses(ours, key)
    audit0 = await audit_size(ours, key)
    if free is not None:
        free_seen = await server_statuses(free, fkey)
        free_audit0 = await audit_size(free, fkey)
    ab = await alternate(drivers, mode)
    s_res = ab["submit single"]
    rates = [r.rate for r in s_res]
    peak = statistics.median(rates)
    now_seen = await server_statuses(ours, key)
    refused, seen = non_2xx(seen, now_seen), now_seen
    audit_records = await audit_size(ours, key) - audit0
    body_params = {**common, "path": f"POST /logs/{PRODUCT}/entries", "body_bytes": BODY_BYTES}
    emit(
        figure(
            "http_submit_single",
            rates,
            "requests/s",
            {
                **body_params,
                **floor(f">= {FLOOR_SUBMIT_RPS}", peak >= FLOOR_SUBMIT_RPS),
                **cpu_params(s_res),
                **bad_params(s_res),
                **refused,
                "audit_records_written": audit_records,
            },
            m,
        )
    )
    p50s = [p50_ms(r) for r in s_res]
    p99s = [p99_ms(r) for r in s_res]
    emit(figure("http_submit_single_p50", p50s, "ms", body_params, m))
    p99 = statistics.median(p99s)
    emit(
        figure(
            "http_submit_single_p99",
            p99s,
            "ms",
            {**body_params, **floor(f"<= {FLOOR_SUBMIT_P99_MS:g}", p99 <= FLOOR_SUBMIT_P99_MS)},
            m,
        )
    )
    if free is not None:
        u_res = ab["submit single ungoverned"]
        free_audit = await audit_size(free, fkey) - free_audit0
        if free_audit:
            progress(f"WARNING: the ungoverned server wrote {free_audit} audit records")
        emit(
            figure(
                "http_submit_single_ungoverned",
                [r.rate for r in u_res],
                "requests/s",
                {
                    **body_params,
                    "server": ungoverned,
                    "p50_ms": round(statistics.median(p50_ms(r) for r in u_res), 2),
                    "p99_ms": round(statistics.median(p99_ms(r) for r in u_res), 2),
                    **cpu_params(u_res),
                    **bad_params(u_res),
                    **non_2xx(free_seen, await server_statuses(free, fkey)),
                    "audit_records_written": free_audit,
                },
                m,
            )
        )
        emit(
            overhead_figure(
                "http_governance_overhead",
                rates,
                [r.rate for r in u_res],
                "requests/s",
                "1 - http_submit_single / http_submit_single_ungoverned, pair by pair",
                common,
                m,
                {
                    "ungoverned": ungoverned,
                    "path": f"POST /logs/{PRODUCT}/entries",
                    "overhead_per_server_core": core_overhead(s_res, u_res),
                    "governed_p99_ms": round(statistics.median(p99s), 2),
                    "ungoverned_p99_ms": round(statistics.median(p99_ms(r) for r in u_res), 2),
                    "governed_audit_records": audit_records,
                    "ungoverned_audit_records": free_audit,
                },
            )
        )
    if bare is not None:
        bp_res, bg_res = ab["bare POST"], ab["bare GET"]
        bare_params = {**common, "server": "bench/bare_app.py"}
        emit(
            figure(
                "bare_submit",
                [r.rate for r in bp_res],
                "requests/s",
                {
                    **bare_params,
                    "path": "POST /logs/{product}/entries (append body to LMDB, group commit, "
                    "fsync)",
                    "body_bytes": BODY_BYTES,
                    "p50_ms": round(statistics.median(p50_ms(r) for r in bp_res), 2),
                    "p99_ms": round(statistics.median(p99_ms(r) for r in bp_res), 2),
                    **cpu_params(bp_res),
                    **bad_params(bp_res),
                },
                m,
            )
        )
        emit(
            figure(
                "bare_get",
                [r.rate for r in bg_res],
                "requests/s",
                {**bare_params, "path": "GET /bare (constant)", **cpu_params(bg_res)},
                m,
            )
        )
        emit(
            figure(
                "http_submit_vs_bare",
                [a.rate / b.rate for a, b in zip(s_res, bp_res, strict=True)],
                "ratio",
                {**common, "of": "http_submit_single / bare_submit, run by run"},
                m,
            )
        )

    if profile is not None:
        py_spy, out = profile
        progress(f"profiling tlog serve (pid {ours.pid}) under single submissions -> {out}")
        # --gil: only samples of the thread holding the GIL, i.e. where the CPU goes in a
        # server that is bound to one core by the GIL (fsync waits are not counted).
        spy = subprocess.Popen(
            [py_spy, *PY_SPY_RECORD, str(out), "--pid", str(ours.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            await asyncio.sleep(1.0)
            r = await single.run(max(mode.duration, 5.0))
            progress(f"submit single under py-spy: {describe(r)}")
        finally:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        for line in profile_summary(out):
            progress(line)

    # 2. batches of 100, alternating with the ungoverned server's (A B A B ...).
    batch = Driver("batch", ours, batch_requests(ours.port, key, 16), mode, wrk, scripts)
    drivers = [("batch", batch)]
    if free is not None:
        free_batch = Driver(
            "batch_ungoverned", free, batch_requests(free.port, fkey, 16), mode, wrk, scripts
        )
        drivers.append(("batch ungoverned", free_batch))
    for _, d in drivers:
        await d.warm()
    seen = await server_statuses(ours, key)
    audit0 = await audit_size(ours, key)
    if free is not None:
        free_seen = await server_statuses(free, fkey)
        free_audit0 = await audit_size(free, fkey)

    def batch_note(r: RunResult) -> str:
        return f"{r.rate * BATCH:,.0f} entries/s, {describe(r)}"

    ab = await alternate(drivers, mode, batch_note)
    b_res = ab["batch"]
    audit_records = await audit_size(ours, key) - audit0
    eps = [r.rate * BATCH for r in b_res]

    def batch_params(results: Sequence[RunResult]) -> dict[str, Any]:
        return {
            **common,
            "path": f"POST /logs/{PRODUCT}/entries/batch",
            "entries_per_request": BATCH,
            "body_bytes": BODY_BYTES,
            "requests_per_s": round(statistics.median(r.rate for r in results), 1),
            "p50_ms": round(statistics.median(p50_ms(r) for r in results), 2),
            "p99_ms": round(statistics.median(p99_ms(r) for r in results), 2),
        }

    emit(
        figure(
            "http_submit_batch100",
            eps,
            "entries/s",
            {
                **batch_params(b_res),
                **floor(f">= {FLOOR_BATCH_EPS}", statistics.median(eps) >= FLOOR_BATCH_EPS),
                **non_2xx(seen, await server_statuses(ours, key)),
                **cpu_params(b_res),
                "entries_per_server_core_s": round(
                    cpu_params(b_res)["per_server_core_s"] * BATCH, 1
                ),
                **bad_params(b_res),
                "audit_records_written": audit_records,
            },
            m,
        )
    )
    if free is not None:
        ub_res = ab["batch ungoverned"]
        free_audit = await audit_size(free, fkey) - free_audit0
        if free_audit:
            progress(f"WARNING: the ungoverned server wrote {free_audit} audit records")
        free_eps = [r.rate * BATCH for r in ub_res]
        emit(
            figure(
                "http_submit_batch100_ungoverned",
                free_eps,
                "entries/s",
                {
                    **batch_params(ub_res),
                    "server": ungoverned,
                    **non_2xx(free_seen, await server_statuses(free, fkey)),
                    **cpu_params(ub_res),
                    **bad_params(ub_res),
                    "audit_records_written": free_audit,
                },
                m,
            )
        )
        emit(
            overhead_figure(
                "http_batch_governance_overhead",
                eps,
                free_eps,
                "entries/s",
                "1 - http_submit_batch100 / http_submit_batch100_ungoverned, pair by pair",
                common,
                m,
                {
                    "ungoverned": ungoverned,
                    "path": f"POST /logs/{PRODUCT}/entries/batch",
                    "entries_per_request": BATCH,
                    "overhead_per_server_core": core_overhead(b_res, ub_res),
                    "governed_audit_records": audit_records,
                    "ungoverned_audit_records": free_audit,
                },
            )
        )
    if bare is None:
        return  # --governance-only

    # 3. reads, at the tree size the writes left.
    size = await checkpoint_size(ours, key)
    progress(f"tree size for reads: {size}")
    if size < 256:
        raise RuntimeError(f"only {size} entries: tile/0/000 is not full")
    rnd = random.Random(3)
    base = f"/logs/{PRODUCT}"
    reads = {
        "checkpoint": [f"{base}/checkpoint"],
        "tile": [f"{base}/tile/0/000"],
        "inclusion": [
            f"{base}/proof/inclusion?index={rnd.randrange(size)}&size={size}" for _ in range(4096)
        ],
    }
    read_medians: dict[str, float] = {}
    for what, paths in reads.items():
        d = Driver(f"read_{what}", ours, get_requests(paths, ours.port, key), mode, wrk, scripts)
        await d.warm()
        seen = await server_statuses(ours, key)
        res = []
        for i in runs:
            res.append(await d.run())
            progress(f"read {what} run {i + 1}/{mode.runs}: {describe(res[-1])}")
        rates = [r.rate for r in res]
        read_medians[what] = statistics.median(rates)
        emit(
            figure(
                f"http_read_{what}",
                rates,
                "requests/s",
                {
                    **common,
                    "path": f"GET {paths[0]}" + (" (random index)" if len(paths) > 1 else ""),
                    "tree_size": size,
                    "p50_ms": round(statistics.median(p50_ms(r) for r in res), 2),
                    "p99_ms": round(statistics.median(p99_ms(r) for r in res), 2),
                    **floor(f">= {FLOOR_READ_RPS}", read_medians[what] >= FLOOR_READ_RPS),
                    **cpu_params(res),
                    **bad_params(res),
                    **non_2xx(seen, await server_statuses(ours, key)),
                },
                m,
            )
        )
    bare_get_median = statistics.median(r.rate for r in bg_res)
    emit(
        figure(
            "http_checkpoint_vs_bare_get",
            [read_medians["checkpoint"] / bare_get_median],
            "ratio",
            {
                **common,
                "of": "median http_read_checkpoint / median bare_get",
                "what": f"derived: one ratio of two medians (of {mode.runs} runs each), "
                "not a measurement of its own",
            },
            m,
        )
    )

    # 4. open loop: time from submission to receipt at 10, 50 and 90% of the peak.
    load = Load(ours, submit_requests(ours.port, key, 1024, seed=4), CONNECTIONS)
    for pct in (10, 50, 90):
        target = peak * pct / 100
        seen = await server_statuses(ours, key)
        res = []
        for i in runs:
            res.append(await load.open_loop(target, mode.duration))
            progress(
                f"open loop {pct}% ({target:,.0f}/s) run {i + 1}/{mode.runs}: {describe(res[-1])}"
            )
        params = {
            **common,
            "generator": "built-in asyncio (uvloop) generator, open loop",
            "path": f"POST /logs/{PRODUCT}/entries",
            "percent_of_peak": pct,
            "peak_requests_per_s": round(peak, 1),
            "target_requests_per_s": round(target, 1),
            "achieved_requests_per_s": round(statistics.median(r.rate for r in res), 1),
            "latency": "from the scheduled send time to the last byte of the receipt",
            **cpu_params(res),
            **bad_params(res),
            **non_2xx(seen, await server_statuses(ours, key)),
        }
        emit(figure(f"http_submit_open_{pct}pct_p50", [p50_ms(r) for r in res], "ms", params, m))
        emit(figure(f"http_submit_open_{pct}pct_p99", [p99_ms(r) for r in res], "ms", params, m))

    # 5. a refusal storm, and every refusal's audit record read back and counted.
    if storm:
        await refusal_storm(ours, data, keys, storm, m, common)


# -- the refusal storm ----------------------------------------------------------------

STORM_REQUESTS = 10_000
STORM_RUNS = 5  # the storm is measured as this many consecutive windows of equal size
STORM_WRITERS = 6  # fresh submit keys sending refused writes (each cools off after 20)
AUDITED = frozenset({401, 403, 405, 409, 413, 415, 422, 429, 503, 504, 507})
"""The statuses tlog records in its audit log (tlog/http.py REFUSALS; issue #6)."""


@dataclass(frozen=True)
class StormRequest:
    kind: str  # what the request does wrong
    method: str
    path: str
    raw: bytes


def storm_plan(
    port: int, n: int, writers: Sequence[str], reader: str, other_product: str, seed: int = 5
) -> list[StormRequest]:
    """Return n refused requests in a shuffled mix of what clients get wrong.

    ``writers`` are keys of PRODUCT with the submit scope (their refused writes start
    a 429 cool-off after 20, as they should), ``reader`` a key of PRODUCT without it
    (frozen after 5 scope violations: 403 key_frozen after that), ``other_product``
    a key of another product (403 cross-product on every request). Malformed JSON
    (400) is left out: 400 is not an audited status (tlog/http.py REFUSALS).
    """
    rnd = random.Random(seed)
    base = f"/logs/{PRODUCT}"
    lesson = json.dumps(submission(rnd, 0)).encode()
    song = json.dumps({"artifact_type": "song", "metadata": {}, "body": "aGk="}).encode()
    # One item over the batch limit (max_batch_items = 1000 in the demo config).
    oversize = json.dumps({"entries": [{}] * 1001}).encode()

    def unknown_key(i: int) -> str:  # our token shape, a key id nobody has
        return f"bk_{0xDEAD0000 + i % 4096:08x}_" + "A" * 43

    def post(path: str, key: str, body: bytes, ctype: str = "application/json") -> bytes:
        head = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{port}", f"Authorization: Bearer {key}"]
        head += [f"Content-Type: {ctype}", f"Content-Length: {len(body)}"]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    kinds: list[tuple[str, int, Callable[[int], StormRequest]]] = [
        (
            "unknown_key_get",
            3,
            lambda i: StormRequest(
                "unknown_key_get",
                "GET",
                f"{base}/checkpoint",
                http_request("GET", f"{base}/checkpoint", port, unknown_key(i)),
            ),
        ),
        (
            "unknown_key_post",
            1,
            lambda i: StormRequest(
                "unknown_key_post",
                "POST",
                f"{base}/entries",
                post(f"{base}/entries", unknown_key(i), lesson),
            ),
        ),
        (
            "cross_product_get",
            2,
            lambda i: StormRequest(
                "cross_product_get",
                "GET",
                f"{base}/checkpoint",
                http_request("GET", f"{base}/checkpoint", port, other_product),
            ),
        ),
        (
            "put",
            1,
            lambda i: StormRequest(
                "put",
                "PUT",
                f"{base}/entries/0",
                http_request("PUT", f"{base}/entries/0", port, writers[i % len(writers)], b"{}"),
            ),
        ),
        (
            "delete",
            1,
            lambda i: StormRequest(
                "delete",
                "DELETE",
                f"{base}/checkpoint",
                http_request("DELETE", f"{base}/checkpoint", port, writers[i % len(writers)]),
            ),
        ),
        (
            "invalid_entry",
            1,
            lambda i: StormRequest(
                "invalid_entry",
                "POST",
                f"{base}/entries",
                post(f"{base}/entries", writers[i % len(writers)], song),
            ),
        ),
        (
            "wrong_media_type",
            1,
            lambda i: StormRequest(
                "wrong_media_type",
                "POST",
                f"{base}/entries",
                post(f"{base}/entries", writers[i % len(writers)], lesson, "text/plain"),
            ),
        ),
        (
            "oversize_batch",
            1,
            lambda i: StormRequest(
                "oversize_batch",
                "POST",
                f"{base}/entries/batch",
                post(f"{base}/entries/batch", writers[i % len(writers)], oversize),
            ),
        ),
        (
            "missing_scope",
            1,
            lambda i: StormRequest(
                "missing_scope", "POST", f"{base}/entries", post(f"{base}/entries", reader, lesson)
            ),
        ),
    ]
    bag = [make for _, weight, make in kinds for _ in range(weight)]
    order = [rnd.choice(bag) for _ in range(n)]
    return [make(i) for i, make in enumerate(order)]


@dataclass
class StormRun:
    seconds: float
    answers: dict[tuple[int, str, str], int]  # (status, method, path) -> count
    kinds: dict[str, dict[int, int]]  # kind -> status -> count
    latencies: list[float]
    failures: dict[str, int]
    cpu: RunResult

    @property
    def rate(self) -> float:
        return sum(self.answers.values()) / self.seconds


async def storm_run(server: Server, plan: Sequence[StormRequest], connections: int) -> StormRun:
    """Send every request of plan over `connections` keep-alive connections, one request
    in flight on each (closed loop); count the answers by status, method and path."""
    answers: dict[tuple[int, str, str], int] = {}
    kinds: dict[str, dict[int, int]] = {}
    latencies: list[float] = []
    failures: dict[str, int] = {}
    todo = iter(plan)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def worker(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        reader, writer = conn
        try:
            for req in todo:  # one shared iterator: every request is sent once
                t0 = time.perf_counter()
                try:
                    writer.write(req.raw)
                    head = await reader.readuntil(b"\r\n\r\n")
                    found = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                    await reader.readexactly(int(found.group(1)) if found else 0)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                    writer.close()
                    reader, writer = await connect()
                    continue
                latencies.append(time.perf_counter() - t0)
                status = int(head[9:12])
                k = (status, req.method, req.path)
                answers[k] = answers.get(k, 0) + 1
                by = kinds.setdefault(req.kind, {})
                by[status] = by.get(status, 0) + 1
                if re.search(rb"(?i)\r\nconnection:\s*close", head):
                    writer.close()
                    reader, writer = await connect()
        finally:
            writer.close()

    conns = [await connect() for _ in range(connections)]
    cpu = _CpuWindow(server, self_cpu_seconds)
    t0 = time.perf_counter()
    cpu.start()
    await asyncio.gather(*(worker(c) for c in conns))
    cpu.stop()
    seconds = time.perf_counter() - t0
    result = RunResult(seconds, sum(answers.values()), [])
    cpu.fill(result)
    return StormRun(seconds, answers, kinds, latencies, failures, result)


class _RecordingSource:
    """A verifier TileSource over HTTP that keeps the entry bundles it fetched, so the
    records counted are exactly the leaves the audit verified."""

    def __init__(self, prefix: str, token: str) -> None:
        from verifier.client import open_source

        self.inner = open_source(prefix, token=token)
        self.bundles: dict[str, bytes] = {}

    def location(self, path: str) -> str:
        return str(self.inner.location(path))

    def fetch(self, path: str, *, max_bytes: int) -> bytes:
        data = bytes(self.inner.fetch(path, max_bytes=max_bytes))
        if path.startswith("tile/entries/"):
            self.bundles[path] = data
        return data


def audit_records(source: _RecordingSource, start: int, end: int) -> list[dict[str, Any]]:
    """Return the audit records of entries start..end-1 from the bundles the audit read."""
    import cbor2

    from verifier.tiles import TILE_WIDTH, decode_bundle, parse_tile_path

    leaves: dict[int, bytes] = {}
    for path, data in source.bundles.items():
        tile = parse_tile_path(path)
        for j, leaf in enumerate(decode_bundle(data)[: tile.width]):
            leaves[tile.index * TILE_WIDTH + j] = leaf
    missing = [i for i in range(start, end) if i not in leaves]
    if missing:
        raise RuntimeError(f"the audit read no bundle for audit entries {missing[:5]}...")
    return [dict(cbor2.loads(leaves[i])) for i in range(start, end)]


def audit_checkpoint_size(prefix: str, token: str) -> int:
    from verifier.client import fetch_checkpoint, open_source

    text = fetch_checkpoint(open_source(prefix, token=token)).decode()
    return int(text.split("\n")[1])


def tlog_cli(data: Path, *args: str) -> str:
    """Run the tlog CLI on the server's data directory (as an operator does while it
    serves); return its stdout."""
    out = subprocess.run(
        [sys.executable, "-m", "tlog", "--data", str(data), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"tlog {' '.join(args)} failed: {out.stderr[-500:]}")
    return out.stdout


async def refusal_storm(
    ours: Server,
    data: Path,
    keys: dict[str, str],
    n: int,
    m: dict[str, Any],
    common: dict[str, Any],
) -> None:
    """http_refusal_storm: n refused requests over CONNECTIONS connections, then check
    over HTTP, with the verifier, that each one left its audit record and that the
    audit log audits clean (issue #6: "the audit records of a refusal storm (10,000
    refused requests) are all present afterwards")."""
    from verifier.audit import audit_log
    from verifier.note import parse_vkey

    # Fresh keys, made with the CLI while the server runs (it reads keys per request);
    # the demo key of PRODUCT (scopes submit, read, audit) reads the audit log.
    audit_key = keys[PRODUCT]
    other = next(p for p in sorted(keys) if p != PRODUCT)
    tokens = []
    for product, scopes in [(PRODUCT, "submit,read")] * STORM_WRITERS + [
        (PRODUCT, "read"),
        (other, "submit,read"),
    ]:
        out = await asyncio.to_thread(
            tlog_cli, data, "keys", "create", "--product", product, "--scopes", scopes
        )
        tokens.append(out.strip())
    writers, reader, other_key = tokens[:STORM_WRITERS], tokens[-2], tokens[-1]
    plan = storm_plan(ours.port, n, writers, reader, other_key)
    prefix = f"http://{HOST}:{ours.port}/logs/_audit"
    # The CLI's key_created records reach the server's checkpoint at its next refresh
    # (every 2 s): wait for it, so that the storm's records start at `before`.
    await asyncio.sleep(2.5)
    before = await asyncio.to_thread(audit_checkpoint_size, prefix, audit_key)
    per_run = -(-n // STORM_RUNS)
    runs: list[StormRun] = []
    for i in range(STORM_RUNS):
        chunk = plan[i * per_run : (i + 1) * per_run]
        if not chunk:
            break
        runs.append(await storm_run(ours, chunk, CONNECTIONS))
        r = runs[-1]
        progress(
            f"refusal storm window {i + 1}/{STORM_RUNS}: {len(chunk):,} requests, "
            f"{r.rate:,.0f}/s; cores: server {r.cpu.server_cpu:.2f}, "
            f"client {r.cpu.client_cpu:.2f}" + (f"; failures {r.failures}" if r.failures else "")
        )
    answers: dict[tuple[int, str, str], int] = {}
    kinds: dict[str, dict[int, int]] = {}
    failures: dict[str, int] = {}
    for r in runs:
        for k, c in r.answers.items():
            answers[k] = answers.get(k, 0) + c
        for kind, by in r.kinds.items():
            into = kinds.setdefault(kind, {})
            for s, c in by.items():
                into[s] = into.get(s, 0) + c
        for failure, c in r.failures.items():
            failures[failure] = failures.get(failure, 0) + c
    refused = {k: c for k, c in answers.items() if k[0] in AUDITED}
    not_refused = {k: c for k, c in answers.items() if k[0] not in AUDITED}

    # The audit log, read back over HTTP with an audit-scoped key and audited in full.
    t0 = time.perf_counter()
    vkey = (await get_text(ours, "/logs/_audit/key", audit_key)).strip()
    key = parse_vkey(vkey)
    source = _RecordingSource(prefix, audit_key)
    clean, why, audited = True, "", 0
    records: list[dict[str, Any]] = []
    try:
        result = await asyncio.to_thread(audit_log, source, [key], origin=key.name)
        audited = result.entries
        records = audit_records(source, before, audited)
    except Exception as exc:  # any VerificationError (or fetch failure) is the finding
        clean, why = False, f"{type(exc).__name__}: {exc}"
    audit_s = time.perf_counter() - t0
    recorded: dict[tuple[int, str, str], int] = {}
    threats: dict[str, int] = {}
    others: dict[str, int] = {}
    for rec in records:
        kind = str(rec.get("type"))
        detail = rec.get("detail") or {}
        if kind == "refusal":
            k = (int(detail["status"]), str(detail["method"]), str(detail["path"]))
            recorded[k] = recorded.get(k, 0) + 1
        elif kind == "threat":
            threats[str(detail.get("threat"))] = threats.get(str(detail.get("threat")), 0) + 1
        else:
            others[kind] = others.get(kind, 0) + 1
    missing = {k: c - recorded.get(k, 0) for k, c in refused.items() if c > recorded.get(k, 0)}
    extra = {k: c - refused.get(k, 0) for k, c in recorded.items() if c > refused.get(k, 0)}
    total_refused = sum(refused.values())
    total_recorded = sum(recorded.values())
    all_recorded = clean and not missing and total_refused == n and not not_refused

    def by_status(counts: dict[tuple[int, str, str], int]) -> dict[str, int]:
        out: dict[str, int] = {}
        for (status, _, _), c in sorted(counts.items()):
            out[str(status)] = out.get(str(status), 0) + c
        return out

    def named(counts: dict[tuple[int, str, str], int]) -> dict[str, int]:
        return {f"{s} {meth} {path}": c for (s, meth, path), c in sorted(counts.items())}

    lat = sorted(x for r in runs for x in r.latencies)
    params = {
        **{k: v for k, v in common.items() if k not in ("duration_s", "generator", "note")},
        "generator": "built-in asyncio streams, closed loop (wrk cannot tell the statuses apart)",
        "requests": n,
        "windows": len(runs),
        "requests_per_window": per_run,
        "mix": {kind: dict(sorted(by.items())) for kind, by in sorted(kinds.items())},
        "keys": f"{STORM_WRITERS} fresh submit keys for the refused writes (cool-off after 20 "
        "each: 429), 1 fresh read-only key (frozen after 5 scope violations), 1 fresh key of "
        f"{other} (cross-product), unknown keys; fresh keys made with `tlog keys create` "
        "while the server ran",
        "not_in_mix": "malformed JSON (400): not an audited status (tlog/http.py REFUSALS)",
        "refused": total_refused,
        "refused_by_status": by_status(refused),
        "answers_not_refused": named(not_refused),
        "audit_size_before": before,
        "audit_entries_audited": audited,
        "audit_clean": clean,
        **({"audit_error": why} if why else {}),
        "audit_seconds": round(audit_s, 2),
        "refusal_records": total_recorded,
        "refusal_records_by_status": by_status(recorded),
        "threat_records": dict(sorted(threats.items())),
        "other_records": dict(sorted(others.items())),
        "missing_records": named(missing),
        "extra_records": named(extra),
        "all_recorded": all_recorded,
        "p50_ms": round(percentile(lat, 50) * 1000, 2) if lat else None,
        "p99_ms": round(percentile(lat, 99) * 1000, 2) if lat else None,
        **cpu_params([r.cpu for r in runs]),
        **({"errors": failures} if failures else {}),
        **floor(f"all {n:,} refusals have their audit record", all_recorded),
    }
    progress(
        f"refusal storm: {total_refused:,} refused of {n:,}; {total_recorded:,} refusal records "
        f"in audit entries {before:,}..{audited:,}; audit clean: {clean}"
        + (f" ({why})" if why else "")
        + f"; missing {sum(missing.values())}, extra {sum(extra.values())}; "
        f"all recorded: {all_recorded}"
    )
    emit(figure("http_refusal_storm", [r.rate for r in runs], "refusals/s", params, m))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 runs of 3 s per figure")
    parser.add_argument("--runs", type=int, help="runs per figure (default 5)")
    parser.add_argument("--duration", type=float, help="seconds per run (default 10, quick 3)")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "builtin"),
        default="auto",
        help="auto: wrk if on PATH, else the built-in asyncio generator",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="also record a py-spy profile (raw, collapsed stacks) of tlog serve under "
        "single submissions into FILE (an extra run, not counted in the figures)",
    )
    parser.add_argument(
        "--py-spy",
        default=shutil.which("py-spy") or "/tmp/probe-venv/bin/py-spy",
        help="py-spy executable for --profile",
    )
    parser.add_argument(
        "--storm",
        type=int,
        default=STORM_REQUESTS,
        metavar="N",
        help=f"refused requests in the refusal storm (default {STORM_REQUESTS:,}; 0: none)",
    )
    parser.add_argument(
        "--storm-only", action="store_true", help="run only the refusal storm (no bare peer)"
    )
    parser.add_argument(
        "--governance-only",
        action="store_true",
        help="run only single and batch submissions against tlog serve and "
        "bench/ungoverned_app.py, alternately, and governance's cost (no bare peer, reads, "
        "open loop or storm)",
    )
    parser.add_argument(
        "--ungoverned-stubs",
        metavar="GROUPS",
        help="passed to bench/ungoverned_app.py --stubs (default: all of checks, scale, "
        "audit, watch): which governance work it skips, to attribute the cost",
    )
    args = parser.parse_args(argv)
    if args.storm < 0 or (args.storm_only and args.storm == 0):
        parser.error("--storm must be positive (and not 0 with --storm-only)")
    if args.storm_only and args.governance_only:
        parser.error("--storm-only and --governance-only exclude each other")
    mode = QUICK if args.quick else FULL
    if args.runs is not None:
        mode = Mode(args.runs, mode.duration, mode.warmup, mode.quick or args.runs < 5)
    if args.duration is not None:
        mode = Mode(mode.runs, args.duration, mode.warmup, mode.quick or args.duration < 10)
    wrk = shutil.which("wrk") if args.generator in ("auto", "wrk") else None
    if args.generator == "wrk" and wrk is None:
        parser.error("wrk is not on PATH")
    profile = None
    if args.profile is not None:
        if not os.access(args.py_spy, os.X_OK):
            parser.error(f"py-spy not found at {args.py_spy}")
        profile = (args.py_spy, args.profile.resolve())

    with temp_dir("bucket-bench-http-") as tmp:
        m = machine(tmp)
        progress(machine_line(m))
        m["background_cpu_cores"] = round(background_cpu(), 2)
        progress(f"background load before starting: {m['background_cpu_cores']:.2f} cores busy")
        progress(
            f"mode: {'quick' if mode.quick else 'full'}, {mode.runs} runs of {mode.duration:g} s,"
            f" {CONNECTIONS} connections, generator: {wrk or 'built-in'}"
        )
        tlog_port, bare_port, free_port_ = free_port(), free_port(), free_port()
        tlog_argv = [sys.executable, "-m", "tlog", "--data", str(tmp / "tlog")]
        tlog_argv += ["serve", "--host", HOST, "--port", str(tlog_port)]
        bare_argv = [sys.executable, str(ROOT / "bench" / "bare_app.py")]
        bare_argv += ["--data", str(tmp / "bare"), "--host", HOST, "--port", str(bare_port)]
        free_argv = [sys.executable, str(ROOT / "bench" / "ungoverned_app.py")]
        free_argv += ["--data", str(tmp / "ungoverned"), "--host", HOST]
        free_argv += ["--port", str(free_port_)]
        if args.ungoverned_stubs:
            free_argv += ["--stubs", args.ungoverned_stubs]
        keys = capacity_depository(tmp / "tlog", tmp)
        with contextlib.ExitStack() as stack:
            ours = stack.enter_context(running("tlog", tlog_argv, tlog_port, tmp))
            bare = free = None
            free_keys: dict[str, str] | None = None
            if not args.storm_only and not args.governance_only:
                bare = stack.enter_context(running("bare", bare_argv, bare_port, tmp))
            if not args.storm_only:
                free = stack.enter_context(running("ungoverned", free_argv, free_port_, tmp))
            peer = f"bare peer pid {bare.pid}" if bare is not None else "no bare peer"
            if free is not None:
                free_keys = demo_keys(free)
                peer += f"; ungoverned probe pid {free.pid} on port {free_port_}"
            progress(f"tlog serve pid {ours.pid} on port {tlog_port}; {peer}")
            run = asyncio.run
            with contextlib.suppress(ImportError):
                import uvloop

                run = uvloop.run
            run(
                bench(
                    mode,
                    ours,
                    bare,
                    keys,
                    wrk,
                    tmp,
                    m,
                    profile,
                    tmp / "tlog",
                    args.storm,
                    args.storm_only,
                    free,
                    free_keys,
                    args.ungoverned_stubs,
                )
            )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        progress("interrupted: servers stopped, data removed")
        sys.exit(130)
