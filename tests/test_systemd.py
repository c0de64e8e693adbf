"""sd_notify: real unix datagram sockets as NOTIFY_SOCKET, the exact datagrams systemd reads."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from blockd.systemd import Notifier, watchdog_interval, watchdog_loop


class Manager:
    """The service manager's end: a bound AF_UNIX datagram socket."""

    def __init__(self, sock: socket.socket, env: str) -> None:
        self.sock = sock
        self.env = env

    def received(self) -> list[bytes]:
        """Return every datagram sent so far."""
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096))
            except BlockingIOError:
                return out


@pytest.fixture(params=["path", "abstract"])
def manager(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Manager]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if request.param == "path":
        path = tmp_path / "notify"
        assert len(str(path)) < 100  # sun_path limit
        sock.bind(str(path))
        env = str(path)
    else:
        name = f"blockd-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        env = "@" + name
    monkeypatch.setenv("NOTIFY_SOCKET", env)
    with sock:
        yield Manager(sock, env)


def test_ready_with_status(manager: Manager) -> None:
    with Notifier() as n:
        assert n.enabled
        assert n.ready("enforcing demo-authority/demo-hosts v3; ready")
    assert manager.received() == [b"READY=1\nSTATUS=enforcing demo-authority/demo-hosts v3; ready"]


def test_each_state_is_one_exact_datagram(manager: Manager) -> None:
    with Notifier() as n:
        assert n.ready()
        assert n.status("syncing lists")
        assert n.watchdog()
        assert n.stopping()
        assert n.stopping("draining")
    assert manager.received() == [
        b"READY=1",
        b"STATUS=syncing lists",
        b"WATCHDOG=1",
        b"STOPPING=1",
        b"STOPPING=1\nSTATUS=draining",
    ]


def test_reloading_carries_the_monotonic_time(manager: Manager) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    with Notifier() as n:
        assert n.reloading()
        assert n.reloading("reloading /etc/blockd/blockd.toml")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = manager.received()
    m = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)", first)
    assert m is not None
    assert before <= int(m[1]) <= after
    assert re.fullmatch(
        rb"RELOADING=1\nMONOTONIC_USEC=\d+\nSTATUS=reloading /etc/blockd/blockd.toml", second
    )


def test_a_multiline_status_stays_one_assignment(manager: Manager) -> None:
    with Notifier() as n:
        n.status("blockd 0.1.0\n  NOT READY: no verified list loaded yet")
    assert manager.received() == [b"STATUS=blockd 0.1.0;   NOT READY: no verified list loaded yet"]


def test_explicit_address_wins_over_the_environment(manager: Manager) -> None:
    with Notifier(manager.env) as n:
        n.ready()
    assert Notifier("").enabled is False
    assert manager.received() == [b"READY=1"]


def test_nothing_happens_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert not any([n.ready("x"), n.reloading(), n.status("x"), n.stopping(), n.watchdog()])
    assert n._sock is None  # no socket was even opened
    n.close()


def test_a_vanished_manager_is_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Notifier(str(tmp_path / "gone")) as n:
        assert n.ready() is False
        assert n.watchdog() is False
        assert n.watchdog() is False
    warnings = [r.getMessage() for r in caplog.records if r.name == "blockd.systemd"]
    assert len(warnings) == 1  # said once, not on every ping
    assert warnings[0].startswith("systemd notification READY=1 not delivered")


def test_unsupported_notify_socket_disables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert not Notifier().enabled


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("1500000", "self", 1.5),
        ("30000000", "other", None),
        ("0", None, None),
        ("junk", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for key, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            own = os.getpid()
            monkeypatch.setenv(key, {"self": str(own), "other": str(own + 1)}.get(value, value))
    assert watchdog_interval() == expected


class Probe:
    """A scripted self-probe: each call takes the next answer; counts its calls."""

    def __init__(self, *answers: bool | BaseException | None) -> None:
        self.answers = list(answers)  # None: hang until cancelled
        self.calls = 0
        self.done = asyncio.Event()

    async def __call__(self) -> bool:
        self.calls += 1
        answer = self.answers[min(self.calls, len(self.answers)) - 1]
        if self.calls >= len(self.answers):
            self.done.set()
        if answer is None:
            await asyncio.sleep(3600)
        if isinstance(answer, BaseException):
            raise answer
        return bool(answer)


async def run_loop(
    notifier: Notifier, probe: Probe, status: Callable[[], str] | None = None
) -> None:
    task = asyncio.create_task(watchdog_loop(notifier, probe, 0.02, status=status))
    async with asyncio.timeout(5):
        await probe.done.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_watchdog_pings_only_while_the_probe_passes(manager: Manager) -> None:
    probe = Probe(True, True, False, False)
    with Notifier() as n:
        await run_loop(n, probe)
    got = manager.received()
    assert got[:2] == [b"WATCHDOG=1", b"WATCHDOG=1"]
    assert got[2:4] == [
        b"STATUS=watchdog: self-probe failed 1 time(s) in a row (probe returned false); "
        b"systemd restarts blockd when WatchdogSec= passes",
        b"STATUS=watchdog: self-probe failed 2 time(s) in a row (probe returned false); "
        b"systemd restarts blockd when WatchdogSec= passes",
    ]
    assert b"WATCHDOG=1" not in got[2:]


async def test_watchdog_resumes_and_restores_status_on_recovery(manager: Manager) -> None:
    probe = Probe(False, True, True)
    with Notifier() as n:
        await run_loop(n, probe, status=lambda: "ready; enforcing 3 lists")
    got = manager.received()
    assert got[0].startswith(b"STATUS=watchdog: self-probe failed 1 time(s)")
    assert got[1:4] == [b"WATCHDOG=1", b"STATUS=ready; enforcing 3 lists", b"WATCHDOG=1"]


async def test_a_raising_or_hanging_probe_is_a_failure(manager: Manager) -> None:
    probe = Probe(OSError("connection refused"), None, True)
    with Notifier() as n:
        await run_loop(n, probe)
    got = manager.received()
    assert b"(OSError: connection refused)" in got[0]
    assert b"(no result within 0.02s)" in got[1]
    assert got[2] == b"WATCHDOG=1"


async def test_watchdog_loop_returns_at_once_without_a_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    probe = Probe(True)
    async with asyncio.timeout(1):
        await watchdog_loop(Notifier(), probe, 0.01)
    assert probe.calls == 0
