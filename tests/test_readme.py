"""The README's first screen works as written against `make run`'s daemon.

Every command in the `sh` blocks before "## Contents" (but `make run` and `make test`
themselves) runs in a shell from the repository root, against a real `blockd run` on a copy
of `config/blockd.toml`. Only the ports (the test's own, free ones) and the state directory
(a temporary one) differ from what a newcomer runs; each command must exit as its comment
says and print what its comment promises.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blockd import control
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
BLOCKD = Path(sys.executable).parent / "blockd"
DEMO_PORTS = (5300, 8080, 8443, 9153, 8081, 8853, 8444)  # DNS, HTTP, HTTPS, admin, origin, DoT, DoH

# What each command must print (a regular expression over stdout and stderr), keyed by a
# fragment of the command as the README writes it. A command the README adds must be
# given its promise here.
PROMISES: dict[str, tuple[str, ...]] = {
    "-p 5300 blocked.demo.test": (
        r"blocked\.demo\.test\.\s+\d+\s+IN\s+A\s+127\.0\.0\.1",
        "EDE: 16",
    ),
    "-p 5300 www.blocked.demo.test": (r"www\.blocked\.demo\.test\.\s+\d+\s+IN\s+A\s+127\.0\.0\.1",),
    "-p 5300 partial.demo.test": (r"partial\.demo\.test\.\s+\d+\s+IN\s+A\s+127\.0\.0\.1",),
    "-p 5300 hashed.demo.test": (r"status: NXDOMAIN",),
    "make demo": (r"blocked\.demo\.test: notice \(demo-authority/demo-hosts",),
    "/listed/page.html": (r"HTTP/1\.1 451",),
    "partial.demo.test/other": (r"HTTP/1\.1 200",),
    "Host: blocked.demo.test": (r"HTTP/1\.1 451",),
    "https://blocked.demo.test:8443/": (r"alert",),
    "-p 8853 +tls blocked.demo.test": (
        r"blocked\.demo\.test\.\s+\d+\s+IN\s+A\s+127\.0\.0\.1",
        "EDE: 16",
    ),
    "-p 8444 +https blocked.demo.test": (r"HTTP/2", r"IN\s+A\s+127\.0\.0\.1"),
    "_dns.resolver.arpa SVCB": (r"alpn=h2", r"alpn=dot", r"dns\.demo\.test\."),
    "https://dns.demo.test:8444/dns-query": (r"2 200 application/dns-message",),
    "audit export": (r"bundle",),
    "audit verify": (r"\bOK\b",),
    "blockd status": (r"demo-authority/demo-hosts\s+1\s", r"daemon\s+enforces demo-authority/"),
    "blockd sync": (r"daemon\s+enforces demo-authority/demo-hosts v1",),
}
# Commands whose comment says they fail (curl's exit status for a TLS handshake refused).
FAILS = ("https://blocked.demo.test:8443/",)


def first_screen() -> list[str]:
    """Return the shell commands of the README's first screen, as written."""
    text = (ROOT / "README.md").read_text("utf-8")
    head = text.split("\n## Contents", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", head, re.S):
        for raw in block.splitlines():
            command = re.sub(r"\s+#\s.*$", "", raw).strip()
            if command and not command.startswith(("make run", "make test", "#")):
                commands.append(command)
    return commands


def free_ports(n: int) -> list[int]:
    """Return n distinct free loopback ports (TCP and UDP: the demo serves DNS on both)."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port(udp_too=True)
        if port not in ports:
            ports.append(port)
    return ports


def with_ports(text: str, ports: dict[int, int]) -> str:
    for old, new in ports.items():
        text = re.sub(rf"(?<=[:\s]){old}\b", str(new), text)
    return text


@pytest.fixture
def demo_daemon(tmp_path: Path) -> Iterator[tuple[Path, dict[int, int]]]:
    """Run `blockd run` on make run's configuration with free ports and a fresh state."""
    ports = dict(zip(DEMO_PORTS, free_ports(len(DEMO_PORTS)), strict=True))
    text = (ROOT / "config" / "blockd.toml").read_text("utf-8")
    text = text.replace('"../feeds/', f'"{ROOT}/feeds/').replace("file://../", f"file://{ROOT}/")
    text = text.replace('dir = "../state/demo"', f'dir = "{tmp_path / "state"}"')
    config = tmp_path / "config" / "blockd.toml"
    config.parent.mkdir()
    config.write_text(with_ports(text, ports))
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen(
        [str(BLOCKD), "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # Up, and enforcing every demo list (a newcomer's first dig comes a second later).
        client = control.Client(socket_path=tmp_path / "state" / "control.sock", timeout=5)
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
            try:
                if len(client.call("GET", "/api/v1/status")["enforcing"]) == 3:
                    break
            except control.ControlError:
                pass
            assert time.monotonic() < deadline, "blockd did not come up"
            time.sleep(0.2)
        yield config, ports
    finally:
        proc.send_signal(signal.SIGINT)  # as Ctrl-C on make run
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    output = (tmp_path / "daemon.log").read_text()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output


@pytest.mark.slow
def test_the_first_screen_works_as_written(
    demo_daemon: tuple[Path, dict[int, int]], tmp_path: Path
) -> None:
    subprocess.run(
        [ROOT / "tools" / "ensure-deb", "dig:dnsutils", "curl:curl", "kdig:knot-dnsutils"],
        check=True,
    )
    config, ports = demo_daemon
    commands = first_screen()
    assert len(commands) >= 10, commands
    unpromised = [c for c in commands if not any(k in c for k in PROMISES)]
    assert not unpromised, f"README commands without a promise in this test: {unpromised}"
    env = {**os.environ, "PATH": f"{BLOCKD.parent}:{os.environ['PATH']}"}
    for written in commands:
        command = with_ports(written, ports).replace("config/blockd.toml", str(config))
        command = command.replace("demo-bundle.json", str(tmp_path / "demo-bundle.json"))
        command = command.replace("state/demo/", f"{tmp_path / 'state'}/")
        command = re.sub(r"^curl ", "curl -sSi --max-time 10 ", command)
        if command.startswith("make demo"):  # what it runs, with a state of the test's own
            assert "\ndemo: $(STAMP)\n\t$(BIN)/blockd demo\n" in (ROOT / "Makefile").read_text()
            command = f"{BLOCKD} demo --state {tmp_path / 'demo-state'}"
        run = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        said = run.stdout + run.stderr
        if any(k in written for k in FAILS):
            assert run.returncode != 0, f"{written}: should fail\n{said}"
        else:
            assert run.returncode == 0, f"{written}: exit {run.returncode}\n{said}"
        promises = next(v for k, v in PROMISES.items() if k in written)
        for promise in promises:
            assert re.search(promise, said), f"{written}: expected /{promise}/\n{said}"


def shell_lines() -> list[tuple[int, str]]:
    """Return (offset, line) of every line inside the README's ```sh blocks."""
    readme = (ROOT / "README.md").read_text("utf-8")
    out = []
    for block in re.finditer(r"```sh\n(.*?)```", readme, re.S):
        offset = block.start(1)
        for line in block.group(1).splitlines(keepends=True):
            out.append((offset, line.strip()))
            offset += len(line)
    return out


def test_dig_and_curl_are_installed_before_they_are_used() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    first_use = min(o for o, line in shell_lines() if line.startswith(("dig ", "curl ")))
    assert 0 <= readme.find("apt-get install dnsutils curl") < first_use


def test_blockd_runs_as_written_after_make_venv() -> None:
    lines = shell_lines()
    venv = next(o for o, line in lines if line.startswith("make venv"))
    path = next(o for o, line in lines if line.startswith('export PATH="$PWD/.venv/bin:$PATH"'))
    assert venv < path
    for offset, line in lines:
        if re.match(r"blockd\b", line):
            assert offset > path, f"{line!r} comes before .venv/bin is on PATH"
