"""The depository: a data directory's config, logs, API keys and submission rules.

:class:`Service` sits between the HTTP layer and the log engine. It owns the
data directory layout::

    <data>/config.toml     the configuration in force (copied in by ``tlog init``)
    <data>/keys/<log>.key  one Ed25519 signing key per log, mode 0600
    <data>/lmdb/           the logs (durable); <data>/index/ derived lookups

and turns a submission (a JSON or CBOR map) into a :class:`tlog.log.Draft`,
checking it against the product's artifact types before anything is queued, so a
bad request never reaches the log.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlog.auth import KeyStore
from tlog.config import (
    AUDIT_LOG,
    OWNERSHIP_KEYS,
    SERVER_FACTS,
    Config,
    ConfigError,
    default_config_text,
    load_config,
    parse_config,
)
from tlog.entry import encode_metadata
from tlog.errors import InvalidEntry, NotFound, PayloadTooLarge
from tlog.governance import Governance
from tlog.keys import create_key
from tlog.log import ENVELOPE, Draft, Log, Store

__all__ = ["CONFIG_FILE", "Service", "Submission"]

CONFIG_FILE = "config.toml"
OWNER_KEY_FILE = "owner.key"
_FIELDS = {"artifact_type", "artifact_id", "metadata", "body", "expected_version"}

# Metadata keys that would claim facts only the server may state (over-trust in provenance)
# or ownership by someone else (metadata poisoning): defined with the config, which may
# not require the former.
_SERVER_FACTS = SERVER_FACTS
_OWNERSHIP = OWNERSHIP_KEYS


class SchemaDrift(InvalidEntry):
    """The submission carries fields the schema does not know (silent schema drift)."""

    code = "unknown_field"
    threat = "silent_schema_drift"


class MetadataPoisoning(InvalidEntry):
    """The metadata names another product or principal as the owner."""

    code = "metadata_poisoning"
    threat = "metadata_poisoning"


class ProvenanceClaim(InvalidEntry):
    """The metadata asserts facts only the server can state (index, time, signatures)."""

    code = "provenance_claim"
    threat = "over_trust_in_provenance"


@dataclass(frozen=True)
class Submission:
    """A validated submission, ready to become a Draft."""

    artifact_type: str
    artifact_id: str | None
    metadata: dict[str, Any]
    body: bytes
    expected_version: int | None = None
    encoded_metadata: bytes | None = None
    """The metadata's deterministic CBOR, if parse_submission encoded it already."""


def new_artifact_ids(n: int) -> list[str]:
    """Return n fresh random artifact ids: RFC 9562 version 4 UUIDs in their text form.

    One read of the OS random source for all of them (uuid.uuid4() costs a system call and
    an object per id, a tenth of a busy batch request's time).
    """
    raw = bytearray(os.urandom(16 * n))
    out = []
    for i in range(0, 16 * n, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4 (RFC 9562 §5.4)
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # variant 10
        h = raw[i : i + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


class Service:
    """An opened data directory: config, store, logs and keys."""

    def __init__(self, data_dir: Path, config: Config, store: Store) -> None:
        self.data_dir = data_dir
        self.config = config
        self.store = store
        self.governance = Governance(store, config)
        self.keys = KeyStore(store.storage, self._record_key_change)

    def _record_key_change(
        self,
        type_: str,
        detail: dict[str, Any],
        meta_key: bytes,
        meta_value: bytes | Callable[[bytes | None], bytes],
    ) -> int:
        leaf = self.governance.leaf(type_, product=detail.get("product"), detail=detail)
        return self.governance.record_with(leaf, {meta_key: meta_value})

    @property
    def owner_key_path(self) -> Path:
        """Where ``tlog init`` puts the owner key (move it off the server)."""
        return self.data_dir / "keys" / OWNER_KEY_FILE

    @staticmethod
    def initialized(data_dir: Path) -> bool:
        """Return True if data_dir holds an initialised depository."""
        return (data_dir / CONFIG_FILE).is_file()

    @classmethod
    def init(
        cls, data_dir: Path, *, config_path: Path | None = None, host: str | None = None
    ) -> Service:
        """Create a depository in data_dir: config, one log and key per product.

        Raises ConfigError if data_dir is already initialised or the config is invalid.
        """
        if cls.initialized(data_dir):
            raise ConfigError(f"{data_dir} is already initialised")
        text = default_config_text() if config_path is None else _read(config_path)
        if host is not None:
            text = _with_host(text, host)
        config = parse_config(text)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = Store.open(data_dir, map_size=config.limits.storage_map_bytes)
        for name in config.products:
            if name not in store.logs:
                store.create_log(name, config.origin(name), kind=ENVELOPE)
        service = cls(data_dir, config, store)
        owner = create_key(service.owner_key_path, f"{config.host}/owner")
        service.governance.set_owner(owner.vkey)
        service.governance.approve_config(None)
        (data_dir / CONFIG_FILE).write_text(text, encoding="utf-8")
        return service

    @classmethod
    def open(cls, data_dir: Path) -> Service:
        """Open an initialised depository. Raises ConfigError, StorageError, KeyProblem."""
        if not cls.initialized(data_dir):
            raise ConfigError(f"{data_dir} is not initialised (run tlog init)")
        # An existing depository's config keeps opening under checks added since; its
        # approval (governance) still guards any change to it.
        config = load_config(data_dir / CONFIG_FILE, new=False)
        store = Store.open(data_dir, map_size=config.limits.storage_map_bytes)
        for name in config.products:
            if name not in store.logs:
                store.create_log(name, config.origin(name), kind=ENVELOPE)
        service = cls(data_dir, config, store)
        service.governance.check_config()
        return service

    def close(self) -> None:
        """Finish queued writes and close the store."""
        self.store.close()

    def product_log(self, product: str) -> Log:
        """Return the log of a configured product. Raises NotFound."""
        if product not in self.config.products or product == AUDIT_LOG:
            raise NotFound(f"no product named {product!r}")
        return self.store.log(product)

    # -- submissions ---------------------------------------------------------------

    def parse_submission(self, product: str, payload: object, *, json_body: bool) -> Submission:
        """Return the validated submission for a product from a decoded request map.

        ``json_body``: the body field is base64 text (JSON) rather than bytes (CBOR).
        Raises InvalidEntry (422) for schema problems and PayloadTooLarge (413) for a body
        over the artifact size limit.
        """
        if type(payload) is not dict and not isinstance(payload, Mapping):
            raise InvalidEntry("a submission must be a JSON object or CBOR map")
        if not _FIELDS.issuperset(payload):
            unknown = sorted(str(k) for k in set(payload) - _FIELDS)
            raise SchemaDrift(f"unknown field(s): {', '.join(unknown)}")
        spec = self.config.products[product]
        artifact_type = payload.get("artifact_type")
        if not isinstance(artifact_type, str):
            raise InvalidEntry("artifact_type is required and must be a string")
        if artifact_type not in spec.artifact_types:
            raise InvalidEntry(
                f"unknown artifact_type {artifact_type!r} for {product}; expected one of "
                + ", ".join(sorted(spec.artifact_types))
            )
        artifact_id = payload.get("artifact_id")
        if artifact_id is not None and not isinstance(artifact_id, str):
            raise InvalidEntry("artifact_id must be a string")
        if artifact_id is not None and artifact_id.endswith("/body"):
            # GET /logs/{p}/artifacts/{id}/body is the body of the artifact {id}, so the
            # versions of a new "x/body" could never be listed. One stored before this
            # rule keeps taking versions.
            try:
                self.product_log(product).versions(artifact_id)
            except NotFound:
                raise InvalidEntry(
                    'artifact_id must not end in "/body" (ambiguous in the API)'
                ) from None
        metadata, encoded_metadata = encode_metadata(payload.get("metadata", {}))
        if not _SERVER_FACTS.isdisjoint(metadata):
            claimed = sorted(_SERVER_FACTS.intersection(metadata))
            raise ProvenanceClaim(
                f"metadata may not state {', '.join(claimed)}: the server records those "
                "facts itself, and a claim must not pass for proof"
            )
        if not _OWNERSHIP.isdisjoint(metadata):
            for key in sorted(_OWNERSHIP.intersection(metadata)):
                if metadata[key] != product:
                    raise MetadataPoisoning(
                        f"metadata.{key} names {metadata[key]!r}, but this is {product}'s log"
                    )
        expected = payload.get("expected_version")
        if expected is not None and (
            not isinstance(expected, int) or isinstance(expected, bool) or expected < 0
        ):
            raise InvalidEntry("expected_version must be a non-negative integer")
        missing = [k for k in spec.artifact_types[artifact_type] if k not in metadata]
        if missing:
            raise InvalidEntry(
                f"artifact_type {artifact_type} requires metadata: {', '.join(missing)}"
            )
        body = payload.get("body", b"" if not json_body else "")
        if json_body:
            if not isinstance(body, str):
                raise InvalidEntry("body must be base64 text")
            if len(body) > (self.config.limits.max_artifact_bytes + 2) // 3 * 4 + 4:
                raise PayloadTooLarge(_too_large(self.config.limits.max_artifact_bytes))
            try:
                body = binascii.a2b_base64(body, strict_mode=True)  # RFC 4648 §4, strict
            except (binascii.Error, ValueError):
                raise InvalidEntry("body is not valid base64") from None
        elif not isinstance(body, bytes):
            raise InvalidEntry("body must be a CBOR byte string")
        if len(body) > self.config.limits.max_artifact_bytes:
            raise PayloadTooLarge(_too_large(self.config.limits.max_artifact_bytes))
        return Submission(artifact_type, artifact_id, metadata, body, expected, encoded_metadata)

    def draft(
        self,
        product: str,
        principal: str,
        submission: Submission,
        *,
        idempotency_key: str | None = None,
        new_id: str | None = None,
    ) -> Draft:
        """Return the Draft for a validated submission, its envelope checked and encoded.

        An artifact id is generated (UUID4; ``new_id`` if given, from new_artifact_ids)
        when the submission has none. With an Idempotency-Key, the request digest covers
        the submission as sent, so a retry with the same key matches. Raises InvalidEntry /
        LeafTooLarge (422): everything the writer will check, but for version conflicts.
        """
        body_sha256 = hashlib.sha256(submission.body).digest()
        digest = b""
        if idempotency_key is not None:
            digest = hashlib.sha256(
                json.dumps(
                    {
                        "artifact_type": submission.artifact_type,
                        "artifact_id": submission.artifact_id,
                        "metadata": submission.metadata,
                        "body_sha256": body_sha256.hex(),
                        "expected_version": submission.expected_version,
                    },
                    sort_keys=True,
                    separators=(",", ":"),
                ).encode()
            ).digest()
        artifact_id = submission.artifact_id
        if artifact_id is None:
            artifact_id = new_id if new_id is not None else new_artifact_ids(1)[0]
        draft = Draft(
            product=product,
            artifact_type=submission.artifact_type,
            artifact_id=artifact_id,
            principal=principal,
            body=submission.body,
            body_sha256=body_sha256,
            metadata=submission.metadata,
            idempotency_key=idempotency_key,
            request_digest=digest,
            expected_version=submission.expected_version,
            fresh_id=submission.artifact_id is None,
        )
        template = draft.template(submission.encoded_metadata)
        # The largest values the writer can fill in: if this fits, the real leaf will.
        template.check_room(2**31, 2**62, 2**62)
        return draft


def _too_large(limit: int) -> str:
    return f"the artifact is over the limit of {limit} bytes"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc


def _with_host(text: str, host: str) -> str:
    """Return config text with ``[service] host`` set to host (validated when parsed)."""
    line = f"host = {json.dumps(host)}"
    replaced, count = re.subn(r"(?m)^host\s*=.*$", line, text, count=1)
    if count:
        return replaced
    if re.search(r"(?m)^\[service\]\s*$", text):
        return re.sub(r"(?m)^\[service\]\s*$", "[service]\n" + line, text, count=1)
    return f"[service]\n{line}\n\n{text}"
