"""Governance: the certification's guarantees, refusals, threats, limits and failure
scenarios, each shown on a real data directory (LMDB, Ed25519 keys, the Starlette app
through its test client with the lifespan running). docs/governance.md maps every row
of the certification to the test here (or elsewhere) that proves it.

Every limit is exercised at its exact boundary: N accepted, N+1 refused with the
limit's status and code, and the trees exactly as they were.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cbor2
import httpx
import lmdb
import pytest
from starlette.testclient import TestClient

from tlog import cli
from tlog.config import AUDIT_LOG, fingerprint
from tlog.errors import BadRequest, Forbidden, KeyProblem, Unauthorized
from tlog.governance import (
    HALTED,
    NORMAL,
    READ_ONLY,
    THREATS,
    AuditRecord,
    ScaleMonitor,
    decode_audit_record,
    sign_request,
)
from tlog.http import REFUSALS as AUDITED_STATUSES
from tlog.http import create_app
from tlog.keys import create_key, load_key_any
from tlog.metrics import Metrics
from tlog.service import Service
from tlog.storage import tile_key, u64
from tlog.tree import ROW_OFFSETS, TILE_WIDTH
from verifier.audit import audit_log
from verifier.checkpoint import open_checkpoint
from verifier.errors import FetchFailed, ResourceNotFound
from verifier.hashing import leaf_hash
from verifier.note import Signer, open_note, parse_vkey, sign_note
from verifier.proof import verify_consistency, verify_inclusion
from verifier.receipt import verify_receipt

REPO = Path(__file__).resolve().parents[2]
HOST = "test.example"
YEAR_MS = 365 * 24 * 3600 * 1000 + 6 * 3600 * 1000  # a Julian year, as in the records

PRODUCTS = """
[products.alpha]
[products.alpha.artifact_types.doc]
[products.alpha.artifact_types.clip]
body_retention_days = 1

[products.beta]
[products.beta.artifact_types.doc]

[products.gamma]
[products.gamma.artifact_types.doc]
"""


def config_text(limits: dict[str, int] | None = None) -> str:
    lines = [f"{k} = {v}" for k, v in (limits or {}).items()]
    return f'[service]\nhost = "{HOST}"\n\n[limits]\n' + "\n".join(lines) + "\n" + PRODUCTS


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def doc(**fields: Any) -> dict[str, Any]:
    return {"artifact_type": "doc"} | fields


class Env:
    """A depository, its app with a fresh metrics registry, a test client and keys."""

    def __init__(
        self,
        tmp: Path,
        *,
        limits: dict[str, int] | None = None,
        config: str | None = None,
        integrity_period: float = 0.5,
    ) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.data = tmp / "data"
        cfg = tmp / "config.toml"
        cfg.write_text(config if config is not None else config_text(limits))
        self.service = Service.init(self.data, config_path=cfg)
        self.owner = load_key_any(self.service.owner_key_path)
        self.tokens: dict[str, str] = {}
        for product in self.service.config.products:
            _, self.tokens[product] = self.service.keys.create(product, {"submit", "read"})
        _, self.auditor = self.service.keys.create(
            next(iter(self.service.config.products)), {"read", "audit"}
        )
        self.integrity_period = integrity_period
        self.closed = False
        self.start()

    def start(self) -> None:
        self.metrics = Metrics()
        self.app = create_app(self.service, self.metrics, integrity_period=self.integrity_period)
        self.client = TestClient(self.app)
        self.client.__enter__()

    def stop(self) -> None:
        """Stop the app and close the service (so another opener may use the directory)."""
        if not self.closed:
            self.client.__exit__(None, None, None)
            self.service.close()
            self.closed = True

    def reopen(self) -> None:
        """Open the data directory again, as a restart does, and serve it."""
        self.stop()
        self.service = Service.open(self.data)
        self.closed = False
        self.start()

    @property
    def gov(self) -> Any:
        return self.service.governance

    def auth(self, product: str = "alpha", token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.tokens[product]}"}

    def post(self, product: str = "alpha", token: str | None = None, **fields: Any) -> Any:
        return self.client.post(
            f"/logs/{product}/entries", json=doc(**fields), headers=self.auth(product, token)
        )

    def batch(self, n: int, product: str = "alpha", **fields: Any) -> Any:
        items = [doc(**fields) for _ in range(n)]
        return self.client.post(
            f"/logs/{product}/entries/batch", json=items, headers=self.auth(product)
        )

    def get(self, path: str, product: str = "alpha", token: str | None = None) -> Any:
        return self.client.get(path, headers=self.auth(product, token))

    def size(self, product: str = "alpha") -> int:
        return int(self.service.product_log(product).size)

    def sizes(self) -> dict[str, int]:
        return {p: self.size(p) for p in self.service.config.products}

    def vkey(self, product: str = "alpha") -> str:
        r = self.get(f"/logs/{product}/key", product)
        assert r.status_code == 200
        return str(r.text.strip())

    def records(self, start: int = 0, type_: str | None = None) -> list[AuditRecord]:
        audit = self.gov.audit
        out = [decode_audit_record(audit.entry(i)) for i in range(start, audit.size)]
        return [r for r in out if type_ is None or r.type == type_]

    def threat_records(self, threat: str, start: int = 0) -> list[AuditRecord]:
        return [r for r in self.records(start, "threat") if r.detail["threat"] == threat]

    def threat_count(self, threat: str) -> float:
        text = self.client.get("/metrics").text
        for line in text.splitlines():
            if line.startswith(f'tlog_threat_events_total{{threat="{threat}"}} '):
                return float(line.split()[-1])
        return 0.0

    def limit_row(self, name: str) -> dict[str, Any]:
        rows = self.client.get("/metrics/scale-status").json()["limits"]
        (row,) = [r for r in rows if r["name"] == name]
        return dict(row)

    def fill_storage(self, body_size: int) -> tuple[Any, list[dict[str, Any]]]:
        """Submit bodies of body_size bytes until one is refused; return the refusal and
        every receipt acknowledged before it."""
        acked: list[dict[str, Any]] = []
        for i in range(2000):
            r = self.post(artifact_id=f"fill-{i}", body=b64(os.urandom(body_size)))
            if r.status_code != 201:
                return r, acked
            acked.append(r.json())
        raise AssertionError("storage never filled up")


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    envs: list[Env] = []

    def make(**kwargs: Any) -> Env:
        e = Env(tmp_path / f"env{len(envs)}", **kwargs)
        envs.append(e)
        return e

    yield make
    for e in envs:
        e.stop()


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def flip_leaf_byte(env: Env, log_name: str, index: int) -> None:
    """Change one byte of a stored leaf behind the service's back, straight in LMDB."""
    storage = env.service.store.storage
    log_id = storage.log_records()[log_name]["id"]
    db = storage.env.open_db(f"{log_id}/leaves".encode(), create=False)
    with storage.env.begin(write=True) as txn:
        stored = txn.get(u64(index), db=db)
        assert stored is not None
        leaf = bytearray(stored)
        leaf[len(leaf) // 2] ^= 0x01
        txn.put(u64(index), bytes(leaf), db=db)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the tlog command in its own process (as an operator would, beside the server)."""
    return subprocess.run(
        [sys.executable, "-m", "tlog", *args],
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- limits, each at its exact boundary -------------------------------------------------------


def test_limit_concurrent_pending_writes_429_at_n_plus_1(make_env: Callable[..., Env]) -> None:
    env = make_env(limits={"max_pending_writes": 20, "max_batch_items": 100})
    assert env.batch(20).status_code == 201
    r = env.batch(21)
    assert r.status_code == 429
    assert r.json()["code"] == "too_many_pending_writes"
    assert int(r.headers["Retry-After"]) >= 1
    assert env.size() == 20
    assert env.limit_row("concurrent_pending_writes")["limit"] == 20
    assert env.limit_row("concurrent_pending_writes")["current"] == 0  # nothing left pending
    assert env.batch(20).status_code == 201


def test_limit_artifact_size_413_at_n_plus_1(make_env: Callable[..., Env]) -> None:
    env = make_env(limits={"max_artifact_bytes": 1000})
    assert env.post(body=b64(b"x" * 1000)).status_code == 201
    r = env.post(body=b64(b"x" * 1001))
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    cbor = {"Content-Type": "application/cbor"} | env.auth()
    for size, status in ((1000, 201), (1001, 413)):
        payload = cbor2.dumps({"artifact_type": "doc", "body": b"y" * size})
        got = env.client.post("/logs/alpha/entries", content=payload, headers=cbor)
        assert got.status_code == status, got.text
    assert env.size() == 2
    row = env.limit_row("artifact_size")
    assert (row["current"], row["limit"], row["refusal"]) == (1000, 1000, 413)
    assert row["status"] == "RED" and row["review_required"] is True


@pytest.mark.parametrize("body_size", [20_000, 150_000])
def test_limit_storage_507_and_read_only_nothing_half_written(
    make_env: Callable[..., Env], body_size: int
) -> None:
    """A 2 MiB map filled with bodies until refused. A 150 kB body is bigger than the
    last 1% of the map: unless admission counts the bytes a write brings, the map fills
    in the writer (507, but never READ_ONLY, and no room left for the audit records)."""
    env = make_env(
        limits={
            "storage_map_bytes": 2 << 20,
            "max_artifact_bytes": 200_000,
            "max_request_bytes": 400_000,
        }
    )
    audit_before = env.gov.audit.size
    refused, acked = env.fill_storage(body_size)
    assert refused.status_code == 507, refused.text
    assert refused.json()["code"] == "storage_full"
    state = env.gov.state()
    assert (state.state, state.reason) == (READ_ONLY, "storage_full")
    # Nothing half-written: the tree is exactly the acknowledged entries, signed.
    assert env.size() == len(acked) > 3
    key = parse_vkey(env.vkey())
    cp = open_checkpoint(env.get("/logs/alpha/checkpoint").text, [key])
    assert cp.size == len(acked) and cp.root == open_checkpoint(acked[-1]["checkpoint"], [key]).root
    for got in (acked[0], acked[-1]):
        assert verify_receipt(got["receipt"], [key]).index == got["index"]
    body = env.get(f"/logs/alpha/artifacts/{acked[-1]['artifact_id']}/body")
    assert body.status_code == 200 and len(body.content) == body_size
    # Every later write, of any product, answers 507 and changes nothing.
    before = env.sizes()
    again = env.post("beta", body=b64(b"small"))
    assert again.status_code == 507 and again.json()["code"] == "read_only"
    assert again.json()["incident_index"] == state.incident_index
    assert env.sizes() == before
    # The state change is an audit record; the append records stop at the last entry.
    changed = decode_audit_record(env.gov.audit.entry(state.incident_index))
    assert changed.type == "state_changed" and changed.detail["to"] == READ_ONLY
    appends = [r for r in env.records(audit_before, "append") if r.product == "alpha"]
    assert appends[-1].detail["tree_size"] == len(acked)
    assert len(env.threat_records("storage_exhaustion")) == 1
    row = env.limit_row("storage")
    assert row["status"] == "RED" and row["review_required"] is True
    assert row["current"] <= row["limit"] == 2 << 20


def test_limit_write_rate_per_product_429_with_retry_after(make_env: Callable[..., Env]) -> None:
    env = make_env(limits={"write_rate_per_product": 2, "write_rate_global": 1000})
    assert env.batch(2).status_code == 201
    r = env.post()
    assert r.status_code == 429 and r.json()["code"] == "rate_limited"
    retry = int(r.headers["Retry-After"])
    assert retry >= 1
    assert env.size() == 2
    # Another product has its own bucket.
    assert env.batch(2, "beta").status_code == 201
    # Retry-After is honest: after waiting it, the write passes.
    time.sleep(retry)
    assert env.post().status_code == 201
    assert env.sizes() == {"alpha": 3, "beta": 2, "gamma": 0}


def test_limit_write_rate_global_429(make_env: Callable[..., Env]) -> None:
    env = make_env(limits={"write_rate_per_product": 1000, "write_rate_global": 2})
    assert env.batch(2).status_code == 201
    r = env.post("beta")
    assert r.status_code == 429 and r.json()["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1
    assert env.sizes() == {"alpha": 2, "beta": 0, "gamma": 0}
    assert {row["name"] for row in env.client.get("/metrics/scale-status").json()["limits"]} >= {
        "write_rate_global",
        "write_rate_product:alpha",
        "write_rate_product:beta",
    }


def test_write_rate_refusal_takes_no_tokens_and_a_batch_over_capacity_is_413(
    make_env: Callable[..., Env],
) -> None:
    env = make_env(limits={"write_rate_per_product": 3, "write_rate_global": 4})
    # More entries than one second of the rate can never pass: 413, not a 429 to retry.
    r = env.batch(4)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    assert "write-rate limit" in r.json()["detail"]
    assert env.batch(3).status_code == 201  # alpha: 3 of 3; global: 3 of 4
    # beta has 3 tokens but the global bucket about 1: refused, and beta keeps its tokens.
    r = env.batch(3, "beta")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    beta_tokens, _ = env.gov._buckets["product beta"]
    assert beta_tokens >= 2.99
    assert env.sizes() == {"alpha": 3, "beta": 0, "gamma": 0}


def test_limit_entry_count_per_product_507(make_env: Callable[..., Env]) -> None:
    env = make_env(limits={"max_entries_per_product": 5, "max_entries_global": 1000})
    assert env.batch(5).status_code == 201
    r = env.post()
    assert r.status_code == 507 and r.json()["code"] == "entry_limit_reached"
    # N+1 in one batch is refused whole.
    over = env.batch(6, "gamma")
    assert over.status_code == 507 and over.json()["code"] == "entry_limit_reached"
    assert env.sizes() == {"alpha": 5, "beta": 0, "gamma": 0}
    # Another product is still writable up to its own quota.
    assert env.batch(5, "beta").status_code == 201
    assert env.post("beta").status_code == 507
    assert env.sizes() == {"alpha": 5, "beta": 5, "gamma": 0}
    assert env.gov.state().state == NORMAL  # a quota is not a storage emergency
    row = env.limit_row("entry_count_product:alpha")
    assert (row["current"], row["limit"], row["refusal"]) == (5, 5, 507)


def test_limit_entry_count_global_507(make_env: Callable[..., Env]) -> None:
    env = make_env(limits={"max_entries_per_product": 5, "max_entries_global": 8})
    assert env.batch(5).status_code == 201
    assert env.batch(3, "beta").status_code == 201
    for product in ("beta", "gamma"):  # both under their own quota
        r = env.post(product)
        assert r.status_code == 507 and r.json()["code"] == "entry_limit_reached"
    assert env.sizes() == {"alpha": 5, "beta": 3, "gamma": 0}
    row = env.limit_row("entry_count_global")
    assert (row["current"], row["limit"]) == (8, 8)
    # The audit log does not count: it grew with every refusal above.
    assert env.gov.audit.size > 8


@pytest.mark.parametrize(
    ("limits", "products"),
    [
        ({"max_entries_per_product": 10}, ("alpha", "alpha")),
        ({"max_entries_global": 10}, ("alpha", "beta")),
    ],
)
def test_entry_quotas_hold_against_concurrent_requests(
    make_env: Callable[..., Env], limits: dict[str, int], products: tuple[str, str]
) -> None:
    # Two batches that each fit alone, in flight together (one event loop, as uvicorn
    # serves them): the second must count the first's admitted, unwritten entries.
    env = make_env(limits=limits)

    async def both() -> list[int]:
        transport = httpx.ASGITransport(app=env.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        f"/logs/{p}/entries/batch",
                        json=[doc() for _ in range(10)],
                        headers={"Authorization": f"Bearer {env.tokens[p]}"},
                    )
                    for p in products
                )
            )
        return sorted(r.status_code for r in answers)

    assert asyncio.run(both()) == [201, 507]
    assert sum(env.sizes().values()) == 10


def test_entries_written_but_not_yet_answered_are_not_counted_twice(
    make_env: Callable[..., Env],
) -> None:
    env = make_env(limits={"max_entries_per_product": 2})
    store = env.service.store
    on_batch = store.on_batch
    in_window = threading.Event()

    def slow_on_batch(*args: Any) -> None:
        # After the commit, before the first caller is answered: its entry is in the
        # log's size now, and must not also count as still being written.
        assert on_batch is not None
        on_batch(*args)
        if env.sizes()["alpha"] == 1 and not in_window.is_set():
            in_window.set()
            time.sleep(0.5)

    store.on_batch = slow_on_batch
    first: list[Any] = []
    thread = threading.Thread(target=lambda: first.append(env.post()))
    thread.start()
    assert in_window.wait(5)
    second = env.post()
    thread.join()
    assert (first[0].status_code, second.status_code) == (201, 201), second.text
    assert env.sizes()["alpha"] == 2
    assert env.post().status_code == 507


def test_limit_query_deadline_504(make_env: Callable[..., Env]) -> None:
    env = make_env(limits={"query_deadline_ms": 1, "max_batch_items": 1000})
    for _ in range(6):
        assert env.batch(1000, artifact_id="many").status_code == 201
    audit_before = env.gov.audit.size
    r = env.get("/logs/alpha/artifacts/many")
    assert r.status_code == 504, r.status_code
    assert r.json()["code"] == "query_deadline_exceeded"
    (refusal,) = env.records(audit_before, "refusal")
    assert refusal.detail["status"] == 504
    row = env.limit_row("query_deadline")
    assert row["limit"] == 1 and row["current"] > 1 and row["status"] == "RED"
    # The checkpoint (not a query) still answers.
    assert env.get("/logs/alpha/checkpoint").status_code == 200


def test_limit_audit_retention_never_deletes(env: Env) -> None:
    env.post()
    env.client.get("/logs/alpha/checkpoint")  # a refusal: one more record
    row = env.limit_row("audit_retention")
    first = decode_audit_record(env.gov.audit.entry(0))
    assert row["retention_years"] == 7 and row["deletes"] == "never"
    assert row["current"] == env.gov.audit.size
    assert row["oldest_record_time"] == first.time
    assert row["oldest_record_retention_until"] == first.time + 7 * YEAR_MS
    for record in env.records():
        assert record.retention_until == record.time + 7 * YEAR_MS
    # Records only accumulate: the first record is still the first after a restart.
    size = env.gov.audit.size
    env.reopen()
    assert env.gov.audit.size >= size
    assert decode_audit_record(env.gov.audit.entry(0)) == first


# -- scale status ---------------------------------------------------------------------------


def test_scale_status_bands_and_one_review_record(make_env: Callable[..., Env]) -> None:
    env = make_env(limits={"max_entries_per_product": 10, "max_entries_global": 1000})
    name = "entry_count_product:alpha"
    rows = env.client.get("/metrics/scale-status").json()["limits"]
    assert {r["name"].split(":")[0] for r in rows} == {
        "concurrent_pending_writes",
        "artifact_size",
        "storage",
        "write_rate_global",
        "write_rate_product",
        "entry_count_global",
        "entry_count_product",
        "query_deadline",
        "audit_retention",
    }
    for r in rows:
        assert {"current", "limit", "ratio", "status", "review_required"} <= set(r)

    def reviews() -> list[AuditRecord]:
        return [r for r in env.records(0, "scale_review_required") if r.detail["limit"] == name]

    expected = {
        6: ("GREEN", False, 0),
        7: ("YELLOW", False, 0),
        8: ("YELLOW", False, 0),
        9: ("YELLOW", True, 1),
        10: ("RED", True, 1),
    }
    assert env.batch(5).status_code == 201
    for size, (band, review, records) in expected.items():
        assert env.post().status_code == 201
        row = env.limit_row(name)
        assert (row["current"], row["ratio"]) == (size, size / 10)
        assert (row["status"], row["review_required"]) == (band, review), size
        assert len(reviews()) == records, size
    env.limit_row(name)
    (record,) = reviews()
    assert record.detail["ratio"] == 0.9 and record.detail["current"] == 9


def test_scale_review_rearms_only_below_70_percent(
    make_env: Callable[..., Env],
) -> None:
    env = make_env(limits={"max_pending_writes": 10})
    monitor = ScaleMonitor(env.gov)
    name = "concurrent_pending_writes"

    def review_at(pending: int) -> list[dict[str, Any]]:
        monitor.pending = pending
        out = [decode_audit_record(leaf) for leaf in monitor.review()]
        return [r.detail for r in out if r.detail["limit"] == name]

    assert review_at(8) == []  # 80% is not above 80%
    assert review_at(9) == [{"limit": name, "current": 9, "ratio": 0.9}]
    assert review_at(9) == []
    assert review_at(10) == []
    assert review_at(7) == []  # 70%: still disarmed
    assert review_at(9) == []
    assert review_at(6) == []  # below 70%: re-armed
    assert review_at(9) == [{"limit": name, "current": 9, "ratio": 0.9}]


# -- halt and resume, owner-signed ------------------------------------------------------------


def test_halt_refuses_writes_keeps_reads_and_resume_needs_the_owner(env: Env) -> None:
    receipts = [env.post(artifact_id=f"a{i}").json() for i in range(5)]
    state = env.gov.halt("operator drill")
    assert state.state == HALTED
    for r in (env.post(), env.batch(2)):
        assert r.status_code == 503
        assert r.headers["Retry-After"]
        problem = r.json()
        assert problem["code"] == "operations_halted"
        assert problem["reason"] == "operator drill"
        assert problem["incident_index"] == state.incident_index
    assert env.size() == 5
    incident = decode_audit_record(env.gov.audit.entry(state.incident_index))
    assert incident.type == "state_changed" and incident.detail["to"] == HALTED
    assert env.client.get("/governance/state").json()["state"] == HALTED
    # Reads and proofs keep working.
    key = parse_vkey(env.vkey())
    cp = open_checkpoint(env.get("/logs/alpha/checkpoint").text, [key])
    assert cp.size == 5
    assert verify_receipt(env.get("/logs/alpha/receipts/2").text, [key]).index == 2
    proof = env.get("/logs/alpha/proof/inclusion?index=3&size=5").json()["proof"]
    leaf = base64.b64decode(receipts[3]["leaf"])
    verify_inclusion(3, 5, leaf_hash(leaf), [base64.b64decode(h) for h in proof], cp.root)
    old = open_checkpoint(receipts[1]["checkpoint"], [key])
    cons = env.get("/logs/alpha/proof/consistency?old=2&new=5").json()["proof"]
    verify_consistency(2, 5, [base64.b64decode(h) for h in cons], old.root, cp.root)
    assert env.get("/logs/alpha/entries/4").status_code == 200

    # A resume signed by another key, for another action, or too old is refused.
    impostor = Signer.generate(env.owner.name)
    two_days_ago = time.time_ns() // 10**6 - 2 * 86_400_000
    stale_text = f"bucket.governance/v1\naction resume\nreason r\ntime {two_days_ago}\n"
    for note in (
        sign_request(impostor, "resume", reason="let me in"),
        sign_request(env.owner, "approve-config", reason="wrong action"),
        sign_note(stale_text, [env.owner]),
    ):
        with pytest.raises(Forbidden):
            env.gov.resume(note)
    assert env.gov.state() == state
    assert env.post().status_code == 503

    note = sign_request(env.owner, "resume", reason="drill over")
    resumed = env.gov.resume(note)
    assert resumed.state == NORMAL
    record = decode_audit_record(env.gov.audit.entry(resumed.incident_index))
    assert record.type == "state_changed" and record.principal == "owner"
    assert (record.detail["from"], record.detail["to"]) == (HALTED, NORMAL)
    assert record.detail["request"] == note
    assert "action resume" in open_note(note, [parse_vkey(env.owner.vkey)]).text
    assert env.post().status_code == 201
    # A signed request is single-use: the copy in the audit log cannot resume again.
    halted = env.gov.halt("second drill")
    replayed = decode_audit_record(env.gov.audit.entry(resumed.incident_index)).detail["request"]
    with pytest.raises(Forbidden, match="already used"):
        env.gov.resume(replayed)
    # ...nor with its signature line repeated (other bytes, the same signed request).
    text, signature = replayed.rsplit("\n\n", 1)
    assert open_note(text + "\n\n" + signature + signature, [parse_vkey(env.owner.vkey)])
    with pytest.raises(Forbidden, match="already used"):
        env.gov.resume(text + "\n\n" + signature + signature)
    # A request used before marks were of the signed text (its mark is of the note's
    # bytes) is refused as such, and with its signature line repeated too.
    old_note = sign_request(env.owner, "resume", reason="used by an older version")
    with env.service.store.storage.env.begin(write=True) as txn:
        mark = b"request/" + hashlib.sha256(old_note.encode()).hexdigest().encode()
        env.service.store.storage.put_meta(txn, mark, b"1")
    old_text, old_signature = old_note.rsplit("\n\n", 1)
    for variant in (old_note, old_text + "\n\n" + old_signature + old_signature):
        with pytest.raises(Forbidden, match="already used"):
            env.gov.resume(variant)
    assert env.gov.state() == halted
    assert env.post().status_code == 503
    assert env.gov.resume(sign_request(env.owner, "resume", reason="done")).state == NORMAL


def test_approving_a_config_does_not_resume_past_a_halt_recorded_meanwhile(env: Env) -> None:
    config = env.data / "config.toml"
    config.write_text(config.read_text().replace("[limits]", "[limits]\nmax_artifact_bytes = 7"))
    env.reopen()
    assert env.gov.state().reason == "governance_config_mismatch"
    gov = env.gov
    set_state = gov.set_state

    def integrity_halt_first(state: str, reason: str, **kw: Any) -> Any:
        # approve_config has read "halted for the config"; before it writes NORMAL,
        # another process (tlog fsck, the integrity watch) halts for tampering.
        if state == NORMAL:
            set_state(HALTED, "integrity_violation")
        return set_state(state, reason, **kw)

    gov.set_state = integrity_halt_first
    try:
        fp = fingerprint(env.service.config)
        gov.approve_config(sign_request(env.owner, "approve-config", fingerprint=fp))
    finally:
        gov.set_state = set_state
    assert gov.approved_fingerprint() == fp  # the approval stands...
    state = gov.state()  # ...but only an owner-signed resume lifts the integrity halt
    assert (state.state, state.reason) == (HALTED, "integrity_violation")
    assert env.post().status_code == 503


def test_unapproved_config_edit_starts_halted_until_approved(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.post()
    config = env.data / "config.toml"
    # A comment is not a change: the fingerprint is of the parsed config.
    config.write_text(config.read_text() + "\n# reviewed\n")
    env.reopen()
    assert env.gov.state().state == NORMAL
    # A changed limit without approval: the service starts HALTED.
    config.write_text(config.read_text().replace("[limits]", "[limits]\nmax_artifact_bytes = 7"))
    env.reopen()
    state = env.gov.state()
    assert (state.state, state.reason) == (HALTED, "governance_config_mismatch")
    record = decode_audit_record(env.gov.audit.entry(state.incident_index))
    assert record.detail["running"] == fingerprint(env.service.config)
    assert record.detail["approved"] != record.detail["running"]
    r = env.post()
    assert r.status_code == 503 and r.json()["code"] == "operations_halted"
    assert r.json()["reason"] == "governance_config_mismatch"
    assert env.get("/logs/alpha/entries/0").status_code == 200
    # Found while opening, before the app existed: counted all the same.
    assert env.threat_count("silent_schema_drift") == 1
    assert len(env.threat_records("silent_schema_drift")) == 1
    changes = len(env.records(0, "state_changed"))
    env.reopen()  # still unapproved: still halted, no second record
    assert env.gov.state() == state
    assert len(env.records(0, "state_changed")) == changes
    env.stop()

    impostor = env.tmp / "impostor.key"
    create_key(impostor, env.owner.name)
    argv = ["--data", str(env.data), "governance", "approve-config"]
    assert cli.main([*argv, "--owner-key", str(impostor)]) == 1
    assert "not signed by the owner key" in capsys.readouterr().err
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    env.reopen()
    fp = fingerprint(env.service.config)
    assert f"approved config {fp}" in out and "state NORMAL" in out
    assert env.gov.state().state == NORMAL
    assert env.gov.approved_fingerprint() == fp
    approval = env.records(0, "config_approved")[-1]
    assert approval.detail["fingerprint"] == fp and approval.principal == "owner"
    signed = open_note(approval.detail["request"], [parse_vkey(env.owner.vkey)])
    assert f"fingerprint {fp}" in signed.text
    assert env.client.get("/governance/state").json()["config_fingerprint"] == fp
    assert env.post(body=b64(b"1234567")).status_code == 201
    assert env.post(body=b64(b"12345678")).status_code == 413  # the approved limit holds


# -- threats ---------------------------------------------------------------------------------


def _storage(env: Env) -> None:
    assert env.fill_storage(20_000)[0].status_code == 507


def _metadata_poisoning(env: Env) -> None:
    r = env.post(metadata={"owner": "beta"})
    assert r.status_code == 422 and r.json()["code"] == "metadata_poisoning"


def _schema_drift(env: Env) -> None:
    r = env.post(colour="red")
    assert r.status_code == 422 and r.json()["code"] == "unknown_field"


def _collision(env: Env) -> None:
    assert env.post(artifact_id="x", expected_version=0).status_code == 201
    r = env.post(artifact_id="x", expected_version=0)
    assert r.status_code == 409 and r.json()["code"] == "version_conflict"


def _executor_override(env: Env) -> None:
    _, token = env.service.keys.create("alpha", {"read"})
    codes = [env.post(token=token).status_code for _ in range(5)]
    assert codes == [403] * 5
    assert env.get("/logs/alpha/checkpoint", token=token).json()["code"] == "key_frozen"


def _ai_escalation(env: Env) -> None:
    statuses = [env.post(artifact_type="song").status_code for _ in range(20)]
    assert statuses == [422] * 20
    assert env.post().json()["code"] == "cool_off"


def _cross_product(env: Env) -> None:
    assert env.get("/logs/alpha/checkpoint", "beta").status_code == 403


def _audit_tampering(env: Env) -> None:
    flip_leaf_byte(env, AUDIT_LOG, 1)
    assert wait_for(lambda: env.gov.state().state == HALTED, 20 * env.integrity_period)


def _legal_hold(env: Env) -> None:
    env.gov.hold(sign_request(env.owner, "hold", case="c-1", product="alpha"))


def _provenance(env: Env) -> None:
    r = env.post(metadata={"integrated_at": 1, "signature": "trust me"})
    assert r.status_code == 422 and r.json()["code"] == "provenance_claim"


TRIGGERS: dict[str, tuple[Callable[[Env], None], dict[str, Any]]] = {
    "storage_exhaustion": (
        _storage,
        {"limits": {"storage_map_bytes": 2 << 20, "max_artifact_bytes": 30_000}},
    ),
    "metadata_poisoning": (_metadata_poisoning, {}),
    "silent_schema_drift": (_schema_drift, {}),
    "concurrent_write_collision": (_collision, {}),
    "executor_override": (_executor_override, {}),
    "ai_escalation": (_ai_escalation, {}),
    "cross_product_access": (_cross_product, {}),
    "audit_tampering": (_audit_tampering, {"integrity_period": 0.1}),
    "legal_ownership_challenge": (_legal_hold, {}),
    "over_trust_in_provenance": (_provenance, {}),
}


def test_every_threat_has_a_trigger() -> None:
    assert tuple(TRIGGERS) == THREATS
    assert len(THREATS) == 10


@pytest.mark.parametrize("threat", THREATS)
def test_threat_detection_is_counted_and_recorded(
    make_env: Callable[..., Env], threat: str
) -> None:
    trigger, kwargs = TRIGGERS[threat]
    env = make_env(**kwargs)
    audit_before = env.gov.audit.size
    assert env.threat_count(threat) == 0
    trigger(env)
    assert env.threat_count(threat) == 1
    (record,) = env.threat_records(threat, audit_before)
    assert record.type == "threat" and record.detail["threat"] == threat
    counts = {
        t["threat"]: t["detections"]
        for t in env.client.get("/governance/threats").json()["threats"]
    }
    assert counts[threat] == 1
    assert sum(counts.values()) == 1, counts  # nothing else was mistaken for a threat


def test_concurrent_writers_with_expected_version_one_wins(env: Env) -> None:
    def attempt(i: int) -> int:
        r = env.post(artifact_id="contract", expected_version=0, body=b64(f"v{i}".encode()))
        return int(r.status_code)

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(attempt, range(8)))
    assert sorted(statuses) == [201] + [409] * 7
    assert env.size() == 1
    assert len(env.threat_records("concurrent_write_collision")) == 7


def test_executor_override_freezes_the_key_until_the_owner_unfreezes(env: Env) -> None:
    key, token = env.service.keys.create("alpha", {"read"})
    assert env.get("/logs/alpha/checkpoint", token=token).status_code == 200
    for strike in range(1, 6):
        r = env.post(token=token)
        assert r.status_code == 403 and r.json()["code"] == "forbidden", strike
    assert "frozen" in r.json()["detail"]
    # Frozen: even what the key may do is refused, with its own code.
    frozen = env.get("/logs/alpha/checkpoint", token=token)
    assert frozen.status_code == 403 and frozen.json()["code"] == "key_frozen"
    assert [k.frozen for k in env.service.keys.list() if k.key_id == key.key_id] == [True]
    (record,) = [r for r in env.records(0, "key_frozen") if r.detail["key_id"] == key.key_id]
    assert record.detail["count"] == 5
    assert env.post().status_code == 201  # other keys are unaffected

    # The owner unfreezes it from another process while the server runs.
    done = run_cli("--data", str(env.data), "keys", "unfreeze", key.key_id)
    assert done.returncode == 0, done.stderr
    assert env.get("/logs/alpha/checkpoint", token=token).status_code == 200
    size = env.gov.audit.size
    env.service.store.refresh()
    assert wait_for(lambda: env.gov.audit.size > size, 5)
    (unfrozen,) = env.records(0, "key_unfrozen")
    assert unfrozen.detail["key_id"] == key.key_id
    assert (
        "action unfreeze"
        in open_note(unfrozen.detail["request"], [parse_vkey(env.owner.vkey)]).text
    )
    # The count starts again: one more violation is refused, not frozen at once.
    assert env.post(token=token).json()["code"] == "forbidden"
    assert env.get("/logs/alpha/checkpoint", token=token).status_code == 200


def test_ai_escalation_cool_off_after_20_refused_writes(env: Env) -> None:
    for i in range(19):
        assert env.post(artifact_type="song").status_code == 422, i
    assert env.post().status_code == 201  # 19 refusals: not yet
    assert env.post(artifact_type="song").status_code == 422  # the 20th
    r = env.post()
    assert r.status_code == 429 and r.json()["code"] == "cool_off"
    assert int(r.headers["Retry-After"]) >= 30
    assert env.size() == 1
    # Another key of the same product is not cooling off.
    _, other = env.service.keys.create("alpha", {"submit"})
    assert env.post(token=other).status_code == 201


def test_server_side_refusals_do_not_count_as_escalation(env: Env) -> None:
    """A halted service refuses every write with 503; a client retrying it is not an
    attacker and must not be put in cool-off."""
    env.gov.halt("maintenance")
    for _ in range(25):
        assert env.post().status_code == 503
    env.gov.resume(sign_request(env.owner, "resume", reason="done"))
    assert env.post().status_code == 201
    assert env.threat_records("ai_escalation") == []


@pytest.mark.parametrize("log_name", [AUDIT_LOG, "alpha"])
def test_tampered_leaf_halts_within_an_integrity_period_and_fsck_names_it(
    make_env: Callable[..., Env], log_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = make_env(integrity_period=0.2)
    for i in range(4):
        assert env.post(artifact_id=f"e{i}").status_code == 201
    time.sleep(0.5)  # a few clean passes first: no false alarm
    assert env.gov.state().state == NORMAL
    flip_leaf_byte(env, log_name, 2)
    assert wait_for(lambda: env.gov.state().state == HALTED, 3.0)
    state = env.gov.state()
    assert state.reason == "integrity_violation"
    (threat,) = env.threat_records("audit_tampering", start=3)  # leaf 2 no longer decodes
    assert threat.detail["log"] == log_name and threat.detail["first_bad_index"] == 2
    r = env.post()
    assert r.status_code == 503 and r.json()["reason"] == "integrity_violation"
    assert env.get("/logs/alpha/checkpoint").status_code == 200
    env.stop()

    assert cli.main(["--data", str(env.data), "fsck"]) == 1
    out = capsys.readouterr().out
    assert f"{log_name}: MISMATCH: leaf 2 does not hash to its stored hash" in out
    others = [line for line in out.splitlines() if not line.startswith(f"{log_name}:")]
    assert others and all(": OK (" in line for line in others)


@pytest.mark.parametrize("index", [0, 2])  # the first leaf of its tile, and one inside
def test_a_deleted_leaf_is_found_by_fsck(
    make_env: Callable[..., Env], index: int, capsys: pytest.CaptureFixture[str]
) -> None:
    env = make_env()
    for i in range(4):
        assert env.post(artifact_id=f"e{i}").status_code == 201
    env.stop()
    # Behind the service's back: delete leaf ``index`` and park its bytes far out of
    # range, so the stored leaf count still matches the signed size.
    storage = Service.open(env.data)
    try:
        store = storage.store.storage
        log_id = store.log_records()["alpha"]["id"]
        db = store.env.open_db(f"{log_id}/leaves".encode(), create=False)
        with store.env.begin(write=True) as txn:
            stored = txn.get(u64(index), db=db)
            assert stored is not None and txn.delete(u64(index), db=db)
            txn.put(u64(1 << 40), stored, db=db)
    finally:
        storage.close()
    assert cli.main(["--data", str(env.data), "fsck"]) == 1
    out = capsys.readouterr().out
    assert f"alpha: MISMATCH: leaf {index} is missing from the store" in out


def test_integrity_watch_goes_on_while_halted_for_another_reason(
    make_env: Callable[..., Env],
) -> None:
    env = make_env(integrity_period=0.2)
    for i in range(3):
        assert env.post(artifact_id=f"e{i}").status_code == 201
    drill = env.gov.halt("operator drill")
    audit_before = env.gov.audit.size
    flip_leaf_byte(env, "alpha", 1)
    assert wait_for(lambda: env.gov.state().reason == "integrity_violation", 3.0)
    state = env.gov.state()
    assert state.state == HALTED and state.incident_index != drill.incident_index
    time.sleep(0.6)  # more passes: the mismatch is recorded once
    (threat,) = env.threat_records("audit_tampering", start=audit_before)
    assert threat.detail["log"] == "alpha" and threat.detail["first_bad_index"] == 1
    changed = [r for r in env.records(audit_before, "state_changed")]
    assert [(r.detail["from"], r.detail["to"]) for r in changed] == [(HALTED, HALTED)]


def test_writer_never_signs_a_tree_inconsistent_with_its_last_checkpoint(env: Env) -> None:
    for i in range(3):
        assert env.post(artifact_id=f"e{i}").status_code == 201
    before = env.get("/logs/alpha/checkpoint").text
    log_id = env.service.store.storage.log_records()["alpha"]["id"]
    env.stop()
    # Change the stored hash of leaf 2 in tile 0/0 with a separate LMDB handle.
    handle = lmdb.open(str(env.data / "lmdb"), max_dbs=2048, subdir=True)
    try:
        tiles = handle.open_db(f"{log_id}/tiles".encode(), create=False)
        with handle.begin(write=True) as txn:
            stored = txn.get(tile_key(0, 0), db=tiles)
            assert stored is not None
            record = bytearray(stored)
            record[2 * 32] ^= 0xFF
            txn.put(tile_key(0, 0), bytes(record), db=tiles)
    finally:
        handle.close()
    env.reopen()
    audit_before = env.gov.audit.size
    r = env.post(artifact_id="e3")
    assert r.status_code == 500 and r.json()["code"] == "integrity_failure"
    assert env.size() == 3
    assert env.get("/logs/alpha/checkpoint").text == before
    with env.service.store.storage.read() as txn:
        cursor = txn.cursor(env.service.store.log("alpha").dbs.checkpoints)
        assert [int.from_bytes(bytes(k), "big") for k in cursor.iternext(values=False)][-1] == 3
    assert [r for r in env.records(audit_before, "append") if r.product == "alpha"] == []
    # The refusal halts the service at once (not only at the next integrity-watch pass).
    assert wait_for(lambda: env.gov.state().state == HALTED, 5.0)
    assert env.gov.state().reason == "integrity_violation"
    (threat,) = env.threat_records("audit_tampering", start=audit_before)
    assert threat.detail["log"] == "alpha" and "does not extend" in threat.detail["problems"][0]
    assert env.post(artifact_id="e4").status_code == 503


def test_audit_log_inconsistency_refuses_writes_from_memory(env: Env) -> None:
    """If the audit log itself fails the check, no record can be written: writes stop."""
    assert env.post(artifact_id="e0").status_code == 201
    size = env.gov.audit.size
    log_id = env.service.store.storage.log_records()[AUDIT_LOG]["id"]
    env.stop()
    handle = lmdb.open(str(env.data / "lmdb"), max_dbs=2048, subdir=True)
    try:
        tiles = handle.open_db(f"{log_id}/tiles".encode(), create=False)
        with handle.begin(write=True) as txn:
            record = bytearray(txn.get(tile_key(0, 0), db=tiles))
            # The audit tree's largest complete subtree, [0, 2**k): every next root uses it.
            assert size < TILE_WIDTH
            record[ROW_OFFSETS[size.bit_length() - 1]] ^= 0xFF
            txn.put(tile_key(0, 0), bytes(record), db=tiles)
    finally:
        handle.close()
    env.reopen()
    r = env.post(artifact_id="e1")
    assert r.status_code == 500 and r.json()["code"] == "integrity_failure"
    assert env.size() == 1 and env.gov.audit.size == size
    r = env.post(artifact_id="e2")
    assert r.status_code == 503 and r.json()["reason"] == "integrity_violation"
    assert env.size() == 1
    assert env.get("/logs/alpha/checkpoint").status_code == 200


def test_a_hold_placed_while_bodies_expire_stops_the_removal(env: Env) -> None:
    held = env.post(artifact_type="clip", artifact_id="evidence", body=b64(b"kept")).json()
    audit = env.gov.audit
    write_sync = audit.write_sync

    def hold_first(leaves: Any, **kw: Any) -> Any:
        # The candidates are chosen; now (as the owner might, from the CLI) a hold lands.
        if b"body_expired" in leaves[0] and not env.gov.holds():
            env.gov.hold(sign_request(env.owner, "hold", case="c-1", product="alpha"))
        return write_sync(leaves, **kw)

    audit.write_sync = hold_first  # type: ignore[method-assign]
    try:
        later = time.time_ns() // 1_000_000 + 2 * 86_400_000
        assert env.gov.expire_bodies(now_ms=later) == []
    finally:
        audit.write_sync = write_sync  # type: ignore[method-assign]
    assert env.get("/logs/alpha/artifacts/evidence/body").content == b"kept"
    assert env.records(0, "body_expired") == []
    assert held["index"] == 0


def test_legal_hold_keeps_a_body_past_its_retention(env: Env) -> None:
    held = env.post(artifact_type="clip", artifact_id="held", body=b64(b"disputed")).json()
    gone = env.post(artifact_type="clip", artifact_id="free", body=b64(b"routine")).json()
    kept = env.post(artifact_id="doc", body=b64(b"no retention")).json()
    hold_note = sign_request(env.owner, "hold", case="case-9", product="alpha", artifact="held")
    env.gov.hold(hold_note)
    with pytest.raises(BadRequest):
        env.gov.hold(sign_request(env.owner, "hold", case="case-9", product="alpha"))
    with pytest.raises(Forbidden):
        env.gov.hold(
            sign_request(Signer.generate(env.owner.name), "hold", case="x", product="alpha")
        )
    now = time.time_ns() // 1_000_000
    assert env.gov.expire_bodies(now_ms=now) == []  # one day has not passed
    removed = env.gov.expire_bodies(now_ms=now + 2 * 86_400_000)
    assert [(x["product"], x["index"]) for x in removed] == [("alpha", gone["index"])]

    def body(artifact: str) -> Any:
        return env.get(f"/logs/alpha/artifacts/{artifact}/body")

    assert body("held").content == b"disputed"
    assert body("doc").content == b"no retention"
    r = body("free")
    assert r.status_code == 410 and r.json()["code"] == "body_expired"
    # The entry and its proofs remain, and the leaf still commits to the removed body.
    key = parse_vkey(env.vkey())
    proven = verify_receipt(env.get(f"/logs/alpha/receipts/{gone['index']}").text, [key])
    assert proven.leaf == base64.b64decode(gone["leaf"])
    assert verify_receipt(gone["receipt"], [key]).index == gone["index"]
    cp = open_checkpoint(env.get("/logs/alpha/checkpoint").text, [key])
    proof = env.get(f"/logs/alpha/proof/inclusion?index={gone['index']}&size={cp.size}").json()
    verify_inclusion(
        gone["index"],
        cp.size,
        leaf_hash(proven.leaf),
        [base64.b64decode(h) for h in proof["proof"]],
        cp.root,
    )
    entry = env.get(f"/logs/alpha/entries/{gone['index']}").json()["entry"]
    assert entry["body_sha256"] == hashlib.sha256(b"routine").hexdigest()

    release_note = sign_request(env.owner, "release", case="case-9")
    env.gov.release(release_note)
    again = env.gov.expire_bodies(now_ms=now + 2 * 86_400_000)
    assert [x["index"] for x in again] == [held["index"]]
    assert body("held").status_code == 410
    assert body("doc").status_code == 200 and kept["index"] == 2
    (hold,) = env.records(0, "legal_hold")
    (release,) = env.records(0, "legal_release")
    assert hold.detail["request"] == hold_note and hold.detail["artifact"] == "held"
    assert release.detail["request"] == release_note and release.detail["released"]
    expired = env.records(0, "body_expired")
    assert [r.detail["index"] for r in expired] == [gone["index"], held["index"]]
    assert expired[0].detail["body_sha256"] == entry["body_sha256"]


# -- refusals and the audit trail ---------------------------------------------------------------


def _forged(env: Env) -> str:
    return env.tokens["alpha"][:-6] + "AAAAAA"


REFUSALS: dict[int, tuple[str, Callable[[Env], Any], str]] = {
    401: (
        "unauthorized",
        lambda e: e.client.get("/logs/alpha/checkpoint", headers=e.auth(token=_forged(e))),
        "claimed",
    ),
    403: ("forbidden", lambda e: e.get("/logs/alpha/checkpoint", "beta"), "beta"),
    405: (
        "append_only",
        lambda e: e.client.delete("/logs/alpha/entries/0", headers=e.auth(token=_forged(e))),
        "claimed",
    ),
    409: (
        "conflict",
        lambda e: e.client.post(
            "/logs/alpha/entries",
            json=doc(artifact_id="other"),
            headers=e.auth() | {"Idempotency-Key": "k1"},
        ),
        "alpha",
    ),
    413: ("payload_too_large", lambda e: e.post(body=b64(b"x" * 1025)), "alpha"),
    415: (
        "unsupported_media_type",
        lambda e: e.client.post(
            "/logs/alpha/entries", content=b"{}", headers=e.auth() | {"Content-Type": "text/plain"}
        ),
        "alpha",
    ),
    422: ("invalid_entry", lambda e: e.post(artifact_type="song"), "alpha"),
}


@pytest.mark.parametrize("status", sorted(REFUSALS))
def test_each_refusal_leaves_one_audit_record(make_env: Callable[..., Env], status: int) -> None:
    env = make_env(limits={"max_artifact_bytes": 1024})
    first = env.client.post(
        "/logs/alpha/entries",
        json=doc(artifact_id="one"),
        headers=env.auth() | {"Idempotency-Key": "k1"},
    )
    assert first.status_code == 201
    code, call, who = REFUSALS[status]
    before, audit_before = env.sizes(), env.gov.audit.size
    r = call(env)
    assert r.status_code == status and r.json()["code"] == code
    assert env.sizes() == before
    (record,) = env.records(audit_before, "refusal")
    assert record.detail["status"] == status and record.detail["code"] == code
    assert record.detail["path"] == r.request.url.path
    assert record.detail["method"] == r.request.method
    if status != 405:  # the catch-all 405 route has no product parameter
        assert record.product == "alpha"
    key_id = {p: t.split("_")[1] for p, t in env.tokens.items()}
    expected = f"claimed:key:{key_id['alpha']}" if who == "claimed" else f"key:{key_id[who]}"
    assert record.principal == expected
    # No secret token, presented or real, is anywhere in the audit log.
    audit = env.gov.audit
    leaves = b"".join(audit.entry(i) for i in range(audit.size))
    for token in (_forged(env), *env.tokens.values(), env.auditor):
        assert token.split("_", 2)[2].encode() not in leaves


def test_a_revocation_survives_a_freeze_decided_before_it(env: Env) -> None:
    keys = env.service.keys
    key, token = keys.create("alpha", {"read"})
    record = keys._record

    def revoke_first(type_: str, detail: Any, meta_key: bytes, meta_value: Any) -> int:
        # The server has read the key to freeze it; the operator revokes it now (another
        # process, as `tlog keys revoke` would; its transaction commits first).
        if type_ == "key_frozen":
            keys.revoke(key.key_id)
        return record(type_, detail, meta_key, meta_value)

    keys._record = revoke_first  # type: ignore[method-assign]
    try:
        keys.set_frozen(key.key_id, True, {"reason": "repeated scope violations"})
    finally:
        keys._record = record  # type: ignore[method-assign]
    (facts,) = [k for k in keys.list() if k.key_id == key.key_id]
    assert facts.revoked_at is not None and facts.frozen
    keys.set_frozen(key.key_id, False, {"reason": "owner"})  # unfreezing revives nothing
    with pytest.raises(Unauthorized):
        keys.authenticate(f"Bearer {token}")


def test_key_create_and_revoke_are_audit_records(env: Env) -> None:
    audit_before = env.gov.audit.size
    key, token = env.service.keys.create("beta", {"submit", "read"})
    env.service.keys.revoke(key.key_id)
    created, revoked = env.records(audit_before)
    assert (created.type, created.product) == ("key_created", "beta")
    assert created.detail == {"key_id": key.key_id, "product": "beta", "scopes": ["read", "submit"]}
    assert (revoked.type, revoked.detail["key_id"]) == ("key_revoked", key.key_id)
    assert token.split("_", 2)[2] not in json.dumps([created.detail, revoked.detail])
    assert env.post("beta", token=token).status_code == 401


def _storm(env: Env, n: int, mixed: bool) -> list[Callable[[], Any]]:
    """Return n refused calls: all 401 (no key), or a shuffled mix of what clients get
    wrong, from fresh keys that the detectors freeze (scope) and cool off (writes)."""
    if not mixed:
        return [lambda: env.client.get("/logs/alpha/checkpoint")] * n
    writers = [env.service.keys.create("alpha", {"submit", "read"})[1] for _ in range(3)]
    reader = env.service.keys.create("alpha", {"read"})[1]
    forged = _forged(env)
    items = [doc() for _ in range(11)]  # one over max_batch_items

    def mix(i: int) -> list[Callable[[], Any]]:
        w = writers[i % len(writers)]
        c = env.client
        return [
            lambda: c.get("/logs/alpha/checkpoint", headers=env.auth(token=forged)),  # 401
            lambda: c.post("/logs/alpha/entries", json=doc()),  # 401, no key
            lambda: env.get("/logs/alpha/checkpoint", "beta"),  # 403 cross-product
            lambda: c.put("/logs/alpha/entries/0", headers=env.auth(token=w)),  # 405
            lambda: c.delete("/logs/alpha/checkpoint", headers=env.auth(token=w)),  # 405
            lambda: env.post(token=w, artifact_type="song"),  # 422, then 429 cool-off
            lambda: c.post(  # 415, then 429
                "/logs/alpha/entries",
                content=b"{}",
                headers=env.auth(token=w) | {"Content-Type": "text/plain"},
            ),
            lambda: c.post(  # 413, then 429
                "/logs/alpha/entries/batch", json=items, headers=env.auth(token=w)
            ),
            lambda: env.post(token=reader),  # 403 missing scope, then key_frozen
        ]

    rnd = random.Random(6)
    return [rnd.choice(mix(i)) for i in range(n)]


@pytest.mark.parametrize(("n", "mixed"), [(500, False), (2000, True)], ids=["401", "mixed"])
def test_refusal_storm_every_refusal_is_recorded(
    make_env: Callable[..., Env], n: int, mixed: bool
) -> None:
    """Issue #6: the audit records of a refusal storm are all present afterwards, one
    per refused request (by status, method and path), and the audit log audits clean.
    bench/http_service.py (http_refusal_storm) does the same with 10,000 over HTTP."""
    env = make_env(limits={"max_batch_items": 10})
    calls = _storm(env, n, mixed)
    audit_before = env.gov.audit.size
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda call: call(), calls))
    answered = Counter((r.status_code, r.request.method, r.request.url.path) for r in answers)
    assert {status for status, _, _ in answered} <= AUDITED_STATUSES
    records = env.records(audit_before, "refusal")
    recorded = Counter((r.detail["status"], r.detail["method"], r.detail["path"]) for r in records)
    assert len(records) == n
    assert recorded == answered
    if not mixed:
        assert all(r.detail["status"] == 401 and r.principal is None for r in records)
        return
    statuses = Counter(r.status_code for r in answers)
    assert set(statuses) == {401, 403, 405, 413, 415, 422, 429}, statuses
    beta = env.auth("beta")["Authorization"]
    crossed = [r for r in answers if r.request.headers.get("authorization") == beta]
    assert crossed and {r.status_code for r in crossed} == {403}
    assert len(env.threat_records("cross_product_access", audit_before)) == len(crossed)
    assert env.threat_records("ai_escalation", audit_before)  # the writers cooled off
    assert env.threat_records("executor_override", audit_before)  # the reader was frozen
    key = parse_vkey(env.get("/logs/_audit/key", token=env.auditor).text.strip())
    result = audit_log(ClientSource(env, "/logs/_audit", env.auditor), [key], origin=key.name)
    assert result.entries == env.gov.audit.size >= audit_before + n


class ClientSource:
    """A verifier TileSource that reads a log through the app (auth and all)."""

    def __init__(self, env: Env, prefix: str, token: str) -> None:
        self.env, self.prefix, self.token = env, prefix, token

    def location(self, path: str) -> str:
        return f"testclient:{self.prefix}/{path}"

    def fetch(self, path: str, *, max_bytes: int) -> bytes:
        r = self.env.client.get(
            f"{self.prefix}/{path}", headers={"Authorization": f"Bearer {self.token}"}
        )
        if r.status_code == 404:
            raise ResourceNotFound(f"{path}: 404", url=path)
        if r.status_code != 200 or len(r.content) > max_bytes:
            raise FetchFailed(f"{path}: HTTP {r.status_code}", url=path, status=r.status_code)
        return bytes(r.content)


def test_audit_log_audits_clean_after_refusals(make_env: Callable[..., Env]) -> None:
    env = make_env(limits={"max_artifact_bytes": 1024})
    first = env.client.post(
        "/logs/alpha/entries",
        json=doc(artifact_id="one"),
        headers=env.auth() | {"Idempotency-Key": "k1"},
    )
    assert first.status_code == 201
    for _ in range(40):
        for _code, call, _who in REFUSALS.values():
            call(env)
        env.post("beta")
    env.gov.halt("drill")
    env.gov.resume(sign_request(env.owner, "resume", reason="drill over"))
    assert env.gov.audit.size > 300
    # The audit log is readable with the audit scope only, and never writable.
    assert env.get("/logs/_audit/checkpoint").status_code == 403
    assert (
        env.client.post(
            "/logs/_audit/entries", json={}, headers=env.auth(token=env.auditor)
        ).status_code
        == 403
    )
    vkey = env.get("/logs/_audit/key", token=env.auditor).text.strip()
    key = parse_vkey(vkey)
    assert key.name == f"{HOST}/logs/_audit"
    result = audit_log(ClientSource(env, "/logs/_audit", env.auditor), [key], origin=key.name)
    assert result.entries >= 300
    # Every leaf the auditor hashed is a well-formed record; each product batch is chained.
    records = env.records(0)[: result.entries]
    assert {r.type for r in records} >= {"refusal", "threat", "append", "state_changed"}
    beta_appends = [r for r in records if r.type == "append" and r.product == "beta"]
    beta_key = parse_vkey(env.vkey("beta"))
    last = open_checkpoint(env.get("/logs/beta/checkpoint", "beta").text, [beta_key])
    assert beta_appends[-1].detail["tree_size"] == last.size == 40
    assert beta_appends[-1].detail["root"] == last.root.hex()
    assert [r.detail["tree_size"] for r in beta_appends] == list(range(1, 41))


# -- products, keys, failure scenarios ----------------------------------------------------------

CERTIFIED_PRODUCTS = {
    "ai-assistant": {
        "prompt-template": ["name", "model"],
        "model-output": ["model", "request_id"],
        "evaluation": ["model", "suite"],
    },
    "ai-avatar": {
        "avatar-model": ["name", "model_version"],
        "voice-profile": ["speaker", "consent_ref"],
        "render": ["avatar", "request_id"],
    },
    "gurukul": {
        "lesson": ["title", "language"],
        "assessment": ["lesson", "learner"],
        "certificate": ["learner", "course"],
    },
    "enforcement": {
        "case": ["case_id", "policy"],
        "evidence": ["case_id", "source"],
        "decision": ["case_id", "outcome"],
    },
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from tlog.config import default_config_text

    e = Env(tmp_path_factory.mktemp("demo"), config=default_config_text())
    yield e
    e.stop()


@pytest.mark.parametrize("product", sorted(CERTIFIED_PRODUCTS))
def test_certified_product_in_the_default_config(demo: Env, product: str) -> None:
    assert set(demo.service.config.products) == set(CERTIFIED_PRODUCTS)
    types = CERTIFIED_PRODUCTS[product]
    assert {
        t: list(req) for t, req in demo.service.config.products[product].artifact_types.items()
    } == types
    key = parse_vkey(demo.vkey(product))
    assert key.name == f"bucket.example/logs/{product}"
    for artifact_type, required in types.items():
        metadata = {k: "x" for k in required}
        r = demo.post(product, artifact_type=artifact_type, metadata=metadata)
        assert r.status_code == 201, r.text
        assert verify_receipt(r.json()["receipt"], [key], origin=key.name)
        missing = demo.post(
            product, artifact_type=artifact_type, metadata={k: "x" for k in required[1:]}
        )
        assert missing.status_code == 422 and required[0] in missing.json()["detail"]
    for other in CERTIFIED_PRODUCTS:
        if other != product:
            assert demo.get(f"/logs/{other}/checkpoint", product).status_code == 403


def test_replaced_audit_log_key_refuses_to_start(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.post()
    env.stop()
    path = env.data / "keys" / f"{AUDIT_LOG}.key"
    path.unlink()
    create_key(path, f"{HOST}/logs/{AUDIT_LOG}")
    with pytest.raises(KeyProblem):
        Service.open(env.data)
    assert cli.main(["--data", str(env.data), "governance", "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tlog: error:") and len(err.strip().splitlines()) == 1


CRASH_WRITER = """
import sys
from pathlib import Path
from tlog.service import Service

service = Service.open(Path(sys.argv[1]))
log = service.product_log("alpha")
print("R", flush=True)
while True:
    drafts = [
        service.draft(
            "alpha",
            "key:crashtest",
            service.parse_submission("alpha", {"artifact_type": "doc"}, json_body=True),
        )
        for _ in range(20)
    ]
    (*_, last) = log.write_sync(drafts)
    print("A", last.size, flush=True)
"""


def test_sigkill_never_separates_a_batch_from_its_audit_record(env: Env) -> None:
    """The append record of a batch is in the batch's transaction: after a SIGKILL at any
    moment, the audit log's last record for a product names exactly its durable tree."""
    env.post()
    env.stop()
    for delay in (0.15, 0.3, 0.45):
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_WRITER, str(env.data)],
            cwd=REPO,
            env=os.environ | {"PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "R\n"
        first = proc.stdout.readline()  # at least one acknowledged write, however slow
        assert first.startswith("A "), first
        time.sleep(delay)
        proc.kill()
        out, _ = proc.communicate()
        lines = [first.strip(), *out.splitlines()]
        acked = [int(line.split()[1]) for line in lines if line.startswith("A ")]
        env.reopen()
        size = env.size()
        assert acked and size >= acked[-1]  # nothing acknowledged was lost
        alpha = [r for r in env.records(0, "append") if r.product == "alpha"]
        assert alpha[-1].detail["tree_size"] == size
        cp = open_checkpoint(env.get("/logs/alpha/checkpoint").text, [parse_vkey(env.vkey())])
        assert alpha[-1].detail["root"] == cp.root.hex()
        sizes = [r.detail["tree_size"] for r in alpha]
        assert sizes == sorted(set(sizes))  # one record per batch, in order
        env.stop()
