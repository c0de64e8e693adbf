"""Every export and every check is an audited operator action with the configuration's digest.

With a daemon running, the CLI's export goes to it through the control socket and the daemon
logs it; with none, the CLI logs it into the log itself. Either way the entry carries the
SHA-256 of the configuration file in force, as `sha256sum` gives it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from blockd.audit import bundle, note
from blockd.cli import main
from blockd.config import load, parse
from blockd.events import OperatorAction
from tests.factories import Recorder
from tests.test_control import cli, daemon, setup

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def logged_actions(bundle_file: Path) -> list[dict[str, object]]:
    entries = [json.loads(e) for e in json.loads(bundle_file.read_text())["entries"]]
    return [e for e in entries if e["type"] == "operator-action"]


def vkey(conf: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["audit", "key", "-c", str(conf)]) == 0
    return capsys.readouterr().out.strip()


def test_the_digest_is_the_files_sha256_and_survives_copies(tmp_path: Path) -> None:
    conf = tmp_path / "blockd.toml"
    conf.write_bytes(b'# a comment\r\ndemo = true\r\n[trust]\r\npinned = "trust.dsse"\r\n')
    config = load(conf)
    assert config.digest() == sha256(conf)
    assert config.model_copy(update={"demo": True}).digest() == sha256(conf)
    text = 'demo = true\n[trust]\npinned = "trust.dsse"\n'
    assert parse(text, tmp_path).digest() == hashlib.sha256(text.encode()).hexdigest()


async def test_cli_check_and_export_without_a_daemon_log_the_config_digest(
    tmp_path: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    text, _ = setup(tmp_path, upstream)
    conf = tmp_path / "blockd.toml"
    conf.write_text(text)
    assert await cli("sync", "-c", conf) == 0
    assert await cli("check", "-c", conf, "one.example") == 0
    out = tmp_path / "bundle.json"
    assert await cli("audit", "export", "-c", conf, "--from", "2000-01-01", "-o", out) == 0
    capsys.readouterr()
    actions = logged_actions(out)
    assert [a["action"] for a in actions] == ["sync", "check", "export"]
    assert {a["config_sha256"] for a in actions} == {sha256(conf)}
    assert actions[-1]["detail"] == "from 2000-01-01T00:00:00Z to now"
    # The bundle holds its own export's record and verifies with the key alone.
    key = note.Verifier.from_vkey(vkey(conf, capsys))
    verdict = bundle.verify(json.loads(out.read_text()), key)
    assert verdict.ok, verdict.message


async def test_cli_export_beside_a_running_daemon_is_logged_by_the_daemon(
    tmp_path: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    text, _ = setup(tmp_path, upstream)
    conf = tmp_path / "blockd.toml"
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    async with daemon(text, tmp_path) as app:
        actions = Recorder(app.bus)
        assert await cli("audit", "export", "-c", conf, "-o", first) == 0
        cp = json.loads(first.read_text())["checkpoints"][-1]
        (tmp_path / "cp.txt").write_text(cp)
        assert await cli("audit", "export", "-c", conf, "--previous", tmp_path / "cp.txt",
                         "-o", second) == 0  # fmt: skip
        capsys.readouterr()
        exports = [e for e in actions.of(OperatorAction) if e.action == "export"]
        assert len(exports) == 2
        assert all(f"control socket, uid {os.getuid()}" in e.detail for e in exports)
        assert {e.config_sha256 for e in exports} == {sha256(conf)}
        key = vkey(conf, capsys)
    # The daemon logged both (the second bundle proves growth from the first's checkpoint).
    data = json.loads(second.read_text())
    assert "previous" in data
    verdict = bundle.verify(data, note.Verifier.from_vkey(key), cp)
    assert verdict.ok, verdict.message
    assert main(["audit", "export", "-c", str(conf), "-o", str(second)]) == 0
    logged = [a for a in logged_actions(second) if a["action"] == "export"]
    assert len(logged) == 3 and {a["config_sha256"] for a in logged} == {sha256(conf)}
