"""Frames between the supervisor and its workers, over a private socket pair.

Down (supervisor to worker) a frame is a pickle: configuration and trust policy objects,
from the more privileged process to the less. Up (worker to supervisor) a frame is JSON
of plain numbers and strings, so that a worker that an attacker's packet compromised
still cannot make the supervisor run code. A frame is a 4-byte big-endian length, then
that many bytes.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import struct
from typing import Any

HEADER = struct.Struct("!I")
MAX_DOWN = 64 << 20  # a configuration with its notice texts, a trust policy
MAX_UP = 4 << 20  # a worker's counts


class ChannelError(Exception):
    """The other end sent something that is not a frame of this channel."""


def pack_down(message: object) -> bytes:
    """Frame a message from the supervisor."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def pack_up(message: dict[str, Any]) -> bytes:
    """Frame a message from a worker."""
    data = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(data)) + data


async def _frame(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """Read one frame's bytes; None at a clean end of stream."""
    try:
        head = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise ChannelError("stream ended inside a frame header") from None
        return None
    (size,) = HEADER.unpack(head)
    if size > limit:
        raise ChannelError(f"frame of {size} bytes is over the limit of {limit}")
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ChannelError("stream ended inside a frame") from None


async def read_down(reader: asyncio.StreamReader) -> object | None:
    """Read a message from the supervisor; None when it has gone."""
    data = await _frame(reader, MAX_DOWN)
    # From the supervisor, over a socket pair only it and this worker hold: trusted.
    return None if data is None else pickle.loads(data)  # noqa: S301


async def read_up(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """Read a message from a worker; None when it has gone. Anything but a JSON object
    within the limit raises ChannelError."""
    data = await _frame(reader, MAX_UP)
    if data is None:
        return None
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):
        raise ChannelError("a frame that is not JSON") from None
    if not isinstance(message, dict):
        raise ChannelError("a frame that is not a JSON object")
    return message


async def open_stream(
    sock: socket.socket,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Wrap a connected socket in asyncio streams."""
    return await asyncio.open_unix_connection(sock=sock, limit=MAX_DOWN)
