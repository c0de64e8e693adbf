"""The channel's framing against a peer that sends anything, over a real socket pair."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from blockd.workers import channel, messages
from blockd.workers.channel import HEADER, MAX_DOWN, MAX_UP, ChannelError


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Yield the reading end's reader and the other end's writer."""
    a, b = socket.socketpair()
    reader, near = await channel.open_stream(a)
    _, far = await channel.open_stream(b)
    try:
        yield reader, far
    finally:
        near.close()
        far.close()


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send data, then end the stream."""
    writer.write(data)
    await writer.drain()
    writer.write_eof()


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


async def test_an_empty_stream_is_the_end_not_an_error() -> None:
    async with pair() as (reader, writer):
        await send(writer, b"")
        assert await channel.read_up(reader) is None
    async with pair() as (reader, writer):
        await send(writer, b"")
        assert await channel.read_down(reader) is None


async def test_frames_round_trip_and_the_end_follows() -> None:
    async with pair() as (reader, writer):
        await send(writer, channel.pack_up({"t": "report", "n": [1, "ü"]}) * 2)
        assert await channel.read_up(reader) == {"t": "report", "n": [1, "ü"]}
        assert await channel.read_up(reader) == {"t": "report", "n": [1, "ü"]}
        assert await channel.read_up(reader) is None
    async with pair() as (reader, writer):
        await send(writer, channel.pack_down(messages.Policy(3)))
        assert await channel.read_down(reader) == messages.Policy(3)


@pytest.mark.parametrize("cut", [1, 2, 3])
async def test_a_stream_that_ends_inside_the_header(cut: int) -> None:
    for read in (channel.read_up, channel.read_down):
        async with pair() as (reader, writer):
            await send(writer, HEADER.pack(10)[:cut])
            with pytest.raises(ChannelError, match="inside a frame header"):
                await read(reader)


@pytest.mark.parametrize("have", [0, 1, 9])
async def test_a_stream_that_ends_inside_the_body(have: int) -> None:
    for read in (channel.read_up, channel.read_down):
        async with pair() as (reader, writer):
            await send(writer, HEADER.pack(10) + b"{" * have)
            with pytest.raises(ChannelError, match=r"inside a frame$"):
                await read(reader)


@pytest.mark.parametrize("size", [MAX_UP + 1, 2**31, 2**32 - 1])
async def test_a_frame_over_the_limit_is_refused_from_its_header(size: int) -> None:
    async with pair() as (reader, writer):
        # the declared body never comes: reading it would end in "inside a frame", and
        # what follows the header must still be unread
        await send(writer, HEADER.pack(size) + b"untouched")
        with pytest.raises(ChannelError, match="over the limit"):
            await channel.read_up(reader)
        assert await reader.readexactly(9) == b"untouched"


async def test_a_frame_over_the_down_limit_is_refused_from_its_header() -> None:
    async with pair() as (reader, writer):
        await send(writer, HEADER.pack(MAX_DOWN + 1) + b"untouched")
        with pytest.raises(ChannelError, match="over the limit"):
            await channel.read_down(reader)
        assert await reader.readexactly(9) == b"untouched"


async def test_a_frame_of_exactly_the_limit_is_read() -> None:
    body = b'{"pad":"' + b"x" * (MAX_UP - 10) + b'"}'
    assert len(body) == MAX_UP
    async with pair() as (reader, writer):
        sending = asyncio.create_task(send(writer, frame(body)))
        message = await channel.read_up(reader)
        await sending
        assert message is not None and len(message["pad"]) == MAX_UP - 10


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"\xff\xfe{}",
        b'{"a":1}{"b":2}',
        b"{'a': 1}",
        b"1" * 5000,  # an int longer than Python parses from a string
        b'{"a":' + b"9" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the decoder recurses
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ],
    ids=lambda b: repr(b[:12]) + f"..{len(b)}",
)
async def test_a_frame_that_is_not_json_is_a_channel_error(body: bytes) -> None:
    async with pair() as (reader, writer):
        await send(writer, frame(body))
        with pytest.raises(ChannelError, match="not JSON"):
            await channel.read_up(reader)


@pytest.mark.parametrize(
    "value", [[], [{"t": "report"}], "report", 5, 1.5, None, True, "NaN"], ids=repr
)
async def test_json_that_is_not_an_object_is_a_channel_error(value: object) -> None:
    async with pair() as (reader, writer):
        body = json.dumps(value).encode() if value != "NaN" else b"NaN"
        await send(writer, frame(body))
        with pytest.raises(ChannelError, match="not a JSON object"):
            await channel.read_up(reader)


async def test_an_error_in_one_frame_is_raised_for_that_frame_only() -> None:
    async with pair() as (reader, writer):
        await send(writer, frame(b"[1]") + channel.pack_up({"t": "ready"}))
        with pytest.raises(ChannelError):
            await channel.read_up(reader)
        assert await channel.read_up(reader) == {"t": "ready"}
