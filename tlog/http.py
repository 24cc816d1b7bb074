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

import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tlog.auth import Principal
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
from tlog.log import Appended, Log
from tlog.metrics import CONTENT_TYPE, Metrics
from tlog.service import Service
from verifier.errors import MalformedTile
from verifier.tiles import TILE_WIDTH, parse_tile_path

__all__ = ["create_app"]

_log = logging.getLogger("tlog.http")

PROBLEM = "application/problem+json"
IMMUTABLE = "public, max-age=31536000, immutable"

# Error class -> HTTP status. Lookup walks the MRO, so subclasses inherit their parent's.
STATUS: dict[type[Exception], int] = {
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
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
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


async def _tlog_error(request: Request, exc: Exception) -> Response:
    status = _status_of(exc)
    if status >= 500 and not isinstance(exc, Pushback | StorageFull):
        _log.error("internal error on %s %s: %r", request.method, request.url.path, exc)
        return problem(500, "internal_error", "an internal error occurred")
    headers = {"Retry-After": "1"} if isinstance(exc, Pushback) else None
    code = getattr(exc, "code", "error")
    return problem(status, code, str(exc), headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return _method_not_allowed()
    code = {404: "not_found"}.get(exc.status_code, "http_error")
    return problem(exc.status_code, code, str(exc.detail))


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
    if not raw.isdigit() or len(raw) > 20:
        raise BadRequest(f"query parameter {name} must be a non-negative integer")
    return int(raw)


def _path_int(request: Request, name: str) -> int:
    raw = request.path_params[name]
    if not raw.isdigit() or len(raw) > 20:
        raise NotFound(f"{name} must be a non-negative integer")
    return int(raw)


@dataclass
class _Api:
    """The route handlers, bound to one service."""

    service: Service
    metrics: Metrics

    # -- auth ---------------------------------------------------------------------

    def _principal(self, request: Request) -> Principal:
        try:
            return self.service.keys.authenticate(request.headers.get("authorization"))
        except Unauthorized:
            self.metrics.denials.labels("unauthenticated").inc()
            raise

    def _authorize(self, request: Request, scopes: tuple[str, ...], *, public_ok: bool) -> Log:
        """Return the path's log if the caller may use it with one of ``scopes``.

        Raises Unauthorized (401), Forbidden (403: another product's path, checked before
        any lookup; or a missing scope), NotFound (404: unknown product).
        """
        product = request.path_params["product"]
        spec = self.service.config.products.get(product)
        if spec is None:
            # Product names are public configuration, not data: say so plainly.
            raise NotFound(f"no product named {product!r}")
        if public_ok and spec.public and "authorization" not in request.headers:
            return self.service.product_log(product)
        principal = self._principal(request)
        if principal.product != product:
            self.metrics.denials.labels("cross_product").inc()
            self.metrics.threats.labels("cross_product_access").inc()
            _log.warning(
                "cross-product access refused: %s (product %s) on %s",
                principal.name,
                principal.product,
                request.url.path,
            )
            raise Forbidden("this API key belongs to another product")
        if not principal.scopes.intersection(scopes):
            self.metrics.denials.labels("missing_scope").inc()
            raise Forbidden(f"this API key lacks the {' or '.join(scopes)} scope")
        request.state.principal = principal
        return self.service.product_log(product)

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
        if declared is not None and declared.isdigit() and int(declared) > limit:
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
        limits = self.service.config.limits
        payload, is_json = await self._body(request, limits.max_request_bytes)
        submission = self.service.parse_submission(log.name, payload, json_body=is_json)
        draft = self.service.draft(
            log.name,
            principal.name,
            submission,
            idempotency_key=self._idempotency_key(request),
        )
        self.metrics.pending.inc()
        try:
            appended = await log.submit(draft)
        finally:
            self.metrics.pending.dec()
        return JSONResponse(_receipt_json(appended), 200 if appended.replayed else 201)

    async def submit_batch(self, request: Request) -> Response:
        """POST /logs/{product}/entries/batch: append many artifacts, one receipt each.

        Every item is validated first; one bad item refuses the whole request (422 naming
        it) and nothing is written.
        """
        log = self._authorize(request, ("submit",), public_ok=False)
        principal: Principal = request.state.principal
        limits = self.service.config.limits
        payload, is_json = await self._body(request, limits.max_request_bytes)
        if isinstance(payload, dict) and set(payload) == {"entries"}:
            payload = payload["entries"]
        if not isinstance(payload, list) or not payload:
            raise InvalidEntry('a batch must be a non-empty list (or {"entries": [...]})')
        if len(payload) > limits.max_batch_items:
            raise PayloadTooLarge(f"a batch holds at most {limits.max_batch_items} entries")
        key = self._idempotency_key(request)
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
                    )
                )
            except TlogError as exc:
                raise type(exc)(f"entries[{i}]: {exc}") from None
        self.metrics.pending.inc(len(drafts))
        try:
            outcomes = await log.submit_many(drafts)
        finally:
            self.metrics.pending.dec(len(drafts))
        receipts = []
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, TlogError):
                raise type(outcome)(f"entries[{i}]: {outcome}")
            receipts.append(_receipt_json(outcome))
        replayed = all(isinstance(o, Appended) and o.replayed for o in outcomes)
        return JSONResponse({"receipts": receipts}, 200 if replayed else 201)

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

    async def tile(self, request: Request) -> Response:
        """GET /logs/{product}/tile/...: C2SP tlog-tiles hash tiles and entry bundles."""
        log = self._read(request, public_ok=True)
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

    async def entry(self, request: Request) -> Response:
        """GET /logs/{product}/entries/{index}: leaf bytes and the decoded envelope."""
        log = self._read(request)
        index = _path_int(request, "index")
        leaf = log.entry(index)
        from verifier.hashing import leaf_hash

        return JSONResponse(
            {
                "index": index,
                "leaf": _b64(leaf),
                "leaf_hash": _b64(leaf_hash(leaf)),
                "entry": envelope_to_json(decode_envelope(leaf)),
            }
        )

    async def inclusion(self, request: Request) -> Response:
        """GET /logs/{product}/proof/inclusion?index=I&size=N (or leaf_hash=H&size=N)."""
        log = self._read(request)
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

    async def consistency(self, request: Request) -> Response:
        """GET /logs/{product}/proof/consistency?old=M&new=N."""
        log = self._read(request)
        old = _int_param(request, "old")
        new = _int_param(request, "new")
        assert old is not None and new is not None
        proof = log.consistency_proof(old, new)
        return JSONResponse({"old": old, "new": new, "proof": [_b64(h) for h in proof]})

    async def receipt(self, request: Request) -> Response:
        """GET /logs/{product}/receipts/{index}?size=N: a C2SP tlog-proof receipt."""
        log = self._read(request)
        index = _path_int(request, "index")
        size = _int_param(request, "size", required=False)
        return PlainTextResponse(log.receipt(index, size), media_type="text/plain; charset=utf-8")

    async def artifact(self, request: Request) -> Response:
        """GET /logs/{product}/artifacts/{artifact_id}: every version with its index."""
        log = self._read(request)
        artifact_id = request.path_params["artifact_id"]
        versions = log.versions(artifact_id)
        return JSONResponse(
            {
                "artifact_id": artifact_id,
                "versions": [{"version": v, "index": i} for v, i in versions],
            }
        )

    async def artifact_body(self, request: Request) -> Response:
        """GET /logs/{product}/artifacts/{artifact_id}/body[?version=V]: the body bytes."""
        log = self._read(request)
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
            raise NotFound(f"the body of entry {index} is not stored")
        return Response(
            body,
            media_type="application/octet-stream",
            headers={
                "X-Tlog-Index": str(index),
                "X-Tlog-Body-Sha256": envelope.body_sha256.hex(),
                "Cache-Control": IMMUTABLE,
            },
        )

    # -- operations ----------------------------------------------------------------------

    async def metrics_text(self, request: Request) -> Response:
        """GET /metrics: Prometheus text."""
        for name, log in self.service.store.logs.items():
            self.metrics.tree_size.labels(name).set(log.size)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        """GET /healthz: liveness."""
        return JSONResponse({"status": "ok"})

    async def refuse_mutation(self, request: Request) -> Response:
        """PUT, PATCH, DELETE anywhere: 405, the store is append-only."""
        return _method_not_allowed()


def _receipt_json(a: Appended) -> dict[str, Any]:
    return {
        "index": a.index,
        "tree_size": a.size,
        "leaf_hash": _b64(a.leaf_hash),
        "leaf": _b64(a.leaf),
        "inclusion_proof": [_b64(h) for h in a.proof],
        "checkpoint": a.checkpoint,
        "receipt": a.receipt(),
        "artifact_id": a.artifact_id,
        "version": a.version,
    }


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
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - start)


def create_app(service: Service, metrics: Metrics | None = None) -> Starlette:
    """Return the Starlette app serving ``service``."""
    metrics = metrics or Metrics()
    api = _Api(service, metrics)
    mutating = ["PUT", "PATCH", "DELETE"]
    p = "/logs/{product}"
    routes = [
        Route(f"{p}/entries", api.submit, methods=["POST"]),
        Route(f"{p}/entries/batch", api.submit_batch, methods=["POST"]),
        Route(f"{p}/entries/{{index}}", api.entry, methods=["GET"]),
        Route(f"{p}/checkpoint", api.checkpoint, methods=["GET"]),
        Route(f"{p}/key", api.key, methods=["GET"]),
        Route(f"{p}/tile/{{path:path}}", api.tile, methods=["GET"]),
        Route(f"{p}/proof/inclusion", api.inclusion, methods=["GET"]),
        Route(f"{p}/proof/consistency", api.consistency, methods=["GET"]),
        Route(f"{p}/receipts/{{index}}", api.receipt, methods=["GET"]),
        Route(f"{p}/artifacts/{{artifact_id:path}}/body", api.artifact_body, methods=["GET"]),
        Route(f"{p}/artifacts/{{artifact_id:path}}", api.artifact, methods=["GET"]),
        Route("/metrics", api.metrics_text, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/{anything:path}", api.refuse_mutation, methods=mutating),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        TlogError: _tlog_error,
        HTTPException: _http_error,
        Exception: _internal_error,
    }

    def on_batch(appended: dict[str, int], items: int, seconds: float) -> None:
        metrics.batch_size.observe(items)
        metrics.integration.observe(seconds)
        for name, count in appended.items():
            metrics.appends.labels(name).inc(count)

    service.store.on_batch = on_batch
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.add_middleware(_Observe, metrics=metrics)
    app.state.service = service
    app.state.metrics = metrics
    return app
