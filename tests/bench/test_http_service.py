"""bench/http_service.py's server set-up: the demo config with only the write rates raised.

No benchmark runs here: the depository is made with the real CLI (subprocesses), then
opened in process to check its config and keys.
"""

from __future__ import annotations

from pathlib import Path

from tests.bench import load
from tlog.config import default_config_text
from tlog.service import Service

http_service = load("http_service")


def test_capacity_depository_raises_only_the_write_rates(tmp_path: Path) -> None:
    keys = http_service.capacity_depository(tmp_path / "data", tmp_path)
    service = Service.open(tmp_path / "data")
    try:
        limits = service.config.limits
        assert limits.write_rate_per_product == http_service.BENCH_WRITE_RATE
        assert limits.write_rate_global == http_service.BENCH_WRITE_RATE
        # Every other line of the demo config is kept as it is.
        demo = default_config_text().splitlines()
        used = (tmp_path / "data" / "config.toml").read_text().splitlines()
        changed = [(a, b) for a, b in zip(demo, used, strict=True) if a != b]
        assert [a.split("=")[0].strip() for a, _ in changed] == [
            "write_rate_per_product",
            "write_rate_global",
        ]
        # One working key per product, bound to it, with the demo's scopes.
        assert set(keys) == set(service.config.products)
        for product, token in keys.items():
            principal = service.keys.authenticate(f"Bearer {token}")
            assert principal.product == product
            assert set(principal.scopes) == {"submit", "read", "audit"}
    finally:
        service.close()
