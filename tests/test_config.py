"""Configuration: strict parsing, all errors at once, schema kept in step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockd.config import ConfigError, json_schema, load, parse

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_is_valid_and_resolves_paths() -> None:
    cfg = load(ROOT / "config/blockd.toml")
    assert cfg.trust.pinned == ROOT / "feeds/demo/trust.dsse"
    assert [c.ref for c in cfg.lists] == [
        "demo-authority/demo-hosts",
        "demo-authority/demo-urls",
        "demo-authority/demo-hashed",
    ]
    assert cfg.lists[0].source == f"file://{ROOT}/feeds/demo/demo-hosts.dsse"


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    text = """
[trust]
pinned = "t.dsse"
colour = "blue"
[guards]
max_change_fraction = 2
[[lists]]
authority = "UPPER"
list = "x"
source = "ftp://example.com/list"
action = "drop"
"""
    with pytest.raises(ConfigError) as e:
        parse(text, Path("/etc/blockd"), "blockd.toml")
    msg = str(e.value)
    assert msg.startswith("blockd.toml: 5 problem(s)")
    for path in (
        "trust.colour",
        "guards.max_change_fraction",
        "lists.0.authority",
        "lists.0.source",
        "lists.0.action",
    ):
        assert f"  {path}:" in msg
    assert "'notice' or 'nxdomain'" in msg


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "trust: Field required"),
        ("[trust\npinned='x'", "not valid TOML"),
        ("trust = 5", "trust"),
        (
            "[trust]\npinned='x'\n[[lists]]\nauthority='a'\nlist='l'\nsource='file:///x'\n"
            "[[lists]]\nauthority='a'\nlist='l'\nsource='file:///y'",
            "configured twice: a/l",
        ),
        (
            "[trust]\npinned='x'\n[[lists]]\nauthority='a'\nlist='l'\nsource='file:///x'\n"
            "interval=-1",
            "lists.0.interval",
        ),
        ("[trust]\npinned='x'\n[http]\nwrite_timeout=0", "http.write_timeout"),
        ("[trust]\npinned='x'\n[http]\nwrite_timeout='soon'", "http.write_timeout"),
        (
            "[trust]\npinned='x'\n[http]\nmax_connections_per_client=0",
            "http.max_connections_per_client",
        ),
        (
            "[trust]\npinned='x'\n[http]\nmax_connections_per_client=1e9",
            "http.max_connections_per_client",
        ),
    ],
)
def test_hostile_and_malformed_configs(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        parse(text, Path("/tmp"))


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "bin.toml")


def test_checked_in_schema_is_current() -> None:
    on_disk = json.loads((ROOT / "config/blockd.schema.json").read_text())
    assert on_disk == json_schema(), "run: blockd config-schema > config/blockd.schema.json"
