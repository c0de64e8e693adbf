"""Moving message bodies between two streams without holding them whole.

Bodies are copied in pieces as they arrive; a chunked body is passed on with its framing
rewritten as checked (canonical chunk sizes, no extensions, trailers only if they are
fields), so both ends agree on where it ends (no smuggling).
"""

from __future__ import annotations

import asyncio

from blockd.http import h1

PIECE = 65536


class PeerGone(Exception):
    """One side closed or stalled in the middle of a message."""


async def copy_length(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int, idle: float
) -> None:
    """Copy exactly n bytes; fail when no byte arrives for idle seconds."""
    # Hot path (every proxied response): one timer for the whole copy, pushed back on
    # progress, costs less than a timer per read.
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(idle) as deadline:
        while n > 0:
            data = await reader.read(min(n, PIECE))
            if not data:
                raise PeerGone("closed mid-message")
            n -= len(data)
            writer.write(data)
            await writer.drain()
            deadline.reschedule(loop.time() + idle)


async def copy_chunked(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    idle: float,
    status: int = 400,
) -> None:
    """Copy a chunked body through its last chunk and trailers; raise h1.HttpError(status)."""
    try:
        while True:
            size = h1.chunk_size(await _line(reader, idle))
            writer.write(b"%x\r\n" % size)  # the size as checked; extensions are dropped
            if size == 0:
                break
            await copy_length(reader, writer, size, idle)
            async with asyncio.timeout(idle):
                end = await reader.readexactly(2)
            if end != b"\r\n":
                raise h1.HttpError(status, "bad-chunk")
            writer.write(end)
            await writer.drain()
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
        await writer.drain()
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
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle: float
) -> None:
    """Copy until the reader's end of stream."""
    while True:
        async with asyncio.timeout(idle):
            data = await reader.read(PIECE)
        if not data:
            return
        writer.write(data)
        await writer.drain()


async def pipe(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    idle: float,
) -> None:
    """Relay bytes both ways until both directions end, or neither moves for idle seconds."""
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
                await dst.drain()
        except OSError:
            pass
        a[1].close()
        b[1].close()

    await asyncio.gather(one_way(a[0], b[1]), one_way(b[0], a[1]))
