"""The HTTP and HTTPS listeners around HttpFront and TlsFront: sockets and limits only.

A cap on open connections (shared by both) bounds what a flood can hold, and a cap per
client address (an IPv6 /64) keeps one client from holding them all; beyond either a new
connection is closed at once and counted. Clients are counted under a keyed hash that lives
only while the client has a connection open, so no address is kept. Stopping closes the
listeners, then the connections in progress.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
from collections.abc import Awaitable, Callable

from blockd.config import HttpConfig, binding, split_endpoint
from blockd.events import EventBus, HttpProblem, HttpTransport
from blockd.http import h1
from blockd.http.proxy import HttpFront
from blockd.http.tls import TlsFront

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HttpServer:
    """Listeners for the notice/proxy (HTTP) and SNI front (HTTPS)."""

    def __init__(
        self,
        cfg: HttpConfig,
        front: HttpFront,
        tls: TlsFront,
        bus: EventBus,
        *,
        reuse_port: bool = False,
    ) -> None:
        """Prepare; nothing listens until start(). reuse_port: share the ports (workers)."""
        self.cfg = cfg
        self.reuse_port = reuse_port
        self.front = front
        self.tls = tls
        self.bus = bus
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_client: dict[bytes, int] = {}  # keyed hash of the client -> connections
        self._salt = os.urandom(16)  # per process: the hashes mean nothing elsewhere
        self.bound: list[tuple[str, str, int]] = []  # (http|https|demo, address, port)

    async def start(self) -> None:
        """Bind every configured listener (port 0 picks one: see `bound`)."""
        listeners: tuple[tuple[HttpTransport, list[str], Handler], ...] = (
            ("http", self.cfg.listen, self.front.serve),
            ("https", self.cfg.tls_listen, self.tls.serve),
        )
        for kind, endpoints, handler in listeners:
            for endpoint in endpoints:
                host, port = split_endpoint(endpoint)
                with binding(f"http {kind}", host, port):
                    server = await asyncio.start_server(
                        self._guarded(handler, kind),
                        host,
                        port,
                        limit=h1.MAX_HEAD,
                        backlog=1024,
                        reuse_port=self.reuse_port or None,
                    )
                self._servers.append(server)
                bound_port = server.sockets[0].getsockname()[1]
                self.bound.append((kind, host, bound_port))
                self.front.resolver.add_own(host, bound_port)

    def _guarded(self, handler: Handler, kind: HttpTransport) -> Handler:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if len(self._tasks) >= self.cfg.max_connections:
                self.bus.publish(HttpProblem("dropped", "connections", kind))
                writer.close()
                return
            client = self._client(writer)
            held = self._per_client.get(client, 0)
            if held >= self.cfg.max_connections_per_client:
                self.bus.publish(HttpProblem("dropped", "client-connections", kind))
                writer.close()
                return
            self._per_client[client] = held + 1
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await handler(reader, writer)
            except asyncio.CancelledError:
                writer.transport.abort()  # stopping: the connection ends here, not as an error
            finally:
                self._tasks.discard(task)
                left = self._per_client.pop(client) - 1
                if left:
                    self._per_client[client] = left

        return serve

    def _client(self, writer: asyncio.StreamWriter) -> bytes:
        """Return the keyed hash a client's connections are counted under."""
        peer = writer.get_extra_info("peername")
        try:
            address = ipaddress.ip_address(peer[0].partition("%")[0])
        except (TypeError, IndexError, ValueError):
            return b""  # not an IP peer (cannot happen on these listeners): one shared count
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            else:
                address = ipaddress.IPv6Address(address.packed[:8] + bytes(8))  # its /64
        return hashlib.blake2b(address.packed, key=self._salt, digest_size=16).digest()

    @property
    def connections(self) -> int:
        """Return the number of client connections being served."""
        return len(self._tasks)

    async def stop(self, drain: float = 2.0) -> None:
        """Close the listeners; give connections in progress up to drain seconds."""
        for server in self._servers:
            server.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=drain)
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()


async def demo_origin(endpoint: str) -> asyncio.Server:
    """Serve a tiny website standing in for every routed host's origin (`make run` only)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                async with asyncio.timeout(30):
                    head = await reader.readuntil(b"\r\n\r\n")
                req = h1.parse_request(head)
                body = (
                    f"blockd demo origin: you reached {req.host}{req.path}\n"
                    "This page is not blocked: only the listed URL on this host is.\n"
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    b"Content-Length: %d\r\n\r\n%s"
                    % (len(body), body if req.method != "HEAD" else b"")
                )
                await writer.drain()
                if not req.keep_alive:
                    break
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except (h1.HttpError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    host, port = split_endpoint(endpoint)
    with binding("http demo origin", host, port):
        return await asyncio.start_server(answer, host, port, limit=h1.MAX_HEAD)
