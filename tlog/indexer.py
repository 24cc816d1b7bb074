"""The leaf-hash indexer process: keeps the index env's leaf-hash -> index map up to date.

Inserting random 8-byte hash prefixes into a B-tree costs about one copied 4 KiB page per
key once the tree has many more leaf pages than a transaction has keys (10^7 entries:
~66,000 leaf pages), so the cost per entry grows with the log. Done by a thread of the
writer's process, that work also competes with the writer for the GIL (py-lmdb releases
and re-takes it around every single put), and the append rate fell by a quarter
between 10^5 and 10^7 entries. This process does it beside the writer instead, on its
own interpreter (and core): the writer's process only tells it how far each log is
committed, and it reads the hashes from the durable level-0 tile records itself. (Since
2026-11-29 the keys also start with the leaf's generation, tlog.storage.GENERATION_BITS,
so inserts reach only the newest generation's pages and that cost no longer grows with
the log.)

The protocol, one line each way per request, over the child's stdin and stdout:

* request: ``<log id>:<size> ...`` (index each log up to that size, in one index
  transaction);
* answer: ``ok <log id>:<hashed size> ...`` or ``err <message>``.

End of input (the parent closed the pipe, or died), SIGTERM or SIGINT end the process,
which counts itself out of the index env like any other opener (``tlog.storage``). A
request not answered within REQUEST_TIMEOUT_S counts as a dead process: the parent kills
it and indexes in its own thread from then on.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import tlog
from tlog import storage as st
from tlog.storage import Storage, StorageError

__all__ = ["IndexFailed", "IndexProcess", "serve"]

_log = logging.getLogger("tlog.indexer")

MAX_PER_REQUEST = 1 << 14
"""Leaves of one log indexed per request at most (the rest at the next request). The
writer waits for the index env's lock while a request is in progress whenever its batch
has artifact ids to record, so this bounds that wait (16,384 random inserts into the
index of a 10^7-entry log took 45-155 ms on the reference machine, docs/benchmarks.md)."""

REQUEST_TIMEOUT_S = 120.0
"""How long the parent waits for one answer before it takes the process for hung."""


class IndexFailed(StorageError):
    """The indexer process answered that a request failed (nothing of it was committed);
    the process itself is still usable."""


def serve(storage: Storage, inp: IO[bytes], out: IO[bytes]) -> None:
    """Answer index requests from ``inp`` on ``out`` until end of input."""
    out.write(b"ready\n")
    out.flush()
    for line in inp:
        try:
            targets = [(int(a), int(b)) for a, b in (part.split(b":") for part in line.split())]
            for log_id, _ in targets:
                storage.dbs(log_id)  # before the index txn (see index_hashes_upto)
            with storage.write_index() as itxn:
                done = [
                    (log_id, st.index_hashes_upto(storage, itxn, log_id, size, MAX_PER_REQUEST))
                    for log_id, size in targets
                ]
            reply = "ok " + " ".join(f"{log_id}:{size}" for log_id, size in done)
        except Exception as exc:  # answered, never fatal: the parent keeps the hashes
            _log.exception("index request failed")
            reply = "err " + " ".join(f"{type(exc).__name__}: {exc}".split())
        out.write(reply.encode() + b"\n")
        out.flush()


def main(argv: list[str] | None = None) -> int:
    """``python -m tlog.indexer DATA_DIR MAP_SIZE MAX_LOGS``, started by IndexProcess."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="tlog.indexer: %(message)s")
    # SIGTERM (a service manager stopping the process group) ends the process like end
    # of input does: the open transaction aborts and the env is closed, so it is counted
    # out (otherwise the next open would take the index for torn and rebuild it).
    signal.signal(signal.SIGTERM, _exit_on_signal)
    storage = Storage(Path(args[0]), map_size=int(args[1]), max_logs=int(args[2]))
    try:
        serve(storage, sys.stdin.buffer, sys.stdout.buffer)
    except (BrokenPipeError, KeyboardInterrupt):
        # The parent is gone (killed, or interrupted with us): nobody waits for an answer.
        # Whatever was committed is in the index; the parent's next open catches up.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        storage.close()
    return 0


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


class IndexProcess:
    """The parent's handle on an indexer process of a data directory (one thread uses it).

    Raises StorageError if the process cannot be started.
    """

    def __init__(self, storage: Storage) -> None:
        env = dict(os.environ)
        root = str(Path(tlog.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            self._proc = subprocess.Popen(  # noqa: S603 (our interpreter, our module)
                [
                    sys.executable,
                    "-m",
                    "tlog.indexer",
                    str(storage.path),
                    str(storage.map_size),
                    str(storage.max_logs),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,  # answers are read with a deadline (select), not buffered
                env=env,
                close_fds=True,
            )
        except OSError as exc:
            raise StorageError(f"cannot start the indexer process: {exc}") from exc
        self._ready = False
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self._proc.pid

    def index(self, targets: dict[int, int]) -> dict[int, int]:
        """Index each log id up to its size; return the hashed size of each.

        Raises IndexFailed if the request failed (nothing of it was committed), or
        StorageError if the process is gone or gave no answer within REQUEST_TIMEOUT_S
        (it is then killed).
        """
        assert self._proc.stdin is not None and self._proc.stdout is not None
        if self._proc.poll() is not None:
            raise StorageError(f"the indexer process is gone (exit {self._proc.returncode})")
        request = " ".join(f"{log_id}:{size}" for log_id, size in targets.items())
        deadline = time.monotonic() + REQUEST_TIMEOUT_S
        try:
            self._proc.stdin.write(request.encode() + b"\n")
            self._proc.stdin.flush()
            line = self._readline(deadline)
            if not self._ready and line == b"ready\n":
                self._ready = True
                line = self._readline(deadline)
        except TimeoutError as exc:  # (an OSError too: first)
            self._proc.kill()
            self._proc.wait()
            raise StorageError(f"the indexer process did not answer: {exc}; killed it") from exc
        except OSError as exc:
            raise StorageError(f"the indexer process is gone: {exc}") from exc
        if line.startswith(b"ok"):
            return {int(a): int(b) for a, b in (part.split(b":") for part in line.split()[1:])}
        if not line:
            raise StorageError(f"the indexer process is gone (exit {self._proc.poll()})")
        raise IndexFailed(f"indexer: {line[4:].decode(errors='replace').strip()}")

    def _readline(self, deadline: float) -> bytes:
        """Return the next line of the process's output (b"" at end of output).

        Raises TimeoutError if no full line arrives before ``deadline`` (monotonic).
        """
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0.0))
            if not ready:
                raise TimeoutError("no answer before the deadline")
            chunk = os.read(fd, 65536)
            if not chunk:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def close(self, timeout: float = 60.0) -> None:
        """Let the process finish its request, close the index env and exit."""
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _log.error("indexer process %d did not exit; killing it", self._proc.pid)
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
