"""A worker process: answer DNS and HTTP from the mapped policy, report counts, obey.

A worker never fetches, verifies, compiles or writes the audit log: it maps the snapshot
file the supervisor publishes, switches to a new one between two queries when told, and
reports its counts every second (totals, as plain numbers; never a client). When the
supervisor's end of the channel closes (it exited, however), the worker exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
from typing import Any, NoReturn

from blockd.events import EventBus
from blockd.http.notice import NoticePage
from blockd.metrics import BlockCounts, Metrics
from blockd.policy.compile import compile_snapshot
from blockd.policy.mapped import SnapshotFileError, open_current
from blockd.policy.snapshot import PolicySnapshot
from blockd.serving import QueryPath
from blockd.workers import channel, messages

log = logging.getLogger("blockd")


class MappedPolicy:
    """The snapshot a worker answers from: the published file, mapped read-only."""

    def __init__(self, start: messages.Start) -> None:
        """Map the snapshot in force (an empty policy if none was published yet)."""
        self.directory = start.policy_dir
        self.snapshot: PolicySnapshot = compile_snapshot([])
        self.switch()

    def switch(self) -> None:
        """Map the newest published snapshot; keep the one in force if it cannot be read."""
        try:
            snapshot = open_current(self.directory)
        except (OSError, SnapshotFileError) as e:
            log.error("worker: policy snapshot not switched, keeping %d: %s", self.generation, e)
            return
        if snapshot is not None:
            self.snapshot = snapshot  # one assignment, between two queries

    @property
    def generation(self) -> int:
        """Return the generation of the snapshot in force."""
        return self.snapshot.generation


def main(sock: socket.socket, index: int) -> NoReturn:
    """Run worker index on its channel to the supervisor; never return."""
    code = 0
    try:
        from blockd.loop import runner

        runner()(Worker(sock, index).run())
    except SystemExit as e:  # could not start: the supervisor has the reason
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        log.exception("worker %d failed", index)
        code = 70
    finally:
        logging.shutdown()
    os._exit(code)


class Worker:
    """One worker's query path and its side of the channel."""

    def __init__(self, sock: socket.socket, index: int) -> None:
        """Prepare; run() reads the Start message and serves."""
        self.sock = sock
        self.index = index
        self.bus = EventBus()
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        """Serve until told to stop; return at once if the supervisor goes."""
        reader, self.writer = await channel.open_stream(self.sock)
        start = await channel.read_down(reader)
        if not isinstance(start, messages.Start):
            raise channel.ChannelError(f"the first message was {type(start).__name__}")
        self.policy = MappedPolicy(start)
        self.path = QueryPath(
            start.config,
            self.policy,
            self.bus,
            cache_entries=start.cache_entries,
            reuse_port=True,
        )
        self.blocks = BlockCounts(self.bus)
        self.metrics = Metrics(self.bus, dns=self.path.pipeline.counts, blocks=self.blocks)
        self.path.set_trust(start.trust)
        self.path.pipeline.closed = start.closed
        for address, port in start.own:
            self.path.resolver.add_own(address, port)
        try:
            await self.path.start()
        except OSError as e:
            self._send({"t": "failed", "message": str(e)})
            await self.writer.drain()
            raise SystemExit(1) from None
        gc.freeze()  # what start-up built is never walked by the collector again
        loop = asyncio.get_running_loop()
        self._send({"t": "ready", "bound": self.path.bound, **self._report()})
        reports = loop.create_task(self._reports())
        commands = loop.create_task(self._commands(reader))
        try:
            await self.stopping.wait()
        finally:
            commands.cancel()
            await self.path.stop()
            reports.cancel()
            with contextlib.suppress(ConnectionError):
                self._send({"t": "report", **self._report()})
                await self.writer.drain()

    async def _commands(self, reader: asyncio.StreamReader) -> None:
        while True:
            message = await channel.read_down(reader)
            if message is None:
                os._exit(0)  # the supervisor has gone: no orphans, no draining for nobody
            self._obey(message)

    def _obey(self, message: object) -> None:
        match message:
            case messages.Policy():
                self.policy.switch()
                self._send({"t": "applied", "generation": self.policy.generation})
            case messages.Trust(trust):
                self.path.set_trust(trust)
            case messages.Configure(config):
                self.path.configure(config, NoticePage(config.http.notice))
            case messages.Open():
                self.path.pipeline.closed = False
            case messages.Stop():
                self.stopping.set()
            case _:
                log.error("worker %d: unknown message %r", self.index, type(message).__name__)

    async def _reports(self) -> None:
        while True:
            await asyncio.sleep(messages.REPORT_INTERVAL)
            self._send({"t": "report", **self._report()})
            await self.writer.drain()

    def _send(self, message: dict[str, Any]) -> None:
        self.writer.write(channel.pack_up(message))

    def _report(self) -> dict[str, Any]:
        """Return this worker's totals so far, as plain JSON values."""
        counts = self.path.pipeline.counts
        tallies = self.metrics.tallies
        cache = self.path.cache
        return {
            "generation": self.policy.generation,
            "cached": dict(counts.cached),
            "forwarded": dict(counts.forwarded),
            "upstream_seconds": [counts.upstream_seconds.counts, counts.upstream_seconds.total],
            "blocks_dns": [[*k, n] for k, n in self.blocks.dns.items()],
            "blocks_http": [[*k, n] for k, n in self.blocks.http.items()],
            "dns_problems": [[*k, n] for k, n in tallies.dns_problems.items()],
            "http": [[*k, n] for k, n in tallies.http.items()],
            "http_problems": [[*k, n] for k, n in tallies.http_problems.items()],
            "cache": [cache.hits, cache.misses, len(cache)],
            "http_connections": self.path.http.connections,
            "upstreams": [
                [u.name, u.healthy, u.down, u.last_reason, u.down_since, u.failures]
                for u in self.path.forwarder.states()
            ],
        }
