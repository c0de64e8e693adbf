"""A running blockd writes a log that verifies with its public key alone, and nothing private.

Traffic comes from 127.0.0.9 so that a leaked client address would be recognisable on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import dnslib
import jsonschema
import pytest

from blockd.app import App
from blockd.audit import canonical
from blockd.cli import main
from tests.daemon import demo_config, running

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

CLIENT = "127.0.0.9"
CLEAN = "private-unblocked-name.example.com"
SCHEMA = Path(__file__).resolve().parents[2] / "blockd/audit/report.schema.json"


async def dns(app: App, name: str) -> dnslib.DNSRecord:
    port = next(p for t, _, p in app.listeners() if t == "udp")
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((CLIENT, 0))
        s.setblocking(False)
        await loop.sock_sendto(s, dnslib.DNSRecord.question(name).pack(), ("127.0.0.1", port))
        async with asyncio.timeout(5):
            return dnslib.DNSRecord.parse(await loop.sock_recv(s, 4096))


async def http(app: App, host: str) -> bytes:
    port = next(p for k, _, p in app.listeners() if k == "http")
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(CLIENT, 0))
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    async with asyncio.timeout(5):
        data = await reader.read(-1)
    writer.close()
    return data


@pytest.fixture
async def ran(tmp_path: Path, upstream: Upstream) -> Path:
    """Run blockd, send blocked and clean traffic, stop it; return the config file."""
    upstream.add(CLEAN, "A", "192.0.2.44")
    text = demo_config(tmp_path, upstream.addr, allow=["127.0.0.0/8"])
    async with running(text, tmp_path, write=True) as app:
        for _ in range(3):
            assert (await dns(app, "www.blocked.demo.test")).rr
        assert (await dns(app, CLEAN)).rr
        assert (await dns(app, "partial.demo.test")).rr
        assert b" 451 " in await http(app, "blocked.demo.test")
    return tmp_path / "blockd.toml"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


async def test_the_log_verifies_with_the_printed_key_alone(
    ran: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, vkey = run_cli(capsys, "audit", "key", "-c", str(ran))
    assert code == 0 and vkey.startswith("blockd-demo-operator+")
    out = tmp_path / "bundle.json"
    assert run_cli(capsys, "audit", "export", "-c", str(ran), "-o", str(out))[0] == 0
    code, said = run_cli(capsys, "audit", "verify", str(out), "--key", vkey.strip())
    assert code == 0 and said.startswith("OK: entries 0 to ")
    entries = [json.loads(e) for e in json.loads(out.read_text())["entries"]]
    types = [e["type"] for e in entries]
    assert types[0] == "daemon-start" and "daemon-stop" in types
    assert types.count("feed-accepted") == 3 and "policy-activated" in types
    (counts,) = [e for e in entries if e["type"] == "block-counts"]
    rows = {(r["list"], r["action"], r["transport"]): r["count"] for r in counts["counts"]}
    assert rows == {
        ("demo-hosts", "notice", "udp"): 3,
        ("demo-urls", "route", "udp"): 1,
        ("demo-hosts", "notice", "http"): 1,
    }
    # A flipped byte in the bundle fails, naming the entry.
    bundle = json.loads(out.read_text())
    bundle["entries"][2] = bundle["entries"][2].replace('"', "'", 1)
    out.write_text(json.dumps(bundle))
    code, said = run_cli(capsys, "audit", "verify", str(out), "--key", vkey.strip())
    assert code == 1 and "first bad index: 2" in said


async def test_the_transparency_report_matches_the_log(
    ran: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vkey = run_cli(capsys, "audit", "key", "-c", str(ran))[1].strip()
    out = tmp_path / "bundle.json"
    run_cli(capsys, "audit", "export", "-c", str(ran), "-o", str(out))
    code, text = run_cli(
        capsys, "audit", "report", "--bundle", str(out), "--key", vkey, "--format", "json"
    )
    assert code == 0
    report = json.loads(text)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    totals = report["blocks_by_list"]["totals"]
    assert totals == {"dns-blocked": 3, "notice-page": 1, "tls-refused": 0, "dns-routed": 1}
    assert report["source"]["verified"] is True
    code, html = run_cli(capsys, "audit", "report", "-c", str(ran), "--format", "html")
    assert code == 0 and "<script" not in html and "demo-hosts" in html


async def test_export_verify_and_report_name_the_entries_alike(
    ran: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vkey = run_cli(capsys, "audit", "key", "-c", str(ran))[1].strip()
    out = tmp_path / "bundle.json"
    assert main(["audit", "export", "-c", str(ran), "-o", str(out)]) == 0
    exported = capsys.readouterr().err
    size = len(json.loads(out.read_text())["entries"])
    span = f"entries 0 to {size - 1} ({size} entries)"
    assert exported.splitlines()[-1] == f"wrote {out}: {span}"  # after "no daemon is running"
    assert run_cli(capsys, "audit", "verify", str(out), "--key", vkey)[1].startswith(f"OK: {span} ")
    html = run_cli(
        capsys, "audit", "report", "--bundle", str(out), "--key", vkey, "--format", "html"
    )[1]
    assert f"{span}" in html


async def test_nothing_identifying_a_subscriber_is_written(ran: Path, tmp_path: Path) -> None:
    await asyncio.to_thread(scan, tmp_path)


def scan(tmp_path: Path) -> None:
    packed = socket.inet_aton(CLIENT)
    for path in tmp_path.rglob("*"):
        if not path.is_file() or path.name == "blockd.toml":
            continue
        data = path.read_bytes()
        assert CLIENT.encode() not in data, path
        assert packed not in data, path
        assert CLEAN.encode() not in data, path
        assert b"private-unblocked-name" not in data, path


def test_entries_are_canonical_json(tmp_path: Path) -> None:
    assert (
        canonical.canonical({"b": 1, "a": [True, None, "é"]})
        == b'{"a":[true,null,"\xc3\xa9"],"b":1}'
    )


async def tls_hello(app: App, host: str) -> None:
    """Open HTTPS to blockd's TLS front for host; blockd refuses it (or it fails)."""
    port = next(p for k, _, p in app.listeners() if k == "https")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with contextlib.suppress(ssl.SSLError, ConnectionError):
        async with asyncio.timeout(5):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname=host, local_addr=(CLIENT, 0)
            )
            writer.close()


async def test_the_report_tells_blocks_routes_and_self_tests_apart(
    tmp_path: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    text = demo_config(tmp_path, upstream.addr, allow=["127.0.0.0/8"]) + "\n[audit]\nperiod = 60\n"
    async with running(text, tmp_path, write=True) as app:
        # One visit to a blocked site: its DNS answer, then the notice page and HTTPS.
        assert (await dns(app, "blocked.demo.test")).rr
        assert b" 451 " in await http(app, "blocked.demo.test")
        await tls_hello(app, "blocked.demo.test")
        assert (await dns(app, "partial.demo.test")).rr  # a route: not a block
        assert (await app.run_selftest()).passed  # probes the authority's test entry
        assert await app.reload() == "reloaded"  # builds a trial policy: a number skipped
    conf = tmp_path / "blockd.toml"
    vkey = run_cli(capsys, "audit", "key", "-c", str(conf))[1].strip()
    out = tmp_path / "bundle.json"
    assert run_cli(capsys, "audit", "export", "-c", str(conf), "-o", str(out))[0] == 0
    code, raw = run_cli(
        capsys, "audit", "report", "--bundle", str(out), "--key", vkey, "--format", "json"
    )
    assert code == 0
    report = json.loads(raw)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    blocks = report["blocks_by_list"]
    assert blocks["period_seconds"] == [60]
    assert blocks["totals"] == {
        "dns-blocked": 1,
        "notice-page": 1,
        "tls-refused": 1,
        "dns-routed": 1,
    }
    assert blocks["selftest"]["dns-blocked"] >= 1  # the probe's DNS query, at least
    assert blocks["selftest"]["dns-routed"] == 0
    assert report["source"]["vkey"] == vkey
    assert vkey.split("+")[1] == report["source"]["key_id"]
    notes = [a["note"] for a in report["activations"]["items"]]
    assert notes[0] == "the first policy in the log"
    assert any("skipped: a policy built but never put in force" in n for n in notes), notes
    assert "the same list versions as before" in notes[-1], notes
    code, html = run_cli(
        capsys, "audit", "report", "--bundle", str(out), "--key", vkey, "--format", "html"
    )
    assert "counted per hour" not in html and "in periods of 1 min" in html
    assert "DNS answers routed to the URL proxy (not blocks)" in html
    assert f"key id <code>{report['source']['key_id']}</code>" in html and vkey in html
