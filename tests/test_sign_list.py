"""`blockd sign-list` refuses what blockd would refuse, and says which line and why."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from blockd.cli import main
from blockd.policy import entries as entry_rules


@pytest.fixture
def key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """An authority key made with keygen."""
    assert main(["keygen", "--out", str(tmp_path / "auth")]) == 0
    capsys.readouterr()
    return tmp_path / "auth.key"


def sign(
    capsys: pytest.CaptureFixture[str],
    key: Path,
    entries: bytes,
    *extra: str,
    fmt: str = "hosts",
) -> tuple[int, str, str, Path]:
    """Run sign-list on entries; return exit status, stdout, stderr and the output path."""
    src = key.parent / "entries.txt"
    src.write_bytes(entries)
    out = key.parent / "list.dsse"
    out.unlink(missing_ok=True)
    argv = [
        "sign-list",
        str(src),
        "--key",
        str(key),
        "--authority",
        "auth",
        "--list",
        "hosts",
        "--version",
        "1",
        "--format",
        fmt,
        "-o",
        str(out),
        *extra,
    ]
    code = main(argv)
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr, out


def signed_entries(out: Path) -> list[str]:
    payload = json.loads(base64.b64decode(json.loads(out.read_text())["payload"]))
    return list(payload["entries"])


BAD_HOSTS = [
    ("com", "public-suffix"),
    ("co.uk", "public-suffix"),
    ("github.io", "public-suffix"),
    ("bad..name.example", "invalid-name"),
    ("a" * 64 + ".example", "invalid-name"),
    ("x" * 300, "too-long"),
    ("\u0378.example", "invalid-name"),  # unassigned: IDNA cannot encode it,
]


def test_bad_hosts_are_refused_line_by_line_and_nothing_is_written(
    key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "# the list\r\nok.example\r\n" + "".join(f"{e}\r\n" for e, _ in BAD_HOSTS)
    text += "OK.example.\r\n"  # the same host as line 2, once canonical
    code, out, err, dsse = sign(capsys, key, text.encode())
    assert code == 2 and not dsse.exists() and out == ""
    lines = err.splitlines()
    for n, (entry, reason) in enumerate(BAD_HOSTS, start=3):
        [line] = [ln for ln in lines if f"entries.txt:{n}: " in ln]
        assert line.startswith("blockd: error: ") and f": {reason}" in line
        assert repr(entry[:80]) in line
    assert any(": duplicate (the same entry as line 2)" in ln for ln in lines)
    assert lines[-1] == (
        f"blockd: error: {len(BAD_HOSTS) + 1} problem(s) blockd would refuse; "
        "nothing signed (--force signs anyway)"
    )
    assert "Traceback" not in err


def test_sign_list_refuses_exactly_what_blockd_rejects(
    key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = {
        "hosts": ["fine.example", "com", "bad..name", "-x.example", "b\u00fccher.example", "1.2.3"],
        "urls": [
            "http://fine.example/a",
            "http://co.uk/x",
            "http:///nohost",
            "http://bad..name/",
            "ftp://fine.example/",
            "fine.example/no/scheme",
        ],
        "sha256": ["host:" + "a" * 64, "host:" + "A" * 64, "url:abc", "path:" + "b" * 64],
    }
    for fmt, lines in samples.items():
        for line in lines:
            code, _, err, _ = sign(capsys, key, f"{line}\n".encode(), fmt=fmt)
            rejected = entry_rules.build(fmt, [line]).rejected  # type: ignore[arg-type]
            assert (code == 2) == bool(rejected), (fmt, line, err)
            for reason in rejected:
                assert f": {reason} (" in err


def test_force_signs_anyway_with_warnings(key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err, dsse = sign(capsys, key, b"ok.example\ncom\n", "--force")
    assert code == 0 and dsse.exists() and "2 entries" in out
    assert (
        err == "blockd: warning: " + f"{dsse.parent / 'entries.txt'}:2: 'com': public-suffix ("
        "a public suffix or bare TLD: blockd never blocks every site under one)\n"
    )
    assert signed_entries(dsse) == ["ok.example", "com"]


def test_hashed_lines_and_plaintext_to_hash_are_checked(
    key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = "host:" + "0" * 64
    code, _, err, _ = sign(capsys, key, f"{good}\nhost:{'0' * 63}\n".encode(), fmt="sha256")
    assert code == 2 and ":2: 'host:" in err and "invalid-hash" in err
    code, _, err, _ = sign(
        capsys, key, b"ok.example\nco.uk\n", "--hash-from", "hosts", fmt="sha256"
    )
    assert code == 2 and ":2: 'co.uk': public-suffix" in err
    code, _, err, dsse = sign(
        capsys, key, b"ok.example\nco.uk\n", "--hash-from", "hosts", "--force", fmt="sha256"
    )
    assert code == 0 and len(signed_entries(dsse)) == 1  # co.uk has no hash to sign


def test_probes_obey_the_same_rules(key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err, _ = sign(capsys, key, b"ok.example\n", "--test-host", "co.uk")
    assert code == 2 and "--test-host: 'co.uk': public-suffix" in err
    code, _, err, _ = sign(capsys, key, b"ok.example\n", "--test-url", "http://t.example/")
    assert code == 2 and "--test-url: 'http://t.example/': format" in err


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"ok.example\n\xff\xfe.example\n", "entries.txt: line 2: not UTF-8 (byte 11)"),
        ("ok.example\n".encode("utf-16"), "entries.txt: line 1: a NUL byte: not a text file"),
        (b"ok\x00.example\n", "line 1: a NUL byte"),
    ],
)
def test_files_that_are_not_text_are_one_clear_error(
    key: Path, capsys: pytest.CaptureFixture[str], data: bytes, message: str
) -> None:
    code, _, err, dsse = sign(capsys, key, data, "--force")
    assert code == 2 and not dsse.exists()
    assert err.startswith("blockd: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("data", [b"", b"# only\n#comments\n\n   \n", b"\r\n\r\n"])
def test_an_empty_list_is_refused_unless_forced(
    key: Path, capsys: pytest.CaptureFixture[str], data: bytes
) -> None:
    code, _, err, _ = sign(capsys, key, data)
    assert code == 2 and "entries.txt: no-entries (the file is empty or holds only comments)" in err
    code, out, _, dsse = sign(capsys, key, data, "--force")
    assert code == 0 and "0 entries" in out and signed_entries(dsse) == []


def test_odd_but_valid_text(key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A byte-order mark, CRLF, tabs, a last line without its newline.
    code, _, err, dsse = sign(
        capsys, key, b"\xef\xbb\xbfone.example\r\n\ttwo.example \r\nthree.example"
    )
    assert code == 0, err
    assert signed_entries(dsse) == ["one.example", "two.example", "three.example"]
    # A line separator inside a line is not a line break: the entry is one bad entry.
    code, _, err, _ = sign(capsys, key, "a.example\u2028b.example\n".encode())
    assert code == 2 and err.count(": invalid-name") == 1


def test_a_huge_line_is_shown_cut(key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err, _ = sign(capsys, key, b"x" * 5_000_000 + b"\n", fmt="urls")
    assert code == 2
    assert "... (5000000 characters): too-long" in err and len(err) < 1000


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--issued-at", "2019-12-01T00:00:00Z", "--expires", "2020-01-01T00:00:00Z"],
            "--expires: '2020-01-01T00:00:00Z': expired (already past",
        ),
        (["--issued-at", "2099-01-01T00:00:00Z"], "--issued-at: '2099-01-01T00:00:00Z': future"),
    ],
)
def test_dates_blockd_would_refuse(
    key: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, _, err, dsse = sign(capsys, key, b"ok.example\n", *extra)
    assert code == 2 and not dsse.exists() and f"blockd: error: {message}" in err
    code, _, err, dsse = sign(capsys, key, b"ok.example\n", *extra, "--force")
    assert code == 0 and dsse.exists() and f"blockd: warning: {message}" in err


def test_an_empty_validity_period_is_refused_even_forced(
    key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err, dsse = sign(
        capsys,
        key,
        b"ok.example\n",
        "--issued-at",
        "2099-01-02T00:00:00Z",
        "--expires",
        "2099-01-01T00:00:00Z",
        "--force",
    )
    assert code == 2 and not dsse.exists()
    assert err == (
        "blockd: error: --expires 2099-01-01T00:00:00Z is not after "
        "--issued-at 2099-01-02T00:00:00Z\n"
    )


@pytest.mark.parametrize("days", ["0", "-1", "nan", "inf", "1e9", "week"])
def test_expires_in_must_be_a_positive_number_of_days(
    key: Path, capsys: pytest.CaptureFixture[str], days: str
) -> None:
    with pytest.raises(SystemExit) as e:
        sign(capsys, key, b"ok.example\n", "--expires-in", days)
    assert e.value.code == 2
    assert "is not a number of days above 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "field"),
    [(["--authority", "Not An Id"], "authority"), (["--version", "0"], "version")],
)
def test_payload_fields_are_one_line(
    key: Path, capsys: pytest.CaptureFixture[str], extra: list[str], field: str
) -> None:
    code, _, err, _ = sign(capsys, key, b"ok.example\n", *extra)
    assert code == 2 and err.startswith(f"blockd: error: list payload: {field}: ")
    assert err.count("\n") == 1


def test_help_documents_the_time_formats(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["sign-list", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--issued-at TIME RFC 3339 time with its UTC offset, e.g. 2026-01-01T00:00:00Z" in text
    assert "--expires-in DAYS days after --issued-at" in text
