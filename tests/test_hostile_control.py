"""A hostile client against the operator API: the control socket, the admin listener, the CLI.

A real daemon (the demo lists on loopback); every hostile request must get a 4xx (never a
500, never a hang), change nothing it should not, and leave the daemon answering DNS.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from blockd.app import App
from blockd.cli import main
from tests.daemon import ask, demo_config, running

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

pytestmark = pytest.mark.slow
TOKEN = "hostile-test-token-0123456789"


@pytest.fixture
async def daemon(tmp_path: Path, upstream: Upstream) -> AsyncIterator[App]:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    text = demo_config(tmp_path, upstream.addr, admin={"token_file": str(token)})
    async with running(text, tmp_path, write=True) as app:
        yield app


def sock(tmp: Path) -> Path:
    return tmp / "state" / "control.sock"


async def exchange_unix(path: Path, data: bytes, wait: float = 20.0) -> tuple[int, bytes]:
    """Send raw bytes over the control socket; return the status (0: closed, no answer)."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    return await _exchange(reader, writer, data, wait)


async def exchange_tcp(app: App, data: bytes, wait: float = 20.0) -> tuple[int, bytes]:
    host, port = app.admin.bound[0]
    reader, writer = await asyncio.open_connection(host, port)
    return await _exchange(reader, writer, data, wait)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, wait: float
) -> tuple[int, bytes]:
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(wait):
            raw = await reader.read()
    except ConnectionResetError:
        raw = b""
    finally:
        writer.close()
    if not raw:
        return 0, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def request(method: str, target: str, body: bytes = b"", headers: str = "") -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


async def call(tmp: Path, method: str, target: str, body: object = None) -> tuple[int, bytes]:
    data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    return await exchange_unix(sock(tmp), request(method, target, data))


def versions(app: App) -> dict[str, int]:
    return dict(app.feeds.snapshot.versions)


async def still_serving(app: App, tmp: Path) -> None:
    reply = await ask(app, "hostile-check.example")
    assert reply.header.id
    status, body = await call(tmp, "GET", "/api/v1/status")
    assert status == 200 and json.loads(body)["enforcing"] == versions(app)


NESTED = b'{"version": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
BAD_BODIES: list[tuple[str, bytes]] = [
    ("/api/v1/sync", b'{"lists": "x"}'),
    ("/api/v1/sync", b'{"lists": [1]}'),
    ("/api/v1/sync", b'{"lists": null}'),
    ("/api/v1/sync", b"[]"),
    ("/api/v1/sync", b'{"lists": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
    ("/api/v1/sync", b"{not json"),
    ("/api/v1/sync", b"\xff\xfe"),
    ("/api/v1/lists/demo-authority/demo-hosts/approve", b'{"version": true}'),
    ("/api/v1/lists/demo-authority/demo-hosts/approve", b'{"version": 1e309}'),
    ("/api/v1/lists/demo-authority/demo-hosts/approve", b'{"version": 1.0}'),
    ("/api/v1/lists/demo-authority/demo-hosts/approve", b'{"version": "1"}'),
    ("/api/v1/lists/demo-authority/demo-hosts/approve", b'{"version": NaN}'),
    ("/api/v1/lists/demo-authority/demo-hosts/approve", b'{"version": ' + b"9" * 5000 + b"}"),
    ("/api/v1/lists/demo-authority/demo-hosts/approve", NESTED),
    ("/api/v1/lists/demo-authority/demo-hosts/approve", b""),
    ("/api/v1/check", b'{"targets": "x"}'),
    ("/api/v1/check", b'{"targets": []}'),
    ("/api/v1/check", b'{"targets": [1, 2]}'),
    ("/api/v1/check", json.dumps({"targets": ["a.example"] * 101}).encode()),
    ("/api/v1/check", b'{"targets": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
]


async def test_wrong_json_gets_400_and_changes_nothing(daemon: App, tmp_path: Path) -> None:
    before = versions(daemon)
    wrong = []
    for target, body in BAD_BODIES:
        status, answer = await call(tmp_path, "POST", target, body)
        if status != 400:
            wrong.append((target, body[:40], status, answer[:120]))
    assert not wrong
    assert versions(daemon) == before
    await still_serving(daemon, tmp_path)


async def test_approving_absurd_versions_is_refused(daemon: App, tmp_path: Path) -> None:
    before = versions(daemon)
    for version in (-1, 0, 10**30, -(10**30), 2**63, 2**64):
        status, _ = await call(
            tmp_path,
            "POST",
            "/api/v1/lists/demo-authority/demo-hosts/approve",
            {"version": version},
        )
        assert status == 409, version
    assert versions(daemon) == before


@pytest.mark.parametrize(
    "target",
    [
        "/api/v1/lists/..%2F..%2Fetc/passwd/rollback",
        "/api/v1/lists/%2E%2E/%2E%2E/rollback",
        "/api/v1/lists/demo-authority%2Fdemo-hosts/x/rollback",
        "/api/v1/lists/demo-authority/demo-hosts%0A/rollback",
        "/api/v1/lists/demo-authority/demo-hosts%00/rollback",
        "/api/v1/lists/demo-authority/..%2Fdemo-hosts/rollback",
        "/api/v1/lists/demo-authority/demo-hosts/rollback/..",
        "/api/v1/lists/demo-authority/demo-hosts/../../sync",
        "/api/v1/lists//demo-hosts/rollback",
    ],
)
async def test_path_tricks_in_rollback_touch_no_list(
    daemon: App, tmp_path: Path, target: str
) -> None:
    before = versions(daemon)
    files = sorted(p.name for p in (tmp_path / "state").rglob("*"))
    status, _ = await call(tmp_path, "POST", target)
    assert 400 <= status < 500, status
    assert versions(daemon) == before
    assert sorted(p.name for p in (tmp_path / "state").rglob("*")) == files


async def test_malformed_http_unknown_paths_and_big_requests(daemon: App, tmp_path: Path) -> None:
    path = sock(tmp_path)
    for data in (
        b"GARBAGE\r\n\r\n",
        b"POST /api/v1/sync HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /api/v1/sync HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 9\r\n\r\nx",
        b"GET /api/v1/status HTTP/1.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"GET /api/v1/status HTTP/1.1\r\n" + b"X-H: v\r\n" * 10_000 + b"\r\n",
        b"\x16\x03\x01\x00\x05hello",
    ):
        status, _ = await exchange_unix(path, data)
        assert status == 0 or 400 <= status < 500, (data[:40], status)
    for target in ("/api/v2/sync", "/api/v1/sync/", "/api/v1//sync", "/api/v1/Sync", "/x"):
        status, _ = await call(tmp_path, "POST", target)
        assert status in (404, 405), (target, status)
    status, _ = await call(tmp_path, "GET", "/api/v1/sync")
    assert status == 405
    big = json.dumps({"targets": ["a" * 1000] * 70}).encode()
    assert len(big) > 64 * 1024
    status, _ = await call(tmp_path, "POST", "/api/v1/check", big)
    assert status == 413
    status, _ = await call(tmp_path, "POST", "/api/v1/sync", b" " * (64 * 1024 + 1))
    assert status == 413
    await still_serving(daemon, tmp_path)


async def test_silent_clients_and_concurrent_operations(daemon: App, tmp_path: Path) -> None:
    silent = [await asyncio.open_unix_connection(str(sock(tmp_path))) for _ in range(20)]
    _, slow_w = await asyncio.open_unix_connection(str(sock(tmp_path)))
    slow_w.write(b"POST /api/v1/sync HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    try:
        calls: list[Any] = []
        for _ in range(4):
            calls += [
                call(tmp_path, "POST", "/api/v1/sync"),
                call(tmp_path, "POST", "/api/v1/lists/demo-authority/demo-hosts/rollback"),
                call(tmp_path, "POST", "/api/v1/reload"),
                call(tmp_path, "POST", "/api/v1/check", {"targets": ["a.example"]}),
                ask(daemon, "concurrent.example"),
            ]
        async with asyncio.timeout(60):  # a deadlock fails here instead of hanging the suite
            results = await asyncio.gather(*calls)
        statuses = [r[0] for r in results if isinstance(r, tuple)]
        assert all(s in (200, 409) for s in statuses), statuses
        await still_serving(daemon, tmp_path)
        status, body = await call(tmp_path, "GET", "/api/v1/status")
        answer = json.loads(body)
        assert status == 200
        assert answer["enforcing"] == versions(daemon) and answer["ready"] is True
    finally:
        for _, w in silent:
            w.close()
        slow_w.close()


async def test_the_tcp_listener_wants_the_token_whatever_the_headers(
    daemon: App, tmp_path: Path
) -> None:
    control = str(sock(tmp_path))
    before = versions(daemon)
    attempts = [
        request("POST", "/api/v1/sync"),
        request("POST", "/api/v1/sync", headers="X-Forwarded-For: 127.0.0.1\r\n"),
        request("POST", "/api/v1/sync", headers="X-Real-IP: 127.0.0.1\r\nForwarded: for=unix\r\n"),
        request("POST", "/api/v1/sync").replace(
            b"Host: localhost", f"Host: unix:{control}".encode()
        ),
        request("POST", "/api/v1/sync").replace(b"Host: localhost", b"Host: "),
        request("POST", f"http+unix://{control.replace('/', '%2F')}/api/v1/sync"),
        request("POST", "http://localhost/api/v1/sync"),
        request("POST", "http://localhost/healthz/../api/v1/sync"),
        request("POST", "/healthz/../api/v1/sync"),
        request("POST", "/healthz/%2e%2e/api/v1/sync"),
        request("POST", "/api/v1/%73ync"),
        request("POST", "//api/v1/sync"),
        request("POST", "/api/v1/sync", headers="Authorization: Bearer \r\n"),
        request("POST", "/api/v1/sync", headers=f"Authorization: bearer{TOKEN}\r\n"),
        request("POST", "/api/v1/sync", headers=f"Authorization: Basic {TOKEN}\r\n"),
        request("POST", "/api/v1/sync", headers=f"X-Authorization: Bearer {TOKEN}\r\n"),
        request("GET", f"/api/v1/status?token={TOKEN}"),
    ]
    for data in attempts:
        status, _ = await exchange_tcp(daemon, data)
        assert status in (0, 400, 401, 403, 404, 405), (data, status)
    daemon.admin._failures.clear()  # the guessing penalty would slow the rest of this test
    status, _ = await exchange_tcp(
        daemon, request("GET", "/api/v1/status", headers=f"Authorization: Bearer {TOKEN}\r\n")
    )
    assert status == 200
    assert versions(daemon) == before


def cli(*argv: object) -> asyncio.Future[int]:
    """Run the CLI in a thread; argparse's usage errors exit 2 (SystemExit) as a process would."""

    def run() -> int:
        try:
            return main([str(a) for a in argv])
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else 2

    return asyncio.ensure_future(asyncio.to_thread(run))


async def test_the_cli_with_hostile_arguments(
    daemon: App, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "blockd.toml"
    before = versions(daemon)
    cases: list[tuple[object, ...]] = [
        ("approve", "a/b", "--", "-1"),
        ("approve", "demo-authority/demo-hosts", 10**30),
        ("approve", "demo-authority/demo-hosts", "--", str(-(10**30))),
        ("approve", "demo-authority/demo-hosts", "1e3"),
        ("approve", "demo-authority/demo-hosts\n", 1),
        ("approve", "demo-authority\n/demo-hosts", 1),
        ("approve", "../../etc/passwd", 1),
        ("rollback", "demo-authority/demo-hosts\nx"),
        ("rollback", "a/b/c"),
        ("rollback", "/"),
        ("rollback", "%2e%2e/%2e%2e"),
        ("sync", "demo-authority/demo-hosts\n"),
        ("sync", "no-such/list"),
    ]
    for args in cases:
        rc = await cli(*args, "-c", conf)
        out = capsys.readouterr()
        assert rc in (1, 2), (args, rc, out)
        assert "Traceback" not in out.err + out.out, args
        assert out.err.strip(), args
    assert versions(daemon) == before
    await still_serving(daemon, tmp_path)
