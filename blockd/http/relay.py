"""Moving message bodies between two streams without holding them whole.

Bodies are copied in pieces as they arrive; a chunked body is passed on with its framing
rewritten as checked (canonical chunk sizes, no extensions, trailers only if they are
fields), so both ends agree on where it ends (no smuggling).

No peer can pin a connection: every write waits at most `idle` seconds for the peer to take
it (`Stalled`), and `close` aborts a connection whose peer has not taken what is left within
a bound, so a client that never reads holds neither a task nor a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from blockd.http import h1

PIECE = 65536
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s
SMALL_CHUNKS = 1024  # a request body may have this many chunks before sizes must average...
SMALL_CHUNK = 1024  # ...at least this many bytes (1-byte chunks cost ~200x the CPU per byte)


class PeerGone(Exception):
    """One side closed or stalled in the middle of a message."""


class Stalled(PeerGone):
    """The peer stopped reading: a write to `writer` could not be flushed in time."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        """Say which side stalled."""
        super().__init__("peer not reading")
        self.writer = writer


MIN_PROGRESS = 16 * 1024  # bytes a reading client takes per `within` seconds, at least


async def drain(writer: asyncio.StreamWriter, within: float) -> None:
    """Wait until the peer has taken enough of what was written.

    Stalled when it takes less than MIN_PROGRESS bytes in `within` seconds: a slow but
    steady reader keeps its connection however large the buffer it drains, one that trickles
    (or reads nothing) does not.
    """
    transport = writer.transport
    while True:
        before = transport.get_write_buffer_size()
        try:
            async with asyncio.timeout(within):
                await writer.drain()
            return
        except TimeoutError:
            if before - transport.get_write_buffer_size() < MIN_PROGRESS:
                raise Stalled(writer) from None


def close(writer: asyncio.StreamWriter, linger: float) -> None:
    """Close; abort the connection if the peer has not taken what is buffered within linger."""
    writer.close()
    transport = writer.transport
    if transport.get_write_buffer_size():
        asyncio.get_running_loop().call_later(linger, _abort_if_unflushed, transport)


def _abort_if_unflushed(transport: asyncio.WriteTransport) -> None:
    """Reset a connection the peer stopped reading: free the socket and the kernel's queue."""
    if not transport.get_write_buffer_size():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # linger 0: close sends RST, drops unsent data
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    transport.abort()


async def copy_length(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    n: int,
    idle: float,
    write_idle: float | None = None,
) -> None:
    """Copy exactly n bytes; fail when none arrives for idle seconds, or the writer's peer
    takes none for write_idle (default idle) seconds (Stalled)."""
    # Hot path (every proxied response): one timer for the whole copy, pushed back on
    # progress, costs less than a timer per read.
    loop = asyncio.get_running_loop()
    transport = writer.transport
    high = transport.get_write_buffer_limits()[1]
    waiting = False
    try:
        async with asyncio.timeout(idle) as deadline:
            while n > 0:
                data = await reader.read(min(n, PIECE))
                if not data:
                    raise PeerGone("closed mid-message")
                n -= len(data)
                writer.write(data)
                if transport.get_write_buffer_size() > high:  # drain waits for the peer
                    waiting = True
                    if write_idle is not None:
                        deadline.reschedule(loop.time() + write_idle)
                    await writer.drain()
                    waiting = False
                deadline.reschedule(loop.time() + idle)
    except TimeoutError:
        if waiting:
            raise Stalled(writer) from None
        raise


async def copy_chunked(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    idle: float,
    status: int = 400,
    *,
    write_idle: float | None = None,
    bound_chunks: bool = False,
) -> None:
    """Copy a chunked body through its last chunk and trailers; raise h1.HttpError(status).

    With bound_chunks (request bodies), more than SMALL_CHUNKS chunks must average at least
    SMALL_CHUNK bytes, or the body is refused as "too-many-chunks". Responses are not bound:
    an event stream is many small chunks by design.
    """
    write_within = idle if write_idle is None else write_idle
    chunks = total = 0
    try:
        while True:
            size = h1.chunk_size(await _line(reader, idle))
            writer.write(b"%x\r\n" % size)  # the size as checked; extensions are dropped
            if size == 0:
                break
            chunks, total = chunks + 1, total + size
            if bound_chunks and chunks > SMALL_CHUNKS and total < chunks * SMALL_CHUNK:
                raise h1.HttpError(status, "too-many-chunks")
            await copy_length(reader, writer, size, idle, write_idle)
            async with asyncio.timeout(idle):
                end = await reader.readexactly(2)
            if end != b"\r\n":
                raise h1.HttpError(status, "bad-chunk")
            writer.write(end)
            await drain(writer, write_within)
        trailers = 0
        while True:  # trailer fields, then the blank line
            line = await _line(reader, idle)
            trailers += len(line)
            if line == b"\r\n":
                writer.write(line)
                break
            # A trailer is a field: anything else (a request line, say) is refused.
            if trailers > h1.MAX_HEAD or not h1.field_line(line):
                raise h1.HttpError(status, "bad-trailer")
            writer.write(line)
        await drain(writer, write_within)
    except h1.HttpError as e:
        raise h1.HttpError(status, e.reason) from None
    except asyncio.IncompleteReadError:
        raise PeerGone("closed mid-chunk") from None


async def _line(reader: asyncio.StreamReader, idle: float) -> bytes:
    try:
        async with asyncio.timeout(idle):
            return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise h1.HttpError(400, "bad-chunk") from None
    except asyncio.IncompleteReadError:
        raise PeerGone("closed mid-chunk") from None


async def copy_until_eof(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    idle: float,
    write_idle: float | None = None,
) -> None:
    """Copy until the reader's end of stream (timeouts as for copy_length)."""
    while True:
        async with asyncio.timeout(idle):
            data = await reader.read(PIECE)
        if not data:
            return
        writer.write(data)
        await drain(writer, idle if write_idle is None else write_idle)


async def pipe(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    idle: float,
    write_idle: float | None = None,
) -> None:
    """Relay bytes both ways until both directions end, or neither moves for idle seconds.

    A side that stops reading ends the relay once a write has waited write_idle (default
    idle) seconds; both sockets are then aborted if still unflushed after as long again.
    """
    write_within = idle if write_idle is None else write_idle
    loop = asyncio.get_running_loop()
    last = [loop.time()]

    async def one_way(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(idle):
                        data = await src.read(PIECE)
                except TimeoutError:
                    if loop.time() - last[0] < idle:
                        continue  # the other direction is busy: a one-way transfer
                    break
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                last[0] = loop.time()
                dst.write(data)
                await drain(dst, write_within)
        except (OSError, Stalled):
            pass
        close(a[1], write_within)
        close(b[1], write_within)

    await asyncio.gather(one_way(a[0], b[1]), one_way(b[0], a[1]))
