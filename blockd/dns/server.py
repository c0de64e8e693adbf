"""DNS over UDP and TCP (RFC 7766): the sockets around DnsPipeline, nothing else.

UDP: answered in the datagram callback when no upstream is needed; a forwarded query is a
task, bounded by max_inflight (beyond it, datagrams are dropped and counted, so a flood
cannot grow memory). TCP: length-framed, pipelined queries answered as
they complete (out of order), an idle timeout, and a cap on connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import cast

from blockd.config import DnsConfig, split_endpoint
from blockd.dns import wire
from blockd.dns.pipeline import DnsPipeline
from blockd.events import DnsProblem, EventBus

log = logging.getLogger(__name__)
MAX_TCP_PIPELINE = 64  # queries in progress per TCP connection
UDP_BUFFER = 4 * 1024 * 1024  # socket buffers for query bursts


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        server = self.server
        if not server.accepting:
            return
        # Hot path: blocked, routed, cached and malformed queries are answered right here;
        # only a query that must go upstream becomes a task.
        try:
            decided = server.pipeline.decide(data, str(addr[0]), "udp")
        except Exception:
            log.exception("udp query failed")
            return
        if decided is None:
            return
        if isinstance(decided, bytes):
            if self.transport is not None:
                self.transport.sendto(decided, addr)
            return
        if server.inflight >= server.max_inflight:
            server.bus.publish(DnsProblem("dropped", "overload", "udp"))
            return
        server.inflight += 1
        task = asyncio.get_running_loop().create_task(self._forward(decided, addr))
        server.tasks.add(task)
        task.add_done_callback(server.tasks.discard)

    async def _forward(self, q: wire.Query, addr: tuple[str | int, ...]) -> None:
        try:
            answer = await self.server.pipeline.forward(q, "udp")
            if self.transport is not None:
                self.transport.sendto(answer, addr)
        except Exception:
            log.exception("udp query failed")
        finally:
            self.server.inflight -= 1


def _grow_buffers(sock: socket.socket | None) -> None:
    """Give a UDP socket room for bursts: the kernel drops what does not fit (~270 queries
    with Linux defaults). SO_RCVBUFFORCE passes net.core.rmem_max when we may."""
    if sock is None:
        return
    # Linux: SO_RCVBUFFORCE = 33, SO_SNDBUFFORCE = 32 (not always exported by `socket`).
    pairs = (
        (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF),
        (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF),
    )
    for force, plain in pairs:
        for option in (force, plain):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER)
                break
            except OSError:
                continue


class DnsServer:
    """Listeners on every configured address; start, drain, stop."""

    def __init__(self, cfg: DnsConfig, pipeline: DnsPipeline, bus: EventBus) -> None:
        """Prepare; nothing listens until start()."""
        self.cfg = cfg
        self.pipeline = pipeline
        self.bus = bus
        self.max_inflight = cfg.max_inflight
        self.inflight = 0
        self.accepting = True
        self.tasks: set[asyncio.Task[None]] = set()
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._connections: set[asyncio.StreamWriter] = set()
        self.bound: list[tuple[str, str, int]] = []  # (transport, address, port)

    async def start(self) -> None:
        """Bind UDP and TCP on every listen address (port 0 picks one: see `bound`)."""
        loop = asyncio.get_running_loop()
        for endpoint in self.cfg.listen:
            host, port = split_endpoint(endpoint)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port)
            )
            self._udp.append(transport)
            _grow_buffers(transport.get_extra_info("socket"))
            port = transport.get_extra_info("sockname")[1]
            self.bound.append(("udp", host, port))
            server = await asyncio.start_server(self._serve_tcp, host, port, limit=65536 + 2)
            self._tcp.append(server)
            self.bound.append(("tcp", host, port))

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.cfg.max_tcp_connections:
            self.bus.publish(DnsProblem("dropped", "tcp-connections", "tcp"))
            writer.close()
            return
        self._connections.add(writer)
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        lock = asyncio.Lock()
        pending: set[asyncio.Task[None]] = set()

        async def answer(data: bytes) -> None:
            try:
                reply = await self.pipeline.handle(data, client, "tcp")
                if reply is not None:
                    async with lock:
                        writer.write(struct.pack("!H", len(reply)) + reply)
                        await writer.drain()
            except (ConnectionError, RuntimeError):
                pass
            except Exception:
                log.exception("tcp query failed")

        try:
            while True:
                async with asyncio.timeout(self.cfg.tcp_idle_timeout):
                    header = await reader.readexactly(2)
                    (size,) = struct.unpack("!H", header)
                    data = await reader.readexactly(size)
                while len(pending) >= MAX_TCP_PIPELINE:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.get_running_loop().create_task(answer(data))
                pending.add(task)
                task.add_done_callback(pending.discard)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if pending:
                await asyncio.wait(pending, timeout=self.cfg.total_timeout + 1)
            self._connections.discard(writer)
            writer.close()

    async def stop(self, drain: float = 5.0) -> None:
        """Stop taking queries, let those in progress finish (up to drain seconds), close."""
        self.accepting = False
        for tcp in self._tcp:
            tcp.close()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=drain)
        for udp in self._udp:
            udp.close()
        for writer in list(self._connections):
            writer.close()
        for tcp in self._tcp:
            await tcp.wait_closed()
        self._udp.clear()
        self._tcp.clear()
