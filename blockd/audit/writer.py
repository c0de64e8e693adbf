"""Append to the log in a helper process, so the query path never waits for the GIL.

Encoding queued events, hashing and SQLite cost about 3 µs of Python per entry.
In a thread, that work competes with the DNS and HTTP listeners for the interpreter lock; in
its own process it runs on another core. The daemon's side only queues a tuple per event and
pickles the batch (C code, well under 1 µs per entry). A batch is acknowledged when the
helper has committed it; if the helper dies, a new one is started and the unacknowledged
batch is sent again. Appends are one transaction each, so a batch is wholly in the log or
not at all; each batch carries an identity the log stores in that transaction, so a batch
sent again after a helper died between committing and answering is not logged twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TypeVar

from blockd.audit.entries import Entry, Queued, encode
from blockd.audit.log import Head, MerkleLog, open_log

log = logging.getLogger(__name__)
A = TypeVar("A")
T = TypeVar("T")
_LOG: MerkleLog | None = None  # the helper process's own connection


def _open(directory: str, origin: str, key_name: str, parent: int, idle: bool) -> None:
    global _LOG
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # started so (_sigint_ignored); stay so
    # systemd signals every process of the service: blockd closes this helper itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if idle:  # only CPU time nothing else wants: the DNS and HTTP listeners come first
        with contextlib.suppress(OSError):  # not allowed here: normal priority, as before
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    _LOG = open_log(Path(directory), origin, key_name)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """End this helper when blockd is gone (killed, crashed): never linger as an orphan."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _timed(call: tuple[Callable[[A], T], A]) -> tuple[T, float]:
    """Run fn(arg) in the helper; return its result and how long it took here (wall time)."""
    fn, arg = call
    start = time.monotonic()
    return fn(arg), time.monotonic() - start


def _append(batch: tuple[str | None, Sequence[Queued | Entry]]) -> Head:
    assert _LOG is not None
    batch_id, items = batch
    return _LOG.append_encoded(*encode(items), batch_id)


def _sign(time: str) -> str:
    assert _LOG is not None
    return _LOG.sign_checkpoint(time)


IDLE = hasattr(os, "SCHED_IDLE")  # Linux


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Start child processes with SIGINT ignored, and keep blockd's own SIGINT meanwhile.

    Ctrl-C on a terminal reaches the whole process group, the helper too, and a helper
    interrupted mid-import prints a KeyboardInterrupt traceback; blockd stops it itself,
    after the last batch. An ignored SIGINT survives exec, and Python then never arms
    KeyboardInterrupt in the child. Blocked meanwhile here, a SIGINT for blockd is not lost:
    it waits for the handler to be restored (Linux never discards a blocked signal).
    """
    handler = signal.getsignal(signal.SIGINT)
    if handler is None or threading.current_thread() is not threading.main_thread():
        yield  # a handler Python did not install, or not ours to change: _open ignores it
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class LogWriter:
    """The helper process that writes one log directory.

    With idle=True the helper runs at idle priority (SCHED_IDLE): on a busy resolver it uses
    only CPU time the listeners leave. If a call then takes longer than `starved_after`
    seconds (a batch takes well under one), every core is busy and the log is falling
    behind: the helper is replaced by one at normal priority, for good. The time is measured
    in the helper, so time a call waits for the helper to be free does not count. An unprivileged
    process cannot raise its own priority back, hence the new process.
    """

    def __init__(
        self,
        directory: Path,
        origin: str,
        key_name: str,
        *,
        idle: bool = IDLE,
        starved_after: float = 10.0,
    ) -> None:
        """Prepare; the process starts on first use."""
        self._args = (str(directory), origin, key_name, os.getpid())
        self.idle = idle and IDLE
        self.starved_after = starved_after
        # Told (reason, detail) when the helper is replaced: the recorder publishes it.
        self.on_restart: Callable[[str, str], None] | None = None
        self._pool: ProcessPoolExecutor | None = None

    def _submit(self, call: tuple[Callable[[A], T], A]) -> asyncio.Future[tuple[T, float]]:
        """Submit to the helper; the first call starts it (in submit), with SIGINT ignored."""
        loop = asyncio.get_running_loop()
        if self._pool is not None:
            return loop.run_in_executor(self._pool, _timed, call)
        with _sigint_ignored():
            return loop.run_in_executor(self._executor(), _timed, call)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),  # never fork an event loop
                initializer=_open,
                initargs=(*self._args, self.idle),
            )
        return self._pool

    async def append(self, items: Sequence[Queued | Entry], batch: str | None = None) -> Head:
        """Encode queued items and commit them in the helper; restart it if it died.

        batch identifies the batch: sent again under the same identity, it is logged once.
        """
        return await self._call(_append, (batch, items))

    async def sign_checkpoint(self, time: str) -> str:
        """Sign a checkpoint in the helper."""
        return await self._call(_sign, time)

    async def _call(self, fn: Callable[[A], T], arg: A) -> T:
        for attempt in (1, 2):
            try:
                result, took = await self._submit((fn, arg))
                if self.idle and took > self.starved_after:
                    self.idle = False
                    self.close()  # the next call starts a helper at normal priority
                    self._restarted(
                        "starved",
                        f"audit log helper starved at idle priority ({took:.0f} s for one "
                        "call); it runs at normal priority from now on",
                    )
                return result
            except BrokenProcessPool:
                self.close()
                if attempt == 2:
                    raise
                self._restarted("died", "audit log helper process died; starting a new one")
        raise AssertionError("unreachable")

    def _restarted(self, reason: str, detail: str) -> None:
        """Say the helper was replaced: to on_restart, else straight to the log."""
        if self.on_restart is not None:
            self.on_restart(reason, detail)
        else:
            log.warning("%s", detail, extra={"kind": "audit-helper-restarted", "reason": reason})

    def close(self) -> None:
        """Stop the helper process."""
        if self._pool is not None:
            if self.idle:  # a helper starved at idle priority could take minutes to exit
                for pid in getattr(self._pool, "_processes", None) or ():
                    with contextlib.suppress(OSError):
                        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
