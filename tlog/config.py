"""The service configuration: products, their artifact types, and the limits.

Configuration is a TOML file (``tomllib``) of this shape (the embedded default,
``tlog/default_config.toml``, is the demo of the four certified products)::

    [service]
    host = "bucket.example"          # origin of product P: "<host>/logs/<P>"
    [limits]
    max_artifact_bytes = 1048576     # ... one named constant per limit
    [products.gurukul]
    public = false                   # true: checkpoints, tiles and key need no API key
    [products.gurukul.artifact_types.lesson]
    required_metadata = ["title", "language"]

Parsing is strict: unknown sections or keys, wrong types, and bad names are
rejected with :class:`ConfigError` naming the offending key, so a typo cannot
silently change a limit. :func:`fingerprint` is the SHA-256 of the canonical
form (sorted-key JSON of the parsed config), which governance records when a
config is approved.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tlog.errors import TlogError

__all__ = [
    "AUDIT_LOG",
    "Config",
    "ConfigError",
    "Limits",
    "Product",
    "default_config_text",
    "fingerprint",
    "load_config",
    "parse_config",
]

AUDIT_LOG = "_audit"
"""The name of the audit log (never a product name: products cannot start with '_')."""

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")


SERVER_FACTS = frozenset(
    {
        "integrated_at",
        "index",
        "tree_size",
        "leaf_hash",
        "checkpoint",
        "receipt",
        "verified",
        "signature",
        "principal",
        "version",
        "prev_index",
    }
)
"""Metadata keys that would claim facts only the server may state (over-trust in
provenance): a submission stating one is refused, so no artifact type may require one."""

OWNERSHIP_KEYS = frozenset({"product", "owner", "team", "tenant", "submitted_by"})
"""Metadata keys that claim ownership: allowed only if they name the product itself."""

MIN_STORAGE_MAP_BYTES = 2 << 20
"""The smallest storage map a depository can start in (its logs, keys' records and first
audit records); below it even ``tlog init`` would run the map full."""


class ConfigError(TlogError, ValueError):
    """The configuration file is unreadable or breaks the schema."""

    code = "config_error"


@dataclass(frozen=True)
class Limits:
    """The seven certified limits (and two request-shape limits), each one constant."""

    max_pending_writes: int = 10_000
    max_artifact_bytes: int = 1 << 20
    max_batch_items: int = 1000
    max_request_bytes: int = 16 << 20
    storage_map_bytes: int = 64 << 30
    write_rate_per_product: int = 20_000
    write_rate_global: int = 50_000
    max_entries_per_product: int = 100_000_000
    max_entries_global: int = 1_000_000_000
    query_deadline_ms: int = 5000
    audit_retention_years: int = 7


@dataclass(frozen=True)
class Product:
    """One product: its log name, whether its read API is public, and its artifact types
    with the metadata keys each requires."""

    name: str
    description: str = ""
    public: bool = False
    artifact_types: dict[str, tuple[str, ...]] = field(default_factory=dict)
    body_retention_days: dict[str, int] = field(default_factory=dict)
    """Per artifact type: days a body is kept before ``tlog governance expire`` may remove
    it (absent: kept forever). Leaves and hashes are never removed."""


@dataclass(frozen=True)
class Config:
    """A parsed, validated configuration."""

    host: str
    limits: Limits
    products: dict[str, Product]

    def origin(self, log_name: str) -> str:
        """Return the C2SP origin of a log: ``<host>/logs/<name>``."""
        return f"{self.host}/logs/{log_name}"

    def canonical(self) -> dict[str, Any]:
        """Return the canonical, JSON-compatible form used for the fingerprint."""
        return {
            "host": self.host,
            "limits": asdict(self.limits),
            "products": {
                name: {
                    "description": p.description,
                    "public": p.public,
                    "artifact_types": {t: list(req) for t, req in sorted(p.artifact_types.items())},
                    "body_retention_days": dict(sorted(p.body_retention_days.items())),
                }
                for name, p in sorted(self.products.items())
            },
        }


def fingerprint(config: Config) -> str:
    """Return the hex SHA-256 of the config's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(config.canonical(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    return value


def _only(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _name(value: str, where: str) -> str:
    if not _NAME.fullmatch(value):
        raise ConfigError(f"{where}: {value!r} is not a valid name (a-z, 0-9, '-', at most 63)")
    return value


def parse_config(text: str, *, new: bool = True) -> Config:
    """Return the Config described by TOML text. Raises ConfigError.

    ``new``: also refuse what could never work but older versions accepted (an artifact
    type requiring a key only the server states, a map below MIN_STORAGE_MAP_BYTES).
    False for the config of an existing data directory, which must keep opening.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config is not valid TOML: {exc}") from exc
    _only(raw, {"service", "limits", "products"}, "config")
    service = _table(raw.get("service", {}), "[service]")
    _only(service, {"host"}, "[service]")
    host = service.get("host", "bucket.example")
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        raise ConfigError(f"[service] host: {host!r} is not a host name")

    limits_raw = _table(raw.get("limits", {}), "[limits]")
    known = set(Limits.__dataclass_fields__)
    _only(limits_raw, known, "[limits]")
    for key, value in limits_raw.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"[limits] {key} must be a positive integer")
    if new and limits_raw.get("storage_map_bytes", MIN_STORAGE_MAP_BYTES) < MIN_STORAGE_MAP_BYTES:
        raise ConfigError(
            f"[limits] storage_map_bytes must be at least {MIN_STORAGE_MAP_BYTES} (2 MiB)"
        )
    limits = Limits(**limits_raw)

    products_raw = _table(raw.get("products", {}), "[products]")
    if not products_raw:
        raise ConfigError("config defines no products")
    products: dict[str, Product] = {}
    for pname, praw in products_raw.items():
        where = f"[products.{pname}]"
        _name(pname, where)
        praw = _table(praw, where)
        _only(praw, {"description", "public", "artifact_types"}, where)
        public = praw.get("public", False)
        if not isinstance(public, bool):
            raise ConfigError(f"{where} public must be true or false")
        description = praw.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(f"{where} description must be a string")
        types_raw = _table(praw.get("artifact_types", {}), f"{where}.artifact_types")
        if not types_raw:
            raise ConfigError(f"{where} defines no artifact_types")
        types: dict[str, tuple[str, ...]] = {}
        retention: dict[str, int] = {}
        for tname, traw in types_raw.items():
            twhere = f"[products.{pname}.artifact_types.{tname}]"
            _name(tname, twhere)
            traw = _table(traw, twhere)
            _only(traw, {"required_metadata", "body_retention_days"}, twhere)
            days = traw.get("body_retention_days")
            if days is not None:
                if not isinstance(days, int) or isinstance(days, bool) or days < 0:
                    raise ConfigError(f"{twhere} body_retention_days must be an integer >= 0")
                retention[tname] = days
            required = traw.get("required_metadata", [])
            if not isinstance(required, list) or not all(
                isinstance(k, str) and k for k in required
            ):
                raise ConfigError(f"{twhere} required_metadata must be a list of names")
            reserved = sorted(SERVER_FACTS.intersection(required))
            if reserved and new:
                raise ConfigError(
                    f"{twhere} required_metadata names {', '.join(reserved)}, which only the "
                    "server may state: no submission could meet it"
                )
            types[tname] = tuple(required)
        products[pname] = Product(pname, description, public, types, retention)
    return Config(host=host, limits=limits, products=products)


def default_config_text() -> str:
    """Return the text of the embedded demo configuration."""
    return resources.files("tlog").joinpath("default_config.toml").read_text(encoding="utf-8")


def load_config(path: Path | None, *, new: bool = True) -> Config:
    """Return the config in ``path``, or the embedded demo config for None.

    Raises ConfigError if the file is unreadable or invalid (``new``: see parse_config).
    """
    if path is None:
        return parse_config(default_config_text())
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    return parse_config(text, new=new)
