"""The [fleet] section: one Redis or Sentinels, a secret kept out of sight, hostile values."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from blockd import preflight
from blockd.config import ConfigError, parse
from tests.daemon import demo_config

BASE = "demo = true\n[trust]\npinned = 't.dsse'\n"


def fleet(body: str) -> str:
    return f"{BASE}[fleet]\n{body}\n"


def test_without_fleet_blockd_runs_alone() -> None:
    assert parse(BASE, Path("/etc/blockd")).fleet is None


def test_the_defaults() -> None:
    cfg = parse(fleet('redis = "redis://10.0.0.5:6379/2"'), Path("/etc/blockd")).fleet
    assert cfg is not None
    assert (cfg.redis, cfg.prefix, cfg.lease, cfg.heartbeat) == (
        "redis://10.0.0.5:6379/2",
        "blockd",
        15,
        5,
    )
    assert cfg.node == socket.gethostname().split(".")[0] or cfg.node == "blockd"
    assert cfg.password() is None


def test_sentinels_and_a_relative_password_file(tmp_path: Path) -> None:
    text = fleet(
        'sentinels = ["10.0.0.1:26379", "sentinel.isp.example:26379", "[2001:db8::1]:26379"]\n'
        'service = "blockd"\nusername = "resolver"\npassword_file = "redis.pw"\nnode = "pop-1.a"'
    )
    cfg = parse(text, tmp_path).fleet
    assert cfg is not None and cfg.password_file == tmp_path / "redis.pw"
    (tmp_path / "redis.pw").write_text("s3cret\n")
    os.chmod(tmp_path / "redis.pw", 0o640)
    assert cfg.password() == "s3cret"
    assert "s3cret" not in cfg.where() and "s3cret" not in repr(cfg)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("", "set either redis"),
        ('redis = "redis://h:1"\nsentinels = ["h:2"]\nservice = "s"', "set either redis"),
        ('redis = "http://h:6379"', "fleet.redis: must be redis://"),
        ('redis = "redis://:pw@h:6379"', "no user or password"),
        ('redis = "redis://u:pw@h:6379"', "no user or password"),
        ('redis = "redis://h:6379/0?password=pw"', "no ?query"),
        ('redis = "redis://h:99999"', "fleet.redis"),
        ('redis = "redis://h:6379/99"', "from 0 to 15"),
        ('redis = "redis:///tmp/sock"', "fleet.redis"),
        ('sentinels = ["h:26379"]', "sentinels need service"),
        ('redis = "redis://h:1"\nservice = "s"', "service is only for sentinels"),
        ('sentinels = ["h"]\nservice = "s"', "fleet.sentinels.0: must be HOST:PORT"),
        ('sentinels = ["h:0"]\nservice = "s"', "fleet.sentinels.0"),
        ('sentinels = ["h:1; rm -rf /"]\nservice = "s"', "fleet.sentinels.0"),
        ('redis = "redis://h:1"\nnode = "a:b"', "fleet.node"),
        ('redis = "redis://h:1"\nnode = ""', "fleet.node"),
        ('redis = "redis://h:1"\nnode = "' + "n" * 64 + '"', "fleet.node"),
        ('redis = "redis://h:1"\nprefix = "a b"', "fleet.prefix"),
        ('redis = "redis://h:1"\nprefix = "*"', "fleet.prefix"),
        ('redis = "redis://h:1"\nlease = 0', "fleet.lease"),
        ('redis = "redis://h:1"\nlease = "long"', "fleet.lease"),
        ('redis = "redis://h:1"\nheartbeat = 10', "at most a third of lease"),
        ('redis = "redis://h:1"\nheartbeat = -1', "fleet.heartbeat"),
        ('redis = "redis://h:1"\nusername = " "', "fleet.username"),
        ('redis = "redis://h:1"\ncolour = "blue"', "fleet.colour"),
        ('redis = "redis://h:1"\npassword = "pw"', "fleet.password"),
    ],
)
def test_hostile_fleet_configs(body: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("?", r"\?")):
        parse(fleet(body), Path("/etc/blockd"))


def test_a_refused_password_in_the_url_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as e:
        parse(fleet('redis = "redis://u:topsecret@h:6379"'), Path("/etc/blockd"))
    assert "no user or password" in str(e.value)
    # pydantic echoes the refused value: the one place a URL's password could show
    assert "topsecret" not in str(e.value)


@pytest.mark.parametrize(
    ("mode", "content", "needle"),
    [
        (0o644, "hunter2", "readable by every user"),
        (0o604, "hunter2", "readable by every user"),
        (0o600, "  \n", "is empty"),
        (0o600, b"\xff\xfe", "not UTF-8"),
    ],
)
def test_a_password_file_every_user_can_read_is_refused(
    tmp_path: Path, mode: int, content: str | bytes, needle: str
) -> None:
    secret = tmp_path / "redis.pw"
    secret.write_bytes(content if isinstance(content, bytes) else content.encode())
    os.chmod(secret, mode)
    cfg = parse(fleet('redis = "redis://h:1"\npassword_file = "redis.pw"'), tmp_path).fleet
    assert cfg is not None
    with pytest.raises(ConfigError, match=needle) as e:
        cfg.password()
    assert "fleet.password_file" in str(e.value) and "hunter2" not in str(e.value)


@pytest.mark.parametrize("name", ["nope", "a-directory"])
def test_a_password_file_that_cannot_be_read_says_so(tmp_path: Path, name: str) -> None:
    (tmp_path / "a-directory").mkdir()
    cfg = parse(fleet(f'redis = "redis://h:1"\npassword_file = "{name}"'), tmp_path).fleet
    assert cfg is not None
    with pytest.raises(ConfigError, match="cannot read"):
        cfg.password()


def test_check_config_names_a_password_file_every_user_can_read(tmp_path: Path) -> None:
    text = demo_config(tmp_path, ("127.0.0.1", 53))
    text += '\n[fleet]\nredis = "redis://127.0.0.1:6379"\npassword_file = "redis.pw"\n'
    (tmp_path / "redis.pw").write_text("hunter2")
    os.chmod(tmp_path / "redis.pw", 0o644)
    [problem] = preflight.problems(parse(text, tmp_path))
    assert problem.startswith("fleet.password_file:") and "readable by every user" in problem
    os.chmod(tmp_path / "redis.pw", 0o600)
    assert preflight.problems(parse(text, tmp_path)) == []
