"""The HTTP request contract: the notice server and URL proxy on one listener.

DNS sends two kinds of host here: wholly blocked hosts (the notice address) and hosts
carrying URL-level entries (the proxy address). Stages, in order, for every request on a
connection (each may answer and stop):
1. head     read within header_timeout, size-limited, parsed strictly (h1): 400/408/414/431
2. decide   blockd.http.decide, the one HTTP rule: the host (absolute-form target, else
            Host) wholly blocked, or a listed URL on a routed host -> notice; any other
            host -> 421, because blockd is not an open proxy; a Host port other than the
            origin's -> 421; else pass
3. origin   the origin's configured port,
            resolved through the upstream resolvers (never blockd's own answers); only
            public addresses unless the operator fixed the origin (http.origins); one of
            our own listeners is refused (508, a loop)
4. relay    the request, then the response streamed back unchanged (one framed by
            Content-Length, or bodiless, from the origin connection's callbacks:
            blockd.http.passthrough); an upgrade (101) turns the connection into a tunnel
Nothing about the client is kept; every decision is an HttpDecision event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blockd.events import EventBus, HttpDecision, HttpProblem
from blockd.feeds.model import Authority
from blockd.http import h1, relay
from blockd.http.deadline import Deadline
from blockd.http.decide import decide
from blockd.http.notice import NoticePage
from blockd.http.origin import OriginError, OriginResolver
from blockd.http.passthrough import OriginProtocol, Passthrough
from blockd.policy.snapshot import PolicySnapshot
from blockd.policy.verdict import Verdict

log = logging.getLogger(__name__)
MAX_LEADING_CRLF = 4
# Hop-by-hop headers that ask for a protocol other than WebSocket: never forwarded, so
# the origin cannot turn the connection into a tunnel for unchecked requests (h2c).
_UPGRADE_HEADERS = (b"upgrade", b"http2-settings")

_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    508: "Loop Detected",
}


def plain_response(status: int, text: str = "", *, close: bool = True) -> bytes:
    """Return a short text/plain response (errors and refusals)."""
    body = (text or _REASONS.get(status, "Error")).encode() + b"\n"
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
        b"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: %s\r\n\r\n%s"
        % (
            status,
            _REASONS.get(status, "Error").encode(),
            len(body),
            b"close" if close else b"keep-alive",
            body,
        )
    )


@dataclass(frozen=True)
class Limits:
    """Timeouts (seconds) and the default origin port of the HTTP side (from HttpConfig)."""

    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    origin_timeout: float = 30.0
    connect_timeout: float = 5.0
    tunnel_idle_timeout: float = 300.0
    write_timeout: float = 30.0
    origin_port: int = 80


class HttpFront:
    """Decide and answer HTTP requests; one instance serves every connection."""

    def __init__(
        self,
        source: Callable[[], PolicySnapshot],
        notice: NoticePage,
        resolver: OriginResolver,
        bus: EventBus,
        authority_of: Callable[[str], Authority | None],
        limits: Limits,
        *,
        records_nothing: bool = True,
    ) -> None:
        """Wire the stages; source() returns the current PolicySnapshot."""
        self.source = source
        self.notice = notice
        self.resolver = resolver
        self.bus = bus
        self.authority_of = authority_of
        self.limits = limits
        self.records_nothing = records_nothing
        # Set only when the operator keeps legally required records (off by default).
        self.on_block: Callable[[str, Verdict, str], None] | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection until it closes, errs or idles out."""
        origin: _Origin | None = None
        first = True
        deadline = Deadline()
        local = _local_port(writer)
        try:
            while True:
                head = await self._read_head(reader, writer, first, deadline)
                if head is None:
                    return
                first = False
                try:
                    req = h1.parse_request(head)
                except h1.HttpError as e:
                    self._reject(writer, e)
                    return
                keep, origin = await self._handle(req, reader, writer, origin, deadline, local)
                if not keep:
                    return
        except relay.Stalled:
            self.bus.publish(HttpProblem("dropped", "write-timeout", "http"))
        except (ConnectionError, relay.PeerGone):
            pass
        finally:
            deadline.close()
            if origin is not None:
                origin.close()
            relay.close(writer, self.limits.write_timeout)

    async def _read_head(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        first: bool,
        deadline: Deadline,
    ) -> bytes | None:
        """Return the next request head, or None when the client is done or misbehaved."""
        # The first head must arrive within header_timeout (slowloris); a later one, on a
        # kept-alive connection, within idle_timeout.
        until = deadline.after(self.limits.header_timeout if first else self.limits.idle_timeout)
        try:
            head = await deadline.wait(reader.readuntil(b"\r\n\r\n"), until)
            # RFC 9112 2.2: ignore empty lines before a request line (a few, not forever).
            for _ in range(MAX_LEADING_CRLF):
                if not head.startswith(b"\r\n"):
                    break
                head = head[2:] or await deadline.wait(reader.readuntil(b"\r\n\r\n"), until)
            h1.head_end(head)  # the request-line limit
            return head
        except TimeoutError:
            if first:  # a slow client (slowloris): tell it, then hang up
                self._reject(writer, h1.HttpError(408, "slow-client"))
            return None
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                self._reject(writer, h1.HttpError(400, "truncated-head"))
            return None
        except asyncio.LimitOverrunError:
            buffered = await reader.read(h1.MAX_HEAD + 1)
            try:
                h1.head_end(buffered)
                error = h1.HttpError(431, "head-too-large")
            except h1.HttpError as e:
                error = e
            self._reject(writer, error)
            return None
        except h1.HttpError as e:
            self._reject(writer, e)
            return None

    def _reject(self, writer: asyncio.StreamWriter, e: h1.HttpError) -> None:
        self.bus.publish(HttpProblem("rejected", e.reason, "http"))
        writer.write(plain_response(e.status))

    async def _handle(
        self,
        req: h1.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        origin: _Origin | None,
        deadline: Deadline,
        local: int | None,
    ) -> tuple[bool, _Origin | None]:
        """Answer one request; return (keep the connection, origin connection to reuse)."""
        if req.method == "CONNECT":
            self.bus.publish(HttpProblem("rejected", "bad-host", "http"))
            writer.write(plain_response(405, "This proxy only serves plain HTTP requests."))
            return False, origin
        d = decide(self.source(), req.host, req.path, lambda host: (self._origin_port(host), local))
        if d.outcome == "bad-request":
            self.bus.publish(HttpProblem("rejected", "bad-host", "http"))
            log.debug("bad request target (%s)", d.reason)
            writer.write(plain_response(400, "This proxy only serves plain HTTP requests."))
            return False, origin
        if d.outcome == "notice":
            assert d.verdict is not None
            return await self._notice(req, writer, d.verdict), origin
        if d.outcome == "misdirected":
            # Not an open proxy; and the Host port never picks where blockd connects.
            self.bus.publish(HttpDecision(None, "misdirected", "http"))
            what = "port" if d.reason == "port" else "host"
            writer.write(plain_response(421, f"This server does not serve that {what}."))
            return False, origin
        assert d.host is not None
        self.bus.publish(HttpDecision(None, "pass", "http"))
        port = self._origin_port(d.host)
        return await self._forward(req, d.host, port, reader, writer, origin, deadline)

    def _origin_port(self, host: str) -> int:
        """Return the one port blockd connects to for host."""
        return self.resolver.http_port(host) or self.limits.origin_port

    async def _notice(
        self, req: h1.Request, writer: asyncio.StreamWriter, verdict: Verdict
    ) -> bool:
        """Serve the notice page; return whether the connection may be kept."""
        self.bus.publish(HttpDecision(verdict, "notice", "http"))
        if self.on_block is not None:
            peer = writer.get_extra_info("peername")
            self.on_block(str(peer[0]) if peer else "", verdict, "http")
        keep = req.keep_alive and req.framing == "none"  # a body we will not read: close
        writer.write(
            self.notice.response(
                req.method,
                verdict,
                self.authority_of(verdict.authority),
                _header(req, b"accept-language"),
                records_nothing=self.records_nothing,
                keep_alive=keep,
            )
        )
        await relay.drain(writer, self.limits.write_timeout)
        return keep

    async def _forward(
        self,
        req: h1.Request,
        host: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        origin: _Origin | None,
        deadline: Deadline,
    ) -> tuple[bool, _Origin | None]:
        """Send the request to the origin and stream its response back."""
        if origin is not None and (origin.key != (host, port) or origin.closed):
            origin.close()
            origin = None
        if origin is None:
            try:
                origin = await self._connect(host, port)
            except _Refused as e:
                self.bus.publish(HttpProblem("origin", e.reason, "http"))
                writer.write(plain_response(e.status))
                return False, None
        origin.expect(writer, req.method)  # before the request: every byte of the answer
        origin.writer.write(_origin_head(req))
        if req.framing == "none":  # hot path: no body to send, so no second task
            try:
                keep = await self._relay_response(req, reader, writer, origin, deadline)
            except (h1.HttpError, TimeoutError, relay.PeerGone, OSError) as e:
                origin.close()
                self._origin_failed(writer, origin, e)
                return False, None
            if not keep or not origin.keep:
                origin.close()
                return keep, None
            return keep, origin
        # The body goes up while the response may already come down (Expect: 100-continue,
        # early errors); whichever fails first ends both.
        body = asyncio.ensure_future(self._send_body(req, reader, origin))
        response = asyncio.ensure_future(self._relay_response(req, reader, writer, origin))
        try:
            await asyncio.wait((body, response), return_when=asyncio.FIRST_EXCEPTION)
            if body.done() and body.exception() is not None:
                response.cancel()
                await body  # raises the body's error
            keep = await response
            if not body.done():  # the origin answered before taking the whole body
                body.cancel()
                keep = False
        except (h1.HttpError, TimeoutError, relay.PeerGone, OSError) as e:
            _cancel(body, response)
            origin.close()
            self._origin_failed(writer, origin, e)
            return False, None
        # Never reuse an origin connection after a body: an origin that framed it otherwise
        # (CL.0) would read the rest as a request blockd never checked.
        origin.close()
        return keep, None

    def _origin_failed(self, writer: asyncio.StreamWriter, origin: _Origin, e: Exception) -> None:
        """Answer the client after a failed exchange, unless the origin's answer began."""
        if isinstance(e, relay.Stalled) and e.writer is writer:
            self.bus.publish(HttpProblem("dropped", "write-timeout", "http"))
            return  # the client is not reading: nothing more is written to it
        if isinstance(e, h1.HttpError):
            if not origin.answered:
                self._reject(writer, e)
            return
        reason = "timeout" if isinstance(e, TimeoutError) else "closed"
        self.bus.publish(HttpProblem("origin", reason, "http"))
        if not origin.answered:
            writer.write(plain_response(504 if reason == "timeout" else 502))

    async def _send_body(self, req: h1.Request, reader: asyncio.StreamReader, o: _Origin) -> None:
        timeout = self.limits.idle_timeout
        if req.framing == "length":
            await relay.copy_length(reader, o.writer, req.length, timeout)
        elif req.framing == "chunked":
            await relay.copy_chunked(reader, o.writer, timeout, bound_chunks=True)
        else:
            await relay.drain(o.writer, timeout)

    async def _relay_response(
        self,
        req: h1.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        o: _Origin,
        deadline: Deadline | None = None,
    ) -> bool:
        """Relay the origin's response (and any 1xx before it); return keep-alive.

        deadline: the current task's, if it has one.
        """
        limits = self.limits
        p = o.passthrough
        if p is not None:  # hot path: Content-Length or no body, from the origin's callbacks
            o.passthrough = None
            try:
                whole = await p.run(writer, limits.origin_timeout, limits.write_timeout, deadline)
            finally:
                o.answered = o.answered or p.answered
            if whole:
                assert p.response is not None
                o.keep = p.response.keep_alive and not p.overrun
                return req.keep_alive
        while True:
            try:
                async with asyncio.timeout(limits.origin_timeout):
                    head = await o.reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise h1.HttpError(502, "origin-head-too-large") from None
            except asyncio.IncompleteReadError:
                raise relay.PeerGone("origin closed") from None
            resp = h1.parse_response(head, req.method)
            if resp.status == 101 and not (req.upgrade and resp.websocket):
                raise h1.HttpError(502, "unexpected-upgrade")  # only WebSocket is tunnelled
            o.answered = True
            writer.write(head)
            if resp.status == 101:
                await relay.pipe(
                    (reader, writer),
                    (o.reader, o.writer),
                    limits.tunnel_idle_timeout,
                    limits.write_timeout,
                )
                o.keep = False
                return False
            if resp.status >= 200 or resp.status == 101:
                break
        wait, write = limits.origin_timeout, limits.write_timeout
        if resp.framing == "length":
            await relay.copy_length(o.reader, writer, resp.length, wait, write)
        elif resp.framing == "chunked":
            await relay.copy_chunked(o.reader, writer, wait, status=502, write_idle=write)
        elif resp.framing == "close":
            await relay.copy_until_eof(o.reader, writer, wait, write)
        await relay.drain(writer, limits.write_timeout)
        o.keep = resp.keep_alive
        return req.keep_alive and resp.framing != "close"

    async def _connect(self, host: str, port: int) -> _Origin:
        try:
            r, w = await self.resolver.connect(
                host, port, self.limits.connect_timeout, limit=h1.MAX_HEAD, protocol=OriginProtocol
            )
        except OriginError as e:
            raise _Refused(508 if e.reason == "loop" else 502, e.reason) from None
        return _Origin((host, port), r, w, self.limits.write_timeout)


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Origin:
    """One connection to an origin, reused for the client's next request to it."""

    def __init__(
        self,
        key: tuple[str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        linger: float,
    ) -> None:
        self.key = key
        self.reader = reader
        self.writer = writer
        self.linger = linger
        self.keep = True
        self.answered = False
        protocol = writer.transport.get_protocol()
        assert isinstance(protocol, OriginProtocol)
        self.protocol = protocol
        self.passthrough: Passthrough | None = None

    @property
    def closed(self) -> bool:
        return self.writer.is_closing() or self.reader.at_eof() or self.protocol.spoiled

    def expect(self, client: asyncio.StreamWriter, method: str) -> None:
        """Get ready for the response to a `method` request, for client."""
        if not self.protocol.streaming:
            self.passthrough = Passthrough(self.protocol, client.transport, method)

    def close(self) -> None:
        relay.close(self.writer, self.linger)


def _cancel(*tasks: asyncio.Future[Any]) -> None:
    for task in tasks:
        task.cancel()


def _local_port(writer: asyncio.StreamWriter) -> int | None:
    sockname = writer.get_extra_info("sockname")
    return sockname[1] if sockname else None


def _header(req: h1.Request, name: bytes) -> str | None:
    for n, v in req.headers:
        if n.lower() == name:
            return v.decode("latin-1")
    return None


def _origin_head(req: h1.Request) -> bytes:
    """Return the request head for the origin: origin-form target, Host from the target."""
    absolute = not req.target.startswith("/")
    out = [f"{req.method} {req.path} ".encode() + req.version]
    for name, value in req.headers:
        key = name.lower()
        if key == b"proxy-connection" or (absolute and key == b"host"):
            continue
        if not req.upgrade and key in _UPGRADE_HEADERS:
            continue
        if not req.upgrade and key == b"connection":
            value = b", ".join(
                t
                for t in (t.strip(b" \t") for t in value.split(b","))
                if t.lower() not in _UPGRADE_HEADERS
            )
            if not value:
                continue
        out.append(name + b": " + value)
    if absolute:
        out.insert(1, b"Host: " + req.host.encode("latin-1"))
    return b"\r\n".join(out) + b"\r\n\r\n"
