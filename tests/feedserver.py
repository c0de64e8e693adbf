"""A real feed server on loopback: HTTPS with a throwaway trustme CA, scripted per path.

Use the `feed_server` fixture (or `plain_feed_server`, plain HTTP) from a test module with either

    pytest_plugins = ["tests.feedserver"]            # in the module or in tests/conftest.py

or

    from tests.feedserver import feed_server  # noqa: F401

(the import form makes ruff report F811 on each test parameter named `feed_server`; prefer
`pytest_plugins`, and import `FeedServer` only under `TYPE_CHECKING` so that pytest can still
rewrite this module's asserts). Outside pytest, `async with FeedServer() as server:` does the same.

    route = feed_server.route("/iwf/list.dsse", b"...", etag='"v1"')
    policy = FetchPolicy(..., ca_file=feed_server.ca_file)
    await fetcher.fetch(feed_server.url("/iwf/list.dsse"), policy)
    assert route.requests == 1
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest_asyncio
import trustme
from aiohttp import web

HOST = "127.0.0.1"


@dataclass
class Route:
    """What the server does for one path, and what it saw there."""

    content: bytes = b""
    status: int = 200  # non-200: sent with `content` as the body (add Location via `headers`)
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None  # sent as ETag; a matching If-None-Match gets 304
    last_modified: str | None = None  # sent as Last-Modified; If-Modified-Since >= it gets 304
    trickle: tuple[int, float] | None = None  # send `content` N bytes every T seconds
    oversize: bool = False  # stream endless data without Content-Length
    fail_first: int = 0  # answer the first N requests with `fail_status`
    fail_status: int = 503
    retry_after: str | None = None  # Retry-After sent with the failures
    chunk: int = 16 * 1024  # write size in oversize mode

    requests: int = 0  # requests seen for this path
    request_headers: list[dict[str, str]] = field(default_factory=list)
    sent: int = 0  # body bytes written in streaming modes (trickle, oversize)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)  # client went away


class FeedServer:
    """An aiohttp.web server on 127.0.0.1 (OS-picked port) serving scripted routes."""

    def __init__(self, *, tls: bool = True) -> None:
        """Serve HTTPS with a fresh CA, or plain HTTP when tls is False."""
        self.tls = tls
        self.ca = trustme.CA()
        self.port = 0
        self._routes: dict[str, Route] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._runner: web.AppRunner | None = None

    @property
    def ca_file(self) -> str:
        """Return the path of the CA bundle (PEM) that signed the server certificate."""
        assert self._tmp is not None, "FeedServer is not running"
        return str(Path(self._tmp.name) / "ca.pem")

    def url(self, path: str) -> str:
        """Return the absolute URL of path on this server."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{HOST}:{self.port}{path}"

    def route(
        self,
        path: str,
        content: bytes = b"",
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
        trickle: tuple[int, float] | None = None,
        oversize: bool = False,
        fail_first: int = 0,
        fail_status: int = 503,
        retry_after: str | None = None,
    ) -> Route:
        """Serve content at path as described (see Route); return the Route to inspect later."""
        route = Route(
            content,
            status=status,
            headers=dict(headers or {}),
            etag=etag,
            last_modified=last_modified,
            trickle=trickle,
            oversize=oversize,
            fail_first=fail_first,
            fail_status=fail_status,
            retry_after=retry_after,
        )
        self._routes[path] = route
        return route

    async def __aenter__(self) -> Self:
        self._tmp = tempfile.TemporaryDirectory(prefix="feedserver-")
        self.ca.cert_pem.write_to_path(self.ca_file)
        context: ssl.SSLContext | None = None
        if self.tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ca.issue_cert(HOST, "localhost").configure_cert(context)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0, ssl_context=context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = self._routes.get(request.path)
        if route is None:
            return web.Response(status=404)
        route.requests += 1
        route.request_headers.append(dict(request.headers))
        if route.requests <= route.fail_first:
            headers = {"Retry-After": route.retry_after} if route.retry_after else {}
            return web.Response(status=route.fail_status, headers=headers)
        headers = dict(route.headers)
        if route.etag is not None:
            headers["ETag"] = route.etag
        if route.last_modified is not None:
            headers["Last-Modified"] = route.last_modified
        if route.status != 200:
            return web.Response(status=route.status, body=route.content, headers=headers)
        if _not_modified(request, route):
            return web.Response(status=304, headers=headers)
        if route.oversize:
            return await self._stream(request, route, headers, endless=True)
        if route.trickle is not None:
            return await self._stream(request, route, headers, endless=False)
        return web.Response(body=route.content, headers=headers)

    async def _stream(
        self, request: web.Request, route: Route, headers: dict[str, str], *, endless: bool
    ) -> web.StreamResponse:
        """Stream endless data, or trickle content; note when the client goes away."""
        response = web.StreamResponse(headers=headers)
        if not endless:
            response.content_length = len(route.content)
        await response.prepare(request)
        try:
            if endless:
                block = b"x" * route.chunk
                while True:
                    await response.write(block)
                    route.sent += len(block)
                    # Yield, so the loop can notice the client hanging up: writes to a TLS
                    # transport whose peer has gone may never block, and would spin forever.
                    await asyncio.sleep(0)
            else:
                assert route.trickle is not None
                size, interval = route.trickle
                for start in range(0, len(route.content), size):
                    await response.write(route.content[start : start + size])
                    route.sent += len(route.content[start : start + size])
                    await asyncio.sleep(interval)
                await response.write_eof()
        except ConnectionError:
            route.disconnected.set()
        except asyncio.CancelledError:
            route.disconnected.set()
            raise
        return response


def _not_modified(request: web.Request, route: Route) -> bool:
    """Say whether the request's validators match the route (RFC 9110 section 13.1)."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and route.etag is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or route.etag.removeprefix("W/") in tags
    since = request.headers.get("If-Modified-Since")
    if since is not None and route.last_modified is not None:
        try:
            return email.utils.parsedate_to_datetime(since) >= email.utils.parsedate_to_datetime(
                route.last_modified
            )
        except (TypeError, ValueError):
            return False
    return False


@pytest_asyncio.fixture
async def feed_server() -> AsyncIterator[FeedServer]:
    """Yield a running HTTPS FeedServer; its CA bundle is at `feed_server.ca_file`."""
    async with FeedServer() as server:
        yield server


@pytest_asyncio.fixture
async def plain_feed_server() -> AsyncIterator[FeedServer]:
    """Yield a running plain-HTTP FeedServer (for tests of refusing or allowing http://)."""
    async with FeedServer(tls=False) as server:
        yield server
