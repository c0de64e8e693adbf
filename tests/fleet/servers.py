"""Real Redis processes on loopback ports the test picks, in the test's own directory.

Debian's redis-server and redis-sentinel are installed when missing (tools/ensure-deb), as
the Prometheus tests install Prometheus. Nothing is saved to disk: stopping a server and
starting it again (same port) is how tests take Redis away and bring it back empty; killing
it (SIGKILL) is how they make a primary fail. Each process logs to a file next to its data,
for reading after a failed test.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
START_WITHIN = 30.0  # seconds for a server to answer PING (a loaded machine)


def install(command: str, package: str) -> str:
    """Return command's path, installing Debian's package if it is missing."""
    subprocess.run([str(ROOT / "tools" / "ensure-deb"), f"{command}:{package}"], check=True)
    found = shutil.which(command) or shutil.which(command, path="/usr/bin:/usr/sbin")
    assert found, f"{command} not found after installing Debian's {package} package"
    return found


class Process:
    """One Redis program on 127.0.0.1 (a server or a Sentinel), started and stopped again on
    the same port."""

    def __init__(self, binary: str, directory: Path) -> None:
        """Prepare a process that keeps its files in directory."""
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.started_once = False

    # Whether a first start may move to another port when the one found free was taken
    # before the program bound it (it exits): not once a configuration file names the port.
    movable = True

    def argv(self) -> list[str]:
        """Return the command line."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the process and wait until it answers PING; a restart keeps its port."""
        for _ in range(3):
            if self._started():
                return
            if self.started_once or not self.movable:
                break
            self.port = free_port()  # lost to another program before it was bound
        raise AssertionError(f"{self.argv()} exited at start")

    def _started(self) -> bool:
        """Start the program on self.port; say whether it answers (False: it exited)."""
        log = (self.directory / f"{self.port}.log").open("ab")
        with log:
            self.process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_WITHIN
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        self.started_once = True
                        return True
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{self.binary} did not answer on port {self.port}")

    def kill(self) -> None:
        """Kill the process at once (SIGKILL): it fails, it does not stop."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """Stop the process (a server's data is lost: nothing is saved)."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


class RedisServer(Process):
    """One redis-server; a replica of another when given its port."""

    def __init__(
        self,
        binary: str,
        directory: Path,
        *,
        replica_of: int | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        """Prepare a server keeping its files in directory, replicating replica_of if set,
        with extra command-line settings."""
        super().__init__(binary, directory)
        self.replica_of = replica_of
        self.extra = list(extra)

    @property
    def url(self) -> str:
        """Return the redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        """Return redis-server's command line: loopback only, nothing saved."""
        argv = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--protected-mode",
            "yes",
        ]
        if self.replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return argv + self.extra


class Sentinel(Process):
    """One redis-sentinel watching a primary as a service, quick to call it down."""

    movable = False  # its configuration file names its port
    DOWN_AFTER_MS = 1000  # a primary silent this long is down (subjectively, then by quorum)
    # Long, though a failover takes a second or two: a Sentinel "fixes" a replica that
    # replicates from another address than the primary's (as a test's replica does, through
    # a relay) once it has known it this long; the relay would be bypassed.
    FAILOVER_TIMEOUT_MS = 120_000

    def __init__(
        self, binary: str, directory: Path, *, service: str, primary: int, quorum: int
    ) -> None:
        """Prepare a Sentinel for service, whose primary listens on port primary."""
        super().__init__(binary, directory)
        self.service = service
        self.conf = directory / f"sentinel-{self.port}.conf"  # Sentinel rewrites it as it learns
        self.conf.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {directory}\n"
            f"sentinel monitor {service} 127.0.0.1 {primary} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {self.DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {service} {self.FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {service} 1\n"
        )

    @property
    def address(self) -> str:
        """Return HOST:PORT, as [fleet] sentinels lists it."""
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        """Return redis-sentinel's command line: its configuration file."""
        return [self.binary, str(self.conf)]
