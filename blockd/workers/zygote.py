"""The zygote: a clean copy of blockd, forked before the event loop, that forks workers.

Forking a process that runs an event loop and threads can deadlock the child (a lock held
by another thread stays held). The zygote is forked from the supervisor once, before either
exists, keeps only one socket (SOCK_SEQPACKET) to the supervisor, and forks a worker each
time it is asked. Workers so share the supervisor's imported code (copy-on-write) and its
string hash seed (the mapped policy's fast path). The zygote reaps them and reports how
each ended; when the supervisor goes, its socket ends and the zygote exits.

Records on the socket: supervisor -> zygote `S` + worker index; zygote -> supervisor
`W` + index + pid with the worker's end of a new socket pair attached (SCM_RIGHTS), or
`X` + pid + exit code (negative: the signal that killed it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import selectors
import signal
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import NoReturn

RECORD = struct.Struct("!cIi")
Work = Callable[[socket.socket, int], NoReturn]
log = logging.getLogger("blockd")


class ZygoteGone(Exception):
    """The zygote has exited: no worker can be started."""


class Zygote:
    """The supervisor's end of the zygote: ask for workers, learn how they ended."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        """Take over a forked zygote's pid and socket."""
        self.pid = pid
        self.sock = sock
        self.alive = True
        self._waiting: deque[asyncio.Future[tuple[int, socket.socket]]] = deque()
        self.exits: dict[int, int] = {}  # pid -> exit code, as the zygote reported
        self.on_exit: Callable[[int, int], None] | None = None

    @classmethod
    def fork(cls, work: Work) -> Zygote:
        """Fork the zygote; each worker it forks runs work(its socket, its index)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                _serve(theirs, work)
            finally:
                os._exit(0)
        theirs.close()
        return cls(pid, ours)

    def attach(self) -> None:
        """Start reading the zygote's records on the running event loop."""
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    async def spawn(self, index: int) -> tuple[int, socket.socket]:
        """Start worker index; return its pid and the supervisor's end of its socket."""
        if not self.alive:
            raise ZygoteGone("the zygote has exited: workers cannot be started")
        future: asyncio.Future[tuple[int, socket.socket]] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting.append(future)
        self.sock.send(RECORD.pack(b"S", index, 0))
        return await future

    def _readable(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, RECORD.size, 1)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self._gone()
                return
            kind, number, value = RECORD.unpack(data)
            if kind == b"W" and fds and self._waiting:
                future = self._waiting.popleft()
                sock = socket.socket(fileno=fds[0])
                if future.done():
                    sock.close()
                else:
                    future.set_result((value, sock))
            elif kind == b"X":
                self.exits[number] = value
                if self.on_exit is not None:
                    self.on_exit(number, value)
            else:
                for fd in fds:
                    os.close(fd)

    def _gone(self) -> None:
        self.alive = False
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(ZygoteGone("the zygote exited"))
        log.error("the zygote exited: crashed workers cannot be restarted until blockd is")

    def close(self) -> None:
        """End the zygote (it exits when its socket closes) and reap it."""
        with contextlib.suppress(ValueError, OSError, RuntimeError):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _serve(sock: socket.socket, work: Work) -> None:
    """Run the zygote: fork a worker per request, report exits, end with the supervisor."""
    # A terminal's Ctrl-C, or systemd stopping the service, signals every process of
    # blockd: the supervisor acts for all. The zygote and the workers (which inherit this)
    # end when the supervisor's socket ends, or on SIGKILL.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd is written
    gc.freeze()  # what workers inherit stays untouched by collections: fewer copied pages
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                data = sock.recv(RECORD.size)
                if not data:
                    return  # the supervisor has gone
                kind, index, _ = RECORD.unpack(data)
                if kind == b"S":
                    _fork_worker(sock, index, work, (wake_r, wake_w), selector)
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
        _reap(sock)


def _fork_worker(
    sock: socket.socket,
    index: int,
    work: Work,
    wake: tuple[int, int],
    selector: selectors.BaseSelector,
) -> None:
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            selector.close()
            sock.close()
            ours.close()
            signal.set_wakeup_fd(-1)
            for fd in wake:
                os.close(fd)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            work(theirs, index)
        finally:
            os._exit(70)
    theirs.close()
    try:
        socket.send_fds(sock, [RECORD.pack(b"W", index, pid)], [ours.fileno()])
    finally:
        ours.close()


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        with contextlib.suppress(OSError):
            sock.send(RECORD.pack(b"X", pid, os.waitstatus_to_exitcode(status)))
