"""API keys: bearer tokens bound to one product and a set of scopes.

A token reads ``bk_<id>_<secret>``: ``id`` is 8 random hex digits (public, shown
by ``tlog keys list`` and recorded as the principal ``key:<id>``), ``secret`` is
32 random bytes in base64url. Only SHA-256 of the whole token is stored; a
presented token is hashed and compared with :func:`hmac.compare_digest`, so the
comparison takes the same time wherever the bytes differ. Tokens are high-entropy
random strings, so a fast hash is enough (no password stretching needed).

Keys live in the log env's ``meta`` database (``apikey/<id>``), so a key created or
revoked by the CLI is seen by a running server at its next request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tlog.errors import BadRequest, Forbidden, NotFound, Unauthorized
from tlog.storage import Storage

__all__ = ["SCOPES", "ApiKey", "KeyFrozen", "KeyStore", "Principal"]

SCOPES = ("submit", "read", "audit", "admin")
_TOKEN = re.compile(r"bk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
_CACHE_KEYS = 4096
"""Most key records kept in memory between changes of the log env."""


class KeyFrozen(Forbidden):
    """The key was frozen for breaking scope rules repeatedly (executor override)."""

    code = "key_frozen"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the key's id, its product and its scopes."""

    key_id: str
    product: str
    scopes: frozenset[str]

    @property
    def name(self) -> str:
        """Return the principal as recorded in entries and audit records: ``key:<id>``."""
        return f"key:{self.key_id}"


@dataclass(frozen=True)
class ApiKey:
    """A stored key's public facts (never its secret)."""

    key_id: str
    product: str
    scopes: tuple[str, ...]
    created_at: int
    revoked_at: int | None
    frozen: bool = False


MetaValue = bytes | Callable[[bytes | None], bytes]


def _update(changes: dict[str, Any], *, unless_set: str | None = None) -> MetaValue:
    """Return a function that applies ``changes`` to a stored key record (JSON), inside
    the write transaction that records it: a revocation and a freeze committed by two
    processes at once then both stand, where writing back a record read earlier would
    undo the other (a revoked key could come back to life at its unfreeze). With
    ``unless_set``, a field already set stays as it is (the first revocation's time)."""

    def apply(raw: bytes | None) -> bytes:
        if raw is None:
            raise NotFound("the API key record vanished")  # never: records are not deleted
        record = json.loads(raw)
        if unless_set is not None and record.get(unless_set) is not None:
            return bytes(raw)
        return json.dumps({**record, **changes}).encode()

    return apply


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyStore:
    """Creates, lists, revokes and checks API keys."""

    def __init__(
        self, storage: Storage, record: Callable[[str, dict[str, Any], bytes, MetaValue], int]
    ) -> None:
        """``record(type, detail, meta_key, meta_value)`` writes an audit record and the
        key's record in one transaction (see tlog.governance.Governance.record_with);
        ``meta_value`` may be a function of the stored record, applied in that
        transaction."""
        self._storage = storage
        self._record = record
        # key id -> (log-env snapshot id, key record or None): records as of that snapshot,
        # so a revocation or freeze by any process is seen by the next request.
        self._cache: dict[str, tuple[int, dict[str, Any] | None]] = {}

    def create(self, product: str, scopes: set[str] | frozenset[str]) -> tuple[ApiKey, str]:
        """Create a key for product with scopes; return its facts and the token.

        The token is returned once and never stored. Raises BadRequest for unknown scopes.
        """
        bad = sorted(set(scopes) - set(SCOPES))
        if bad or not scopes:
            raise BadRequest(f"scopes must be a non-empty subset of {', '.join(SCOPES)}")
        env = self._storage.env
        while True:
            key_id = secrets.token_hex(4)
            token = f"bk_{key_id}_{secrets.token_urlsafe(32)}"
            record = {
                "key_id": key_id,
                "product": product,
                "scopes": sorted(scopes),
                "sha256": _hash(token),
                "created_at": int(time.time()),
                "revoked_at": None,
            }
            with env.begin() as txn:
                if self._storage.get_meta(txn, b"apikey/" + key_id.encode()) is not None:
                    continue
            self._record(
                "key_created",
                {"key_id": key_id, "product": product, "scopes": sorted(scopes)},
                b"apikey/" + key_id.encode(),
                json.dumps(record).encode(),
            )
            return self._facts(record), token

    def list(self) -> list[ApiKey]:
        """Return every key's facts, oldest first."""
        out = []
        with self._storage.env.begin() as txn:
            for key, value in txn.cursor(db=self._storage.meta_db).iternext():
                if bytes(key).startswith(b"apikey/"):
                    out.append(self._facts(json.loads(bytes(value))))
        return sorted(out, key=lambda k: (k.created_at, k.key_id))

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (it stays listed, marked revoked). Raises NotFound."""
        with self._storage.env.begin() as txn:
            raw = self._storage.get_meta(txn, b"apikey/" + key_id.encode())
        if raw is None:
            raise NotFound(f"no API key {key_id!r}")
        record = json.loads(raw)
        if record["revoked_at"] is None:
            record["revoked_at"] = int(time.time())
            self._record(
                "key_revoked",
                {"key_id": key_id, "product": record["product"]},
                b"apikey/" + key_id.encode(),
                _update({"revoked_at": record["revoked_at"]}, unless_set="revoked_at"),
            )
        return self._facts(record)

    def set_frozen(self, key_id: str, frozen: bool, detail: dict[str, Any]) -> ApiKey:
        """Freeze or unfreeze a key (a frozen key is refused with 403 until the owner
        unfreezes it), with its audit record. Raises NotFound."""
        with self._storage.env.begin() as txn:
            raw = self._storage.get_meta(txn, b"apikey/" + key_id.encode())
        if raw is None:
            raise NotFound(f"no API key {key_id!r}")
        record = json.loads(raw)
        if bool(record.get("frozen")) != frozen:
            record["frozen"] = frozen
            self._record(
                "key_frozen" if frozen else "key_unfrozen",
                {"key_id": key_id, "product": record["product"], **detail},
                b"apikey/" + key_id.encode(),
                _update({"frozen": frozen}),
            )
        return self._facts(record)

    def authenticate(self, authorization: str | None) -> Principal:
        """Return the principal of an ``Authorization: Bearer <token>`` header value.

        Raises Unauthorized for a missing, malformed, unknown or revoked token (one
        message for all, so the answer does not tell which part was wrong).
        """
        if not authorization:
            raise Unauthorized("an API key is required: Authorization: Bearer <key>")
        scheme, _, token = authorization.partition(" ")
        match = _TOKEN.fullmatch(token.strip()) if scheme.lower() == "bearer" else None
        if match is None:
            raise Unauthorized("the API key is not valid")
        record = self._record_of(match.group(1))
        expected = record["sha256"] if record is not None else _hash("")
        ok = hmac.compare_digest(expected.encode(), _hash(token.strip()).encode())
        if record is None or not ok or record["revoked_at"] is not None:
            raise Unauthorized("the API key is not valid")
        if record.get("frozen"):
            raise KeyFrozen(
                f"API key {record['key_id']} is frozen after repeated scope violations; "
                "the owner must unfreeze it"
            )
        return Principal(record["key_id"], record["product"], frozenset(record["scopes"]))

    def _record_of(self, key_id: str) -> dict[str, Any] | None:
        """Return the stored record of a key id, or None; read once per log-env change."""
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] == self._storage.last_txnid():
            return cached[1]
        with self._storage.env.begin() as txn:
            generation = self._storage.snapshot_id(txn)
            raw = self._storage.get_meta(txn, b"apikey/" + key_id.encode())
        record = json.loads(raw) if raw is not None else None
        if len(self._cache) >= _CACHE_KEYS:
            self._cache.clear()  # bounded: unknown ids cannot grow it without end
        self._cache[key_id] = (generation, record)
        return record

    @staticmethod
    def _facts(record: dict[str, object]) -> ApiKey:
        scopes = record["scopes"]
        assert isinstance(scopes, list)
        return ApiKey(
            key_id=str(record["key_id"]),
            product=str(record["product"]),
            scopes=tuple(str(s) for s in scopes),
            created_at=int(str(record["created_at"])),
            revoked_at=None if record["revoked_at"] is None else int(str(record["revoked_at"])),
            frozen=bool(record.get("frozen")),
        )
