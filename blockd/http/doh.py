"""DNS over HTTPS (RFC 8484): GET ?dns= and POST application/dns-message, HTTP/2 and 1.1.

Every query goes through the same DNS pipeline as port 53 (transport "doh"), so blocked
answers carry the same EDE and count the same. HTTP/2 (what browsers use) is spoken with
h2, the python-hyper state machine that also sits under httpx and hypercorn: it checks
frames and headers, and blockd bounds what a connection may hold (concurrent streams, a
query's size, header list size, idle time). HTTP/1.1 (ALPN http/1.1, or none) reuses the
URL proxy's strict head parser. Nothing about the client is kept or logged; a problem is
counted by reason only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from blockd.config import split_endpoint
from blockd.config.base import binding
from blockd.config.encrypted import EncryptedDnsConfig
from blockd.dns import wire
from blockd.dns.pipeline import DnsPipeline
from blockd.events import DnsProblem, EventBus
from blockd.http import h1

MESSAGE = "application/dns-message"
MAX_QUERY = 65535  # a DNS message's largest size
MAX_GET_PARAMETER = 4096  # base64url characters of ?dns= (3 KB of query; POST for more)
MAX_HEADER_LIST = 16384
MAX_HEAD = 8192  # HTTP/1.1 request head
FRAME_SLACK = 9 + 24  # a frame header, and the client's connection preface
REFUSALS_PER_STREAM = 10  # refused streams a connection may cause, per max_streams


class BadRequest(Exception):
    """A DoH request that cannot be answered: status and a reason slug for metrics."""

    def __init__(self, status: int, reason: str) -> None:
        """Record the HTTP status and the reason."""
        super().__init__(reason)
        self.status = status
        self.reason = reason


def query_of(method: str, target: str, content_type: str | None, body: bytes, path: str) -> bytes:
    """Return the DNS query a DoH request carries (BadRequest if it carries none)."""
    url = urlsplit(target)
    if url.path != path:
        raise BadRequest(404, "path")
    if method == "GET":
        values = parse_qs(url.query, keep_blank_values=True, max_num_fields=16).get("dns", [])
        if len(values) != 1:
            raise BadRequest(400, "no-dns-parameter")
        text = values[0]
        if len(text) > MAX_GET_PARAMETER:
            raise BadRequest(414, "uri-too-long")  # larger queries are POSTed
        if not text.isascii():
            raise BadRequest(400, "bad-dns-parameter")
        try:  # base64url without padding (RFC 8484 section 4.1)
            query = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise BadRequest(400, "bad-dns-parameter") from None
    elif method == "POST":
        if (content_type or "").split(";")[0].strip().lower() != MESSAGE:
            raise BadRequest(415, "content-type")
        query = body
    else:
        raise BadRequest(405, "method")
    if not 12 <= len(query) <= MAX_QUERY:
        raise BadRequest(400, "bad-dns-message")
    return query


def max_age(reply: bytes) -> int:
    """Return the freshness of a DoH response: the smallest TTL it carries (RFC 8484 5.1)."""
    try:
        info = wire.parse_response(reply)
    except wire.Drop:
        return 0
    return info.min_ttl if info.min_ttl is not None else 0


class DohServer:
    """The DoH listeners: TLS, then HTTP/2 or HTTP/1.1 by ALPN, into the DNS pipeline."""

    def __init__(
        self,
        cfg: EncryptedDnsConfig,
        pipeline: DnsPipeline,
        bus: EventBus,
        tls: ssl.SSLContext,
        *,
        reuse_port: bool = False,
    ) -> None:
        """Prepare; nothing listens until start()."""
        self.cfg = cfg
        self.pipeline = pipeline
        self.bus = bus
        self.tls = tls
        self.reuse_port = reuse_port
        self.connections: set[_Connection] = set()
        self._servers: list[asyncio.Server] = []
        self.bound: list[tuple[str, str, int]] = []

    async def start(self) -> None:
        """Bind every DoH listener."""
        loop = asyncio.get_running_loop()
        for endpoint in self.cfg.doh_listen:
            host, port = split_endpoint(endpoint)
            with binding("dns doh", host, port):
                server = await loop.create_server(
                    lambda: _Connection(self),
                    host,
                    port,
                    ssl=self.tls,
                    ssl_handshake_timeout=self.cfg.handshake_timeout,
                    reuse_port=self.reuse_port or None,
                    backlog=1024,
                )
            self._servers.append(server)
            self.bound.append(("doh", host, server.sockets[0].getsockname()[1]))

    async def stop(self) -> None:
        """Close the listeners and every connection."""
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    def problem(self, reason: str) -> None:
        """Count a refused request or connection (no client, no name)."""
        self.bus.publish(DnsProblem("rejected", reason, "doh"))


@dataclass
class _Stream:
    method: str = ""
    target: str = ""
    content_type: str | None = None
    body: bytearray = field(default_factory=bytearray)


class _Connection(asyncio.Protocol):
    """One TLS connection: HTTP/2 frames or HTTP/1.1 requests."""

    def __init__(self, server: DohServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.h2: h2.connection.H2Connection | None = None
        self.streams: dict[int, _Stream] = {}
        self.buffer = bytearray()  # HTTP/1.1 bytes not yet parsed
        self.busy = False  # HTTP/1.1: a request is being answered (they are answered in order)
        self.tasks: set[asyncio.Task[None]] = set()
        self.idle: asyncio.TimerHandle | None = None
        self.waiting: dict[int, bytes] = {}  # HTTP/2 data waiting for flow-control window
        self.refused = 0  # HTTP/2 streams refused: over max_streams at once

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is a Transport in all but its class: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        if len(self.server.connections) >= self.server.cfg.max_connections:
            self.server.bus.publish(DnsProblem("dropped", "connections", "doh"))
            self.transport.abort()
            return
        self.server.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""
        tls = transport.get_extra_info("ssl_object")
        alpn = tls.selected_alpn_protocol() if tls is not None else None
        if alpn == "h2":
            self._start_h2()
        self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.idle is not None:
            self.idle.cancel()
        for task in self.tasks:
            task.cancel()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _touch(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(self.server.cfg.idle_timeout, self._idle)

    def _idle(self) -> None:
        if self.tasks:
            self._touch()  # answering: not idle
            return
        if self.h2 is not None and self.transport is not None:
            self.h2.close_connection()
            self.transport.write(self.h2.data_to_send())
        self.close()

    def data_received(self, data: bytes) -> None:
        self._touch()
        if self.h2 is not None:
            self._h2_received(data)
        else:
            self._h1_received(data)

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _decide(self, query: bytes) -> bytes | wire.Query:
        """Run the pipeline's stages that need no network (hot path: no task, no await)."""
        decided = self.server.pipeline.decide(query, self.client, "doh")
        if decided is None:
            raise BadRequest(400, "bad-dns-message")
        return decided

    # -- HTTP/2 -------------------------------------------------------------------------

    def _start_h2(self) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        conn = h2.connection.H2Connection(config=config)
        codes = h2.settings.SettingCodes
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                codes.MAX_CONCURRENT_STREAMS: 2**31 - 1,  # see below
                codes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
                codes.INITIAL_WINDOW_SIZE: MAX_QUERY,
            },
        )
        conn.initiate_connection()
        # The stream limit as a change: h2 holds the client to it (a connection error) only
        # once the client has acknowledged it; streams over it before that are refused one
        # by one (_h2_event), as RFC 9113 5.1.2 allows, not the whole connection.
        conn.update_settings({codes.MAX_CONCURRENT_STREAMS: self.server.cfg.max_streams})
        self.h2 = conn
        self._flush()

    def _flush(self) -> None:
        if self.h2 is not None and self.transport is not None and not self.transport.is_closing():
            data = self.h2.data_to_send()
            if data:
                self.transport.write(data)

    def _h2_received(self, data: bytes) -> None:
        assert self.h2 is not None
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.server.problem("http2-protocol")
            self._flush()  # h2 has queued a GOAWAY saying why
            self.close()
            return
        # h2 waits for a whole frame before it checks the frame's length: what it holds is
        # checked here (its buffer is private; tests/dns/test_encrypted.py pins this), so a
        # header announcing a 16 MB frame cannot make a connection hold 16 MB.
        held = len(getattr(self.h2.incoming_buffer, "_data", b""))
        if held > self.h2.max_inbound_frame_size + FRAME_SLACK:
            self.server.problem("http2-frame-size")
            self.h2.close_connection(error_code=h2.errors.ErrorCodes.FRAME_SIZE_ERROR)
            self._flush()
            self.close()
            return
        for event in events:
            self._h2_event(event)
        self._flush()

    def _h2_event(self, event: h2.events.Event) -> None:
        assert self.h2 is not None
        if isinstance(event, h2.events.RequestReceived):
            if len(self.streams) + len(self.tasks) >= self.server.cfg.max_streams:
                # Over the limit we advertised (a client may open streams before it has
                # acknowledged our settings, when h2 does not yet hold it to them): refuse
                # the stream (the client may retry it, RFC 9113 8.7); a client that keeps
                # on after many refusals loses the connection.
                self.server.problem("too-many-streams")
                self.refused += 1
                if self.refused > REFUSALS_PER_STREAM * self.server.cfg.max_streams:
                    self.h2.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
                    self._flush()
                    self.close()
                else:
                    self.h2.reset_stream(
                        event.stream_id, error_code=h2.errors.ErrorCodes.REFUSED_STREAM
                    )
                return
            headers = {bytes(k): bytes(v) for k, v in event.headers or []}
            self.streams[event.stream_id] = _Stream(
                method=headers.get(b":method", b"").decode("latin-1"),
                target=headers.get(b":path", b"").decode("latin-1"),
                content_type=_text(headers.get(b"content-type")),
            )
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if stream is None:
                return
            stream.body += event.data or b""
            if len(stream.body) > MAX_QUERY:
                self.streams.pop(event.stream_id, None)
                self.server.problem("too-large")
                self._h2_respond(event.stream_id, 413, b"", "")
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                self._h2_request(event.stream_id, stream)
        elif isinstance(event, h2.events.StreamReset):
            self.streams.pop(event.stream_id, None)
            self.waiting.pop(event.stream_id, None)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._send_waiting()  # a window opened (a client may start with none: nghttp2)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.close()

    def _h2_request(self, stream_id: int, stream: _Stream) -> None:
        """Answer a whole request: at once from the policy or the cache, else in a task."""
        try:
            query = query_of(
                stream.method,
                stream.target,
                stream.content_type,
                bytes(stream.body),
                self.server.cfg.doh_path,
            )
            decided = self._decide(query)
        except BadRequest as e:
            self.server.problem(e.reason)
            self._h2_respond(stream_id, e.status, b"", "")
            return
        if isinstance(decided, bytes):
            self._h2_respond(stream_id, 200, decided, MESSAGE)
        else:
            self._run(self._h2_forward(stream_id, decided))

    async def _h2_forward(self, stream_id: int, q: wire.Query) -> None:
        reply = await self.server.pipeline.forward(q, "doh", self.client)
        self._h2_respond(stream_id, 200, reply, MESSAGE)

    def _h2_respond(self, stream_id: int, status: int, body: bytes, content_type: str) -> None:
        """Send a response (what flow control allows of its body now)."""
        if self.h2 is None or self.transport is None or self.transport.is_closing():
            return
        headers = [(":status", str(status)), ("content-length", str(len(body)))]
        if content_type:
            headers += [
                ("content-type", content_type),
                ("cache-control", f"max-age={max_age(body)}"),
            ]
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not body)
            if body:
                self._send_body(stream_id, body)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.waiting.pop(stream_id, None)  # the client reset it meanwhile
        # Each response in a write of its own: coalescing them cost nothing measurable and
        # dnsperf's DoH client (nghttp2) then read only the first of a TLS record's answers.
        self._flush()

    def _send_body(self, stream_id: int, body: bytes) -> None:
        """Send what flow control allows of body now; keep the rest for a WINDOW_UPDATE."""
        assert self.h2 is not None
        while body:
            window = min(
                self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
            )
            if window <= 0:
                self.waiting[stream_id] = body
                return
            piece, body = body[:window], body[window:]
            self.h2.send_data(stream_id, piece, end_stream=not body)
        self.waiting.pop(stream_id, None)

    def _send_waiting(self) -> None:
        """Send what a new flow-control window allows of each waiting response."""
        for stream_id, body in list(self.waiting.items()):
            try:
                self._send_body(stream_id, body)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.waiting.pop(stream_id, None)

    # -- HTTP/1.1 -----------------------------------------------------------------------

    def _h1_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > MAX_HEAD + MAX_QUERY + 1:
            self.server.problem("too-large")
            self._h1_send(413, b"", "", close=True)
            return
        if not self.busy:
            self._h1_next()

    def _h1_next(self) -> None:
        """Answer the requests buffered, in order, until one must wait (a loop: pipelining
        of any depth never recurses)."""
        while self.buffer and not self.busy:
            if self.transport is None or self.transport.is_closing():
                return
            if not self._h1_one():
                return

    def _h1_one(self) -> bool:
        """Answer the first buffered request; False when it is incomplete or refused."""
        end = h1.head_end(self.buffer)
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self.server.problem("head-too-large")
                self._h1_send(431, b"", "", close=True)
            return False
        try:
            request = h1.parse_request(bytes(self.buffer[:end]))
        except h1.HttpError as e:
            self.server.problem(e.reason)
            self._h1_send(e.status, b"", "", close=True)
            return False
        if request.framing == "chunked" or request.upgrade:
            self.server.problem("framing")
            self._h1_send(411 if request.framing == "chunked" else 400, b"", "", close=True)
            return False
        length = request.length if request.framing == "length" else 0
        if length > MAX_QUERY:
            self.server.problem("too-large")
            self._h1_send(413, b"", "", close=True)
            return False
        if len(self.buffer) < end + length:
            return False  # the body is still coming
        body = bytes(self.buffer[end : end + length])
        del self.buffer[: end + length]
        content_type = next(
            (v.decode("latin-1") for k, v in request.headers if k.lower() == b"content-type"),
            None,
        )
        close = not request.keep_alive
        try:
            query = query_of(
                request.method, request.path, content_type, body, self.server.cfg.doh_path
            )
            decided = self._decide(query)
        except BadRequest as e:
            self.server.problem(e.reason)
            self._h1_send(e.status, b"", "", close=close)
            return True
        if isinstance(decided, wire.Query):
            self.busy = True  # answered in order: the next request waits for this one
            self._run(self._h1_forward(decided, close))
        else:
            self._h1_send(200, decided, MESSAGE, close=close)
        return True

    async def _h1_forward(self, q: wire.Query, close: bool) -> None:
        reply = await self.server.pipeline.forward(q, "doh", self.client)
        self._h1_send(200, reply, MESSAGE, close=close)
        self.busy = False
        self._h1_next()

    def _h1_send(self, status: int, body: bytes, content_type: str, *, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            f"Content-Length: {len(body)}",
        ]
        if content_type:
            lines += [f"Content-Type: {content_type}", f"Cache-Control: max-age={max_age(body)}"]
        if close:
            lines.append("Connection: close")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        if close:
            with contextlib.suppress(Exception):
                self.transport.close()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
}


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else None
