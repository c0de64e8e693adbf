"""Run `blockd witness run` as a real process on a loopback port, for tests."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from blockd.audit import cosignature

KEY_SEED = bytes([7]) * 32  # a test key
NAME = "regulator.example/witness"


def witness_key(tmp: Path, name: str = NAME, seed: bytes = KEY_SEED) -> tuple[Path, str]:
    """Write a witness key file; return it and its vkey."""
    w = cosignature.Cosigner.from_seed(name, seed)
    path = tmp / f"{name.replace('/', '_')}.key"
    path.write_text(w.skey + "\n")
    path.chmod(0o600)
    return path, w.verifier.vkey


class Running:
    """A witness process: its URL, and what it wrote on stderr (drained in a thread)."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc, self.url = proc, url
        self.output: list[bytes] = []
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.output.append(line)

    def stderr(self) -> str:
        """Return what the witness wrote so far."""
        return b"".join(self.output).decode(errors="replace")


@contextlib.contextmanager
def witness(key: Path, state: Path, logs: dict[str, str], port: int = 0) -> Iterator[Running]:
    """Start a witness for logs (origin -> vkey) on port (0: any); stop it after."""
    args = [sys.executable, "-m", "blockd.cli", "witness", "run", "--key", str(key)]
    args += ["--listen", f"127.0.0.1:{port}", "--state", str(state)]
    for origin, vkey in logs.items():
        args += ["--log", f"{origin}={vkey}"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"})
    running: Running | None = None
    try:
        running = Running(proc, _url(proc))
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if running is not None:
            running._drain.join(5)


def _url(proc: subprocess.Popen[bytes]) -> str:
    """Read the witness's stderr until it says where it listens (at most 20 s)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        line = proc.stderr.readline()
        seen += line
        if b" listening on " in line:
            return line.decode().rsplit(" ", 1)[1].strip()
        if not line:
            break
    raise AssertionError(f"the witness did not start: {seen.decode(errors='replace')}")
