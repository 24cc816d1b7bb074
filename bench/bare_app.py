"""The bare peer of bench/http_service.py: the least a durable Starlette-on-uvicorn service can do.

* ``POST /logs/{product}/entries``: read the body, hand it to a group-commit writer
  thread that appends every queued body to one LMDB environment opened with
  ``sync=True`` in one write transaction (one fsync per batch), and answer ``201``
  with ``{"index": N}`` once the batch is committed. No auth, no parsing, no Merkle
  tree, no signature, no receipt: what is left is the framework and the fsync.
* ``GET /bare``: a constant answer (``ok``), the framework's ceiling.

It runs under the same uvicorn settings as ``tlog serve`` (``uvicorn.run`` with its
defaults: uvloop and httptools where installed, one process, ``log_level="warning"``,
``access_log=False``), so ``tlog``'s figures can be given as a ratio of this one's.

    .venv/bin/python bench/bare_app.py --data /tmp/bare --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import sys
import threading
from pathlib import Path
from typing import Any

# Keep this directory off sys.path: a script in it named like a module would shadow that
# module for uvicorn and Starlette (bench/http.py did, before it became http_service.py).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import lmdb  # noqa: E402
import uvicorn  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

MAX_BATCH_ITEMS = 4096  # as tlog.log: a batch is cut here or when the queue is empty

_Waiter = tuple[bytes, asyncio.AbstractEventLoop, "asyncio.Future[int]"]


def _settle(future: asyncio.Future[int], result: int | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class Writer:
    """One LMDB environment (fsync on commit) and the thread that group-commits to it."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(
            str(path), map_size=16 << 30, sync=True, metasync=True, readahead=False
        )
        with self.env.begin() as txn:
            self.next = txn.stat()["entries"]
        self._queue: queue.SimpleQueue[_Waiter | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="bare-writer", daemon=True)
        self._thread.start()

    async def append(self, body: bytes) -> int:
        """Queue body; return its index once the batch holding it is durable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.put((body, loop, future))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.env.close()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH_ITEMS:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            start = self.next
            results: list[int | BaseException]
            try:
                with self.env.begin(write=True) as txn:
                    for i, (body, _, _) in enumerate(batch):
                        txn.put((start + i).to_bytes(8, "big"), body, append=True)
                self.next = start + len(batch)
                results = list(range(start, start + len(batch)))
            except Exception as exc:  # answer every waiter, never die silently
                results = [exc] * len(batch)
            for (_, loop, future), result in zip(batch, results, strict=True):
                loop.call_soon_threadsafe(_settle, future, result)


def create_app(writer: Writer) -> Starlette:
    """Return the bare app."""

    async def submit(request: Request) -> Response:
        index = await writer.append(await request.body())
        return Response(b'{"index":%d}' % index, 201, media_type="application/json")

    async def bare(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/logs/{product}/entries", submit, methods=["POST"]),
            Route("/bare", bare, methods=["GET"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="LMDB directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    writer = Writer(args.data)
    print(f"bare peer on {args.host}:{args.port}, data in {args.data}", flush=True)
    kwargs: dict[str, Any] = {"log_level": "warning", "access_log": False}  # as tlog serve
    try:
        uvicorn.run(create_app(writer), host=args.host, port=args.port, **kwargs)
    finally:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
