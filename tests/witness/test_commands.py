"""`blockd witness keygen` and the command line's answers to user mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockd.audit import note
from blockd.audit.cosignature import CosignatureVerifier, Cosigner
from blockd.cli import main


def test_keygen_writes_a_private_key_and_its_vkey_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "w1"
    assert main(["witness", "keygen", "--name", "regulator.example/w1", "-o", str(prefix)]) == 0
    key, pub = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    assert key.stat().st_mode & 0o777 == 0o600
    cosigner = Cosigner.from_skey(key.read_text())
    assert CosignatureVerifier.from_vkey(pub.read_text()) == cosigner.verifier
    assert cosigner.verifier.vkey in capsys.readouterr().out
    assert main(["witness", "keygen", "--name", "x.example/w", "-o", str(prefix)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--log", "no-equals-sign"], "expected ORIGIN=VKEY"),
        (["--log", "isp.example/log=not-a-key"], "not a log vkey"),
        (["--listen", "nowhere"], "expected ADDRESS:PORT"),
    ],
)
def test_run_mistakes_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], said: str
) -> None:
    prefix = tmp_path / "w"
    assert main(["witness", "keygen", "--name", "w.example/w", "-o", str(prefix)]) == 0
    base = {"--key": f"{prefix}.key", "--listen": "127.0.0.1:0", "--state": str(tmp_path / "s")}
    base["--log"] = "isp.example/log=" + note.Signer.from_seed("op", bytes(32)).verifier.vkey
    base[args[0]] = args[1]
    argv = ["witness", "run", *(x for kv in base.items() for x in kv)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1


def test_verify_refuses_a_log_key_as_a_witness_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_vkey = "op+2a4e2b8b+AQ" + "A" * 42 + "="
    bundle = tmp_path / "b.json"
    bundle.write_text("{}")
    code = main(["audit", "verify", str(bundle), "--key", log_vkey, "--witness-key", log_vkey])
    assert code == 2 and "not a witness vkey" in capsys.readouterr().err
