"""A TCP relay on loopback between a client and a server, which a test cuts and restores.

Cut, it closes every connection it relays and refuses new ones (it accepts and resets them
at once, keeping its port): for the client, the network to the server is gone. Restored,
it relays new connections again. Stalled, it relays only so many more bytes from clients,
then holds the rest: the server has part of a command, and the test knows it.
"""

from __future__ import annotations

import asyncio
import contextlib

from blockd import tasks

CHUNK = 65536


class Relay:
    """Relay 127.0.0.1:port to 127.0.0.1:target while not cut."""

    def __init__(self, target: int) -> None:
        """Prepare a relay to the server on loopback port target."""
        self.target = target
        self.port = 0
        self._cut = False
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._budget: int | None = None  # bytes still relayed to the server while stalled
        self.stalled = asyncio.Event()  # set when a client's bytes are held

    @property
    def url(self) -> str:
        """Return the redis:// URL that reaches the server through this relay."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Listen on a loopback port the system picks."""
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Close every relayed connection now; refuse new ones until restored."""
        self._cut = True
        for writer in list(self._open):
            writer.transport.abort()

    def stall(self, after: int) -> None:
        """Relay `after` more bytes from clients to the server, then hold the rest (until
        cut) and set `stalled`."""
        self._budget = after
        self.stalled.clear()

    def restore(self) -> None:
        """Relay new connections again, all their bytes."""
        self._cut = False
        self._budget = None

    @property
    def cut_off(self) -> bool:
        """Say whether the relay is cut now."""
        return self._cut

    async def close(self) -> None:
        """Stop listening and end every connection."""
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await tasks.cancel(*self._tasks)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        self._open.add(writer)  # cut while connecting upstream: the pipes end at once
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            self._open.discard(writer)
            return
        pair = {writer, up_writer}
        self._open |= pair
        if writer.transport.is_closing():
            up_writer.transport.abort()
        pipes = {
            asyncio.ensure_future(self._pipe(reader, up_writer, to_server=True)),
            asyncio.ensure_future(self._pipe(up_reader, writer, to_server=False)),
        }
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in pair:
                w.transport.abort()  # one side ended: so does the other
            self._open -= pair
            await tasks.cancel(*pipes)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, to_server: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK):
                if to_server and self._budget is not None:
                    data, held = data[: self._budget], len(data) > self._budget
                    self._budget -= len(data)
                    if held:
                        writer.write(data)
                        self.stalled.set()
                        await asyncio.Future()  # until cut: the connection is aborted
                writer.write(data)
                await writer.drain()
