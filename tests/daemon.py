"""Running blockd in tests: the demo config on loopback ports, a daemon, DNS questions.

Shared by the integration tests of every room (DNS, HTTP, admin, audit, deploy).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dnslib

from blockd.app import App
from blockd.config import parse
from blockd.serving import QueryPath
from tests.factories import operator_toml

ROOT = Path(__file__).resolve().parents[1]


def demo_config(
    tmp: Path,
    upstream: tuple[str, int] | None,
    *,
    http: dict[str, Any] | None = None,
    admin: dict[str, Any] | None = None,
    demo: bool = True,
    **dns: Any,
) -> str:
    """A config enforcing copies of the demo lists, DNS and HTTP on OS-picked loopback ports.

    With demo=False it is a production config: no `demo = true`, and it names its operator
    (tests.factories.OPERATOR), as production must.
    """
    feeds = tmp / "feeds"
    shutil.copytree(ROOT / "feeds/demo", feeds, ignore=shutil.ignore_patterns("keys"))
    settings = {
        "listen": ["127.0.0.1:0"],
        "upstreams": [f"{upstream[0]}:{upstream[1]}"] if upstream else [],
        "attempt_timeout": 0.5,
        "total_timeout": 1.5,
        "operator": "Test ISP",
        **dns,
    }
    # The demo: DNS forwards from the start (tests of fail-closed set dns.start themselves).
    lines = [
        "demo = true" if demo else "",
        f'[trust]\npinned = "{feeds}/trust.dsse"',
        f'[state]\ndir = "{tmp}/state"',
        "[dns]",
    ]
    for k, v in settings.items():
        lines.append(f"{k} = {_toml(v)}")
    http_settings = {"listen": ["127.0.0.1:0"], "tls_listen": ["127.0.0.1:0"], **(http or {})}
    lines.append("[http]")
    lines += [f"{k} = {_toml(v)}" for k, v in http_settings.items()]
    if not demo:
        lines.append(operator_toml("http.notice", "audit"))
    lines.append("[admin]")
    lines += [f"{k} = {_toml(v)}" for k, v in {"listen": ["127.0.0.1:0"], **(admin or {})}.items()]
    for name, action in (
        ("demo-hosts", "notice"),
        ("demo-urls", "notice"),
        ("demo-hashed", "nxdomain"),
    ):
        lines.append(
            f'[[lists]]\nauthority = "demo-authority"\nlist = "{name}"\n'
            f'source = "file://{feeds}/{name}.dsse"\naction = "{action}"'
        )
    return "\n".join(lines)


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml(k)} = {_toml(x)}" for k, x in v.items()) + " }"
    return str(v)


@contextlib.asynccontextmanager
async def running(
    text: str, tmp: Path, *, sync: bool = True, write: bool = False
) -> AsyncIterator[App]:
    """Run blockd on config text: synced from its lists (file://) unless told not to, the
    text written to tmp/blockd.toml first if asked (for reload and the CLI); stop it after."""
    conf = tmp / "blockd.toml" if write else None
    if conf is not None:
        conf.write_text(text)
    app = App(parse(text, tmp), conf)
    await app.start()
    try:
        if sync:
            await app.feeds.sync_all()
        yield app
    finally:
        await app.stop()


def port(app: App, transport: str = "udp") -> int:
    return next(p for t, _, p in app.listeners() if t == transport)


async def ask(
    app: App, name: str, qtype: str = "A", *, edns: list[Any] | None = None, tcp: bool = False
) -> dnslib.DNSRecord:
    q = dnslib.DNSRecord.question(name, qtype)
    if edns is not None:
        q.add_ar(dnslib.EDNS0(udp_len=1232, opts=edns))
    raw = await send(app, q.pack(), tcp=tcp)
    assert raw is not None
    reply = dnslib.DNSRecord.parse(raw)
    assert reply.header.id == q.header.id
    return reply


async def send(app: App, data: bytes, *, tcp: bool = False, wait: float = 3.0) -> bytes | None:
    loop = asyncio.get_running_loop()
    if tcp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port(app, "tcp"))
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        try:
            async with asyncio.timeout(wait):
                (size,) = struct.unpack("!H", await reader.readexactly(2))
                return await reader.readexactly(size)
        finally:
            writer.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port(app)))
        await loop.sock_sendall(sock, data)
        async with asyncio.timeout(wait):
            return await loop.sock_recv(sock, 65535)
    except TimeoutError:
        return None
    finally:
        sock.close()


def ede(reply: dnslib.DNSRecord) -> list[tuple[int, bytes]]:
    out = []
    for rr in reply.ar:
        if rr.rtype == dnslib.QTYPE.OPT:
            for opt in rr.rdata:
                if opt.code == 15:
                    out.append((struct.unpack("!H", opt.data[:2])[0], bytes(opt.data[2:])))
    return out


def one(app: App) -> QueryPath:
    """Return the query path of a blockd that answers in one process."""
    assert app.path is not None, "blockd runs worker processes"
    return app.path


async def eventually(check: Any, within: float = 10.0) -> None:
    """Wait until check() is true (what the server records after the client has its data)."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling the server's own state
            await asyncio.sleep(0.05)
