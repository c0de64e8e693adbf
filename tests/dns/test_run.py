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
from typing import Any

import dnslib
import pytest

from tests.daemon import demo_config

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


def run_blockd(conf: Path, **popen: Any) -> subprocess.Popen[str]:
    """Start `blockd run` on conf, warnings only, its output on one unbuffered pipe."""
    return subprocess.Popen(
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
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **popen,
    )


def test_run_reload_and_stop(tmp_path: Path) -> None:
    conf = tmp_path / "blockd.toml"
    conf.write_text(demo_config(tmp_path, ("127.0.0.1", 1)))  # nothing listens there
    proc = run_blockd(conf)
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


@pytest.mark.parametrize("workers", [1, 2])
def test_run_speaks_sd_notify(tmp_path: Path, workers: int) -> None:
    """Under systemd: READY once serving, watchdog pings, RELOADING/READY, STOPPING; the
    same with worker processes (the supervisor speaks for them, its pings need their answers)."""
    conf = tmp_path / "blockd.toml"
    text = demo_config(tmp_path, ("127.0.0.1", 1))
    conf.write_text(text.replace("[admin]", f"[daemon]\nworkers = {workers}\n[admin]"))
    sock_path = tmp_path / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sock_path))
    notify.settimeout(15)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "NOTIFY_SOCKET": str(sock_path),
        "WATCHDOG_USEC": "1000000",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd.cli", "run", "--config", str(conf), "--log-level", "error"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    seen: list[str] = []

    def until(prefix: str) -> str:
        while True:
            message = notify.recv(4096).decode()
            seen.append(message)
            if message.startswith(prefix) or f"\n{prefix}" in message:
                return message

    try:
        ready = until("READY=1")
        assert "STATUS=" in ready  # what is enforced, or why not
        assert ("2 of 2 workers answering" in ready) == (workers == 2)
        until("WATCHDOG=1")  # only sent while our own DNS listener answers
        proc.send_signal(signal.SIGHUP)
        assert "MONOTONIC_USEC=" in until("RELOADING=1")
        until("READY=1")
        proc.send_signal(signal.SIGTERM)
        until("STOPPING=1")
        assert proc.wait(timeout=15) == 0
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_startup_objects_are_left_out_of_garbage_collection() -> None:
    # In a process of its own: freezing pytest's objects would outlive this test.
    code = (
        "import gc; from blockd.daemon import freeze_startup; before = gc.get_freeze_count();"
        " freeze_startup(); print(before, gc.get_freeze_count())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    assert before == 0
    assert after > 1000  # the modules, functions and classes blockd loaded


def _audit_helpers(pid: int) -> list[int]:
    """Return the multiprocessing children of pid (the audit log helper), not its tracker."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, NotADirectoryError):
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def test_ctrl_c_stops_cleanly_without_a_traceback(tmp_path: Path) -> None:
    # A terminal sends SIGINT to the whole foreground process group: blockd and its audit
    # log helper alike. blockd stops the helper itself, in order; nobody prints a traceback.
    conf = tmp_path / "blockd.toml"
    conf.write_text(demo_config(tmp_path, ("127.0.0.1", 1)))
    proc = run_blockd(conf, start_new_session=True)  # its own group, as a shell gives a job
    try:
        banner = read_until(proc, r"(NOT READY|ready): .*\n")
        port = int(re.search(r"dns\s+udp\s+127\.0\.0\.1:(\d+)", banner)[1])  # type: ignore[index]
        query(port, "blocked.demo.test")  # answered after the banner: the handlers are set
        deadline = time.monotonic() + 20
        while not _audit_helpers(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)  # the audit helper starts with the first batch
        assert _audit_helpers(proc.pid), "the audit log helper never started"
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
        assert "draining and stopping" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("kind", "sock_type", "section"),
    [
        ("dns udp", socket.SOCK_DGRAM, "dns"),
        ("http http", socket.SOCK_STREAM, "http"),
        ("admin", socket.SOCK_STREAM, "admin"),
    ],
)
def test_a_port_in_use_is_named(
    tmp_path: Path, kind: str, sock_type: socket.SocketKind, section: str
) -> None:
    with socket.socket(socket.AF_INET, sock_type) as taken:
        taken.bind(("127.0.0.1", 0))
        if sock_type == socket.SOCK_STREAM:
            taken.listen()
        port = taken.getsockname()[1]
        listen: dict[str, Any] = {"listen": [f"127.0.0.1:{port}"]}
        if section == "dns":
            text = demo_config(tmp_path, ("127.0.0.1", 1), **listen)
        elif section == "http":
            text = demo_config(tmp_path, ("127.0.0.1", 1), http=listen)
        else:
            text = demo_config(tmp_path, ("127.0.0.1", 1), admin=listen)
        conf = tmp_path / "blockd.toml"
        conf.write_text(text)
        done = subprocess.run(
            [sys.executable, "-m", "blockd.cli", "run", "--config", str(conf)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"blockd: error: cannot start: {kind} 127.0.0.1:{port}: address already in use"
    )
    assert "Traceback" not in done.stderr
