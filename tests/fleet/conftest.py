"""A real redis-server on a loopback port the test picks, in the test's own directory.

Debian's redis-server is installed when missing (tools/ensure-deb), as the Prometheus tests
install Prometheus. Each test gets its own server: nothing is saved to disk, and stopping
and starting it again (same port) is how tests take Redis away and bring it back.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START_WITHIN = 30.0  # seconds for redis-server to answer PING (a loaded machine)


@pytest.fixture(scope="session")
def redis_binary() -> str:
    """Return redis-server's path, installing Debian's package if missing."""
    subprocess.run([str(ROOT / "tools" / "ensure-deb"), "redis-server:redis-server"], check=True)
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    assert found, "redis-server not found after installing Debian's redis-server package"
    return found


def free_port() -> int:
    """Return a loopback TCP port nothing listens on just now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process on 127.0.0.1, stopped and started again on the same port."""

    def __init__(self, binary: str, directory: Path) -> None:
        """Prepare a server that keeps its files in directory."""
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.started_once = False

    @property
    def url(self) -> str:
        """Return the redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING.

        The first start tries other ports if the one found free is taken before
        redis-server binds it (it exits); a restart keeps its port, as clients expect.
        """
        for _ in range(4):
            if self._started():
                return
            if self.started_once:
                break
            self.port = free_port()
        self._started(raise_=True)

    def _started(self, *, raise_: bool = False) -> bool:
        """Start redis-server on self.port; say whether it answers PING (assert if raise_)."""
        self.process = subprocess.Popen(
            [
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
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_WITHIN
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                assert not raise_, f"redis-server exited at start (port {self.port} taken?)"
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        self.started_once = True
                        return True
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        """Stop the server (its data is lost: nothing is saved)."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


@pytest.fixture
def redis_server(redis_binary: str, tmp_path: Path) -> Iterator[RedisServer]:
    """Run a redis-server for one test; stop it after."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(redis_binary, directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
