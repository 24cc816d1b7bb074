"""Governance: the audit log, the state machine, owner-signed requests and the limits.

The audit log (``_audit``) is a Merkle log like any other, with its own key and
signed checkpoints, so ``tlog-verify log`` audits it. Its leaves are deterministic
CBOR maps (RFC 8949 §4.2.1, text keys only)::

    {"v": 1, "type": "append", "time": <ms>, "retention_until": <ms>,
     "principal": "key:3f2a9c1d" | null, "product": "gurukul" | null, "detail": {...},
     "nonce": "<16 hex digits>"}

The random ``nonce`` makes every record a distinct leaf: a log answers a leaf it
already holds with the earlier index, so two identical records written in the same
millisecond (two refusals of the same request) would otherwise count as one.

Every batch appended to a product log gets one ``append`` record (first index,
count, new size and root, principals) written by the log's writer in the same LMDB
transaction, so the audit log also chains every product's signed tree heads.
Refusals, key changes, config approvals, state changes, limit crossings and threat
detections are records too. ``retention_until`` is ``time`` + the configured
retention (7 years); nothing ever deletes a record.

State machine (persisted in the log env's ``meta`` database, changed only together
with its audit record, in one transaction)::

    NORMAL --storage >= 99%--> READ_ONLY        NORMAL/READ_ONLY --violation--> HALTED
    HALTED/READ_ONLY --owner-signed resume--> NORMAL

While HALTED every write answers 503, while READ_ONLY 507; reads and proofs keep
working.

Owner-signed requests are C2SP signed notes by the owner key (created by ``tlog
init``, mode 0600, meant to be moved off the server) whose text is::

    bucket.governance/v1
    action resume
    reason <one line>
    time <ms since the epoch>

The note itself is stored in the audit record, so anyone can check who approved what.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from tlog import storage as st
from tlog.config import AUDIT_LOG, Config, fingerprint
from tlog.errors import (
    BadRequest,
    Conflict,
    EntryLimit,
    Forbidden,
    PayloadTooLarge,
    Pushback,
    StorageFull,
    TlogError,
)
from tlog.log import Log, Outcome, Store
from verifier.errors import VerificationError
from verifier.note import Signer, open_note, parse_vkey, sign_note

__all__ = [
    "HALTED",
    "NORMAL",
    "READ_ONLY",
    "THREATS",
    "THREAT_DETECTIONS",
    "AuditRecord",
    "DeadlineExceeded",
    "EntryLimit",
    "GovState",
    "Governance",
    "Halted",
    "RateLimited",
    "ReadOnly",
    "ScaleMonitor",
    "decode_audit_record",
    "encode_audit_record",
    "sign_request",
]

NORMAL, READ_ONLY, HALTED = "NORMAL", "READ_ONLY", "HALTED"
_log = logging.getLogger("tlog.governance")
_STATE_KEY = b"governance/state"
_OWNER_KEY = b"governance/owner_vkey"
_CONFIG_KEY = b"governance/config_fingerprint"
_REQUEST_HEADER = "bucket.governance/v1"
_YEAR_MS = 365 * 24 * 3600 * 1000 + 6 * 3600 * 1000  # a Julian year
_REQUEST_MAX_AGE_MS = 24 * 3600 * 1000
THREATS = (
    "storage_exhaustion",
    "metadata_poisoning",
    "silent_schema_drift",
    "concurrent_write_collision",
    "executor_override",
    "ai_escalation",
    "cross_product_access",
    "audit_tampering",
    "legal_ownership_challenge",
    "over_trust_in_provenance",
)
"""The ten threats of the certification document, as metric and record labels."""

THREAT_DETECTIONS = {
    "storage_exhaustion": "LMDB use at 99% of the map: READ_ONLY, writes answer 507",
    "metadata_poisoning": "metadata naming another product as owner: 422",
    "silent_schema_drift": "unknown fields (422); a config change without approval halts",
    "concurrent_write_collision": "idempotency key reused or expected_version stale: 409",
    "executor_override": "repeated scope violations freeze the key (403) until unfrozen",
    "ai_escalation": "repeated refused writes from one key: 429 cool-off",
    "cross_product_access": "a key on another product's path: 403 before any lookup",
    "audit_tampering": "integrity watch re-hashes leaves and tiles; a mismatch halts",
    "legal_ownership_challenge": "legal holds block body expiry; holds are audit records",
    "over_trust_in_provenance": "metadata stating server facts (time, index, signatures): 422",
}
"""How each threat is detected (shown by GET /governance/threats)."""


class Halted(Pushback):
    """Writes are suspended: the service is HALTED (503)."""

    code = "operations_halted"

    def __init__(self, message: str, *, code: str, reason: str, incident_index: int | None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.incident_index = incident_index


class ReadOnly(StorageFull):
    """Writes are suspended: storage reached 99% of the map and the service is
    READ_ONLY (507, the storage limit's status)."""

    code = "read_only"

    def __init__(self, message: str, *, reason: str, incident_index: int | None):
        super().__init__(message)
        self.reason = reason
        self.incident_index = incident_index


MetaValue = bytes | Callable[[bytes | None], bytes]
"""A meta value to store, or a function from the stored value to the new one."""


class StateMoved(Conflict):
    """A state change expected a state that another process changed first; nothing was
    written (Governance.set_state's ``expect``)."""

    code = "state_moved"


def _parse_state(raw: bytes | None) -> GovState:
    """Return the governance state stored as ``raw`` (NORMAL if never set)."""
    if raw is None:
        return GovState(NORMAL, "", None, 0)
    data = json.loads(raw)
    return GovState(data["state"], data["reason"], data["incident_index"], data["since"])


class _HeldNow(Conflict):
    """A body's removal found a legal hold in its own write transaction (expire_bodies);
    the removal and its audit record are not written."""


class RateLimited(TlogError):
    """Too many writes, or too many pending writes: slow down (429 + Retry-After)."""

    code = "rate_limited"

    def __init__(self, message: str, *, code: str = "rate_limited", retry_after: float = 1.0):
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class DeadlineExceeded(TlogError):
    """A read or proof took longer than the query deadline (504)."""

    code = "query_deadline_exceeded"


@dataclass(frozen=True)
class GovState:
    """The persisted governance state."""

    state: str
    reason: str
    incident_index: int | None
    since: int


@dataclass(frozen=True)
class AuditRecord:
    """A decoded audit log leaf."""

    type: str
    time: int
    retention_until: int
    principal: str | None
    product: str | None
    detail: dict[str, Any]
    nonce: str = ""


def encode_audit_record(
    type_: str,
    *,
    time_ms: int,
    retention_years: int,
    principal: str | None = None,
    product: str | None = None,
    detail: dict[str, Any] | None = None,
    nonce: str | None = None,
) -> bytes:
    """Return the deterministic CBOR leaf of one audit record (RFC 8949 §4.2.1).

    ``nonce`` (default: 8 random bytes in hex) keeps identical records distinct leaves.
    """
    record = {
        "v": 1,
        "type": type_,
        "time": time_ms,
        "retention_until": time_ms + retention_years * _YEAR_MS,
        "principal": principal,
        "product": product,
        "detail": detail or {},
        "nonce": secrets.token_hex(8) if nonce is None else nonce,
    }
    return bytes(cbor2.dumps(record, canonical=True))


def decode_audit_record(leaf: bytes) -> AuditRecord:
    """Return the audit record in a leaf. Raises BadRequest if it is not one."""
    try:
        raw = cbor2.loads(leaf)
        return AuditRecord(
            type=raw["type"],
            time=raw["time"],
            retention_until=raw["retention_until"],
            principal=raw["principal"],
            product=raw["product"],
            detail=dict(raw["detail"]),
            nonce=str(raw.get("nonce", "")),
        )
    except Exception as exc:
        raise BadRequest(f"not an audit record: {exc}") from exc


def sign_request(owner: Signer, action: str, **fields: str) -> str:
    """Return an owner-signed governance request note (see the module docstring)."""
    lines = [_REQUEST_HEADER, f"action {action}"]
    for key, value in fields.items():
        if "\n" in value or not value:
            raise BadRequest(f"{key} must be one non-empty line")
        lines.append(f"{key} {value}")
    lines.append(f"time {time.time_ns() // 1_000_000}")
    lines.append(f"nonce {secrets.token_hex(16)}")
    return sign_note("\n".join(lines) + "\n", [owner])


class Governance:
    """The audit log, the state machine and the limits of one data directory."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        if AUDIT_LOG not in store.logs:
            store.create_log(AUDIT_LOG, config.origin(AUDIT_LOG))
        self.audit: Log = store.log(AUDIT_LOG)
        store.audit_log = AUDIT_LOG
        store.audit_hook = self._append_record
        store.entry_limits = (
            config.limits.max_entries_per_product,
            config.limits.max_entries_global,
        )
        store.on_integrity_failure = self._writer_integrity_failure
        self._halt_lock = threading.Lock()
        # Set when the audit log itself failed its consistency check: nothing can be
        # recorded, so writes are refused from memory (until a restart and tlog fsck).
        self._memory_halt: str | None = None
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._on_threat: Callable[[str], None] | None = None
        self._uncounted: list[str] = []  # threats detected before a hook was set
        # (snapshot id, state): the persisted state as of that log-env transaction.
        self._state_cache: tuple[int, GovState] | None = None

    @property
    def on_threat(self) -> Callable[[str], None] | None:
        """Called with each threat detected (the HTTP app counts them in /metrics).

        Threats detected before it is set (an unapproved config found while opening the
        data directory) are passed to it when it is set, so they are counted too.
        """
        return self._on_threat

    @on_threat.setter
    def on_threat(self, hook: Callable[[str], None] | None) -> None:
        self._on_threat = hook
        if hook is not None:
            uncounted, self._uncounted = self._uncounted, []
            for threat in uncounted:
                hook(threat)

    # -- records -------------------------------------------------------------------

    def _now(self) -> int:
        return time.time_ns() // 1_000_000

    def leaf(
        self,
        type_: str,
        *,
        principal: str | None = None,
        product: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> bytes:
        """Return an audit leaf stamped now."""
        return encode_audit_record(
            type_,
            time_ms=self._now(),
            retention_years=self.config.limits.audit_retention_years,
            principal=principal,
            product=product,
            detail=detail,
        )

    def _append_record(
        self, log_name: str, first: int, new_size: int, root: bytes, principals: Sequence[str]
    ) -> bytes:
        return self.leaf(
            "append",
            product=log_name,
            principal=principals[0] if len(principals) == 1 else None,
            detail={
                "first_index": first,
                "count": new_size - first,
                "tree_size": new_size,
                "root": root.hex(),
                "principals": list(principals),
            },
        )

    async def record(self, type_: str, **kwargs: Any) -> int:
        """Append one audit record and return its index once durable."""
        (outcome,) = await self.audit.write_async([self.leaf(type_, **kwargs)])
        return _index(outcome)

    def record_sync(self, type_: str, **kwargs: Any) -> int:
        """Append one audit record from a plain thread; return its index once durable."""
        (outcome,) = self.audit.write_sync([self.leaf(type_, **kwargs)])
        return _index(outcome)

    def record_with(self, leaf: bytes, meta: dict[bytes, MetaValue]) -> int:
        """Append one audit record and set meta keys in the same transaction; return the
        record's index once durable.

        A value may be a function of the key's stored value (None if unset), called
        inside that write transaction: a read-modify-write that no other process's
        change (committed in between) can be lost to.
        """

        def pre_commit(wtxn: st.WriteTxn, placed: list[Any]) -> None:
            (p,) = placed
            if isinstance(p, TlogError):
                raise p
            for key, value in meta.items():
                if callable(value):
                    value = value(self.store.storage.get_meta(wtxn.main, key))
                self.store.storage.put_meta(wtxn.main, key, value)

        (outcome,) = self.audit.write_sync([leaf], pre_commit=pre_commit)
        return _index(outcome)

    # -- state -------------------------------------------------------------------------

    def state(self) -> GovState:
        """Return the persisted governance state (NORMAL if never set).

        Read once per change of the log env: every write request asks, and a change made
        by another process (``tlog governance resume``) commits a new transaction, which
        the check against the env's last transaction id sees at once.
        """
        storage = self.store.storage
        cached = self._state_cache
        if cached is not None and cached[0] == storage.last_txnid():
            return cached[1]
        with storage.read() as txn:
            generation = storage.snapshot_id(txn)
            raw = storage.get_meta(txn, _STATE_KEY)
        current = _parse_state(raw)
        self._state_cache = (generation, current)
        return current

    def set_state(
        self,
        state: str,
        reason: str,
        *,
        detail: dict[str, Any] | None = None,
        principal: str | None = None,
        expect: Callable[[GovState], bool] | None = None,
    ) -> GovState:
        """Change state with its audit record in one transaction; return the new state.

        ``expect``: the change is made only if the state, read again inside that write
        transaction (after any other process's change), passes it; otherwise nothing is
        written and StateMoved is raised. Decisions taken on an earlier read (resume a
        config halt, go READ_ONLY from NORMAL) use it, so they cannot overwrite a halt
        another process recorded meanwhile.
        """
        previous = self.state()
        now = self._now()
        holder: dict[str, Any] = {}

        def pre_commit(wtxn: st.WriteTxn, placed: list[Any]) -> None:
            (p,) = placed
            if isinstance(p, TlogError):
                raise p
            if expect is not None:
                stored = _parse_state(self.store.storage.get_meta(wtxn.main, _STATE_KEY))
                if not expect(stored):
                    raise StateMoved(
                        f"the state is now {stored.state} ({stored.reason}); not changed"
                    )
            new = {"state": state, "reason": reason, "incident_index": p.at, "since": now}
            holder.update(new)
            self.store.storage.put_meta(wtxn.main, _STATE_KEY, json.dumps(new).encode())

        leaf = self.leaf(
            "state_changed",
            principal=principal,
            detail={"from": previous.state, "to": state, "reason": reason, **(detail or {})},
        )
        self.audit.write_sync([leaf], pre_commit=pre_commit)
        return GovState(state, reason, holder["incident_index"], now)

    def halt(self, reason: str, detail: dict[str, Any] | None = None) -> GovState:
        """Enter HALTED (writes refused) unless already halted; return the state."""
        current = self.state()
        if current.state == HALTED:
            return current
        try:
            return self.set_state(
                HALTED, reason, detail=detail, expect=lambda now: now.state != HALTED
            )
        except StateMoved:
            return self.state()  # halted meanwhile, for its own reason: keep that one

    def check_writable(self) -> None:
        """Raise Halted (503) if HALTED, ReadOnly (507) if READ_ONLY."""
        if self._memory_halt is not None:
            raise Halted(
                f"writes are suspended: the audit log failed its integrity check "
                f"({self._memory_halt[:200]})",
                code="operations_halted",
                reason="integrity_violation",
                incident_index=None,
            )
        current = self.state()
        message = f"writes are suspended ({current.state}): {current.reason}"
        if current.state == READ_ONLY:
            raise ReadOnly(message, reason=current.reason, incident_index=current.incident_index)
        if current.state != NORMAL:
            raise Halted(
                message,
                code="operations_halted",
                reason=current.reason,
                incident_index=current.incident_index,
            )

    def _writer_integrity_failure(self, log_name: str, problem: str) -> None:
        """Halt because the writer refused a batch whose tree would not extend the last
        signed checkpoint (tlog.log.IntegrityFailure), with an audit_tampering record.

        Called on the writer thread, so the halt runs on a thread of its own: its audit
        records go through that writer. If the failing log is the audit log, nothing can
        be recorded; writes are then refused from memory.
        """
        detail = {"log": log_name, "first_bad_index": None, "problems": [problem[:500]]}
        if log_name == AUDIT_LOG:
            self._memory_halt = problem
            return

        def halt() -> None:
            with self._halt_lock:
                try:
                    if self.state().state != HALTED:
                        self.threat("audit_tampering", detail, product=log_name)
                        self.halt("integrity_violation", detail)
                except TlogError:
                    _log.exception("could not halt after an integrity failure in %s", log_name)

        threading.Thread(target=halt, name="tlog-integrity-halt", daemon=True).start()

    def integrity_violation(self, log_name: str, report: Any) -> GovState:
        """Record an integrity mismatch (audit tampering) and halt; return the state."""
        detail = {
            "log": log_name,
            "first_bad_index": report.first_bad_index,
            "problems": report.problems[:5],
        }
        self.threat("audit_tampering", detail, product=log_name)
        current = self.state()
        if current.state == HALTED and current.reason == "integrity_violation":
            return current
        # Also when halted for another reason: the integrity problem takes over, so that
        # approving a config (which resumes a config halt) cannot resume past it.
        return self.set_state(HALTED, "integrity_violation", detail=detail)

    # -- owner key and signed requests --------------------------------------------------

    def set_owner(self, owner_vkey: str) -> None:
        """Record the owner's verifier key (once, at init)."""
        with self.store.storage.env.begin(write=True) as txn:
            if self.store.storage.get_meta(txn, _OWNER_KEY) is None:
                self.store.storage.put_meta(txn, _OWNER_KEY, owner_vkey.encode())

    def open_request(self, note: str, action: str) -> dict[str, str]:
        """Verify an owner-signed request for ``action``; return its fields.

        Raises Forbidden if it is not signed by the owner key, is for another action, is
        older than a day, or was used before: each request is single-use (its SHA-256 is
        recorded when it is opened, in one LMDB transaction, so two processes racing with
        one note cannot both pass), and a copy read from the audit log cannot be replayed.
        """
        with self.store.storage.read() as txn:
            raw = self.store.storage.get_meta(txn, _OWNER_KEY)
        if raw is None:
            raise Forbidden("no owner key is recorded for this depository")
        try:
            verified = open_note(note, [parse_vkey(raw.decode())])
        except VerificationError as exc:
            raise Forbidden(f"the request is not signed by the owner key: {exc}") from exc
        lines = verified.text.rstrip("\n").split("\n")
        if lines[0] != _REQUEST_HEADER:
            raise Forbidden("not a governance request")
        fields = dict(line.split(" ", 1) for line in lines[1:] if " " in line)
        if fields.get("action") != action:
            raise Forbidden(f"the signed request is for {fields.get('action')!r}, not {action!r}")
        age = self._now() - int(fields.get("time", "0"))
        if not 0 <= age <= _REQUEST_MAX_AGE_MS + 60_000:
            raise Forbidden("the signed request is too old or from the future")
        # The mark is of the signed text (with its time and nonce), not of the note: a
        # note's signature lines can be repeated or joined by foreign ones and still open,
        # so the note's own bytes would let one request be used again. Notes marked by
        # their bytes (before this rule) are still refused.
        used = b"request/text/" + hashlib.sha256(verified.text.encode()).hexdigest().encode()
        # Marks of the old kind are of the note as signed: its text and one signature
        # line. Any line of this note may be that one (the rest repeated or foreign).
        signatures = note[len(verified.text) + 1 :].splitlines(keepends=True)
        legacy = [
            b"request/"
            + hashlib.sha256((verified.text + "\n" + line).encode()).hexdigest().encode()
            for line in dict.fromkeys([*signatures, ""])
        ]
        storage = self.store.storage
        with storage.env.begin(write=True) as txn:
            if storage.get_meta(txn, used) is not None or any(
                storage.get_meta(txn, mark) is not None for mark in legacy
            ):
                raise Forbidden("this signed request was already used; sign a new one")
            storage.put_meta(txn, used, str(self._now()).encode())
        return fields

    def resume(self, note: str) -> GovState:
        """Return to NORMAL on an owner-signed ``resume`` request (an audit record)."""
        fields = self.open_request(note, "resume")
        return self.set_state(
            NORMAL,
            fields.get("reason", ""),
            detail={"request": note},
            principal="owner",
        )

    # -- legal holds and body retention ---------------------------------------------------

    def holds(self) -> list[dict[str, Any]]:
        """Return every legal hold ever placed (released ones carry ``released``)."""
        with self.store.storage.env.begin() as txn:
            return self._holds(txn)

    def _holds(self, txn: Any) -> list[dict[str, Any]]:
        """Return every legal hold as seen by the transaction txn (read or write)."""
        out = []
        cursor = txn.cursor(db=self.store.storage.meta_db)
        if cursor.set_range(b"hold/"):
            for key, value in cursor:
                if not bytes(key).startswith(b"hold/"):
                    break
                out.append(json.loads(bytes(value)))
        return out

    def hold(self, note: str) -> dict[str, Any]:
        """Place a legal hold from an owner-signed ``hold`` request (case, product and
        optionally artifact); return it. Raises Forbidden, BadRequest (case exists)."""
        fields = self.open_request(note, "hold")
        case, product = fields.get("case", ""), fields.get("product", "")
        if not case or product not in self.config.products:
            raise BadRequest("a hold needs a case id and a configured product")
        key = b"hold/" + case.encode()
        if any(h["case"] == case for h in self.holds()):
            raise BadRequest(f"case {case!r} already has a hold")
        hold = {
            "case": case,
            "product": product,
            "artifact": fields.get("artifact"),
            "placed": self._now(),
            "released": None,
        }
        self.record_with(
            self.leaf(
                "legal_hold", principal="owner", product=product, detail={**hold, "request": note}
            ),
            {key: json.dumps(hold).encode()},
        )
        self.threat(
            "legal_ownership_challenge",
            {"case": case, "artifact": hold["artifact"]},
            principal="owner",
            product=product,
        )
        return hold

    def release(self, note: str) -> dict[str, Any]:
        """Release a legal hold from an owner-signed ``release`` request; return it."""
        fields = self.open_request(note, "release")
        case = fields.get("case", "")
        found = [h for h in self.holds() if h["case"] == case and h["released"] is None]
        if not found:
            raise BadRequest(f"no active hold for case {case!r}")
        hold = found[0] | {"released": self._now()}
        self.record_with(
            self.leaf(
                "legal_release",
                principal="owner",
                product=hold["product"],
                detail={**hold, "request": note},
            ),
            {b"hold/" + case.encode(): json.dumps(hold).encode()},
        )
        return hold

    def held(self, product: str, artifact_id: str, txn: Any = None) -> bool:
        """Return True if an active legal hold covers this artifact (as seen by txn, if
        given, else by a fresh read transaction)."""
        return any(
            h["released"] is None
            and h["product"] == product
            and h["artifact"] in (None, artifact_id)
            for h in (self.holds() if txn is None else self._holds(txn))
        )

    def expire_bodies(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Remove bodies past their type's retention unless a legal hold applies.

        Each removal is an audit record written in the same transaction as the removal.
        Leaves and hashes are never touched, so every proof still verifies; the body
        endpoint answers 410 afterwards. Returns what was removed.
        """
        from tlog.entry import decode_envelope

        now = self._now() if now_ms is None else now_ms
        removed: list[dict[str, Any]] = []
        for name, product in self.config.products.items():
            if not product.body_retention_days:
                continue
            log = self.store.log(name)
            with self.store.storage.read() as txn:
                candidates = []
                for index, leaf in enumerate(st.iter_leaves(txn, log.dbs, 0, log.size)):
                    env = decode_envelope(leaf)
                    days = product.body_retention_days.get(env.artifact_type)
                    if days is None or env.body_size == 0:
                        continue
                    if env.integrated_at + days * 86_400_000 > now:
                        continue
                    if st.get_body(txn, log.dbs, index) is None:
                        continue
                    if self.held(name, env.artifact_id):
                        continue
                    candidates.append((index, env))
            for index, env in candidates:
                detail = {
                    "index": index,
                    "artifact_id": env.artifact_id,
                    "body_sha256": env.body_sha256.hex(),
                    "retention_days": product.body_retention_days[env.artifact_type],
                }

                def pre_commit(
                    wtxn: st.WriteTxn,
                    placed: list[Any],
                    dbs: st.LogDBs = log.dbs,
                    index: int = index,
                    product: str = name,
                    artifact_id: str = env.artifact_id,
                    marker: bytes = f"expired/{name}/{index}".encode(),
                ) -> None:
                    # Again in the removal's own write transaction: a hold placed since
                    # the scan (by any process) must stop it.
                    if self.held(product, artifact_id, wtxn.main):
                        raise _HeldNow(f"{product}/{artifact_id} came under a legal hold")
                    st.expire_body(wtxn.main, dbs, index)
                    self.store.storage.put_meta(wtxn.main, marker, b"1")

                try:
                    self.audit.write_sync(
                        [self.leaf("body_expired", product=name, detail=detail)],
                        pre_commit=pre_commit,
                    )
                except _HeldNow:
                    continue  # nothing of this removal was written
                removed.append({"product": name, **detail})
        return removed

    def body_expired(self, product: str, index: int) -> bool:
        """Return True if the body of this entry was removed by retention expiry."""
        with self.store.storage.read() as txn:
            return (
                self.store.storage.get_meta(txn, f"expired/{product}/{index}".encode()) is not None
            )

    # -- config fingerprint ----------------------------------------------------------------

    def approved_fingerprint(self) -> str | None:
        """Return the fingerprint of the last approved config, or None."""
        with self.store.storage.read() as txn:
            raw = self.store.storage.get_meta(txn, _CONFIG_KEY)
        return None if raw is None else raw.decode()

    def approve_config(self, note: str | None) -> str:
        """Record approval of the current config's fingerprint; return it.

        ``note`` is an owner-signed ``approve-config`` request naming the fingerprint
        (None only at init, when the owner key has just been created with the config).
        If the service was halted for a config mismatch, it returns to NORMAL.
        """
        fp = fingerprint(self.config)
        detail: dict[str, Any] = {"fingerprint": fp}
        if note is not None:
            fields = self.open_request(note, "approve-config")
            if fields.get("fingerprint") != fp:
                raise Forbidden("the signed approval is for another config fingerprint")
            detail["request"] = note
        self.record_with(
            self.leaf("config_approved", principal="owner", detail=detail),
            {_CONFIG_KEY: fp.encode()},
        )
        current = self.state()
        if current.state == HALTED and current.reason == "governance_config_mismatch":
            with contextlib.suppress(StateMoved):  # halted for something else meanwhile
                self.set_state(
                    NORMAL,
                    "config approved",
                    principal="owner",
                    expect=lambda now: (
                        now.state == HALTED and now.reason == "governance_config_mismatch"
                    ),
                )
        return fp

    def check_config(self) -> None:
        """Halt with governance_config_mismatch if the config in force was not approved."""
        fp = fingerprint(self.config)
        approved = self.approved_fingerprint()
        if approved != fp:
            detail = {"approved": approved or "", "running": fp}
            if self.state().state != HALTED:
                self.threat("silent_schema_drift", {"config": "changed without approval", **detail})
            self.halt("governance_config_mismatch", detail)

    # -- limits ---------------------------------------------------------------------------

    def admit_write(
        self,
        log: Log,
        count: int,
        pending: int,
        nbytes: int = 0,
        *,
        pending_bytes: int = 0,
    ) -> None:
        """Admit ``count`` new entries (``nbytes`` bytes of leaves and bodies, estimated)
        for a product log, or raise the limit's refusal.

        In order: the state (503 HALTED, 507 READ_ONLY), concurrent pending writes (429),
        storage (enters READ_ONLY and answers 507 once the LMDB map, with this write,
        would be 99% used: a write bigger than what is left must not run the map full,
        where not even the audit record of the refusal would fit), entry counts per
        product and global (507), write rate per product and global (429). Each product
        has its own token bucket and count, so one product at its quota does not block
        another. ``pending_bytes`` are admitted but not yet written: near a full map they
        refuse this write too (without changing state). The entry counts are enforced
        again, exactly, by the writer (Store.entry_limits).
        """
        self.check_writable()
        limits = self.config.limits
        if pending + count > limits.max_pending_writes:
            raise RateLimited(
                f"{pending} writes are pending; the limit is {limits.max_pending_writes}",
                code="too_many_pending_writes",
            )
        used, total = self.store.storage.usage()
        if used + nbytes < 0.99 * total <= used + pending_bytes + nbytes:
            # Room now, but not once the writes admitted before this one land: refuse
            # this one (the state stays: those writes may yet be refused themselves).
            raise StorageFull(
                f"storage is {used / total:.1%} full with {pending_bytes} more bytes being "
                f"written ({nbytes} more asked for); try again later"
            )
        if used + nbytes >= 0.99 * total:
            detail = {"used": used, "incoming": nbytes, "map_size": total}
            self.threat("storage_exhaustion", detail)
            current = self.state()
            if current.state == NORMAL:
                with contextlib.suppress(StateMoved):  # halted meanwhile: that stands
                    self.set_state(
                        READ_ONLY,
                        "storage_full",
                        detail=detail,
                        expect=lambda now: now.state == NORMAL,
                    )
            raise StorageFull(
                f"storage is {used / total:.1%} full ({nbytes} more bytes asked for); "
                "writes are suspended"
            )
        # The counts as of now; the writer checks them again, exactly, as it places each
        # entry (Store.entry_limits), so concurrent requests cannot pass them together.
        if log.size + count > limits.max_entries_per_product:
            raise EntryLimit(
                f"{log.name} holds {log.size} entries; the limit is "
                f"{limits.max_entries_per_product}"
            )
        total_entries = self.total_entries()
        if total_entries + count > limits.max_entries_global:
            raise EntryLimit(
                f"the service holds {total_entries} entries; the limit is "
                f"{limits.max_entries_global}"
            )
        self.take_tokens(
            (f"product {log.name}", limits.write_rate_per_product),
            ("all products", limits.write_rate_global),
            count=count,
        )

    def total_entries(self) -> int:
        """Return the number of entries in every product log (not the audit log)."""
        return sum(log.size for name, log in self.store.logs.items() if name != AUDIT_LOG)

    def threat_leaf(
        self,
        threat: str,
        detail: dict[str, Any],
        *,
        principal: str | None = None,
        product: str | None = None,
    ) -> bytes:
        """Count a threat detection and return its audit leaf (the caller appends it)."""
        if threat not in THREATS:
            raise AssertionError(f"bad math: unknown threat {threat!r}")
        if self._on_threat is not None:
            self._on_threat(threat)
        else:
            self._uncounted.append(threat)
        return self.leaf(
            "threat", principal=principal, product=product, detail={"threat": threat, **detail}
        )

    def threat(self, threat: str, detail: dict[str, Any], **who: Any) -> int:
        """Count a threat detection and append its audit record (blocking); return its index."""
        (outcome,) = self.audit.write_sync([self.threat_leaf(threat, detail, **who)])
        return _index(outcome)

    def oldest_audit_record(self) -> AuditRecord | None:
        """Return the first audit record (the one whose retention ends first), or None."""
        if self.audit.size == 0:
            return None
        return decode_audit_record(self.audit.entry(0))

    def take_tokens(self, *buckets: tuple[str, int], count: int) -> None:
        """Take ``count`` tokens from each (name, rate) token bucket, all or none.

        Each bucket refills at ``rate`` per second up to one second of rate. Raises
        PayloadTooLarge (413) if count exceeds a bucket's capacity (waiting would never
        help), else RateLimited with the longest wait in Retry-After; a refusal takes no
        tokens from any bucket.
        """
        now = time.monotonic()
        with self._lock:
            levels = []
            wait = 0.0
            for name, rate in buckets:
                if count > rate:
                    raise PayloadTooLarge(
                        f"{count} entries in one request exceed the write-rate limit of "
                        f"{rate} entries/s for {name}; send smaller batches"
                    )
                tokens, last = self._buckets.get(name, (float(rate), now))
                tokens = min(float(rate), tokens + (now - last) * rate)
                levels.append((name, tokens))
                if count > tokens:
                    wait = max(wait, (count - tokens) / rate)
            if wait > 0:
                for name, tokens in levels:
                    self._buckets[name] = (tokens, now)
                over = ", ".join(
                    f"{name} ({rate}/s)"
                    for (name, rate), (_, t) in zip(buckets, levels, strict=True)
                    if count > t
                )
                raise RateLimited(
                    f"write rate over the limit for {over}", retry_after=max(wait, 0.001)
                )
            for name, tokens in levels:
                self._buckets[name] = (tokens - count, now)


def _index(outcome: Outcome) -> int:
    if isinstance(outcome, TlogError):
        raise outcome
    return outcome.index


class ScaleMonitor:
    """Measures the seven certified limits and reports them as ``/metrics/scale-status``.

    Each limit has ``current``, ``limit``, ``ratio``, ``status`` (GREEN below 70%,
    YELLOW to 90%, RED above) and ``review_required`` (above 80%). Crossing 80% upward
    yields one ``scale_review_required`` record; the limit re-arms only once it falls
    below 70% (hysteresis, so a value hovering at 80% does not flood the audit log).
    """

    WINDOW_S = 10.0
    BUCKET_S = 0.1
    """Writes are counted in buckets of this many seconds (a deque of ~100 per series)."""

    def __init__(self, governance: Governance) -> None:
        self.gov = governance
        self.pending = 0
        """Entries admitted and not yet written (all logs); with pending_bytes, the HTTP
        layer keeps them for admit_write."""
        self.pending_bytes = 0
        self.largest_artifact = 0
        self._writes: dict[str, deque[list[float]]] = {}  # [bucket start, count]
        self._reads: deque[tuple[float, float]] = deque()
        self._armed: dict[str, bool] = {}
        self._lock = threading.Lock()

    def wrote(self, product: str, count: int, largest_body: int) -> None:
        """Note ``count`` accepted entries for product."""
        now = time.monotonic()
        start = now - now % self.BUCKET_S
        with self._lock:
            self.largest_artifact = max(self.largest_artifact, largest_body)
            for name in (product, "*"):
                series = self._writes.setdefault(name, deque())
                if series and series[-1][0] == start:
                    series[-1][1] += count
                else:
                    series.append([start, count])
                while series and series[0][0] < now - self.WINDOW_S:
                    series.popleft()

    def read_took(self, seconds: float) -> None:
        """Note the duration of one read or proof."""
        now = time.monotonic()
        with self._lock:
            self._reads.append((now, seconds))
            while self._reads and (self._reads[0][0] < now - 60 or len(self._reads) > 10_000):
                self._reads.popleft()

    def _rate(self, name: str) -> float:
        now = time.monotonic()
        with self._lock:
            series = [c for t, c in self._writes.get(name, []) if t >= now - self.WINDOW_S]
        return sum(series) / self.WINDOW_S

    def _slowest_read_ms(self) -> float:
        with self._lock:
            durations = sorted(d for _, d in self._reads)
        if not durations:
            return 0.0
        return 1000 * durations[min(len(durations) - 1, int(0.99 * len(durations)))]

    def status(self) -> dict[str, Any]:
        """Return every limit with its measured value, ratio and band."""
        gov = self.gov
        limits = gov.config.limits
        used, total = gov.store.storage.usage()
        rows: list[dict[str, Any]] = []

        def row(name: str, current: float, limit: float, unit: str, **extra: Any) -> None:
            ratio = current / limit if limit else 0.0
            band = "GREEN" if ratio < 0.7 else "YELLOW" if ratio <= 0.9 else "RED"
            rows.append(
                {
                    "name": name,
                    "current": current,
                    "limit": limit,
                    "unit": unit,
                    "ratio": round(ratio, 6),
                    "status": band,
                    "review_required": ratio > 0.8,
                    **extra,
                }
            )

        row(
            "concurrent_pending_writes",
            self.pending,
            limits.max_pending_writes,
            "writes",
            refusal=429,
        )
        row(
            "artifact_size",
            self.largest_artifact,
            limits.max_artifact_bytes,
            "bytes",
            refusal=413,
            measured="largest artifact accepted since start",
        )
        row("storage", used, total, "bytes", refusal=507, action="READ_ONLY at 99%")
        row(
            "write_rate_global", self._rate("*"), limits.write_rate_global, "entries/s", refusal=429
        )
        for name in gov.config.products:
            row(
                f"write_rate_product:{name}",
                self._rate(name),
                limits.write_rate_per_product,
                "entries/s",
                refusal=429,
            )
        row(
            "entry_count_global",
            gov.total_entries(),
            limits.max_entries_global,
            "entries",
            refusal=507,
        )
        for name in gov.config.products:
            row(
                f"entry_count_product:{name}",
                gov.store.log(name).size,
                limits.max_entries_per_product,
                "entries",
                refusal=507,
            )
        row(
            "query_deadline",
            self._slowest_read_ms(),
            limits.query_deadline_ms,
            "ms",
            refusal=504,
            measured="p99 of reads and proofs in the last minute",
        )
        oldest = gov.oldest_audit_record()
        rows.append(
            {
                "name": "audit_retention",
                "current": gov.audit.size,
                "limit": None,
                "unit": "records",
                "ratio": 0.0,
                "status": "GREEN",
                "review_required": False,
                "retention_years": limits.audit_retention_years,
                "oldest_record_time": oldest.time if oldest else None,
                "oldest_record_retention_until": oldest.retention_until if oldest else None,
                "deletes": "never",
            }
        )
        return {"state": gov.state().state, "limits": rows}

    def review(self) -> list[bytes]:
        """Return the audit leaves for limits that crossed 80% upward since last armed."""
        leaves = []
        for r in self.status()["limits"]:
            name, ratio = r["name"], r["ratio"]
            armed = self._armed.get(name, True)
            if armed and ratio > 0.8:
                self._armed[name] = False
                leaves.append(
                    self.gov.leaf(
                        "scale_review_required",
                        detail={"limit": name, "current": r["current"], "ratio": ratio},
                    )
                )
            elif not armed and ratio < 0.7:
                self._armed[name] = True
        return leaves
