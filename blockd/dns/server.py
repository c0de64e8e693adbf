"""DNS over UDP and TCP (RFC 7766): the sockets around DnsPipeline, nothing else.

UDP: answered as the datagram is read when no upstream is needed; a forwarded query is a
task, bounded by max_inflight (beyond it, datagrams are dropped and counted, so a flood
cannot grow memory). TCP: length-framed, pipelined queries answered as
they complete (out of order), an idle timeout, and a cap on connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections.abc import Callable

from blockd.config import DnsConfig, binding, split_endpoint
from blockd.dns import mmsg, wire
from blockd.dns.pipeline import DnsPipeline
from blockd.events import DnsProblem, DnsTransport, EventBus

log = logging.getLogger(__name__)
MAX_TCP_PIPELINE = 64  # queries in progress per TCP connection
UDP_BUFFER = 4 * 1024 * 1024  # socket buffers for query bursts
UDP_BATCH = 64  # datagrams read per readiness event, then other work gets a turn


class _UdpListener:
    """One UDP socket, read directly: each readiness event drains a batch of datagrams.

    Reading the socket ourselves, rather than through a datagram protocol, saves the
    per-datagram dispatch of the event loop, which costs more than deciding the answer.
    """

    def __init__(self, server: DnsServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.batch = mmsg.Batch(sock, UDP_BATCH) if mmsg.available() else None

    @property
    def reader(self) -> Callable[[], None]:
        """Return the readiness callback: batched where the platform allows."""
        return self.on_readable if self.batch is None else self.on_readable_batched

    def on_readable(self) -> None:
        # Hot path: blocked, routed, cached and malformed queries are answered right here;
        # only a query that must go upstream becomes a task.
        server, sock = self.server, self.sock
        decide = server.pipeline.decide
        for _ in range(UDP_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. an ICMP error queued on the socket: skip it
                continue
            if not server.accepting:
                continue
            try:
                decided = decide(data, addr[0], "udp")
            except Exception:
                log.exception("udp query failed")
                continue
            if decided is None:
                continue
            if isinstance(decided, bytes):
                self.send(decided, addr)
            else:
                self.forward(decided, addr)

    def on_readable_batched(self) -> None:
        """Like on_readable, reading and answering a batch per system call (Linux)."""
        # Hot path, as on_readable; replies go out together in one sendmmsg.
        server, batch = self.server, self.batch
        assert batch is not None
        decide = server.pipeline.decide
        n = batch.receive()
        if not server.accepting:
            return
        for i, (data, client) in enumerate(batch.received(n)):
            if data is None:
                server.bus.publish(DnsProblem("dropped", "oversized", "udp"))
                continue
            try:
                decided = decide(data, client, "udp")
            except Exception:
                log.exception("udp query failed")
                continue
            if decided is None:
                continue
            if isinstance(decided, bytes):
                if not batch.reply(i, decided):
                    self.send(decided, batch.address(i))
            else:
                self.forward(decided, batch.address(i))
        unsent = batch.flush()
        for _ in range(unsent):
            server.bus.publish(DnsProblem("dropped", "send-buffer", "udp"))

    def forward(self, q: wire.Query, addr: tuple[str | int, ...]) -> None:
        """Answer q from upstream in a task, unless too many are in flight (then drop it)."""
        server = self.server
        if server.inflight >= server.max_inflight:
            server.bus.publish(DnsProblem("dropped", "overload", "udp"))
            return
        server.inflight += 1
        task = asyncio.get_running_loop().create_task(self._forward(q, addr))
        server.tasks.add(task)
        task.add_done_callback(server.tasks.discard)

    def send(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.server.bus.publish(DnsProblem("dropped", "send-buffer", "udp"))
        except OSError:
            pass  # the client went away; UDP has no one to tell

    async def _forward(self, q: wire.Query, addr: tuple[str | int, ...]) -> None:
        try:
            self.send(await self.server.pipeline.forward(q, "udp", str(addr[0])), addr)
        except Exception:
            log.exception("udp query failed")
        finally:
            self.server.inflight -= 1


def _udp_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """Return a bound, non-blocking UDP socket with room for bursts; with reuse_port, one
    of a group that share the port (the kernel spreads queries over them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        _grow_buffers(sock)
    except OSError:
        sock.close()
        raise
    return sock


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

    def __init__(
        self, cfg: DnsConfig, pipeline: DnsPipeline, bus: EventBus, *, reuse_port: bool = False
    ) -> None:
        """Prepare; nothing listens until start(). reuse_port: share the ports (workers)."""
        self.cfg = cfg
        self.reuse_port = reuse_port
        self.tls: ssl.SSLContext | None = None  # set to serve DNS over TLS (dot_listen)
        self.pipeline = pipeline
        self.bus = bus
        self.max_inflight = cfg.max_inflight
        self.inflight = 0
        self.accepting = True
        self.tasks: set[asyncio.Task[None]] = set()
        self._udp: list[socket.socket] = []
        self._tcp: list[asyncio.Server] = []
        self._connections: set[asyncio.StreamWriter] = set()
        self.bound: list[tuple[str, str, int]] = []  # (transport, address, port)

    async def start(self) -> None:
        """Bind UDP and TCP on every listen address (port 0 picks one: see `bound`)."""
        loop = asyncio.get_running_loop()
        for endpoint in self.cfg.listen:
            host, wanted = split_endpoint(endpoint)
            for attempt in range(20):  # port 0: the UDP port picked may be taken for TCP
                with binding("dns udp", host, wanted):
                    sock = _udp_socket(host, wanted, self.reuse_port)
                port = sock.getsockname()[1]
                try:
                    with binding("dns tcp", host, port):
                        server = await asyncio.start_server(
                            self._serve_tcp,
                            host,
                            port,
                            limit=65536 + 2,
                            reuse_port=self.reuse_port or None,
                        )
                    break
                except OSError:
                    sock.close()
                    if wanted or attempt == 19:
                        raise
            loop.add_reader(sock.fileno(), _UdpListener(self, sock).reader)
            self._udp.append(sock)
            self._tcp.append(server)
            self.bound += [("udp", host, port), ("tcp", host, port)]
        if self.tls is None:
            return
        for endpoint in self.cfg.encrypted.dot_listen:
            host, port = split_endpoint(endpoint)
            with binding("dns dot", host, port):
                server = await asyncio.start_server(
                    self._serve_dot,
                    host,
                    port,
                    limit=65536 + 2,
                    ssl=self.tls,
                    ssl_handshake_timeout=self.cfg.encrypted.handshake_timeout,
                    reuse_port=self.reuse_port or None,
                )
            self._tcp.append(server)
            self.bound.append(("dot", host, server.sockets[0].getsockname()[1]))

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.cfg.max_tcp_connections:
            self.bus.publish(DnsProblem("dropped", "tcp-connections", "tcp"))
            writer.close()
            return
        await self._serve_stream(reader, writer, "tcp", self.cfg.tcp_idle_timeout)

    async def _serve_dot(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.cfg.encrypted.max_connections:
            self.bus.publish(DnsProblem("dropped", "connections", "dot"))
            writer.close()
            return
        await self._serve_stream(reader, writer, "dot", self.cfg.encrypted.idle_timeout)

    async def _serve_stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        transport: DnsTransport,
        idle: float,
    ) -> None:
        """Answer length-prefixed queries (RFC 7766: pipelined, answered as they complete)."""
        self._connections.add(writer)
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        lock = asyncio.Lock()
        pending: set[asyncio.Task[None]] = set()

        async def answer(data: bytes) -> None:
            try:
                reply = await self.pipeline.handle(data, client, transport)
                if reply is not None:
                    async with lock:
                        writer.write(struct.pack("!H", len(reply)) + reply)
                        await writer.drain()
            except (ConnectionError, RuntimeError):
                pass
            except Exception:
                log.exception("%s query failed", transport)

        try:
            while True:
                async with asyncio.timeout(idle):
                    header = await reader.readexactly(2)
                    (size,) = struct.unpack("!H", header)
                    data = await reader.readexactly(size)
                while len(pending) >= MAX_TCP_PIPELINE:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.get_running_loop().create_task(answer(data))
                pending.add(task)
                task.add_done_callback(pending.discard)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
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
        loop = asyncio.get_running_loop()
        for udp in self._udp:
            loop.remove_reader(udp.fileno())
            udp.close()
        for writer in list(self._connections):
            writer.close()
        for tcp in self._tcp:
            await tcp.wait_closed()
        self._udp.clear()
        self._tcp.clear()
