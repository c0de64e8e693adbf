"""Tell systemd how blockd is doing: sd_notify(3) without libsystemd.

systemd passes `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket) to a Type=notify
service; each notification is one datagram of newline-separated `KEY=value` assignments.
Everything here is a no-op when the variable is unset (blockd run by hand, in a container,
or in tests), and a notification that cannot be sent is dropped, never raised: telling
systemd must never stop blockd from answering queries.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

log = logging.getLogger(__name__)


class Notifier:
    """Send state notifications to the service manager, if there is one."""

    def __init__(self, address: str | None = None) -> None:
        """Notify `address`, or $NOTIFY_SOCKET when it is None; an empty address disables."""
        if address is None:
            address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = _socket_address(address)
        self._sock: socket.socket | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        """Say whether notifications go anywhere."""
        return self.address is not None

    def ready(self, status: str | None = None) -> bool:
        """Say that start-up (or a reload) is complete and blockd serves."""
        return self.send("READY=1", status=status)

    def reloading(self, status: str | None = None) -> bool:
        """Say that a reload started; follow with ready() when it is done."""
        # Type=notify-reload (systemd >= 253) requires MONOTONIC_USEC in the same message, to
        # tell this reload from an earlier one; older systemd and Type=notify ignore it.
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={now}", status=status)

    def status(self, text: str) -> bool:
        """Set the one-line status `systemctl status` shows."""
        return self.send(status=text)

    def stopping(self, status: str | None = None) -> bool:
        """Say that blockd is draining and stopping."""
        return self.send("STOPPING=1", status=status)

    def watchdog(self) -> bool:
        """Reset the service watchdog timer (WatchdogSec=)."""
        return self.send("WATCHDOG=1")

    def send(self, *assignments: str, status: str | None = None) -> bool:
        """Send one datagram of KEY=value lines; return whether it was delivered."""
        if self.address is None:
            return False
        lines = list(assignments)
        if status is not None:
            # One assignment per line: a newline inside STATUS would start a bogus one.
            lines.append("STATUS=" + "; ".join(status.splitlines()))
        if not lines:
            return False
        try:
            if self._sock is None:
                # Non-blocking: a stalled service manager must not stall the event loop.
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as e:
            if not self._failing:  # once per outage, not once per watchdog ping
                log.warning("systemd notification %s not delivered: %s", lines[0], e)
            self._failing = True
            return False
        self._failing = False
        return True

    def close(self) -> None:
        """Release the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _socket_address(text: str) -> str | bytes | None:
    if text.startswith("/"):
        return text
    if text.startswith("@") and len(text) > 1:
        return b"\0" + text[1:].encode()  # Linux abstract namespace
    if text:
        # systemd >= 254 may also offer vsock:...; blockd does not speak it.
        log.warning("NOTIFY_SOCKET=%r is not a unix socket; systemd notifications are off", text)
    return None


def watchdog_interval() -> float | None:
    """Return WatchdogSec= in seconds when the watchdog is on for this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we are a child of the service's main one)
    return int(usec) / 1_000_000


async def watchdog_loop(
    notifier: Notifier,
    probe: Callable[[], Awaitable[bool]],
    interval: float,
    *,
    status: Callable[[], str] | None = None,
) -> None:
    """Ping the watchdog every `interval` seconds, but only while `probe()` says blockd works.

    Pass half of watchdog_interval(), as sd_watchdog_enabled(3) advises. A probe that raises
    or takes longer than `interval` has failed. While the probe fails no ping is sent, so
    systemd restarts blockd once WatchdogSec= passes; each failure is shown as STATUS. When
    it recovers, STATUS is set back to `status()` (if given).
    """
    if not notifier.enabled:
        return
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        started = loop.time()
        why = await _run_probe(probe, interval)
        if why is None:
            notifier.watchdog()
            if failures:
                log.warning("watchdog self-probe works again after %d failures", failures)
                notifier.status(status() if status is not None else "watchdog: self-probe ok")
            failures = 0
        else:
            failures += 1
            log.error("watchdog self-probe failed (%s); not pinging the watchdog", why)
            notifier.status(
                f"watchdog: self-probe failed {failures} time(s) in a row ({why}); "
                "systemd restarts blockd when WatchdogSec= passes"
            )
        await asyncio.sleep(max(0.0, started + interval - loop.time()))


async def _run_probe(probe: Callable[[], Awaitable[bool]], limit: float) -> str | None:
    """Run one probe; return None when it passed, else why it failed."""
    try:
        async with asyncio.timeout(limit):
            ok = await probe()
    except TimeoutError:
        return f"no result within {limit:g}s"
    except Exception as e:  # a broken probe is a failed probe, not a dead watchdog loop
        return f"{type(e).__name__}: {e}"
    return None if ok else "probe returned false"
