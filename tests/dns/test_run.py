"""`blockd run` as a real process: starts, says where it listens, reloads, drains on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dnslib

from tests.dns.test_daemon import demo_config

ROOT = Path(__file__).resolve().parents[2]


def query(port: int, name: str) -> dnslib.DNSRecord:
    q = dnslib.DNSRecord.question(name, "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(q.pack(), ("127.0.0.1", port))
        return dnslib.DNSRecord.parse(s.recv(4096))


def read_until(proc: subprocess.Popen[str], pattern: str, limit: float = 20) -> str:
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if re.search(pattern, seen):
            return seen
    raise AssertionError(f"never saw {pattern!r} in:\n{seen}")


def test_run_reload_and_stop(tmp_path: Path) -> None:
    conf = tmp_path / "blockd.toml"
    conf.write_text(demo_config(tmp_path, ("127.0.0.1", 1)))  # nothing listens there
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blockd.cli",
            "run",
            "--config",
            str(conf),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        banner = read_until(proc, r"(NOT READY|ready): .*\n")
        port = int(re.search(r"dns\s+udp\s+127\.0\.0\.1:(\d+)", banner)[1])  # type: ignore[index]
        assert "upstreams  127.0.0.1:1" in banner
        # The lists sync in the background; the first answers may predate them.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            reply = query(port, "www.blocked.demo.test")
            if reply.rr:
                break
            time.sleep(0.2)
        assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]
        conf.write_text("[trust]\nthis is not toml")
        proc.send_signal(signal.SIGHUP)
        read_until(proc, r"reload refused")
        assert [str(rr.rdata) for rr in query(port, "blocked.demo.test").rr] == ["127.0.0.1"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
