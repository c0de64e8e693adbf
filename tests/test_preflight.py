"""check-config checks what run would: every problem at once, one line each, never a dump."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockd import preflight
from blockd.audit.log import open_log
from blockd.cli import main
from blockd.config import ConfigError, parse
from tests.daemon import demo_config
from tests.factories import OPERATOR

ROOT = Path(__file__).resolve().parents[1]


def demo(tmp: Path, **http: object) -> str:
    return demo_config(tmp, ("127.0.0.1", 53), http=http or None)


def test_the_shipped_configs_are_clean(tmp_path: Path) -> None:
    assert preflight.problems(parse(demo(tmp_path), tmp_path)) == []
    assert main(["check-config", str(ROOT / "config" / "blockd.toml")]) == 0


def test_a_missing_or_forged_trust_file_is_found(tmp_path: Path) -> None:
    text = demo(tmp_path)
    (tmp_path / "feeds" / "trust.dsse").unlink()
    [problem] = preflight.problems(parse(text, tmp_path))
    assert problem.startswith("trust.pinned:") and "cannot read" in problem
    (tmp_path / "feeds" / "trust.dsse").write_bytes(b'{"payloadType": "x"}')
    [problem] = preflight.problems(parse(text, tmp_path))
    assert problem.startswith("trust.pinned:") and "rejected" in problem


def test_lists_the_trust_policy_does_not_authorise_are_found(tmp_path: Path) -> None:
    text = demo(tmp_path).replace('list = "demo-urls"', 'list = "not-authorised"', 1)
    text = text.replace('authority = "demo-authority"', 'authority = "nobody"', 1)
    found = preflight.problems(parse(text, tmp_path))
    assert any("authority 'nobody' is not in trust policy" in p for p in found), found
    assert any("may not publish list 'not-authorised'" in p for p in found), found


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    text = demo(tmp_path).replace("[admin]", '[admin]\ntoken_file = "missing-token"')
    found = preflight.problems(parse(text, tmp_path))
    assert found == [
        f"admin.token_file: cannot read {tmp_path / 'missing-token'}: No such file or directory"
    ]


@pytest.mark.parametrize(
    ("http", "clash"),
    [
        (
            {"listen": ["127.0.0.1:5353"]},
            "http.listen.0: 127.0.0.1:5353 (tcp) is also claimed by dns",
        ),
        ({"tls_listen": ["0.0.0.0:5353"]}, "http.tls_listen.0: 0.0.0.0:5353 (tcp)"),
        ({"listen": ["127.0.0.1:8080"], "tls_listen": ["127.0.0.1:8080"]}, "http.tls_listen.0"),
    ],
)
def test_listeners_on_one_port_are_found(
    tmp_path: Path, http: dict[str, object], clash: str
) -> None:
    text = demo_config(tmp_path, ("127.0.0.1", 53), http=http, listen=["127.0.0.1:5353"])
    found = preflight.problems(parse(text, tmp_path))
    assert any(p.startswith(clash) for p in found), found


def test_other_addresses_and_port_zero_never_clash(tmp_path: Path) -> None:
    text = demo_config(
        tmp_path, ("127.0.0.1", 53), http={"listen": ["127.0.0.2:5353"]}, listen=["127.0.0.1:5353"]
    )
    assert preflight.problems(parse(text, tmp_path)) == []


def test_check_config_reports_every_problem_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = demo_config(
        tmp_path, ("127.0.0.1", 53), http={"listen": ["127.0.0.1:5353"]}, listen=["127.0.0.1:5353"]
    )
    (tmp_path / "feeds" / "trust.dsse").unlink()
    conf = tmp_path / "blockd.toml"
    conf.write_text(text)
    assert main(["check-config", str(conf)]) == 1
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "trust.pinned" in err and "http.listen.0" in err


def test_field_and_cross_field_errors_come_together_without_a_dump() -> None:
    text = """
demo = true
[trust]
pinned = "x"
[dns]
listen = ["127.0.0.1:99999", "localhost:53"]
ttl = "x"
[audit.records]
enabled = true
keep_min_days = 30
keep_max_days = 10
[[lists]]
authority = "a"
list = "l"
source = "file:///x"
[[lists]]
authority = "a"
list = "l"
source = "file:///y"
"""
    with pytest.raises(ConfigError) as caught:
        parse(text, Path("/tmp"))
    lines = str(caught.value).splitlines()
    assert lines[0].endswith("5 problem(s)")
    assert lines[1] == (
        "  dns.listen.0: the port must be a number from 0 to 65535 (0: any free port) "
        "(got '127.0.0.1:99999')"
    )
    assert lines[2].startswith("  dns.listen.1: must be ADDRESS:PORT with a literal IP")
    assert lines[3].startswith("  dns.ttl: ")
    assert lines[4] == "  audit.records: keep_max_days (10) must not be below keep_min_days (30)"
    assert lines[5] == "  lists: lists configured twice: a/l"
    assert all(len(line) < 200 for line in lines)  # one line each, never the whole config


def test_a_cross_field_error_alone_is_one_short_line() -> None:
    text = 'demo = true\n[trust]\npinned = "x"\n[audit.records]\nkeep_min_days = 30\n'
    text += "keep_max_days = 10\n"
    with pytest.raises(ConfigError) as caught:
        parse(text, Path("/tmp"))
    assert str(caught.value).splitlines()[1:] == [
        "  audit.records: keep_max_days (10) must not be below keep_min_days (30)"
    ]


def test_a_control_socket_blockd_could_not_make_is_found(tmp_path: Path) -> None:
    text = demo(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "control.sock").write_text("an operator's file")
    [problem] = preflight.problems(parse(text, tmp_path))
    assert problem.startswith("state.dir: ") and "exists and is not a socket" in problem
    long = tmp_path / ("d" * 110) / "c.sock"
    text = text.replace("[admin]", f'[admin]\ncontrol_socket = "{long}"')
    [problem] = preflight.problems(parse(text, tmp_path))
    assert problem.startswith("admin.control_socket: ") and "too long" in problem


# -- the operator's settings, and the log's names ----------------------------------------------


def test_check_config_names_every_setting_only_the_demo_may_leave_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "blockd.toml"
    conf.write_text(demo(tmp_path).replace("demo = true", "", 1))
    assert main(["check-config", str(conf)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0] == f"blockd: error: {conf}: 8 problem(s)"  # dns.operator is set
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        *(f"http.notice.{k}" for k in OPERATOR["http.notice"]),
        "audit.origin",
    ]
    assert all("required outside the demo" in line for line in lines[1:])
    assert "Traceback" not in captured.err and "{" not in captured.err


async def never_start(*_: object) -> None:
    """Stand in for what `run` starts: reaching it means blockd did not refuse."""
    raise AssertionError("blockd started")


def test_run_refuses_a_config_that_leaves_out_its_operator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blockd.daemon.serve", never_start)
    conf = tmp_path / "blockd.toml"
    conf.write_text(demo(tmp_path).replace("demo = true", "", 1))
    assert main(["run", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert "audit.origin: required outside the demo" in err
    assert not (tmp_path / "state").exists()  # refused before anything was started


def old_log(tmp: Path) -> Path:
    """Keep a real audit log in tmp/state/audit under other names than OPERATOR's."""
    directory = tmp / "state" / "audit"
    log = open_log(directory, "isp.test/blockd/old", "isp.test-old")
    log.append([{"time": "2026-11-23T12:00:00Z", "type": "t"}])
    log.sign_checkpoint("2026-11-23T12:00:01Z")
    log.close()
    return directory


def test_check_config_finds_a_log_kept_under_other_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = old_log(tmp_path)
    conf = tmp_path / "blockd.toml"
    conf.write_text(demo_config(tmp_path, ("127.0.0.1", 53), demo=False))
    assert preflight.problems(parse(conf.read_text(), tmp_path)) == [
        f"audit.origin: the log {directory / 'log.db'} is named 'isp.test/blockd/old', not "
        "'isp.test/blockd/test': a log's origin never changes (set audit.origin back, or keep "
        "a new log in another audit.dir)",
        f"audit.key_name: the log key {directory / 'log.key'} is named 'isp.test-old', not "
        "'isp.test/blockd/test': a log's key name never changes (set audit.key_name to it, or "
        "keep a new log in another audit.dir)",
    ]
    assert main(["check-config", str(conf)]) == 1
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "'isp.test/blockd/old'" in err


def test_run_refuses_a_log_kept_under_another_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blockd.app.App.start", never_start)
    old_log(tmp_path)
    conf = tmp_path / "blockd.toml"
    text = demo_config(tmp_path, ("127.0.0.1", 53), demo=False)
    conf.write_text(text.replace("[audit]", '[audit]\nkey_name = "isp.test-old"'))
    assert main(["run", "--config", str(conf)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("blockd: error: audit.origin: the log ")
    assert "'isp.test/blockd/old', not 'isp.test/blockd/test'" in line
