"""Worker processes: `blockd run` with [daemon] workers = 2, as an operator runs it.

Every test starts the real daemon (supervisor, zygote, workers) on loopback, talks DNS and
HTTP to the shared ports, reads /readyz and /metrics, and kills processes for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import dns.message
import dns.query
import dnslib
import pytest

from blockd.cli import main
from tests.daemon import ROOT, demo_config
from tests.factories import authority, signed_list, signed_trust, trust

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

pytestmark = pytest.mark.slow

NOW = datetime.now(UTC).replace(microsecond=0)
BASE = [f"base{i}.example" for i in range(20)]  # so each version changes a small fraction
PASS_ADDRESS = "192.0.2.7"  # the upstream's answer for every name the tests ask


@dataclass
class Blockd:
    """One `blockd run` with workers, and what it printed."""

    proc: asyncio.subprocess.Process
    conf: Path
    lines: list[str] = field(default_factory=list)
    dns: int = 0
    http: int = 0
    admin: int = 0

    async def get(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{self.admin}{path}") as r,
        ):
            return r.status, await r.text()

    async def workers(self) -> list[dict[str, Any]]:
        _, text = await self.get("/readyz")
        each: list[dict[str, Any]] = json.loads(text)["checks"]["workers"]["workers"]
        return each

    async def metric(self, name: str, **labels: str) -> float | None:
        _, text = await self.get("/metrics")
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "")
        found = re.search(rf"^{pattern} (\S+)$", text, re.M)
        return float(found[1]) if found else None

    def said(self, pattern: str) -> list[str]:
        return [ln for ln in self.lines if re.search(pattern, ln)]


async def until(check: Callable[[], Any], within: float = 15.0) -> Any:
    """Poll an async or plain check until it returns something true; fail after within s."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"never true within {within} s: {check}")
        await asyncio.sleep(0.05)


async def spawn(conf: Path) -> asyncio.subprocess.Process:
    """Start `blockd run` on conf, its output (stdout and stderr) on one unbuffered pipe."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "blockd.cli",
        "run",
        "--config",
        str(conf),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@contextlib.asynccontextmanager
async def run(conf: Path) -> AsyncIterator[Blockd]:
    """Start `blockd run` on conf; yield once it said it is ready; stop it after."""
    proc = await spawn(conf)
    b = Blockd(proc, conf)

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            b.lines.append(raw.decode(errors="replace").rstrip("\n"))

    reader = asyncio.get_running_loop().create_task(read())
    try:
        await until(lambda: b.said(r"^  (NOT READY|ready): ") or proc.returncode is not None, 30)
        banner = "\n".join(b.lines)
        assert proc.returncode is None, banner
        b.dns = int(re.search(r"dns\s+udp\s+127\.0\.0\.1:(\d+)", banner)[1])  # type: ignore[index]
        b.http = int(re.search(r"http\s+http\s+127\.0\.0\.1:(\d+)", banner)[1])  # type: ignore[index]
        b.admin = int(re.search(r"admin\s+http://127\.0\.0\.1:(\d+)", banner)[1])  # type: ignore[index]
        yield b
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.wait_for(reader, 5)


def query(port: int, name: str, timeout: float = 1.0) -> dnslib.DNSRecord | None:
    """Ask once from a fresh socket (a new source port: any worker may answer); None: lost."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(dnslib.DNSRecord.question(name).pack(), ("127.0.0.1", port))
        try:
            return dnslib.DNSRecord.parse(s.recv(4096))
        except TimeoutError:
            return None


def addresses(reply: dnslib.DNSRecord | None) -> list[str]:
    return [] if reply is None else [str(rr.rdata) for rr in reply.rr]


def demo_with_workers(
    tmp: Path, upstream: Upstream, *, encrypted: bool = False, **daemon: object
) -> Path:
    settings = "".join(f"{k} = {v}\n" for k, v in {"workers": 2, **daemon}.items())
    dns: dict[str, Any] = {}
    if encrypted:
        dns["encrypted"] = {"dot_listen": ["127.0.0.1:0"], "doh_listen": ["127.0.0.1:0"]}
    text = demo_config(tmp, upstream.addr, http={"tls_listen": []}, **dns)
    conf = tmp / "blockd.toml"
    conf.write_text(text.replace("[admin]", f"[daemon]\n{settings}[admin]"))
    return conf


async def ready_and_synced(b: Blockd) -> None:
    """Wait until every worker answers from the policy with all three demo lists."""
    await until(lambda: addresses(query(b.dns, "blocked.demo.test")) == ["127.0.0.1"])
    status, _ = await until(lambda: _ready(b))
    assert status == 200


async def _ready(b: Blockd) -> tuple[int, str] | None:
    status, text = await b.get("/readyz")
    return (status, text) if status == 200 else None


async def test_workers_share_the_ports_and_the_fleet_counts_as_one(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.add("clean.example", "A", PASS_ADDRESS)
    async with run(demo_with_workers(tmp_path, upstream)) as b:
        await ready_and_synced(b)
        workers = await b.workers()
        assert [w["worker"] for w in workers] == [1, 2]
        assert all(w["state"] == "serving" for w in workers)
        _, page = await b.get("/status")
        assert "<h2>Workers</h2><p>2 of 2 answering.</p>" in page
        assert f"<td>{workers[1]['pid']}</td>" in page
        pids = {w["pid"] for w in workers}
        assert len(pids) == 2 and b.proc.pid not in pids
        # Both workers hold the DNS port: two UDP sockets, one per process.
        assert _udp_sockets(b.dns) == 2
        # Queries from many source ports are spread over both; /metrics counts them all.
        for _ in range(40):
            routed = await asyncio.to_thread(query, b.dns, "partial.demo.test")
            assert addresses(routed) == ["127.0.0.1"]
            clean = await asyncio.to_thread(query, b.dns, "clean.example")
            assert addresses(clean) == [PASS_ADDRESS]
        labels = {"authority": "demo-authority", "list": "demo-urls", "transport": "udp"}
        await until(lambda: _equals(b.metric("blockd_dns_routed_total", **labels), 40))
        assert await b.metric("blockd_workers") == 2
        assert await b.metric("blockd_worker_up", worker="1") == 1
        assert await b.metric("blockd_worker_up", worker="2") == 1
        generation = await b.metric("blockd_policy_generation")
        assert await b.metric("blockd_worker_policy_generation", worker="2") == generation
        # The URL proxy answers from the workers too: the notice page for a listed URL.
        reader, writer = await asyncio.open_connection("127.0.0.1", b.http)
        writer.write(
            b"GET /listed/page.html HTTP/1.1\r\nHost: partial.demo.test\r\n"
            b"Connection: close\r\n\r\n"
        )
        head = (await reader.read(200)).decode()
        writer.close()
        assert head.startswith("HTTP/1.1 451 ")
        assert not b.said("Traceback")


async def _equals(value: Any, wanted: float) -> bool:
    return bool(await value == wanted)


def _udp_sockets(port: int) -> int:
    """Count the UDP sockets bound to 127.0.0.1:port (from /proc/net/udp)."""
    wanted = f"0100007F:{port:04X}"
    rows = Path("/proc/net/udp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1] == wanted)


async def test_a_killed_worker_is_restarted_and_the_other_keeps_answering(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with run(demo_with_workers(tmp_path, upstream)) as b:
        await ready_and_synced(b)
        (victim, other) = await b.workers()
        results: list[int] = []  # tries each query needed (0: never answered)
        stop = asyncio.Event()

        def loop() -> None:
            while not stop.is_set():
                for tries in (1, 2):  # a stub resolver asks again after a timeout
                    if addresses(query(b.dns, "blocked.demo.test", 0.5)) == ["127.0.0.1"]:
                        results.append(tries)
                        break
                else:
                    results.append(0)

        queries = asyncio.ensure_future(asyncio.to_thread(loop))
        await until(lambda: len(results) > 50)
        os.kill(victim["pid"], signal.SIGKILL)

        async def restarted() -> bool:
            now = await b.workers()
            return now[0]["pid"] not in (None, victim["pid"]) and now[0]["state"] == "serving"

        await until(restarted)
        done = len(results)
        await until(lambda: len(results) > done + 50)
        stop.set()
        await queries
        assert 0 not in results, f"{results.count(0)} of {len(results)} queries unanswered"
        assert (await b.workers())[1]["pid"] == other["pid"]  # the other one never stopped
        assert await b.metric("blockd_worker_restarts_total", worker="1") == 1
        assert await b.metric("blockd_worker_restarts_total", worker="2") == 0
        (line,) = b.said("worker-exited")
        assert "worker 1 was killed by SIGKILL" in line and "restarting it now" in line
        assert b.said("worker-recovered")
        # A second source of truth: the restarted worker maps the policy and blocks.
        assert addresses(query(b.dns, "blocked.demo.test")) == ["127.0.0.1"]


async def test_repeated_crashes_back_off_and_show_in_readiness(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with run(demo_with_workers(tmp_path, upstream, restart_delay_max=2)) as b:
        await ready_and_synced(b)
        for _ in range(3):
            pid = (await b.workers())[1]["pid"]
            os.kill(pid, signal.SIGKILL)

            async def replaced(pid: int = pid) -> bool:
                w = (await b.workers())[1]
                return w["pid"] not in (None, pid) and w["state"] == "serving"

            await until(replaced)
        # The fourth crash in a row waits 2 s (0.5, 1, 2: capped by restart_delay_max):
        # meanwhile blockd is not ready and says why.
        os.kill((await b.workers())[1]["pid"], signal.SIGKILL)

        async def backing_off() -> tuple[int, str] | None:
            status, text = await b.get("/readyz")
            return (status, text) if status == 503 else None

        _, text = await until(backing_off)
        checks = json.loads(text)["checks"]["workers"]
        assert checks["ok"] is False and "worker 2 keeps crashing" in checks["problem"]
        assert await b.metric("blockd_worker_up", worker="2") == 0
        await until(lambda: _ready(b))
        assert await b.metric("blockd_worker_restarts_total", worker="2") == 4
        lines = b.said("worker-exited")
        assert len(lines) == 4
        assert "(4 times in a row)" in lines[-1] and "restarting it in 2 s" in lines[-1]
        assert "(3 times in a row)" in lines[-2] and "restarting it in 1 s" in lines[-2]
        assert "restarting it now" in lines[0]
        # The other worker answered all along.
        assert (await b.workers())[0]["restarts"] == 0


async def test_killing_the_supervisor_ends_every_worker(tmp_path: Path, upstream: Upstream) -> None:
    async with run(demo_with_workers(tmp_path, upstream)) as b:
        await ready_and_synced(b)
        pids = [w["pid"] for w in await b.workers()]
        zygote = _parent(pids[0])
        assert zygote not in (b.proc.pid, 1) and _parent(zygote) == b.proc.pid
        b.proc.send_signal(signal.SIGKILL)
        await b.proc.wait()
        await until(lambda: not any(_alive(p) for p in [*pids, zygote]), 10)
        # The port is free again: nothing holds it.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", b.dns))


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended: only its exit status is left


async def test_sigterm_stops_everything_cleanly_and_the_audit_log_counts_every_worker(
    tmp_path: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = demo_with_workers(tmp_path, upstream)
    async with run(conf) as b:
        await ready_and_synced(b)
        pids = [w["pid"] for w in await b.workers()]
        for _ in range(30):
            await asyncio.to_thread(query, b.dns, "partial.demo.test")
        b.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(b.proc.wait(), 20) == 0
    assert not any(_alive(p) for p in pids)
    assert not b.said("Traceback|worker-exited|zygote exited|helper process died")
    out = tmp_path / "bundle.json"
    assert main(["audit", "export", "-c", str(conf), "-o", str(out)]) == 0
    entries = [json.loads(e) for e in json.loads(out.read_text())["entries"]]
    counted = sum(
        r["count"]
        for e in entries
        if e["type"] == "block-counts"
        for r in e["counts"]
        if (r["list"], r["transport"]) == ("demo-urls", "udp")
    )
    assert counted == 30  # the last second's counts too: reported on stop


async def test_a_reload_reaches_every_worker(tmp_path: Path, upstream: Upstream) -> None:
    conf = demo_with_workers(tmp_path, upstream)
    async with run(conf) as b:
        await ready_and_synced(b)
        # Reloaded: queries from loopback are no longer allowed, by any worker.
        text = conf.read_text().replace(
            'operator = "Test ISP"', 'operator = "Test ISP"\nallow = ["10.0.0.0/8"]'
        )
        conf.write_text(text)
        b.proc.send_signal(signal.SIGHUP)
        await until(lambda: b.said("configuration reloaded"))

        def every_worker_refuses() -> bool:
            # From 20 source ports: both workers answer some of them.
            replies = [query(b.dns, "blocked.demo.test") for _ in range(20)]
            return all(r is not None and r.header.rcode == dnslib.RCODE.REFUSED for r in replies)

        await until(every_worker_refuses)


async def test_a_port_in_use_stops_the_start_with_its_name(
    tmp_path: Path, upstream: Upstream
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        conf = demo_with_workers(tmp_path, upstream)
        conf.write_text(
            conf.read_text().replace(
                'listen = ["127.0.0.1:0"]', f'listen = ["127.0.0.1:{port}"]', 1
            )
        )
        proc = await spawn(conf)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 2, text
    assert f"127.0.0.1:{port}" in text and "in use" in text
    assert "Traceback" not in text


# -- swapping the policy under load ----------------------------------------------------


def swap_setup(tmp: Path, upstream: Upstream) -> tuple[Path, Path]:
    (tmp / "trust.dsse").write_bytes(
        signed_trust(trust([authority()], expires=NOW + timedelta(days=30)))
    )
    src = tmp / "hosts.dsse"
    publish(src, 1)
    host, port = upstream.addr
    conf = tmp / "blockd.toml"
    conf.write_text(f"""demo = true
[trust]
pinned = "{tmp / "trust.dsse"}"
[state]
dir = "{tmp / "state"}"
[dns]
listen = ["127.0.0.1:0"]
upstreams = ["{host}:{port}"]
[http]
listen = ["127.0.0.1:0"]
tls_listen = []
[admin]
listen = ["127.0.0.1:0"]
[daemon]
workers = 2
[[lists]]
authority = "auth"
list = "hosts"
source = "file://{src}"
interval = 86400
""")
    return conf, src


def blocked_in(version: int) -> set[str]:
    """Version v blocks v<v>.swap.example, and odd.swap.example when v is odd."""
    return {f"v{version}.swap.example"} | ({"odd.swap.example"} if version % 2 else set())


def publish(src: Path, version: int) -> None:
    src.write_bytes(
        signed_list(
            [*BASE, *sorted(blocked_in(version))],
            version=version,
            issued_at=NOW - timedelta(hours=1),
            expires=NOW + timedelta(days=3),
        )
    )


async def test_swapping_the_policy_under_load_loses_no_query_and_mixes_no_policy(
    tmp_path: Path, upstream: Upstream
) -> None:
    names = ["odd.swap.example", *(f"v{v}.swap.example" for v in range(1, 6))]
    for name in names:
        upstream.add(name, "A", PASS_ADDRESS)
    conf, src = swap_setup(tmp_path, upstream)
    async with run(conf) as b:
        await until(lambda: addresses(query(b.dns, "v1.swap.example")) == ["127.0.0.1"])
        # Versions that may answer: from the newest every worker had confirmed when a query
        # was sent, to the newest published when its answer came back.
        confirmed, published = 1, 1
        stop = asyncio.Event()
        problems: list[str] = []
        answered = 0

        def loop() -> None:
            nonlocal answered
            i = 0
            while not stop.is_set():
                name = names[i % len(names)]
                i += 1
                low = confirmed
                reply = query(b.dns, name, 2.0)
                high = published
                if reply is None:
                    problems.append(f"{name}: no answer")
                    continue
                answered += 1
                got = addresses(reply)
                allowed = {
                    ("127.0.0.1" if name in blocked_in(v) else PASS_ADDRESS)
                    for v in range(low, high + 1)
                }
                if got not in [[a] for a in allowed]:
                    problems.append(f"{name}: {got} not from any of v{low}..v{high}")

        def more_than(n: int) -> bool:
            return answered > n

        queries = asyncio.ensure_future(asyncio.to_thread(loop))
        await until(functools.partial(more_than, 30))
        for version in range(2, 6):
            publish(src, version)
            published = version
            code = await asyncio.to_thread(main, ["--config", str(conf), "sync"])
            assert code == 0
            generation = await b.metric("blockd_policy_generation")

            async def everyone_switched(generation: float | None = generation) -> bool:
                gens = [w["policy_generation"] for w in await b.workers()]
                return all(g == generation for g in gens)

            await until(everyone_switched)
            confirmed = version
            await until(functools.partial(more_than, answered + 20))
        stop.set()
        await queries
        assert not problems, problems[:10]
        assert answered > 100
        assert await b.metric("blockd_list_version", authority="auth", list="hosts") == 5


async def test_workers_serve_dot_and_doh_on_shared_ports(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with run(demo_with_workers(tmp_path, upstream, encrypted=True)) as b:
        await ready_and_synced(b)
        banner = "\n".join(b.lines)
        dot = int(re.search(r"dns\s+dot\s+127\.0\.0\.1:(\d+)", banner)[1])  # type: ignore[index]
        doh = int(re.search(r"dns\s+doh\s+127\.0\.0\.1:(\d+)", banner)[1])  # type: ignore[index]
        cert = tmp_path / "state" / "tls" / "demo-cert.pem"  # made once, by the supervisor
        ctx = ssl.create_default_context(cafile=str(cert))
        for _ in range(6):  # new connections: the kernel spreads them over both workers
            reply = await asyncio.to_thread(
                dns.query.tls,
                dns.message.make_query("blocked.demo.test", "A"),
                "127.0.0.1",
                port=dot,
                ssl_context=ctx,
                server_hostname="dns.demo.test",
                timeout=5,
            )
            assert [x.to_text() for rrset in reply.answer for x in rrset] == ["127.0.0.1"]
            reply = await asyncio.to_thread(
                dns.query.https,
                dns.message.make_query("blocked.demo.test", "A"),
                f"https://127.0.0.1:{doh}/dns-query",
                verify=ctx,
                timeout=5,
            )
            assert [x.to_text() for rrset in reply.answer for x in rrset] == ["127.0.0.1"]
        # DDR from any worker announces the ports the supervisor chose for all of them.
        ddr = dnslib.DNSRecord.question("_dns.resolver.arpa", "SVCB")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(ddr.pack(), ("127.0.0.1", b.dns))
            raw = s.recv(4096)
        assert dot.to_bytes(2, "big") in raw and doh.to_bytes(2, "big") in raw

        async def counted() -> bool:
            dot_n = await b.metric("blockd_dns_queries_total", result="blocked", transport="dot")
            doh_n = await b.metric("blockd_dns_queries_total", result="blocked", transport="doh")
            return dot_n == 6 and doh_n == 6

        await until(counted)
