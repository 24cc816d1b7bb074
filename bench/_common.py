"""Shared helpers for the bench scripts.

Every script prints one JSON object per line per figure (``emit``), each carrying the
machine it ran on (``machine``), and summarises repeated runs the same way
(``summary``: the value is the median of the runs). Data lives in temporary
directories (``temp_dir``) that are removed at exit, even on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "emit",
    "figure",
    "fsync_ms",
    "machine",
    "machine_line",
    "percentile",
    "progress",
    "summary",
    "temp_dir",
    "timed",
]


# -- the machine ----------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _mount_of(path: Path) -> dict[str, Any]:
    """Return the mount (device, filesystem, options) holding path, from /proc/mounts."""
    path = path.resolve()
    best: tuple[str, str, str, str] | None = None
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return {"path": str(path)}
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        device, mount_point, fstype, options = parts[:4]
        mount_point = mount_point.replace("\\040", " ")
        if (path == Path(mount_point) or Path(mount_point) in path.parents) and (
            best is None or len(mount_point) >= len(best[1])
        ):
            best = (device, mount_point, fstype, options)
    if best is None:
        return {"path": str(path)}
    device, mount_point, fstype, options = best
    out: dict[str, Any] = {
        "path": str(path),
        "device": device,
        "mount_point": mount_point,
        "filesystem": fstype,
        "mount_options": options,
    }
    # Block-device facts from sysfs (the whole disk of a partition, where known).
    name = Path(device).name
    sys_block = Path("/sys/class/block") / name
    if sys_block.exists():
        disk = sys_block.resolve()
        if (disk / "partition").exists():
            disk = disk.parent
        with contextlib.suppress(OSError):
            out["rotational"] = (disk / "queue" / "rotational").read_text().strip() == "1"
        for key, rel in (("model", "device/model"), ("scheduler", "queue/scheduler")):
            with contextlib.suppress(OSError):
                out[key] = (disk / rel).read_text().strip()
    with contextlib.suppress(OSError):
        st = os.statvfs(path)
        out["free_bytes"] = st.f_bavail * st.f_frsize
    return out


_MACHINE: dict[str, Any] | None = None


def machine(data_dir: Path | None = None) -> dict[str, Any]:
    """Describe the machine: cores, CPU model, memory, OS, Python, LMDB, and the disk
    and filesystem of data_dir (default: the temporary directory)."""
    global _MACHINE
    if _MACHINE is None:
        try:
            usable = len(os.sched_getaffinity(0))
        except AttributeError:
            usable = os.cpu_count() or 0
        info: dict[str, Any] = {
            "cores": os.cpu_count(),
            "cores_usable": usable,
            "cpu_model": _cpu_model(),
            "memory_bytes": _mem_total_bytes(),
            "os": f"{platform.system()} {platform.release()}",
            "python": f"{platform.python_implementation()} {platform.python_version()}",
        }
        try:
            import lmdb

            info["lmdb"] = "py-lmdb {} (LMDB {})".format(
                lmdb.__version__, ".".join(map(str, lmdb.version()))
            )
        except ImportError:
            pass
        _MACHINE = info
    out = dict(_MACHINE)
    out["disk"] = _mount_of(data_dir if data_dir is not None else Path(tempfile.gettempdir()))
    return out


def machine_line(m: dict[str, Any]) -> str:
    """Return a one-line human description of machine() (for docs and stderr)."""
    disk = m.get("disk", {})
    parts = [f"{m['cores']} cores ({m['cpu_model']})"]
    if m.get("memory_bytes"):
        parts.append(f"{m['memory_bytes'] / 2**30:.0f} GiB RAM")
    parts += [m["os"], m["python"], m.get("lmdb", "lmdb ?")]
    where = f"data on {disk.get('device', '?')} ({disk.get('filesystem', '?')}"
    if "rotational" in disk:
        where += ", rotational" if disk["rotational"] else ", non-rotational"
    parts.append(where + ")")
    return ", ".join(parts)


# -- statistics and output ------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Return the p-th percentile (0..100) of values by the nearest-rank method."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(rank) - 1]


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Return median, min, max and the number of runs of repeated measurements."""
    if not values:
        raise ValueError("summary of no runs")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


def _round(x: Any) -> Any:
    if isinstance(x, float):
        return float(f"{x:.4g}") if abs(x) < 1000 else round(x, 1)
    return x


def figure(
    name: str,
    runs: Sequence[float],
    unit: str,
    params: dict[str, Any],
    machine_info: dict[str, Any],
) -> dict[str, Any]:
    """Build one figure: ``value`` is the median of ``runs``."""
    s = summary(runs)
    return {
        "name": name,
        "value": _round(s["median"]),
        "unit": unit,
        "median": _round(s["median"]),
        "min": _round(s["min"]),
        "max": _round(s["max"]),
        "runs": s["runs"],
        "params": params,
        "machine": machine_info,
    }


def emit(fig: dict[str, Any]) -> None:
    """Print one figure as one JSON line on stdout (flushed at once)."""
    sys.stdout.write(json.dumps(fig, sort_keys=False) + "\n")
    sys.stdout.flush()


def progress(message: str) -> None:
    """Print a progress line on stderr (stdout carries only JSON)."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def timed(fn: Callable[[], Any]) -> float:
    """Return the seconds fn() took (perf_counter)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- disk -----------------------------------------------------------------------------


def fsync_ms(directory: Path, *, samples: int = 50, size: int = 4096) -> list[float]:
    """Return the milliseconds of each of `samples` (overwrite `size` bytes + os.fsync)
    of a small file in directory: what one durable commit costs on this disk at least."""
    path = directory / "fsync-probe"
    data = os.urandom(size)
    out: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)  # allocate blocks first; then measure overwrites, as LMDB does
        for _ in range(samples):
            t0 = time.perf_counter()
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return out


# -- temporary data directories -------------------------------------------------------

_LIVE_DIRS: set[Path] = set()


def _cleanup_all() -> None:
    for path in list(_LIVE_DIRS):
        shutil.rmtree(path, ignore_errors=True)
        _LIVE_DIRS.discard(path)


def _on_signal(signum: int, _frame: Any) -> None:
    # Turn SIGTERM/SIGHUP into an exception so every `finally` runs and the data goes.
    raise KeyboardInterrupt(f"signal {signum}")


_HANDLERS_INSTALLED = False


def _install_handlers() -> None:
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    import atexit

    atexit.register(_cleanup_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread, or no such signal
            if signal.getsignal(sig) is not signal.SIG_IGN:  # keep nohup's SIGHUP ignore
                signal.signal(sig, _on_signal)


@contextlib.contextmanager
def temp_dir(prefix: str = "bucket-bench-") -> Iterator[Path]:
    """Yield a new directory under the system temporary directory; remove it on exit,
    on an exception, on Ctrl-C, on SIGTERM, and (as a last resort) at interpreter exit."""
    _install_handlers()
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _LIVE_DIRS.add(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        _LIVE_DIRS.discard(path)
