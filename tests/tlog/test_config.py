"""Config validation: every bad config is a ConfigError naming the problem, before any
data directory is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlog import cli
from tlog.config import (
    MIN_STORAGE_MAP_BYTES,
    SERVER_FACTS,
    ConfigError,
    default_config_text,
    parse_config,
)

GOOD = """
[service]
host = "test.example"

[limits]
{limits}

[products.alpha]
[products.alpha.artifact_types.doc]
required_metadata = {required}
"""


def config(limits: str = "", required: str = '["title"]') -> str:
    return GOOD.format(limits=limits, required=required)


def test_the_demo_and_a_minimal_config_parse() -> None:
    assert "gurukul" in parse_config(default_config_text()).products
    cfg = parse_config(config(f"storage_map_bytes = {MIN_STORAGE_MAP_BYTES}"))
    assert cfg.products["alpha"].artifact_types["doc"] == ("title",)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (config("storage_map_bytes = 1"), "storage_map_bytes must be at least"),
        (config(f"storage_map_bytes = {MIN_STORAGE_MAP_BYTES - 1}"), "at least"),
        (config("max_batch_items = 0"), "must be a positive integer"),
        (config("no_such_limit = 3"), "unknown key"),
        (config(required='["title", "version"]'), "names version, which only the server"),
        (config(required='["index"]'), "names index"),
        (config(required='"title"'), "must be a list of names"),
        ("[service]\nhost = 'x'\n", "defines no products"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_configs_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config(text)


def test_every_server_fact_is_refused_as_required_metadata() -> None:
    for key in sorted(SERVER_FACTS):
        with pytest.raises(ConfigError, match=f"names {key}"):
            parse_config(config(required=f'["{key}"]'))


def test_init_with_a_bad_config_leaves_no_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(config("storage_map_bytes = 1"))
    data = tmp_path / "data"
    assert cli.main(["--data", str(data), "init", "--config", str(path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "storage_map_bytes" in err[0]
    assert not data.exists() or not any(data.iterdir())


def test_an_existing_depository_keeps_opening_under_the_newer_checks(tmp_path: Path) -> None:
    from tlog.service import Service

    good = tmp_path / "good.toml"
    good.write_text(config())
    Service.init(tmp_path / "data", config_path=good).close()
    # As an older version accepted it: a 1 MiB map and a type requiring "version".
    legacy = config("storage_map_bytes = 1048576", required='["version"]')
    (tmp_path / "data" / "config.toml").write_text(legacy)
    with pytest.raises(ConfigError):
        parse_config(legacy)
    service = Service.open(tmp_path / "data")
    try:
        assert service.config.limits.storage_map_bytes == 1 << 20
    finally:
        service.close()
