"""The blockd command: authority, regulator and operator tools, end to end."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blockd.cli import main, parser, resolve_config
from blockd.feeds.keys import load_private
from tests.factories import authority, operator_toml, signed_list, signed_trust, trust

ROOT = Path(__file__).resolve().parents[1]
BLOCKD = [sys.executable, "-m", "blockd.cli"]


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def authority_setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """Keys made with keygen, a trust policy signed with sign-trust."""
    assert run(capsys, "keygen", "--out", tmp_path / "reg")[0] == 0
    assert run(capsys, "keygen", "--out", tmp_path / "auth")[0] == 0
    reg_pub = _b64_of(capsys, tmp_path / "reg")
    auth_pub = _b64_of(capsys, tmp_path / "auth")
    policy = trust([authority("auth", lists=["hosts", "urls", "hashed"])]).model_dump(mode="json")
    policy["regulator"]["keys"] = [reg_pub]
    policy["authorities"][0]["keys"] = [auth_pub]
    policy["expires"] = "2099-01-01T00:00:00Z"
    policy["authorities"][0]["max_age_seconds"] = 10 * 365 * 86400
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    code, out, _ = run(
        capsys,
        "sign-trust",
        tmp_path / "policy.json",
        "--key",
        tmp_path / "reg.key",
        "-o",
        tmp_path / "trust.dsse",
    )
    assert code == 0 and "version 1" in out
    return tmp_path


def _b64_of(capsys: pytest.CaptureFixture[str], prefix: Path) -> str:
    return load_private(prefix.with_suffix(".key")).public.b64


def test_keygen_is_private_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "keygen", "--out", tmp_path / "k")
    assert code == 0 and "keyid" in out
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    code, _, err = run(capsys, "keygen", "--out", tmp_path / "k")
    assert code == 2 and err.startswith("blockd: error:") and err.count("\n") == 1


def test_sign_and_verify_a_list(authority_setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = authority_setup
    (d / "hosts.txt").write_text("# comment\nblocked.example\n\nwww.other.example\n")
    code, out, _ = run(
        capsys,
        "sign-list",
        d / "hosts.txt",
        "--key",
        d / "auth.key",
        "--authority",
        "auth",
        "--list",
        "hosts",
        "--version",
        "3",
        "--format",
        "hosts",
        "--test-host",
        "selftest.example",
        "-o",
        d / "hosts.dsse",
    )
    assert code == 0 and "2 entries" in out
    code, out, _ = run(capsys, "verify", "--trust", d / "trust.dsse", d / "hosts.dsse")
    assert code == 0 and out.startswith("ACCEPT  auth/hosts version 3")
    code, out, _ = run(
        capsys, "verify", "--trust", d / "trust.dsse", d / "hosts.dsse", "--last-version", "4"
    )
    assert code == 1 and out.startswith("REJECT  rollback:")
    code, out, _ = run(
        capsys,
        "verify",
        "--trust",
        d / "trust.dsse",
        d / "hosts.dsse",
        "--at",
        "2100-01-01T00:00:00Z",
    )
    assert code == 1 and "trust-expired" in out


def test_body_beside_and_tampering(
    authority_setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = authority_setup
    (d / "urls.txt").write_text("http://partial.example/listed/page.html\n")
    assert (
        run(
            capsys,
            "sign-list",
            d / "urls.txt",
            "--key",
            d / "auth.key",
            "--authority",
            "auth",
            "--list",
            "urls",
            "--version",
            "1",
            "--format",
            "urls",
            "--body",
            "-o",
            d / "urls.dsse",
        )[0]
        == 0
    )
    assert (d / "urls-1.txt").exists()
    assert run(capsys, "verify", "--trust", d / "trust.dsse", d / "urls.dsse")[0] == 0
    (d / "urls-1.txt").write_text("http://partial.example/other/page.html\n")
    code, out, _ = run(capsys, "verify", "--trust", d / "trust.dsse", d / "urls.dsse")
    assert code == 1 and "digest-mismatch" in out


def test_hashed_list_from_plaintext(
    authority_setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = authority_setup
    (d / "urls.txt").write_text("http://Partial.Example/a/b.html\nhttp://partial.example/c\n")
    assert (
        run(
            capsys,
            "sign-list",
            d / "urls.txt",
            "--key",
            d / "auth.key",
            "--authority",
            "auth",
            "--list",
            "hashed",
            "--version",
            "1",
            "--format",
            "sha256",
            "--hash-from",
            "urls",
            "-o",
            d / "hashed.dsse",
        )[0]
        == 0
    )
    payload = json.loads(
        __import__("base64").b64decode(json.loads((d / "hashed.dsse").read_text())["payload"])
    )
    kinds = [e.split(":")[0] for e in payload["entries"]]
    assert kinds == ["url", "url", "route"]
    assert "partial.example" not in json.dumps(payload["entries"])


def test_sign_trust_refuses_foreign_keys_unless_rotating(
    authority_setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = authority_setup
    code, _, err = run(
        capsys, "sign-trust", d / "policy.json", "--key", d / "auth.key", "-o", d / "t2.dsse"
    )
    assert code == 2 and "--previous-regulator" in err
    assert (
        run(
            capsys,
            "sign-trust",
            d / "policy.json",
            "--key",
            d / "reg.key",
            "--key",
            d / "auth.key",
            "--previous-regulator",
            "-o",
            d / "t2.dsse",
        )[0]
        == 0
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "--trust", "/nonexistent/trust.dsse", "/nonexistent/x.dsse"],
        ["status", "--config", "/nonexistent/blockd.toml"],
        ["sign-trust", "/nonexistent/policy.json", "--key", "/nonexistent/k", "-o", "/tmp/x"],
        ["check-config", "/nonexistent.toml"],
    ],
)
def test_user_mistakes_are_one_line_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("blockd: error:") and err.count("\n") == 1


def test_bad_arguments_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(
            [
                "sign-list",
                "x",
                "--key",
                "k",
                "--authority",
                "a",
                "--list",
                "l",
                "--version",
                "1",
                "--format",
                "hosts",
                "--expires",
                "tomorrow",
                "-o",
                "o",
            ]
        )
    assert e.value.code == 2
    assert "is not a time" in capsys.readouterr().err


def test_operator_commands_against_a_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    (tmp_path / "trust.dsse").write_bytes(
        signed_trust(
            trust(
                expires=__import__("datetime").datetime(
                    2099, 1, 1, tzinfo=__import__("datetime").UTC
                )
            )
        )
    )
    src = tmp_path / "hosts.dsse"

    now = datetime.now(UTC)
    src.write_bytes(
        signed_list(
            ["one.example"],
            version=1,
            issued_at=now - timedelta(hours=1),
            expires=now + timedelta(days=3),
        )
    )
    conf = tmp_path / "blockd.toml"
    conf.write_text(
        f'[trust]\npinned = "trust.dsse"\n[state]\ndir = "state"\n{operator_toml()}\n'
        f'[[lists]]\nauthority = "auth"\nlist = "hosts"\nsource = "file://{src}"\n'
    )
    code, out, _ = run(capsys, "sync", "--config", conf)
    assert code == 0 and "accepted     auth/hosts v1" in out
    src.write_bytes(
        signed_list(
            ["two.example"],
            version=2,
            issued_at=now - timedelta(hours=1),
            expires=now + timedelta(days=3),
        )
    )
    assert run(capsys, "sync", "--config", conf, "auth/hosts")[0] == 0
    code, out, _ = run(
        capsys,
        "check",
        "--config",
        conf,
        "www.two.example",
        "one.example",
        "http://two.example/x",
        "bad..name",
    )
    lines = out.splitlines()
    assert lines[0].startswith("www.two.example: notice (auth/hosts v2, ref ")
    assert lines[1] == "one.example: not blocked"
    assert lines[2].startswith("http://two.example/x: notice")
    assert "invalid" in lines[3]
    code, out, _ = run(capsys, "rollback", "--config", conf, "auth/hosts")
    assert code == 0 and "to v1" in out
    code, out, _ = run(capsys, "status", "--config", conf, "--json")
    [row] = json.loads(out)
    assert row["version"] == 1 and row["held_at_or_below"] == 2 and row["fresh"]
    code, _, err = run(capsys, "approve", "--config", conf, "auth/hosts", "9")
    assert code == 2 and "not quarantined" in err
    code, _, err = run(capsys, "sync", "--config", conf, "auth/nope")
    assert code == 2 and "no configured list" in err


@pytest.mark.slow  # a real subprocess or schedule
def test_demo_runs_as_a_real_command(tmp_path: Path) -> None:
    out = subprocess.run(
        [*BLOCKD, "demo", "--state", str(tmp_path / "state")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "blocked.demo.test: notice (demo-authority/demo-hosts v1" in out
    assert "www.blocked.demo.test: notice" in out
    assert "partial.demo.test: route (demo-authority/demo-urls v1" in out
    assert "http://partial.demo.test/listed/page.html: notice" in out
    assert "http://partial.demo.test/other: not blocked" in out
    assert "example.com: not blocked" in out
    assert "hashed.demo.test: nxdomain (demo-authority/demo-hashed" in out


def _operator_config(tmp_path: Path, entries: list[str]) -> Path:
    """Write a trust policy, a signed list of entries and a configuration that syncs it."""
    now = datetime.now(UTC)
    (tmp_path / "trust.dsse").write_bytes(
        signed_trust(trust(expires=datetime(2099, 1, 1, tzinfo=UTC)))
    )
    src = tmp_path / "hosts.dsse"
    src.write_bytes(
        signed_list(
            entries, version=1, issued_at=now - timedelta(hours=1), expires=now + timedelta(days=3)
        )
    )
    conf = tmp_path / "blockd.toml"
    conf.write_text(
        f'[trust]\npinned = "trust.dsse"\n[state]\ndir = "state"\n{operator_toml()}\n'
        f'[[lists]]\nauthority = "auth"\nlist = "hosts"\nsource = "file://{src}"\n'
    )
    return conf


def test_sync_names_rejected_entries_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _operator_config(tmp_path, ["ok.example", "com", "co.uk", "bad..name", "ok.example"])
    code, out, _ = run(capsys, "sync", "--config", conf)
    assert code == 0
    assert out.splitlines()[0] == (
        "accepted     auth/hosts v1: 1 entry; 4 entries rejected: "
        "2 public-suffix, 1 duplicate, 1 invalid-name"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["sync"],
        ["status", "--json"],
        ["check", "x.example"],
        ["approve", "auth/hosts", "2"],
        ["rollback", "auth/hosts"],
        ["selftest"],
        ["run"],
        ["audit", "key"],
        ["audit", "export"],
        ["audit", "report"],
    ],
)
def test_config_goes_before_or_after_the_command(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Path] = []
    monkeypatch.setenv("BLOCKD_CONFIG", "/env/blockd.toml")

    def record(a: argparse.Namespace) -> int:
        seen.append(a.config)
        return 0

    def run_with(argv: list[str]) -> Path:
        args = parser().parse_args(argv)
        resolve_config(args)
        args.fn = record
        assert args.fn(args) == 0
        return seen[-1]

    assert run_with(["--config", "/a.toml", *command]) == Path("/a.toml")
    assert run_with(["-c", "/a.toml", *command]) == Path("/a.toml")
    name = 2 if command[0] == "audit" else 1
    assert run_with([*command[:name], "--config", "/b.toml", *command[name:]]) == Path("/b.toml")
    assert run_with(["-c", "/a.toml", *command, "-c", "/b.toml"]) == Path("/b.toml")
    assert run_with(command) == Path("/env/blockd.toml")


def test_config_before_the_command_reaches_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = _operator_config(tmp_path, ["one.example"])
    assert run(capsys, "--config", conf, "sync")[0] == 0
    before = run(capsys, "--config", conf, "status", "--json")
    after = run(capsys, "status", "--json", "--config", conf)
    assert before == after and json.loads(before[1])[0]["version"] == 1
    monkeypatch.setenv("BLOCKD_CONFIG", str(conf))
    assert run(capsys, "status", "--json") == after
    code, out, _ = run(capsys, "-c", conf, "check-config")
    assert code == 0 and out.startswith(f"{conf}: ok")
    code, _, err = run(capsys, "--config", conf, "keygen", "--out", tmp_path / "k")
    assert code == 2 and err == "blockd: error: --config: `blockd keygen` reads no configuration\n"
