"""The HTTP API: the only module that imports Starlette.

Routes follow DESIGN.md's table. Every log lives under ``/logs/{product}``, which is
also its C2SP tlog-tiles prefix (``checkpoint``, ``tile/...``), so any tlog-tiles
client can read it. Writes are append-only: ``PUT``, ``PATCH`` and ``DELETE``
answer 405 anywhere. Errors are RFC 9457 ``application/problem+json`` with a stable
snake_case ``code``; one table below maps error classes to statuses, and the
handler walks the class hierarchy so the root class catches the rest.

Authorisation order for a ``/logs/{product}/...`` request: authenticate the bearer
key (401), then compare the key's product with the path's product (403, before any
lookup, counted and recorded), then check the scope (403).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Any, cast

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tlog.auth import KeyFrozen, Principal
from tlog.config import AUDIT_LOG
from tlog.entry import decode_cbor_strict, decode_envelope, envelope_to_json
from tlog.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidEntry,
    NotFound,
    PayloadTooLarge,
    Pushback,
    StorageFull,
    TlogError,
    Unauthorized,
    UnsupportedMediaType,
)
from tlog.governance import (
    HALTED,
    THREAT_DETECTIONS,
    THREATS,
    DeadlineExceeded,
    Halted,
    RateLimited,
    ReadOnly,
    ScaleMonitor,
    decode_audit_record,
)
from tlog.integrity import IntegrityWatch
from tlog.log import ENVELOPE, Appended, Draft, IntegrityFailure, Log, NotWritten
from tlog.metrics import CONTENT_TYPE, Metrics
from tlog.receipts import receipts_json
from tlog.service import Service, new_artifact_ids
from verifier.errors import MalformedTile
from verifier.hashing import leaf_hash
from verifier.tiles import TILE_WIDTH, parse_tile_path

__all__ = ["create_app"]

_log = logging.getLogger("tlog.http")

PROBLEM = "application/problem+json"
IMMUTABLE = "public, max-age=31536000, immutable"


class Gone(NotFound):
    """The resource existed and was removed on purpose (an expired body): 410."""

    code = "body_expired"


class CrossProduct(Forbidden):
    """A key was used on another product's path."""

    threat = "cross_product_access"


class CoolOff(RateLimited):
    """Repeated refused writes from one key: it must wait (AI escalation)."""

    threat = "ai_escalation"


# Error class -> HTTP status. Lookup walks the MRO, so subclasses inherit their parent's.
STATUS: dict[type[Exception], int] = {
    Gone: 410,
    RateLimited: 429,
    DeadlineExceeded: 504,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidEntry: 422,
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    StorageFull: 507,
    Pushback: 503,
    TlogError: 500,
}

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    507: "Insufficient Storage",
}


def problem(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    """Return an RFC 9457 problem response with a stable ``code``."""
    body = {"type": "about:blank", "title": _TITLES.get(status, "Error"), "status": status}
    body.update({"code": code, "detail": detail, **extra})
    return Response(json.dumps(body), status, headers=headers, media_type=PROBLEM)


def _status_of(exc: Exception) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def _error_response(request: Request, exc: Exception) -> Response:
    status = _status_of(exc)
    if isinstance(exc, IntegrityFailure):
        _log.error("integrity failure on %s %s: %s", request.method, request.url.path, exc)
        return problem(
            500,
            exc.code,
            "nothing was written: the stored tree does not extend the last signed "
            "checkpoint; writes are halting (see GET /governance/state)",
        )
    if status >= 500 and not isinstance(exc, Pushback | StorageFull | DeadlineExceeded):
        _log.error("internal error on %s %s: %r", request.method, request.url.path, exc)
        return problem(500, "internal_error", "an internal error occurred")
    code = getattr(exc, "code", "error")
    if isinstance(exc, Halted | ReadOnly):
        return problem(
            status,
            exc.code,
            str(exc),
            {"Retry-After": "30"} if isinstance(exc, Halted) else None,
            reason=exc.reason,
            incident_index=exc.incident_index,
        )
    headers = None
    if isinstance(exc, Pushback):
        headers = {"Retry-After": "1"}
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return problem(status, code, str(exc), headers)


def _method_not_allowed() -> Response:
    return problem(
        405,
        "append_only",
        "this store is append-only: entries are never updated or deleted",
        {"Allow": "GET, HEAD, POST"},
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    _log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "internal_error", "an internal error occurred")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _int_param(request: Request, name: str, *, required: bool = True) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        if required:
            raise BadRequest(f"query parameter {name} is required")
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:  # not "²" or "١"
        raise BadRequest(f"query parameter {name} must be a non-negative integer")
    return int(raw)


def _path_int(request: Request, name: str) -> int:
    raw = request.path_params[name]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:
        raise NotFound(f"{name} must be a non-negative integer")
    return int(raw)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods counted by name in the request metrics; any other is counted as "other"."""

REFUSALS = frozenset({401, 403, 405, 409, 413, 415, 422, 429, 503, 504, 507})
"""Statuses whose every occurrence is written to the audit log."""

SCOPE_STRIKES_TO_FREEZE = 5
"""Scope violations after which a key is frozen (executor override)."""

ESCALATION_REFUSALS = 20
ESCALATION_WINDOW_S = 60.0
COOL_OFF_S = 60.0
"""AI escalation: this many refused writes by one key within the window start a cool-off
during which its writes answer 429."""


class _Api:
    """The route handlers, bound to one service."""

    def __init__(self, service: Service, metrics: Metrics) -> None:
        self.service = service
        self.metrics = metrics
        self.gov = service.governance
        self.scale = ScaleMonitor(service.governance)
        self._strikes: dict[str, int] = {}
        self._refused: dict[str, list[float]] = {}
        self._cool_off: dict[str, float] = {}

    # -- auth ---------------------------------------------------------------------

    def _principal(self, request: Request) -> Principal:
        try:
            return self.service.keys.authenticate(request.headers.get("authorization"))
        except Unauthorized:
            self.metrics.denials.labels("unauthenticated").inc()
            raise
        except KeyFrozen:
            self.metrics.denials.labels("key_frozen").inc()
            raise

    def _authorize(self, request: Request, scopes: tuple[str, ...], *, public_ok: bool) -> Log:
        """Return the path's log if the caller may use it with one of ``scopes``.

        Raises Unauthorized (401), Forbidden (403: another product's path, checked before
        any lookup; a missing scope; a frozen key), NotFound (404: unknown product).
        The audit log (``/logs/_audit``) is readable by any key with the ``audit`` scope.
        """
        product = request.path_params["product"]
        if product == AUDIT_LOG:
            principal = self._principal(request)  # 401 before any 403
            request.state.principal = principal
            if scopes != ("read", "audit"):
                raise Forbidden("the audit log is written only by the service")
            if "audit" not in principal.scopes:
                self._strike(principal, "audit")
            return self.gov.audit
        spec = self.service.config.products.get(product)
        if spec is None:
            # Product names are public configuration, not data: say so plainly.
            raise NotFound(f"no product named {product!r}")
        public = public_ok and spec.public
        if public and "authorization" not in request.headers:
            return self.service.product_log(product)
        principal = self._principal(request)
        request.state.principal = principal
        if principal.product != product:
            self.metrics.denials.labels("cross_product").inc()
            raise CrossProduct("this API key belongs to another product")
        # A public read needs no scope, with a key or without (a submit-only key reading
        # its own public checkpoint is no violation, and earns no strike).
        if not public and not principal.scopes.intersection(scopes):
            self._strike(principal, " or ".join(scopes))
        return self.service.product_log(product)

    def _strike(self, principal: Principal, wanted: str) -> None:
        """Refuse a scope violation; freeze the key at the fifth (executor override)."""
        self.metrics.denials.labels("missing_scope").inc()
        strikes = self._strikes.get(principal.key_id, 0) + 1
        self._strikes[principal.key_id] = strikes
        if strikes >= SCOPE_STRIKES_TO_FREEZE:
            # Count afresh once the owner unfreezes it (from the CLI, another process).
            self._strikes[principal.key_id] = 0
            self.service.keys.set_frozen(
                principal.key_id, True, {"reason": "repeated scope violations", "count": strikes}
            )
            error = Forbidden(
                f"this API key lacks the {wanted} scope; after {strikes} violations it is "
                "now frozen until the owner unfreezes it"
            )
            error.threat = "executor_override"
            raise error
        raise Forbidden(f"this API key lacks the {wanted} scope")

    def _check_cool_off(self, principal: Principal) -> None:
        until = self._cool_off.get(principal.key_id)
        if until is not None and time.monotonic() < until:
            raise RateLimited(
                "this API key is cooling off after repeated refused writes",
                code="cool_off",
                retry_after=until - time.monotonic(),
            )

    def note_refusal(self, request: Request, status: int) -> TlogError | None:
        """Track refused writes per key; return a CoolOff to record when one starts.

        Only the client's own faults count (4xx but 429): a 503 while HALTED, a 507 when
        storage is full or a 504 is the service's state, and a client retrying it is not
        escalating.
        """
        principal = getattr(request.state, "principal", None)
        if principal is None or request.method != "POST" or status == 429 or status >= 500:
            return None
        now = time.monotonic()
        series = [
            t for t in self._refused.get(principal.key_id, []) if t > now - ESCALATION_WINDOW_S
        ]
        series.append(now)
        self._refused[principal.key_id] = series
        if len(series) >= ESCALATION_REFUSALS:
            self._refused[principal.key_id] = []
            self._cool_off[principal.key_id] = now + COOL_OFF_S
            return CoolOff(
                f"{len(series)} refused writes within {ESCALATION_WINDOW_S:.0f} s: cool-off",
                code="cool_off",
                retry_after=COOL_OFF_S,
            )
        return None

    async def record_refusal(
        self, request: Request, exc: Exception, status: int, code: str | None = None
    ) -> None:
        """Write the refusal (and any threat it detects) to the audit log, durably.

        ``code`` is the problem code answered (default: the error's ``code``)."""
        principal = getattr(request.state, "principal", None)
        who = principal.name if principal is not None else _claimed(request)
        product = request.path_params.get("product") if request.path_params else None
        leaves = [
            self.gov.leaf(
                "refusal",
                principal=who,
                product=product if isinstance(product, str) else None,
                detail={
                    "status": status,
                    "code": code or str(getattr(exc, "code", "error")),
                    "method": request.method,
                    "path": request.url.path[:512],
                },
            )
        ]
        threats = [getattr(exc, "threat", None)]
        cool = self.note_refusal(request, status)
        if cool is not None:
            threats.append(cool.threat)
        for threat in threats:
            if threat:
                leaves.append(
                    self.gov.threat_leaf(
                        threat,
                        {"status": status, "path": request.url.path[:512]},
                        principal=who,
                        product=product if isinstance(product, str) else None,
                    )
                )
        try:
            await self.gov.audit.write_async(leaves)
        except TlogError:
            _log.exception("could not record a refusal in the audit log")

    def _read(self, request: Request, *, public_ok: bool = False) -> Log:
        return self._authorize(request, ("read", "audit"), public_ok=public_ok)

    # -- submission -------------------------------------------------------------------

    async def _body(self, request: Request, limit: int) -> tuple[Any, bool]:
        """Return the decoded request body and whether it was JSON.

        Raises UnsupportedMediaType, PayloadTooLarge (before reading past the limit,
        also for chunked bodies) or BadRequest (malformed JSON or CBOR).
        """
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", "application/cbor"):
            raise UnsupportedMediaType("Content-Type must be application/json or application/cbor")
        declared = request.headers.get("content-length")
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > limit
        ):
            raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
            chunks.append(chunk)
        data = b"".join(chunks)
        if ctype == "application/json":
            try:
                return json.loads(
                    data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant
                ), True
            except (ValueError, RecursionError) as exc:
                raise BadRequest(f"malformed JSON: {str(exc)[:160]}") from None
        try:
            return decode_cbor_strict(data, max_depth=24), False
        except InvalidEntry as exc:
            raise BadRequest(f"malformed CBOR: {exc}") from None

    def _idempotency_key(self, request: Request) -> str | None:
        key = request.headers.get("idempotency-key")
        if key is None:
            return None
        if not 1 <= len(key) <= 200 or not key.isprintable():
            raise BadRequest("Idempotency-Key must be 1 to 200 printable characters")
        return key

    async def submit(self, request: Request) -> Response:
        """POST /logs/{product}/entries: append one artifact, answer with its receipt."""
        log = self._authorize(request, ("submit",), public_ok=False)
        principal: Principal = request.state.principal
        self._check_cool_off(principal)
        self.gov.check_writable()
        limits = self.service.config.limits
        payload, is_json = await self._body(request, limits.max_request_bytes)
        submission = self.service.parse_submission(log.name, payload, json_body=is_json)
        draft = self.service.draft(
            log.name,
            principal.name,
            submission,
            idempotency_key=self._idempotency_key(request),
        )
        (appended,) = await self._write(log, [draft])
        assert isinstance(appended, Appended)
        (text,) = receipts_json([appended])
        return _json_text(text, 200 if appended.replayed else 201)

    async def _write(self, log: Log, drafts: list[Draft]) -> list[Appended]:
        """Admit drafts against the limits, append them all or none, and return their
        outcomes.

        Raises the first failing item's error, naming it (the HTTP layer validates items
        beforehand, so the only per-item errors left are conflicts found at sequencing
        time); then nothing of the request was written.
        """
        nbytes = sum(len(d.body) + 1024 for d in drafts)  # bodies, leaves and indexes
        scale, n = self.scale, len(drafts)
        self.gov.admit_write(log, n, scale.pending, nbytes, pending_bytes=scale.pending_bytes)
        # No await between the check and the counts: the next request sees this one.
        scale.pending += n
        scale.pending_bytes += nbytes
        self.metrics.pending.inc(n)
        try:
            outcomes = await log.submit_many(drafts, atomic=True)
        finally:
            scale.pending -= n
            scale.pending_bytes -= nbytes
            self.metrics.pending.dec(n)
        failed = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, TlogError)]
        if failed:
            # The item that failed, not one it took down with it (NotWritten).
            i, error = next(((i, o) for i, o in failed if not isinstance(o, NotWritten)), failed[0])
            if len(outcomes) > 1:
                raise type(error)(f"entries[{i}]: {error}")
            raise error
        out = cast(list[Appended], outcomes)
        self.scale.wrote(log.name, len(drafts), max(len(d.body) for d in drafts))
        return out

    async def submit_batch(self, request: Request) -> Response:
        """POST /logs/{product}/entries/batch: append many artifacts, one receipt each.

        Every item is validated first; one bad item refuses the whole request (422 naming
        it) and nothing is written.
        """
        log = self._authorize(request, ("submit",), public_ok=False)
        principal: Principal = request.state.principal
        self._check_cool_off(principal)
        self.gov.check_writable()
        limits = self.service.config.limits
        payload, is_json = await self._body(request, limits.max_request_bytes)
        if isinstance(payload, dict) and set(payload) == {"entries"}:
            payload = payload["entries"]
        if not isinstance(payload, list) or not payload:
            raise InvalidEntry('a batch must be a non-empty list (or {"entries": [...]})')
        if len(payload) > limits.max_batch_items:
            raise PayloadTooLarge(f"a batch holds at most {limits.max_batch_items} entries")
        key = self._idempotency_key(request)
        ids = new_artifact_ids(len(payload))
        drafts = []
        for i, item in enumerate(payload):
            try:
                submission = self.service.parse_submission(log.name, item, json_body=is_json)
                drafts.append(
                    self.service.draft(
                        log.name,
                        principal.name,
                        submission,
                        idempotency_key=None if key is None else f"{key}#{i}",
                        new_id=ids[i],
                    )
                )
            except TlogError as exc:
                raise type(exc)(f"entries[{i}]: {exc}") from None
        outcomes = await self._write(log, drafts)
        replayed = all(o.replayed for o in outcomes)
        text = '{"receipts":[' + ",".join(receipts_json(outcomes)) + "]}"
        return _json_text(text, 200 if replayed else 201)

    # -- reads --------------------------------------------------------------------------

    async def checkpoint(self, request: Request) -> Response:
        """GET /logs/{product}/checkpoint (C2SP tlog-tiles)."""
        log = self._read(request, public_ok=True)
        return PlainTextResponse(
            log.checkpoint(),
            media_type="text/plain; charset=utf-8",
            headers={"Cache-Control": "no-store"},
        )

    async def key(self, request: Request) -> Response:
        """GET /logs/{product}/key: the log's verifier key (vkey)."""
        log = self._read(request, public_ok=True)
        return PlainTextResponse(log.vkey + "\n", media_type="text/plain; charset=utf-8")

    def _tile(self, request: Request, log: Log) -> Response:
        """GET /logs/{product}/tile/...: C2SP tlog-tiles hash tiles and entry bundles."""
        try:
            tile = parse_tile_path("tile/" + request.path_params["path"])
        except MalformedTile as exc:
            raise NotFound(f"no such tile: {exc}") from None
        if tile.entries:
            data = log.bundle(tile.index, tile.width)
        else:
            data = log.tile(tile.level, tile.index, tile.width)
        cache = IMMUTABLE if tile.width == TILE_WIDTH else "public, max-age=3600"
        return Response(
            data, media_type="application/octet-stream", headers={"Cache-Control": cache}
        )

    def _entry(self, request: Request, log: Log) -> Response:
        """GET /logs/{product}/entries/{index}: leaf bytes and the decoded envelope."""
        index = _path_int(request, "index")
        leaf = log.entry(index)
        return JSONResponse(
            {
                "index": index,
                "leaf": _b64(leaf),
                "leaf_hash": _b64(leaf_hash(leaf)),
                "entry": (
                    envelope_to_json(decode_envelope(leaf))
                    if log.kind == ENVELOPE
                    else asdict(decode_audit_record(leaf))
                ),
            }
        )

    def _inclusion(self, request: Request, log: Log) -> Response:
        """GET /logs/{product}/proof/inclusion?index=I&size=N (or leaf_hash=H&size=N)."""
        size = _int_param(request, "size")
        assert size is not None
        index = _int_param(request, "index", required=False)
        if index is None:
            raw = request.query_params.get("leaf_hash")
            if raw is None:
                raise BadRequest("give index= or leaf_hash=")
            try:
                wanted = base64.b64decode(raw.replace(" ", "+"), validate=True)
            except ValueError:
                raise BadRequest("leaf_hash must be base64") from None
            if len(wanted) != 32:
                raise BadRequest("leaf_hash must be 32 bytes")
            index = log.index_of(wanted)
            if index >= size:
                raise NotFound(f"that leaf is not in the tree of size {size}")
        proof = log.inclusion_proof(index, size)
        return JSONResponse({"index": index, "tree_size": size, "proof": [_b64(h) for h in proof]})

    def _consistency(self, request: Request, log: Log) -> Response:
        """GET /logs/{product}/proof/consistency?old=M&new=N."""
        old = _int_param(request, "old")
        new = _int_param(request, "new")
        assert old is not None and new is not None
        proof = log.consistency_proof(old, new)
        return JSONResponse({"old": old, "new": new, "proof": [_b64(h) for h in proof]})

    def _receipt(self, request: Request, log: Log) -> Response:
        """GET /logs/{product}/receipts/{index}?size=N: a C2SP tlog-proof receipt."""
        index = _path_int(request, "index")
        size = _int_param(request, "size", required=False)
        return PlainTextResponse(log.receipt(index, size), media_type="text/plain; charset=utf-8")

    def _artifact(self, request: Request, log: Log) -> Response:
        """GET /logs/{product}/artifacts/{artifact_id}: every version with its index."""
        artifact_id = request.path_params["artifact_id"]
        versions = log.versions(artifact_id)
        return JSONResponse(
            {
                "artifact_id": artifact_id,
                "versions": [{"version": v, "index": i} for v, i in versions],
            }
        )

    def _artifact_body(self, request: Request, log: Log) -> Response:
        """GET /logs/{product}/artifacts/{artifact_id}/body[?version=V]: the body bytes."""
        artifact_id = request.path_params["artifact_id"]
        versions = log.versions(artifact_id)
        wanted = _int_param(request, "version", required=False)
        chosen = [i for v, i in versions if wanted is None or v == wanted]
        if not chosen:
            raise NotFound(f"artifact {artifact_id!r} has no version {wanted}")
        index = chosen[-1]
        envelope = decode_envelope(log.entry(index))
        body = log.body(index) if envelope.body_size else b""
        if body is None:
            if self.gov.body_expired(log.name, index):
                raise Gone(
                    f"the body of entry {index} was removed when its retention ended; the "
                    "entry and its proofs remain"
                )
            raise NotFound(f"the body of entry {index} is not stored")
        return Response(
            body,
            media_type="application/octet-stream",
            headers={
                "X-Tlog-Index": str(index),
                "X-Tlog-Body-Sha256": envelope.body_sha256.hex(),
                # One version's bytes never change, but without ?version this URL answers
                # the latest, and bodies sit behind API keys: never "public".
                "Cache-Control": (
                    "private, no-cache"
                    if wanted is None
                    else "private, max-age=31536000, immutable"
                ),
            },
        )

    def timed(
        self,
        fn: Callable[[Request, Log], Response],
        *,
        public_ok: bool = False,
        bounded: bool = False,
    ) -> Callable[[Request], Awaitable[Response]]:
        """Return an endpoint that authorises a read, then runs ``fn`` under the deadline.

        ``bounded``: fn does O(log n) work (a tile, an entry, a proof: a few LMDB reads and
        hashes, well under a millisecond), so it runs on the event loop, which is several
        times cheaper than a thread hop; a late answer is still refused with 504. Other
        reads (an artifact's version list grows without bound) run in a worker thread,
        so the deadline cuts them off and they never stall the loop.
        """

        async def endpoint(request: Request) -> Response:
            log = self._read(request, public_ok=public_ok)
            if bounded:
                return self._timed_inline(fn, request, log)
            return await self._timed(fn, request, log)

        endpoint.__doc__ = fn.__doc__
        return endpoint

    def _timed_inline(
        self, fn: Callable[[Request, Log], Response], request: Request, log: Log
    ) -> Response:
        """Run a bounded read here; raise DeadlineExceeded (504) if it took too long."""
        deadline = self.service.config.limits.query_deadline_ms / 1000
        started = time.perf_counter()
        try:
            response = fn(request, log)
        finally:
            took = time.perf_counter() - started
            self.scale.read_took(took)
        if took > deadline:
            raise DeadlineExceeded(
                f"the query took longer than the {deadline * 1000:.0f} ms deadline"
            )
        return response

    async def _timed(
        self, fn: Callable[[Request, Log], Response], request: Request, log: Log
    ) -> Response:
        """Run a read in a worker thread under the query deadline; raise DeadlineExceeded
        (504) if it takes longer. The measured time feeds /metrics/scale-status."""
        deadline = self.service.config.limits.query_deadline_ms / 1000
        started = time.perf_counter()
        late = DeadlineExceeded(f"the query took longer than the {deadline * 1000:.0f} ms deadline")
        try:
            response = await asyncio.wait_for(run_in_threadpool(fn, request, log), deadline)
        except TimeoutError:
            raise late from None
        finally:
            self.scale.read_took(time.perf_counter() - started)
        if time.perf_counter() - started > deadline:
            raise late  # finished, but after the deadline: the answer is late all the same
        return response

    # -- operations ----------------------------------------------------------------------

    async def metrics_text(self, request: Request) -> Response:
        """GET /metrics: Prometheus text."""
        for name, log in self.service.store.logs.items():
            self.metrics.tree_size.labels(name).set(log.size)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def scale_status(self, request: Request) -> Response:
        """GET /metrics/scale-status: every certified limit, measured, as JSON."""
        await self.review_scale()
        return JSONResponse(self.scale.status())

    async def review_scale(self) -> None:
        """Write a scale_review_required record for each limit that crossed 80% upward."""
        leaves = self.scale.review()
        if leaves:
            await self.gov.audit.write_async(leaves)

    async def threats(self, request: Request) -> Response:
        """GET /governance/threats: the ten threats with their detection counts."""
        counts = {t: 0.0 for t in THREATS}
        for metric in self.metrics.threats.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["threat"]] = sample.value
        return JSONResponse(
            {
                "state": self.gov.state().state,
                "threats": [
                    {"threat": t, "detections": int(counts[t]), "detection": THREAT_DETECTIONS[t]}
                    for t in THREATS
                ],
            }
        )

    async def governance_state(self, request: Request) -> Response:
        """GET /governance/state: NORMAL, READ_ONLY or HALTED, with reason and incident."""
        state = self.gov.state()
        return JSONResponse(asdict(state) | {"config_fingerprint": self.gov.approved_fingerprint()})

    async def healthz(self, request: Request) -> Response:
        """GET /healthz: liveness."""
        return JSONResponse({"status": "ok"})


def _json_text(text: str, status: int) -> Response:
    """Return a JSON response of text already encoded as JSON (tlog.receipts)."""
    return Response(text.encode("utf-8"), status, media_type="application/json")


def _watch_once(
    service: Service, checker: IntegrityWatch, reported: set[tuple[str, int | None]]
) -> None:
    """One integrity-watch pass over every log; halts on the first mismatch.

    The watch goes on while the service is halted for another reason (an unapproved
    config, an operator's drill), so tampering meanwhile is recorded when it happens;
    ``reported`` keeps each (log, first bad index) to one record while the halt lasts.
    """
    state = service.governance.state()
    if state.state == HALTED and state.reason == "integrity_violation":
        return  # already halted for this: an operator is on it
    for name, log in list(service.store.logs.items()):
        report = checker.check(log)
        if not report.ok:
            found = (name, report.first_bad_index)
            if state.state == HALTED and found in reported:
                return
            reported.add(found)
            _log.error("integrity violation in %s: %s", name, report.summary())
            service.governance.integrity_violation(name, report)
            return


def _claimed(request: Request) -> str | None:
    """Return ``claimed:key:<id>`` for an unauthenticated request whose bearer token has
    our shape (the id is public; the secret is never recorded), else None."""
    match = re.fullmatch(
        r"[Bb]earer bk_([0-9a-f]{8})_\S*", request.headers.get("authorization", "").strip()
    )
    return f"claimed:key:{match.group(1)}" if match else None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


class _Observe:
    """ASGI middleware: counts and times every request by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope["method"]
            if method not in _METHODS:
                method = "other"  # clients choose methods: keep the label set bounded
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - start)


def create_app(
    service: Service, metrics: Metrics | None = None, *, integrity_period: float = 10.0
) -> Starlette:
    """Return the Starlette app serving ``service``.

    Every ``integrity_period`` seconds the integrity watch re-hashes the newest tiles of
    every log and a rolling window of old ones; a mismatch halts the service.
    """
    metrics = metrics or Metrics()
    api = _Api(service, metrics)
    mutating = ["PUT", "PATCH", "DELETE"]
    p = "/logs/{product}"
    routes = [
        Route(f"{p}/entries", api.submit, methods=["POST"]),
        Route(f"{p}/entries/batch", api.submit_batch, methods=["POST"]),
        Route(f"{p}/entries/{{index}}", api.timed(api._entry, bounded=True), methods=["GET"]),
        Route(f"{p}/checkpoint", api.checkpoint, methods=["GET"]),
        Route(f"{p}/key", api.key, methods=["GET"]),
        Route(
            f"{p}/tile/{{path:path}}",
            api.timed(api._tile, public_ok=True, bounded=True),
            methods=["GET"],
        ),
        Route(f"{p}/proof/inclusion", api.timed(api._inclusion, bounded=True), methods=["GET"]),
        Route(f"{p}/proof/consistency", api.timed(api._consistency, bounded=True), methods=["GET"]),
        Route(f"{p}/receipts/{{index}}", api.timed(api._receipt, bounded=True), methods=["GET"]),
        Route(
            f"{p}/artifacts/{{artifact_id:path}}/body",
            api.timed(api._artifact_body),
            methods=["GET"],
        ),
        Route(f"{p}/artifacts/{{artifact_id:path}}", api.timed(api._artifact), methods=["GET"]),
        Route("/metrics", api.metrics_text, methods=["GET"]),
        Route("/metrics/scale-status", api.scale_status, methods=["GET"]),
        Route("/governance/threats", api.threats, methods=["GET"]),
        Route("/governance/state", api.governance_state, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
    ]

    async def on_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code == 405 and not known(request):
            # Only the append-only catch-all matched, by path, and not by method: no
            # route has this path at all. Not found, and nothing to record.
            return problem(404, "not_found", "no such path")
        if isinstance(exc, HTTPException):
            response = (
                _method_not_allowed()
                if exc.status_code == 405
                else problem(exc.status_code, "not_found", str(exc.detail))
            )
        else:
            response = _error_response(request, exc)
        if response.status_code in REFUSALS:
            code = json.loads(bytes(response.body))["code"]
            await api.record_refusal(request, exc, response.status_code, code)
        return response

    async def refuse_mutation(request: Request) -> Response:
        response = _method_not_allowed()
        await api.record_refusal(request, HTTPException(405), 405, "append_only")
        return response

    served = list(routes)

    def known(request: Request) -> bool:
        """Return whether any route but the append-only catch-all has this path."""
        return any(route.matches(request.scope)[0] != Match.NONE for route in served)

    routes.append(Route("/{anything:path}", refuse_mutation, methods=mutating))
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        TlogError: on_error,
        HTTPException: on_error,
        Exception: _internal_error,
    }

    def on_batch(appended: dict[str, int], items: int, seconds: float) -> None:
        metrics.batch_size.observe(items)
        metrics.integration.observe(seconds)
        for name, count in appended.items():
            metrics.appends.labels(name).inc(count)

    service.store.on_batch = on_batch
    service.governance.on_threat = lambda threat: metrics.threats.labels(threat).inc()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def tick() -> None:
            while True:
                await asyncio.sleep(2)
                try:
                    service.store.refresh()
                    service.store.storage.refresh_usage()  # other processes, the indexer
                    await api.review_scale()
                except Exception:
                    _log.exception("periodic governance check failed")

        async def watch() -> None:
            checker = IntegrityWatch()
            reported: set[tuple[str, int | None]] = set()
            while True:
                await asyncio.sleep(integrity_period)
                try:
                    await run_in_threadpool(_watch_once, service, checker, reported)
                except Exception:
                    _log.exception("integrity watch failed")

        tasks = [asyncio.create_task(tick()), asyncio.create_task(watch())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()

    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.add_middleware(_Observe, metrics=metrics)
    app.state.service = service
    app.state.metrics = metrics
    app.state.api = api
    return app
