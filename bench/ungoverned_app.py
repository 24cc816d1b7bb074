"""``tlog serve`` with the governance work on the submission path made no-ops: a
BENCHMARK PROBE ONLY.

This exists for one purpose: to let bench/http_service.py measure what governance
costs an HTTP submission (issue #6: "with governance on, the HTTP submission floor
still holds, at most 10% lower"), by serving the same app with and without that work
and comparing the two, run by run. It is **never a way to run the service**: a server
started by it writes no audit record for accepted writes, enforces none of the seven
limits and never halts. Governance is always on in the product, and ``tlog/`` has no
switch to turn it off; the replacements below are monkeypatches made in this process
only, before the app is built, and they touch nothing on disk but what the writes
themselves write.

Everything else is ``tlog serve`` itself (``tlog.cli.main([... "serve" ...])``): the same
data-directory layout (a fresh directory is initialised as the demo, and the demo keys
are printed on stdout as ``tlog serve`` prints them), the same ``uvicorn.run`` settings,
the same routes, authentication (including frozen keys), validation, envelope, engine,
signing and receipts. Replaced with no-ops:

* ``Governance.check_writable`` (the persisted state: 503 while HALTED, 507 while
  READ_ONLY) and ``Governance.admit_write`` (that state again, concurrent pending
  writes, storage against the LMDB map, entry counts per product and global, the
  per-product and global write-rate token buckets);
* ``ScaleMonitor.wrote`` (the write-rate series behind ``/metrics/scale-status``) and
  ``ScaleMonitor.review`` (the 80% review records of the 2 s governance tick);
* the per-batch ``append`` audit record of accepted writes: ``Store.audit_hook`` is set
  to None right after ``Governance`` sets it, so the writer appends nothing to the
  audit log (and signs no audit checkpoint) for a batch of submissions;
* the AI-escalation cool-off check of every write (``_Api._check_cool_off``); the
  scope-strike counter and refusal bookkeeping run only on refused requests, which a
  successful submission never reaches, so they are left as they are;
* the integrity watch (``create_app(..., integrity_period=...)`` set to once a year),
  which re-hashes recent and rolling tiles every 10 s in ``tlog serve``.

If ``tlog`` renames any of these, the launcher refuses to start rather than measure a
half-governed server. ``--stubs`` applies only some groups of them (``checks``,
``scale``, ``audit``, ``watch``; default all), to attribute the cost to its parts.

    .venv/bin/python bench/ungoverned_app.py --data /tmp/ungoverned --port 8091
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# Keep bench/ off sys.path (a script here named like a module would shadow it) and make
# sure the repository root is on it, as for `python -m tlog` run from the root.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

import tlog.http as tlog_http  # noqa: E402
from tlog import cli  # noqa: E402
from tlog.governance import Governance, ScaleMonitor  # noqa: E402

INTEGRITY_PERIOD_S = 365 * 24 * 3600.0
"""The integrity watch's period here: it never runs during a benchmark."""


def _replace(owner: Any, name: str, new: Any) -> None:
    """Set owner.name to new; refuse if owner has no such attribute (tlog changed)."""
    if not hasattr(owner, name):
        raise SystemExit(
            f"bench/ungoverned_app.py: {getattr(owner, '__name__', owner)}.{name} is gone; "
            "update the launcher before measuring governance's cost"
        )
    setattr(owner, name, new)


STUBS = ("checks", "scale", "audit", "watch")
"""The groups of no-ops, for attributing the cost (``--stubs``; default all):
``checks`` check_writable, admit_write and the cool-off check; ``scale`` the scale
monitor's write series and review; ``audit`` the per-batch audit record; ``watch`` the
integrity watch."""


def ungovern(stubs: tuple[str, ...] = STUBS) -> None:
    """Replace the governance work on the submission path with no-ops (this process)."""
    unknown = set(stubs) - set(STUBS)
    if unknown:
        raise SystemExit(f"bench/ungoverned_app.py: unknown stubs {sorted(unknown)}")

    def check_writable(self: Governance) -> None:
        return None

    def admit_write(
        self: Governance, log: Any, count: int, pending: int, nbytes: int = 0, **_: Any
    ) -> None:
        return None

    def wrote(self: ScaleMonitor, product: str, count: int, largest_body: int) -> None:
        return None

    def review(self: ScaleMonitor) -> list[bytes]:
        return []

    def check_cool_off(self: Any, principal: Any) -> None:
        return None

    governed_init = Governance.__init__

    def init(self: Governance, store: Any, config: Any) -> None:
        governed_init(self, store, config)
        if store.audit_hook is None:
            raise SystemExit("bench/ungoverned_app.py: Governance no longer sets audit_hook")
        store.audit_hook = None  # no `append` audit record per batch of accepted writes

    governed_create_app = tlog_http.create_app

    def create_app(service: Any, metrics: Any = None, **kwargs: Any) -> Any:
        kwargs["integrity_period"] = INTEGRITY_PERIOD_S
        return governed_create_app(service, metrics, **kwargs)

    if "checks" in stubs:
        _replace(Governance, "check_writable", check_writable)
        _replace(Governance, "admit_write", admit_write)
        _replace(tlog_http._Api, "_check_cool_off", check_cool_off)
    if "scale" in stubs:
        _replace(ScaleMonitor, "wrote", wrote)
        _replace(ScaleMonitor, "review", review)
    if "audit" in stubs:
        _replace(Governance, "__init__", init)
    if "watch" in stubs:
        _replace(tlog_http, "create_app", create_app)  # cli imports it at serve time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="data directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument(
        "--stubs",
        default=",".join(STUBS),
        help=f"comma-separated groups of no-ops, to attribute the cost (default: all of "
        f"{','.join(STUBS)})",
    )
    args = parser.parse_args(argv)
    ungovern(tuple(x.strip() for x in args.stubs.split(",") if x.strip()))
    print("UNGOVERNED benchmark probe: not the service (see bench/ungoverned_app.py)")
    return cli.main(
        ["--data", str(args.data), "serve", "--host", args.host, "--port", str(args.port)]
    )


if __name__ == "__main__":
    sys.exit(main())
