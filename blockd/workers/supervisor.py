"""The supervisor's side of the workers: start them, tell them, watch them, restart them.

Each worker has a slot and a task that keeps it running: ask the zygote for a process,
send it Start, read its reports until its channel ends, learn how it ended, wait out the
back-off, start it again. The first restart after a stable run is immediate; crashes in a
row wait 0.5 s, 1 s, 2 s ... up to daemon.restart_delay_max. A worker that stops
reporting for daemon.worker_timeout is killed (through a pidfd: never another process
that reused its pid) and restarted like one that crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from blockd.config import Config, binding, split_endpoint
from blockd.dns.forward import UpstreamState
from blockd.events import EventBus, WorkerExited, WorkerRecovered
from blockd.feeds.model import TrustPolicy
from blockd.http.notice import NoticePage
from blockd.metrics import WorkerStatus
from blockd.workers import channel, messages
from blockd.workers.totals import ReportError, Totals
from blockd.workers.zygote import Zygote, ZygoteGone

STABLE = 30.0  # seconds a worker must run for its next crash to count as the first
FIRST_DELAY = 0.5  # seconds before the second restart in a row; doubles from there
START_TIMEOUT = 30.0  # seconds a worker may take to open its listeners
EXIT_WAIT = 1.0  # seconds to wait for the zygote to say how a worker ended
log = logging.getLogger("blockd")

State = Literal["starting", "serving", "waiting", "stopped"]


@dataclass
class Slot:
    """One worker position: the process in it now, and its history."""

    index: int
    state: State = "starting"
    pid: int | None = None
    pidfd: int | None = None
    writer: asyncio.StreamWriter | None = None
    generation: int | None = None
    restarts: int = 0
    crashes: int = 0  # exits in a row with no stable run between
    started: float = 0.0  # monotonic time the current process was started
    reported: float = 0.0  # monotonic time of its latest message
    unresponsive: bool = False
    ready: asyncio.Future[None] | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class WorkerStartError(OSError):
    """A worker could not start (its listeners, most often): blockd cannot start."""


class Workers:
    """N worker processes answering on shared ports, seen from the supervisor."""

    def __init__(
        self,
        config: Config,
        count: int,
        bus: EventBus,
        zygote: Zygote,
        totals: Totals,
        policy_dir: Path,
    ) -> None:
        """Prepare count slots; nothing runs until start()."""
        self.config = config
        self.bus = bus
        self.zygote = zygote
        self.totals = totals
        self.policy_dir = policy_dir
        self.slots = [Slot(i) for i in range(1, count + 1)]
        self.trust: TrustPolicy | None = None
        self.closed = config.dns_start() == "fail-closed"
        self.own: list[tuple[str, int]] = []
        self.bound: list[tuple[str, str, int]] = []
        self._plan: Config | None = None  # config with the listen ports chosen
        self._reserved: list[socket.socket] = []
        self._stopping = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    # -- what App asks of its query path ---------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each answers; WorkerStartError if one cannot."""
        self._plan = self._choose_ports()
        self.zygote.attach()
        loop = asyncio.get_running_loop()
        for slot in self.slots:
            slot.ready = loop.create_future()
            slot.task = loop.create_task(self._keep(slot))
        try:
            async with asyncio.timeout(START_TIMEOUT):
                for slot in self.slots:
                    assert slot.ready is not None
                    await slot.ready
        except BaseException as e:
            for slot in self.slots:  # one failure is reported; the others are the same
                if slot.ready is not None and slot.ready.done() and not slot.ready.cancelled():
                    slot.ready.exception()
            await self.stop()
            if isinstance(e, TimeoutError):
                raise WorkerStartError(
                    f"workers did not start within {START_TIMEOUT:g} s"
                ) from None
            raise
        self._watch = loop.create_task(self._watchdog())

    async def stop(self, drain: float = 5.0) -> None:
        """Tell every worker to drain and exit; kill what is left after drain seconds."""
        self._stopping.set()
        if self._watch is not None:
            self._watch.cancel()
        self._tell(messages.Stop())
        tasks = [s.task for s in self.slots if s.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=drain + 2)
            for slot in self.slots:
                if slot.task in late:
                    self._kill(slot)
            if late:
                await asyncio.wait(late, timeout=2)
            for task in late:
                task.cancel()
        for sock in self._reserved:
            sock.close()
        self._reserved.clear()
        self.zygote.close()

    def set_trust(self, trust: TrustPolicy | None) -> None:
        """Take authority names and contacts from trust, in every worker."""
        self.trust = trust
        self._tell(messages.Trust(trust))

    def configure(self, config: Config, notice: NoticePage) -> None:
        """Apply a reloaded configuration in every worker (notice checked by the caller)."""
        del notice  # each worker builds its own from the configuration
        self.config = config
        self._tell(messages.Configure(config))

    def open(self) -> None:
        """Every configured list is in force: forward what the policy does not decide."""
        self.closed = False
        self._tell(messages.Open())

    def policy(self, generation: int) -> None:
        """Tell every worker that a new snapshot is published."""
        self._tell(messages.Policy(generation))

    def add_own(self, address: str, port: int) -> None:
        """Never treat address:port (one of the supervisor's listeners) as an origin."""
        self.own.append((address, port))

    def upstreams(self) -> list[UpstreamState]:
        """Return the upstreams as the workers together see them."""
        return self.totals.upstreams

    def statuses(self) -> list[WorkerStatus]:
        """Return each worker's liveness, restarts and policy generation, for metrics."""
        return [
            WorkerStatus(s.index, s.state == "serving", s.restarts, s.generation)
            for s in self.slots
        ]

    def serving(self) -> int:
        """Return how many workers answer now."""
        return sum(s.state == "serving" for s in self.slots)

    def problem(self) -> str | None:
        """Say what is wrong with the workers for readiness, or None."""
        if not self.serving():
            return "no worker is answering"
        looping = [s for s in self.slots if s.state != "serving" and s.crashes > 1]
        if looping:
            s = looping[0]
            return f"worker {s.index} keeps crashing ({s.crashes} times in a row)"
        if not self.zygote.alive:
            return "the zygote exited: a worker that ends cannot be restarted"
        return None

    # -- one slot's life ---------------------------------------------------------------

    async def _keep(self, slot: Slot) -> None:
        """Keep a worker running in slot until blockd stops."""
        while not self._stopping.is_set():
            try:
                reader = await self._spawn(slot)
            except ZygoteGone as e:
                slot.state = "stopped"
                _fail(slot, WorkerStartError(str(e)))
                return
            failed = await self._serve(slot, reader)
            code = await self._ended(slot)
            if self._stopping.is_set():
                break
            if slot.ready is not None and not slot.ready.done():
                _fail(slot, WorkerStartError(failed or f"worker {slot.index} {_how(code)}"))
                return
            delay = self._crashed(slot, code, failed)
            slot.state = "waiting"
            await asyncio.sleep(delay)
            slot.restarts += 1
        slot.state = "stopped"

    async def _spawn(self, slot: Slot) -> asyncio.StreamReader:
        slot.state = "starting"
        pid, sock = await self.zygote.spawn(slot.index)
        slot.pid, slot.started = pid, time.monotonic()
        slot.reported = slot.started
        slot.unresponsive = False
        try:
            slot.pidfd = os.pidfd_open(pid)
        except OSError:
            slot.pidfd = None  # it has already gone: its channel ends at once
        reader, slot.writer = await channel.open_stream(sock)
        assert self._plan is not None
        start = messages.Start(
            index=slot.index,
            config=self._plan,
            policy_dir=self.policy_dir,
            trust=self.trust,
            closed=self.closed,
            own=tuple(self.own),
            cache_entries=max(1, self.config.dns.cache_entries // len(self.slots))
            if self.config.dns.cache_entries
            else 0,
        )
        slot.writer.write(channel.pack_down(start))
        if self._plan is not self.config:  # reloaded since: apply what a reload changes
            slot.writer.write(channel.pack_down(messages.Configure(self.config)))
        return reader

    async def _serve(self, slot: Slot, reader: asyncio.StreamReader) -> str | None:
        """Read the worker's messages until its channel ends; return why it failed, if said."""
        try:
            while (message := await channel.read_up(reader)) is not None:
                slot.reported = time.monotonic()
                failed = self._on_message(slot, message)
                if failed is not None:
                    return failed
        except (channel.ChannelError, ReportError, ConnectionError) as e:
            log.error("worker %d sent what a worker does not send (%s): killing it", slot.index, e)
            self._kill(slot)
        return None

    def _on_message(self, slot: Slot, message: dict[str, Any]) -> str | None:
        kind = message.get("t")
        if kind == "failed":  # str() only of a str: a nested list's would recurse too deep
            text = message.get("message")
            return (text if isinstance(text, str) else "failed")[:500]
        if kind == "applied":
            generation = message.get("generation")
            slot.generation = generation if type(generation) is int else slot.generation
            return None
        if kind not in ("ready", "report"):
            name = kind if isinstance(kind, str) else type(kind).__name__
            raise ReportError(f"unknown message {name[:40]!r}")
        self.totals.absorb(slot.index, message)
        generation = message.get("generation")
        slot.generation = generation if type(generation) is int else slot.generation
        if kind == "ready":
            self._ready(slot, message.get("bound"))
        return None

    def _ready(self, slot: Slot, bound: object) -> None:
        again = slot.state == "serving"  # a worker says ready once: never a second recovery
        slot.state = "serving"
        if not self.bound and isinstance(bound, list):
            self.bound = [
                (b[0], b[1], b[2])
                for b in bound
                if isinstance(b, list) and len(b) == 3 and _strs(b[0], b[1]) and type(b[2]) is int
            ]
        if slot.ready is not None and not slot.ready.done():
            slot.ready.set_result(None)
        elif slot.restarts and not again:
            self.bus.publish(WorkerRecovered(slot.index, slot.restarts))

    async def _ended(self, slot: Slot) -> int | None:
        """Close the slot's channel; return the exit code once the zygote reports it."""
        self.totals.forget(slot.index)
        if slot.writer is not None:
            slot.writer.close()
            slot.writer = None
        pid, code = slot.pid, None
        deadline = time.monotonic() + EXIT_WAIT
        while pid is not None and pid not in self.zygote.exits:
            if time.monotonic() > deadline:
                self._kill(slot)  # its channel ended but it lives on: end it
                deadline = time.monotonic() + EXIT_WAIT
                if not self.zygote.alive:
                    break
            await asyncio.sleep(0.02)
        if pid is not None:
            code = self.zygote.exits.pop(pid, None)
        if slot.pidfd is not None:
            os.close(slot.pidfd)
        slot.pid = slot.pidfd = None
        return code

    def _crashed(self, slot: Slot, code: int | None, failed: str | None) -> float:
        """Count an unasked exit, publish it, and return the wait before the next start."""
        stable = time.monotonic() - slot.started >= STABLE
        slot.crashes = 1 if stable else slot.crashes + 1
        delay = 0.0
        if slot.crashes > 1:
            delay = min(FIRST_DELAY * 2 ** (slot.crashes - 2), self.config.daemon.restart_delay_max)
        if slot.unresponsive:
            reason = "unresponsive"
            detail = f"stopped reporting for {self.config.daemon.worker_timeout:g} s and was killed"
        elif failed is not None:
            reason, detail = "failed", f"failed: {failed}"
        else:
            reason = "killed" if code is not None and code < 0 else "exited"
            detail = _how(code)
        self.bus.publish(WorkerExited(slot.index, reason, detail, slot.crashes, delay))
        return delay

    def _kill(self, slot: Slot) -> None:
        if slot.pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(slot.pidfd, signal.SIGKILL)

    async def _watchdog(self) -> None:
        """Kill a worker that stopped reporting (a stuck event loop); _keep restarts it."""
        limit = self.config.daemon.worker_timeout
        while True:
            await asyncio.sleep(messages.REPORT_INTERVAL)
            now = time.monotonic()
            for slot in self.slots:
                late = slot.state in ("starting", "serving") and now - slot.reported > limit
                if late and not slot.unresponsive and slot.pidfd is not None:
                    slot.unresponsive = True
                    self._kill(slot)

    def _tell(self, message: object) -> None:
        frame = channel.pack_down(message)
        for slot in self.slots:
            if slot.writer is not None and not slot.writer.is_closing():
                slot.writer.write(frame)

    # -- ports ---------------------------------------------------------------------------

    def _choose_ports(self) -> Config:
        """Return the configuration with every port 0 replaced by a free port.

        Workers bind the same port with SO_REUSEPORT, so "any free port" must be chosen
        once, here: a TCP socket bound (not listening) holds the port for as long as blockd
        runs; the UDP port for DNS is checked free and released for the workers.
        """
        c = self.config
        dns = [self._choose(e, udp=True) for e in c.dns.listen]
        http = [self._choose(e) for e in c.http.listen]
        tls = [self._choose(e) for e in c.http.tls_listen]
        e = c.dns.encrypted
        encrypted = e.model_copy(
            update={
                "dot_listen": [self._choose(x) for x in e.dot_listen],
                "doh_listen": [self._choose(x) for x in e.doh_listen],
            }
        )
        return c.model_copy(
            update={
                "dns": c.dns.model_copy(update={"listen": dns, "encrypted": encrypted}),
                "http": c.http.model_copy(update={"listen": http, "tls_listen": tls}),
            }
        )

    def _choose(self, endpoint: str, *, udp: bool = False) -> str:
        host, port = split_endpoint(endpoint)
        if port:
            return endpoint
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(20):
            tcp = _reuse(socket.socket(family, socket.SOCK_STREAM))
            with binding("listen", host, 0):
                tcp.bind((host, 0))
            chosen = tcp.getsockname()[1]
            if udp:
                probe = _reuse(socket.socket(family, socket.SOCK_DGRAM))
                try:
                    probe.bind((host, chosen))
                except OSError:
                    tcp.close()
                    continue
                finally:
                    probe.close()
            self._reserved.append(tcp)
            return f"[{host}]:{chosen}" if ":" in host else f"{host}:{chosen}"
        raise WorkerStartError(f"no free port for {endpoint} in 20 tries")


def _reuse(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def _strs(*values: object) -> bool:
    return all(isinstance(v, str) for v in values)


def _fail(slot: Slot, error: Exception) -> None:
    if slot.ready is not None and not slot.ready.done():
        slot.ready.set_exception(error)


def _how(code: int | None) -> str:
    """Say how a process ended, from its exit code (negative: the signal)."""
    if code is None:
        return "ended (how is unknown)"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
