"""Hostile requests through blockd to real origins that read request-targets their own way.

Issue 15's classes that depend on how an origin reads a request, proven with the origins
themselves on loopback: Express (npm, pinned; a static server and a WHATWG-URL router, which
read `\\` as `/`), Debian's nginx (which decodes `%2F`, merges `//` and resolves `.`) and
Python's http.server (which ignores a body on GET: CL.0). `tools/ensure-origins` installs
nginx and Express when missing; a failure fails these tests rather than skipping them.

Each hostile form is first asked of the origin directly, to show that the origin really
serves the listed page for it; through blockd, the listed page never comes back and, for
the forms blockd refuses, the origin never sees the request at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from blockd.app import App
from tests.http.test_proxy import TlsOrigin, exchange, start, status
from tests.ports import free_port

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

ROOT = Path(__file__).resolve().parents[2]
LISTED = b"LISTED CONTENT: the demo list names this page"
DIRECT = "User-Agent: direct\r\n"  # marks requests the test sends the origin itself

# Targets that a common origin serves as /listed/page.html (the demo list's URL on
# partial.demo.test), with the origins known to do so.
BACKSLASH = [
    "/listed\\page.html",
    "/x\\..\\listed\\page.html",
    "/listed\\page.html#",
    "/x\\..\\listed\\page.html#",
]
FRAGMENT = ["/listed/page.html#x", "/listed/page.html#/../other.html"]
DECODED = [
    "/listed%2Fpage.html",
    "/listed%2fpage.html",
    "/listed//page.html",
    "/listed/./page.html",
]
DOT_SEGMENTS = ["/x/../listed/page.html", "/listed/%2e/page.html", "/%6Cisted/page.html"]


@pytest.fixture(scope="session")
def origin_tools() -> dict[str, str]:
    """Install nginx and Express if missing; return their paths."""
    done = subprocess.run(
        [str(ROOT / "tools" / "ensure-origins")], capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        pytest.fail(f"tools/ensure-origins failed ({done.returncode}):\n{done.stderr}")
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A document root holding the listed page and a clean one."""
    root = tmp_path / "www"
    (root / "listed").mkdir(parents=True)
    (root / "listed" / "page.html").write_bytes(LISTED)
    (root / "other.html").write_bytes(b"a clean page")
    return root


class RealOrigin:
    """An origin process on a loopback port, and what it logged."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], port: int) -> None:
        self.name = name
        self.process = process
        self.port = port


def wait_listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    """Wait until something accepts connections on port."""
    for _ in range(200):
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
            return
        subprocess.run(["sleep", "0.05"], check=True)
    pytest.fail(f"{what} did not listen on {port}")


@contextlib.contextmanager
def express(tools: dict[str, str], site: Path) -> Iterator[RealOrigin]:
    """Run the Express origin (tests/http/origins/express_origin.js) on site."""
    script = ROOT / "tests" / "http" / "origins" / "express_origin.js"
    process = subprocess.Popen(
        [tools["NODE"], str(script), str(site)],
        stdout=subprocess.PIPE,
        env={"NODE_PATH": tools["EXPRESS"], "PATH": "/usr/bin:/bin"},
    )
    try:
        assert process.stdout is not None
        port = json.loads(process.stdout.readline())["port"]
        wait_listening(port, process, "express")
        yield RealOrigin("express", process, port)
    finally:
        process.kill()
        process.wait()


@contextlib.contextmanager
def nginx(tools: dict[str, str], site: Path) -> Iterator[RealOrigin]:
    """Run Debian's nginx serving site, as an unprivileged static origin."""
    prefix = site.parent / "nginx"
    (prefix / "logs").mkdir(parents=True)
    port = free_port()
    temp = " ".join(
        f"{kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    (prefix / "nginx.conf").write_text(
        f"daemon off; worker_processes 1; pid {prefix}/nginx.pid;\n"
        # As root, nginx's workers would drop to nobody, who cannot read pytest's tmp_path.
        + ("user root;\n" if os.geteuid() == 0 else "")
        + f"error_log {prefix}/logs/error.log;\n"
        "events { worker_connections 64; }\n"
        f"http {{ access_log {prefix}/logs/access.log; {temp}\n"
        f"  uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;\n"
        f"  server {{ listen 127.0.0.1:{port}; root {site}; }} }}\n"
    )
    process = subprocess.Popen(
        [tools["NGINX"], "-c", str(prefix / "nginx.conf"), "-p", str(prefix)],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process, "nginx")
        yield RealOrigin("nginx", process, port)
    finally:
        process.terminate()
        process.wait()


@contextlib.contextmanager
def http_server(site: Path) -> Iterator[RealOrigin]:
    """Run Python's http.server on site, keep-alive (it ignores a body on GET)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", "-p", "HTTP/1.1", "-b", "127.0.0.1", str(port)],
        cwd=site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port, process, "http.server")
        yield RealOrigin("http.server", process, port)
    finally:
        process.kill()
        process.wait()


async def direct(port: int, raw: bytes) -> bytes:
    """Send raw bytes straight to an origin; return all it answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read(-1)
    finally:
        writer.close()


def request(target: str, extra: str = "") -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: partial.demo.test\r\n{extra}Connection: close\r\n\r\n"
    ).encode("latin-1")


@contextlib.asynccontextmanager
async def blockd_before(tmp: Path, upstream: Upstream, origin: RealOrigin) -> AsyncIterator[App]:
    """Run blockd with partial.demo.test's origin fixed to the real origin."""
    async with TlsOrigin() as tls:
        app = await start(tmp, upstream, origin, tls)  # type: ignore[arg-type]
        try:
            yield app
        finally:
            await app.stop()


def proxied_to(site: Path, needle: str) -> list[str]:
    """Return nginx's access-log lines containing needle that came through blockd."""
    access = (site.parent / "nginx" / "logs" / "access.log").read_text()
    return [line for line in access.splitlines() if needle in line and '"direct"' not in line]


async def assert_never_served(
    app: App, origin: RealOrigin, targets: list[str], expect: set[int]
) -> list[str]:
    """Check each target through blockd; return those the origin itself serves as listed."""
    served_directly = []
    for target in targets:
        if LISTED in await direct(origin.port, request(target, DIRECT)):
            served_directly.append(target)
        response = await exchange(app, request(target))
        assert LISTED not in response, (origin.name, target)
        assert status(response) in expect, (origin.name, target, response[:80])
    return served_directly


async def test_express_reads_backslash_as_slash_and_blockd_refuses_it(
    tmp_path: Path, upstream: Upstream, origin_tools: dict[str, str], site: Path
) -> None:
    with express(origin_tools, site) as origin:
        async with blockd_before(tmp_path, upstream, origin) as app:
            assert status(await exchange(app, request("/other.html"))) == 200
            assert status(await exchange(app, request("/listed/page.html"))) == 451
            served = await assert_never_served(app, origin, BACKSLASH + FRAGMENT, {400})
            # The origin really serves the listed page for these: the refusal is what stops it.
            assert set(BACKSLASH) <= set(served)
            served = await assert_never_served(app, origin, DECODED + DOT_SEGMENTS, {451})
            assert served  # Express decodes and merges too; blockd checks the canonical form


async def test_nginx_decodes_and_merges_and_blockd_checks_what_it_serves(
    tmp_path: Path, upstream: Upstream, origin_tools: dict[str, str], site: Path
) -> None:
    with nginx(origin_tools, site) as origin:
        async with blockd_before(tmp_path, upstream, origin) as app:
            assert status(await exchange(app, request("/other.html"))) == 200
            served = await assert_never_served(app, origin, DECODED + DOT_SEGMENTS, {451})
            assert set(DECODED) <= set(served)
            await assert_never_served(app, origin, BACKSLASH + FRAGMENT, {400})
            # Class 8: an empty line before the request line is read as nginx reads it.
            assert status(await exchange(app, b"\r\n" + request("/other.html"))) == 200
            assert not proxied_to(site, "/listed")


SMUGGLED_TRAILER = (
    b"POST /echo HTTP/1.1\r\nHost: partial.demo.test\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: text/plain\r\nConnection: close\r\n\r\n"
    b"3\r\nabc\r\n0\r\nGET /listed/page.html HTTP/1.1\r\nHost: partial.demo.test\r\n\r\n"
)
HUGE_CHUNK = (  # 15 hex digits: an origin that keeps 32 bits reads a 3-byte chunk
    b"POST /echo HTTP/1.1\r\nHost: partial.demo.test\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: text/plain\r\nConnection: close\r\n\r\n"
    b"100000000000003\r\nabc\r\n0\r\n\r\n"
    b"GET /listed/page.html HTTP/1.1\r\nHost: partial.demo.test\r\n\r\n"
)


async def test_trailers_and_chunk_sizes_are_checked_before_express_reads_them(
    tmp_path: Path, upstream: Upstream, origin_tools: dict[str, str], site: Path
) -> None:
    with express(origin_tools, site) as origin:
        async with blockd_before(tmp_path, upstream, origin) as app:
            ok = SMUGGLED_TRAILER.replace(b"GET /listed/page.html HTTP/1.1", b"X-Sum: 1")
            assert body_of(await exchange(app, ok)) == b"echo:abc"  # a real trailer passes
            for raw in (SMUGGLED_TRAILER, HUGE_CHUNK):
                response = await exchange(app, raw)
                assert status(response) == 400
                assert LISTED not in response
        origin.process.kill()
        log, _ = origin.process.communicate()
        assert b"/listed" not in log


async def test_a_trailer_that_is_a_request_never_reaches_nginx(
    tmp_path: Path, upstream: Upstream, origin_tools: dict[str, str], site: Path
) -> None:
    with nginx(origin_tools, site) as origin:
        async with blockd_before(tmp_path, upstream, origin) as app:
            for raw in (SMUGGLED_TRAILER, HUGE_CHUNK):
                response = await exchange(app, raw)
                # nginx may answer the POST (404) before blockd refuses the body (400).
                assert status(response) in {400, 404}
                assert LISTED not in response
            assert not proxied_to(site, "/listed")


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


async def test_a_body_on_get_never_becomes_a_request_at_http_server(
    tmp_path: Path, upstream: Upstream, site: Path
) -> None:
    inner = b"GET /listed/page.html HTTP/1.1\r\nHost: partial.demo.test\r\n\r\n"
    cl0 = b"GET /other.html HTTP/1.1\r\nHost: partial.demo.test\r\nContent-Length: %d\r\n\r\n%s" % (
        len(inner),
        inner,
    )
    with http_server(site) as origin:
        # Straight to the origin, the body is read as a second request for the listed page.
        assert LISTED in await direct(origin.port, cl0 + request("/other.html"))
        async with blockd_before(tmp_path, upstream, origin) as app:
            response = await exchange(app, cl0)
            assert status(response) == 400
            assert LISTED not in response
            # Keep-alive after an ordinary request still works (no reuse trick needed).
            two = request("/other.html", "").replace(b"Connection: close\r\n", b"") + request(
                "/other.html"
            )
            assert (await exchange(app, two)).count(b"HTTP/1.1 200") == 2
        origin.process.kill()
        _, log = origin.process.communicate()
        assert log.count(b"GET /listed/page.html") == 1  # the direct request only
