"""An origin's response relayed to the client from the origin connection's own callbacks.

Hot path (every proxied response): a response framed by Content-Length, or with no body, is
passed on from `data_received`, its head and the body bytes that came with it in one write,
with no task switch, stream buffer or timer per piece. The task serving the client waits
once, for the end of the response (or for the client to drain). Anything else (1xx, 101,
chunked, close-delimited) is handed back to the connection's StreamReader unread, for
blockd.http.relay.

Limits are those of the stream relay: the origin may stay silent at most `idle` seconds
(pushed back on progress), the client's write buffer never grows past its high-water mark
and one read (origin reading is paused meanwhile), and a client that takes nothing for
`write_idle` seconds raises relay.Stalled.
"""

from __future__ import annotations

import asyncio
from typing import cast

from blockd.http import h1, relay
from blockd.http.deadline import Deadline


class OriginProtocol(asyncio.StreamReaderProtocol):
    """An origin connection: its data goes to the Passthrough in progress, or the reader.

    Until a response is left to the reader (`streaming`, for good), bytes that arrive while
    no response is expected are dropped and `spoiled` is set: the origin said something
    unasked, so the connection is never used again.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        """Read for Passthroughs; into reader once streaming."""
        super().__init__(reader)
        self.reader = reader
        self.transport: asyncio.Transport | None = None
        self.passthrough: Passthrough | None = None
        self.streaming = False
        self.spoiled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (to pause and resume reading)."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """Hand data to the response in progress, or to the reader."""
        p = self.passthrough
        if p is not None:
            p.feed(data)
        elif self.streaming:
            super().data_received(data)
        elif data:
            self.spoiled = True

    def eof_received(self) -> bool:
        """Fail the response in progress: the origin closed in its middle."""
        if self.passthrough is not None:
            self.passthrough.fail(relay.PeerGone("origin closed"))
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the response in progress, then close the reader."""
        if self.passthrough is not None:
            self.passthrough.fail(relay.PeerGone("origin closed"))
        super().connection_lost(exc)


class Passthrough:
    """One response on its way from an origin to a client."""

    __slots__ = (
        "answered",
        "buffer",
        "client",
        "done",
        "error",
        "high",
        "last",
        "loop",
        "method",
        "origin",
        "overrun",
        "paused",
        "protocol",
        "remaining",
        "response",
        "stream",
        "waiter",
    )

    def __init__(
        self, protocol: OriginProtocol, client: asyncio.WriteTransport, method: str
    ) -> None:
        """Take protocol's incoming data for the response to a `method` request (set before
        the request is sent, so no byte of the answer can reach the reader)."""
        self.protocol = protocol
        assert protocol.transport is not None
        self.origin = protocol.transport
        self.client = client
        self.method = method
        self.high = client.get_write_buffer_limits()[1]
        self.loop = asyncio.get_running_loop()
        self.buffer = b""  # a head that came in pieces
        self.response: h1.Response | None = None
        self.remaining = 0  # body bytes still to pass on
        self.answered = False  # the client has the head: no error response may follow
        self.overrun = False  # the origin sent more than its length: never reuse it
        self.done = False
        self.stream = False  # not for this path: the reader has every byte
        self.paused = False  # origin reading paused until the client drains
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.last = self.loop.time()
        protocol.passthrough = self

    def feed(self, data: bytes) -> None:
        """Pass on what the origin sent (called from the origin's data_received)."""
        # Hot path: one write to the client per read from the origin.
        if self.done or self.error is not None:
            if data:
                self.overrun = True
            return
        if self.client.is_closing():
            self.fail(ConnectionResetError("client gone"))
            return
        self.last = self.loop.time()
        if self.response is None:
            self._head(data)
        elif len(data) < self.remaining:
            self.remaining -= len(data)
            self.client.write(data)
        else:
            if len(data) > self.remaining:
                self.overrun = True
                data = data[: self.remaining]
            self.remaining = 0
            self.client.write(data)
            self.done = True
        if self.client.get_write_buffer_size() > self.high:
            self.paused = True
            self.origin.pause_reading()
        elif not self.done:
            return
        self._wake()

    def _head(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        end = buf.find(b"\r\n\r\n")
        if end < 0 or end + 4 > h1.MAX_HEAD:
            if len(buf) > h1.MAX_HEAD or end >= 0:
                self.fail(h1.HttpError(502, "origin-head-too-large"))
            self.buffer = buf
            return
        end += 4
        try:
            resp = h1.parse_response(buf[:end], self.method)
        except h1.HttpError as e:
            self.fail(e)
            return
        if resp.status < 200 or resp.framing not in ("length", "none"):
            self.protocol.passthrough = None  # every byte to the reader, unread
            self.protocol.streaming = True
            self.protocol.reader.feed_data(buf)
            self.stream = True
            self._wake()
            return
        self.response = resp
        body = buf[end:]
        if len(body) > resp.length:
            self.overrun = True
            body = body[: resp.length]
        self.remaining = resp.length - len(body)
        self.answered = True
        self.client.write(buf[:end] + body if len(buf) != end + len(body) else buf)
        self.done = self.remaining == 0

    def fail(self, error: BaseException) -> None:
        """End the response with error (raised by run)."""
        if self.error is None and not self.done and not self.stream:
            self.error = error
            self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def run(
        self,
        writer: asyncio.StreamWriter,
        idle: float,
        write_idle: float,
        deadline: Deadline | None = None,
    ) -> bool:
        """Wait for the end of the response; return False if it is left to the reader.

        Raise TimeoutError when the origin sends nothing for idle seconds, relay.Stalled
        when the client takes nothing for write_idle seconds, or what failed the response.
        deadline: the current task's (else one is made for this response).
        """
        loop = self.loop
        own = deadline is None
        if deadline is None:
            deadline = Deadline()
        try:
            while True:
                if self.error is not None:
                    raise self.error
                if self.paused:
                    await relay.drain(writer, write_idle)
                    self.paused = False
                    self.last = loop.time()
                    self.origin.resume_reading()
                    continue
                if self.done:
                    if self.client.is_closing():
                        raise ConnectionResetError("client gone")
                    return True
                if self.stream:
                    return False
                # One wait for the whole response: when it times out after progress, wait
                # again until idle seconds after the last piece.
                self.waiter = loop.create_future()
                try:
                    await deadline.wait(self.waiter, self.last + idle)
                except TimeoutError:
                    if loop.time() - self.last >= idle:
                        raise
                finally:
                    self.waiter = None
        finally:
            if self.protocol.passthrough is self:
                self.protocol.passthrough = None
            if own:
                deadline.close()
