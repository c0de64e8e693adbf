"""The origin-side passthrough over real sockets on loopback (ports picked by the OS).

A test origin answers one request with a scripted response; a front relays it with a
Passthrough to a client socket the test reads (or does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from blockd.http import h1, relay
from blockd.http.passthrough import OriginProtocol, Passthrough

REQUEST = b"GET /x HTTP/1.1\r\nHost: o\r\n\r\n"
PIECE = 65536


@dataclass
class Origin:
    """Answers each request with `pieces` written one by one; counts what it wrote."""

    pieces: list[bytes] = field(default_factory=list)
    sent: int = 0
    port: int = 0
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            for piece in self.pieces:
                writer.write(piece)
                await writer.drain()
                self.sent += len(piece)
                await asyncio.sleep(0)  # a piece per read, as a real origin's would arrive
            await reader.read()  # until blockd closes
        writer.close()


@pytest_asyncio.fixture
async def origin() -> AsyncIterator[Origin]:
    o = Origin()
    o.server = await asyncio.start_server(o.handle, "127.0.0.1", 0)
    o.port = o.server.sockets[0].getsockname()[1]
    yield o
    o.server.close()


Front = Callable[[asyncio.StreamWriter, OriginProtocol], Awaitable[None]]


async def serve_one(origin: Origin, front: Front) -> tuple[socket.socket, asyncio.Task[None]]:
    """Accept one client and run front for it; return the client socket and the front task."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Task[None]] = loop.create_future()

    async def handle(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reader = asyncio.StreamReader(limit=h1.MAX_HEAD)
        transport, proto = await loop.create_connection(
            lambda: OriginProtocol(reader), "127.0.0.1", origin.port
        )
        task = asyncio.current_task()
        assert task is not None
        accepted.set_result(task)
        try:
            await front(writer, proto)
        finally:
            transport.close()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    await loop.sock_connect(client, server.sockets[0].getsockname())
    task = await accepted
    server.close()
    return client, task


async def read_all(client: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    async with asyncio.timeout(30):
        while data := await loop.sock_recv(client, 1 << 20):
            out += data
    return bytes(out)


def response(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


async def test_a_length_framed_response_passes_unchanged_in_one_piece_or_many(
    origin: Origin,
) -> None:
    body = bytes(range(256)) * 400
    whole = response(body)
    origin.pieces = [whole[:7], whole[7:40], whole[40:5000], whole[5000:]]  # head in pieces
    result: list[bool] = []

    async def front(writer: asyncio.StreamWriter, proto: OriginProtocol) -> None:
        p = Passthrough(proto, writer.transport, "GET")
        assert proto.transport is not None
        proto.transport.write(REQUEST)
        result.append(await p.run(writer, 5.0, 5.0))
        assert p.answered
        assert not p.overrun
        assert p.response is not None
        assert p.response.keep_alive

    client, task = await serve_one(origin, front)
    with client:
        assert await read_all(client) == whole
    await task
    assert result == [True]


async def test_a_slow_client_never_makes_the_front_buffer_the_body(origin: Origin) -> None:
    # The client reads nothing for a while: the front stops reading the origin once the
    # client's buffer is past its high-water mark, so it holds at most that and one read.
    size = 64 * 1024 * 1024
    pattern = bytes(range(251)) * (PIECE // 251 + 1)
    origin.pieces = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size]
    origin.pieces += [pattern[:PIECE]] * (size // PIECE)
    held: list[int] = []
    passthrough: list[Passthrough] = []

    async def front(writer: asyncio.StreamWriter, proto: OriginProtocol) -> None:
        p = Passthrough(proto, writer.transport, "GET")
        passthrough.append(p)
        assert proto.transport is not None
        proto.transport.write(REQUEST)
        assert await p.run(writer, 30.0, 30.0)

    client, task = await serve_one(origin, front)
    with client:
        async with asyncio.timeout(10):
            while not passthrough or not passthrough[0].paused:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        p = passthrough[0]
        high = p.client.get_write_buffer_limits()[1]
        for _ in range(50):  # the client still reads nothing: the bound holds throughout
            held.append(p.client.get_write_buffer_size())
            await asyncio.sleep(0.01)
        assert max(held) <= high + 256 * 1024
        assert origin.sent < size // 2  # the origin was made to wait too
        loop = asyncio.get_running_loop()
        got = 0
        head = b""
        async with asyncio.timeout(60):
            while data := await loop.sock_recv(client, 1 << 20):
                if len(head) < 100:
                    head += data[:100]
                got += len(data)
    await task
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert got == len(origin.pieces[0]) + size


async def test_a_client_that_takes_nothing_stalls_the_response(origin: Origin) -> None:
    origin.pieces = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 * PIECE)]
    origin.pieces += [b"x" * PIECE] * 64
    raised: list[BaseException] = []

    async def front(writer: asyncio.StreamWriter, proto: OriginProtocol) -> None:
        p = Passthrough(proto, writer.transport, "GET")
        assert proto.transport is not None
        proto.transport.write(REQUEST)
        try:
            await p.run(writer, 30.0, 0.3)
        except relay.Stalled as e:
            raised.append(e)

    client, task = await serve_one(origin, front)
    with client:
        async with asyncio.timeout(10):
            await task
    assert len(raised) == 1
    assert isinstance(raised[0], relay.Stalled)


async def test_an_origin_silent_for_idle_seconds_times_out(origin: Origin) -> None:
    origin.pieces = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]  # 7 bytes short

    async def front(writer: asyncio.StreamWriter, proto: OriginProtocol) -> None:
        p = Passthrough(proto, writer.transport, "GET")
        assert proto.transport is not None
        proto.transport.write(REQUEST)
        with pytest.raises(TimeoutError):
            await p.run(writer, 0.3, 5.0)
        assert p.answered  # the head went out: no error response may follow

    client, task = await serve_one(origin, front)
    with client:
        async with asyncio.timeout(10):
            await task


async def test_an_origin_closing_mid_body_is_peer_gone(origin: Origin) -> None:
    origin.pieces = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]

    async def front(writer: asyncio.StreamWriter, proto: OriginProtocol) -> None:
        p = Passthrough(proto, writer.transport, "GET")
        assert proto.transport is not None
        proto.transport.write(REQUEST + b"")
        proto.transport.write_eof()  # the test origin's read() ends: it closes
        with pytest.raises(relay.PeerGone):
            await p.run(writer, 5.0, 5.0)

    client, task = await serve_one(origin, front)
    with client:
        async with asyncio.timeout(10):
            await task


async def test_bytes_past_the_length_are_never_passed_on(origin: Origin) -> None:
    whole = response(b"0123456789")
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"
    origin.pieces = [whole + smuggled[:10], smuggled[10:]]
    spoiled: list[bool] = []

    async def front(writer: asyncio.StreamWriter, proto: OriginProtocol) -> None:
        p = Passthrough(proto, writer.transport, "GET")
        assert proto.transport is not None
        proto.transport.write(REQUEST)
        assert await p.run(writer, 5.0, 5.0)
        assert p.overrun  # so the connection is never reused
        await asyncio.sleep(0.1)  # the rest arrives with no response expected
        spoiled.append(proto.spoiled or p.overrun)
        writer.close()

    client, task = await serve_one(origin, front)
    with client:
        assert await read_all(client) == whole
    await task
    assert spoiled == [True]


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",  # ends at close
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ],
)
async def test_other_framings_are_left_to_the_reader_unread(origin: Origin, head: bytes) -> None:
    origin.pieces = [head + b"rest"]
    got: list[bytes] = []

    async def front(writer: asyncio.StreamWriter, proto: OriginProtocol) -> None:
        p = Passthrough(proto, writer.transport, "GET")
        assert proto.transport is not None
        proto.transport.write(REQUEST)
        assert not await p.run(writer, 5.0, 5.0)
        assert not p.answered
        assert proto.streaming
        async with asyncio.timeout(5):
            got.append(await proto.reader.readexactly(len(head) + 4))

    client, task = await serve_one(origin, front)
    with client:
        async with asyncio.timeout(10):
            await task
    assert got == [head + b"rest"]


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * h1.MAX_HEAD + b"\r\n\r\n", "origin-head-too-large"),
    ],
)
async def test_a_bad_response_head_is_refused(
    origin: Origin, head: bytes, reason: str | None
) -> None:
    origin.pieces = [head]

    async def front(writer: asyncio.StreamWriter, proto: OriginProtocol) -> None:
        p = Passthrough(proto, writer.transport, "GET")
        assert proto.transport is not None
        proto.transport.write(REQUEST)
        with pytest.raises(h1.HttpError) as e:
            await p.run(writer, 5.0, 5.0)
        assert e.value.status == 502
        assert reason is None or e.value.reason == reason
        assert not p.answered

    client, task = await serve_one(origin, front)
    with client:
        async with asyncio.timeout(10):
            await task
        assert await read_all(client) == b""
