"""blockd as a DNS daemon: real UDP and TCP on loopback, a real upstream, the demo lists."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import dnslib
import pytest

from blockd.app import App
from blockd.config import parse
from blockd.policy.compile import compile_snapshot
from tests.daemon import ask, demo_config, ede, one, port, running, send

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def daemon(tmp_path: Path, upstream: Upstream) -> AsyncIterator[App]:
    async with running(demo_config(tmp_path, upstream.addr), tmp_path) as app:
        yield app


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_blocked_host_and_subdomains_get_the_notice_address_and_ede(
    daemon: App, transport: str
) -> None:
    for name in ("blocked.demo.test", "www.blocked.demo.test", "a.b.blocked.demo.test"):
        reply = await ask(daemon, name, edns=[], tcp=transport == "tcp")
        assert reply.header.rcode == dnslib.RCODE.NOERROR
        assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]
        assert reply.rr[0].ttl == 60
        [(code, text)] = ede(reply)
        assert code == 16
        assert b"Demo Child-Protection Authority" in text
        assert b"blocked.demo.test" not in text
    reply = await ask(daemon, "blocked.demo.test", "AAAA")
    assert [str(rr.rdata) for rr in reply.rr] == ["::1"]


@pytest.mark.parametrize("qtype", ["MX", "TXT", "HTTPS", "SVCB"])
async def test_other_types_of_a_blocked_host_get_nodata_with_soa(daemon: App, qtype: str) -> None:
    reply = await ask(daemon, "blocked.demo.test", qtype, edns=[])
    assert reply.header.rcode == dnslib.RCODE.NOERROR and not reply.rr
    assert reply.auth[0].rtype == dnslib.QTYPE.SOA
    assert ede(reply)[0][0] == 16


async def test_nxdomain_action_and_shape_is_the_same_for_every_entry(daemon: App) -> None:
    a = await ask(daemon, "hashed.demo.test", edns=[])
    b = await ask(daemon, "deep.sub.hashed.demo.test", edns=[])
    for reply in (a, b):
        assert reply.header.rcode == dnslib.RCODE.NXDOMAIN
        assert reply.auth[0].rtype == dnslib.QTYPE.SOA and reply.auth[0].ttl == 60
    assert ede(a) == ede(b)
    assert str(a.auth[0]).split(None, 1)[1] == str(b.auth[0]).split(None, 1)[1]


async def test_structured_error_when_the_client_asks(daemon: App) -> None:
    reply = await ask(daemon, "blocked.demo.test", edns=[dnslib.EDNSOption(15, b"")])
    [(code, text)] = ede(reply)
    doc = json.loads(text)
    assert (
        code == 16 and doc["o"] == "Test ISP" and doc["c"] == ["https://authority.example/appeals"]
    )
    assert "blocked.demo.test" not in text.decode()


async def test_routed_host_gets_the_proxy_address_other_types_are_forwarded(
    daemon: App, upstream: Upstream
) -> None:
    upstream.add("partial.demo.test", "MX", "10 mail.partial.demo.test")
    reply = await ask(daemon, "partial.demo.test")
    assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"] and not ede(reply)
    https = await ask(daemon, "partial.demo.test", "HTTPS")
    assert not https.rr
    mx = await ask(daemon, "partial.demo.test", "MX")
    assert "mail.partial.demo.test" in str(mx.rr[0].rdata)


async def test_clean_names_are_forwarded_cached_and_ttls_count_down(
    daemon: App, upstream: Upstream
) -> None:
    upstream.add("www.example.com", "A", "192.0.2.10", ttl=300)
    first = await ask(daemon, "www.example.com", edns=[])
    assert [str(rr.rdata) for rr in first.rr] == ["192.0.2.10"] and first.rr[0].ttl == 300
    seen = len(upstream.queries)
    await asyncio.sleep(1.2)
    second = await ask(daemon, "www.example.com", edns=[])
    assert len(upstream.queries) == seen  # served from the cache
    assert second.rr[0].ttl in (298, 299)
    nx = await ask(daemon, "missing.example.com")
    assert nx.header.rcode == dnslib.RCODE.NXDOMAIN


async def test_cname_to_a_blocked_host_is_blocked(daemon: App, upstream: Upstream) -> None:
    upstream.add("alias.example.com", "CNAME", "hop.example.net")
    upstream.add("hop.example.net", "CNAME", "www.blocked.demo.test")
    reply = await ask(daemon, "alias.example.com", edns=[])
    assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]
    assert ede(reply)[0][0] == 16
    again = await ask(daemon, "alias.example.com", edns=[])  # from the cache: still blocked
    assert [str(rr.rdata) for rr in again.rr] == ["127.0.0.1"]


async def test_unreachable_upstream_gives_servfail_in_bounded_time(
    daemon: App, upstream: Upstream
) -> None:
    upstream.behave("dead.example.com", "silent")
    start = time.monotonic()
    reply = await ask(daemon, "dead.example.com", edns=[])
    assert reply.header.rcode == dnslib.RCODE.SERVFAIL
    assert time.monotonic() - start < 1.5 + 3.0  # total_timeout, and never a hang
    assert ede(reply)[0][0] in (22, 23)


async def test_client_subnet_is_stripped_before_forwarding(daemon: App, upstream: Upstream) -> None:
    upstream.add("ecs.example.com", "A", "192.0.2.20")
    ecs = dnslib.EDNSOption(8, bytes.fromhex("0001180000c00002"))
    await ask(daemon, "ecs.example.com", edns=[ecs])
    raw = upstream.queries[-1][-1]
    forwarded = dnslib.DNSRecord.parse(raw)
    codes = [o.code for rr in forwarded.ar if rr.rtype == dnslib.QTYPE.OPT for o in rr.rdata]
    assert 8 not in codes


async def test_tcp_pipelined_queries_are_all_answered(daemon: App, upstream: Upstream) -> None:
    upstream.add("slow.example.com", "A", "192.0.2.30")
    upstream.behave("slow.example.com", "delay", 0.5)
    names = ["slow.example.com", "blocked.demo.test", "partial.demo.test"]
    queries = [dnslib.DNSRecord.question(n, "A") for n in names]
    reader, writer = await asyncio.open_connection("127.0.0.1", port(daemon, "tcp"))
    writer.write(b"".join(struct.pack("!H", len(q.pack())) + q.pack() for q in queries))
    await writer.drain()
    answers = {}
    async with asyncio.timeout(5):
        for _ in queries:
            (size,) = struct.unpack("!H", await reader.readexactly(2))
            reply = dnslib.DNSRecord.parse(await reader.readexactly(size))
            answers[reply.header.id] = (str(reply.q.qname), reply)
    writer.close()
    assert {q.header.id for q in queries} == set(answers)
    first_name = next(iter(answers.values()))[0]
    assert first_name != "slow.example.com."  # out of order: the slow one came last


async def test_access_list_refuses_other_networks(tmp_path: Path, upstream: Upstream) -> None:
    text = demo_config(tmp_path, upstream.addr, allow=["192.0.2.0/24"])
    async with running(text, tmp_path, sync=False) as app:
        reply = await ask(app, "blocked.demo.test")
        assert reply.header.rcode == dnslib.RCODE.REFUSED and not reply.rr


async def test_policy_loads_from_disk_before_the_first_query(
    tmp_path: Path, upstream: Upstream
) -> None:
    config = parse(demo_config(tmp_path, upstream.addr), tmp_path)
    first = App(config)
    await first.start()
    await first.feeds.sync_all()
    await first.stop()
    (tmp_path / "feeds/demo-hosts.dsse").unlink()  # the source is gone: disk must suffice
    second = App(config)
    await second.start()
    try:
        assert second.readiness().ready
        reply = await ask(second, "blocked.demo.test")
        assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]
    finally:
        await second.stop()


async def test_without_any_list_it_forwards_and_says_not_ready(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with running(demo_config(tmp_path, upstream.addr), tmp_path, sync=False) as app:
        r = app.readiness()
        assert not r.ready and "no verified list" in r.reason
        upstream.add("blocked.demo.test", "A", "192.0.2.99")
        reply = await ask(app, "blocked.demo.test")
        assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.99"]


async def test_hostile_packets_do_not_stop_the_server(daemon: App) -> None:
    good = dnslib.DNSRecord.question("blocked.demo.test", "A")
    two = dnslib.DNSRecord(q=dnslib.DNSQuestion("a.example"))
    two.add_question(dnslib.DNSQuestion("b.example"))
    loop_ptr = bytes.fromhex("abcd01000001000000000000") + b"\xc0\x0c\x00\x01\x00\x01"
    for junk in (
        b"",
        b"\x00",
        b"\xff" * 11,
        b"\x12\x34\x81\x80" + b"\x00" * 8,
        loop_ptr,
        two.pack(),
        good.pack()[:20],
        bytes(range(256)) * 3,
    ):
        answer = await send(daemon, junk, wait=0.3)
        if answer is not None:
            assert dnslib.DNSRecord.parse(answer).header.rcode in (1, 4, 5)
    formerr = await send(daemon, two.pack())
    assert formerr is not None and dnslib.DNSRecord.parse(formerr).header.rcode == 1
    reply = await ask(daemon, "blocked.demo.test")
    assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]


async def test_big_answers_are_truncated_for_udp_and_whole_over_tcp(
    daemon: App, upstream: Upstream
) -> None:
    for i in range(60):
        upstream.add("big.example.com", "A", f"192.0.2.{i + 1}")
    udp = await ask(daemon, "big.example.com")
    assert udp.header.tc and not udp.rr
    tcp = await ask(daemon, "big.example.com", tcp=True)
    assert len(tcp.rr) == 60


async def test_policy_swap_under_load_loses_no_query(daemon: App, upstream: Upstream) -> None:
    upstream.add("clean.example.com", "A", "192.0.2.40")
    names = ["blocked.demo.test", "clean.example.com", "partial.demo.test"] * 200

    async def one(name: str) -> dnslib.DNSRecord:
        return await ask(daemon, name)

    swaps = 0

    async def swapper() -> None:
        nonlocal swaps
        for _ in range(10):
            daemon.feeds._activate()  # recompile and swap the same lists
            swaps += 1
            await asyncio.sleep(0.01)

    results, _ = await asyncio.gather(asyncio.gather(*(one(n) for n in names)), swapper())
    assert swaps == 10
    for name, reply in zip(names, results, strict=True):
        want = {
            "blocked.demo.test": "127.0.0.1",
            "clean.example.com": "192.0.2.40",
            "partial.demo.test": "127.0.0.1",
        }[name]
        assert [str(rr.rdata) for rr in reply.rr] == [want]


async def test_a_new_policy_applies_to_the_next_query(daemon: App, upstream: Upstream) -> None:
    upstream.add("blocked.demo.test", "A", "192.0.2.77")
    for _ in range(3):  # answered from the policy, then from remembered answers
        reply = await ask(daemon, "blocked.demo.test")
        assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]
    daemon.feeds.snapshot = compile_snapshot([])  # as after a list is withdrawn
    reply = await ask(daemon, "blocked.demo.test")
    assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.77"]


async def test_mutated_packets_and_a_flood_leave_the_server_answering(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with running(demo_config(tmp_path, upstream.addr, max_inflight=16), tmp_path) as app:
        rng = random.Random(7)
        base = dnslib.DNSRecord.question("www.blocked.demo.test", "A")
        base.add_ar(dnslib.EDNS0(udp_len=1232))
        good = bytearray(base.pack())
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        target = ("127.0.0.1", port(app))
        for _ in range(2000):  # mutations of a valid query: flips, cuts, insertions
            packet = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(max(1, len(packet)))
                choice = rng.random()
                if choice < 0.5 and packet:
                    packet[i] = rng.randrange(256)
                elif choice < 0.75:
                    del packet[i:]
                    packet += rng.randbytes(rng.randint(0, 8))
                else:
                    packet[i:i] = rng.randbytes(rng.randint(1, 30))
            with contextlib.suppress(BlockingIOError):
                sock.sendto(bytes(packet), target)
        upstream.behave(None, "delay", 1.0)  # every forwarded query now waits
        for i in range(300):  # one client floods names that must go upstream
            with contextlib.suppress(BlockingIOError):
                sock.sendto(dnslib.DNSRecord.question(f"f{i}.example.com").pack(), target)
        sock.close()
        await asyncio.sleep(0.1)
        reply = await ask(app, "blocked.demo.test")  # not queued behind the flood
        assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]
        assert one(app).dns.inflight <= 16


async def test_dnssec_records_and_bits_are_relayed_untouched(
    daemon: App, upstream: Upstream
) -> None:
    upstream.add("signed.example.com", "A", "192.0.2.50")
    rrsig = bytes.fromhex("0001 0d03 0000012c 7fffffff 60000000 1234") + b"\x07example\x03com\x00"
    upstream.add("signed.example.com", "RRSIG", rrsig + b"\x00" * 64)
    upstream.behave("signed.example.com", "ad")
    q = dnslib.DNSRecord.question("signed.example.com", "A")
    q.add_ar(dnslib.EDNS0(udp_len=1232, flags="do"))
    q.header.cd = 1
    raw = await send(daemon, q.pack())
    assert raw is not None
    reply = dnslib.DNSRecord.parse(raw)
    assert reply.header.ad == 1 and reply.header.cd == 1
    assert {dnslib.QTYPE[rr.rtype] for rr in reply.rr} == {"A", "RRSIG"}
    forwarded = dnslib.DNSRecord.parse(upstream.seen("signed.example.com")[-1].raw)
    opt = next(rr for rr in forwarded.ar if rr.rtype == dnslib.QTYPE.OPT)
    assert opt.edns_do and forwarded.header.cd == 1


async def test_tcp_idle_connections_are_closed_and_connections_capped(
    tmp_path: Path, upstream: Upstream
) -> None:
    config = demo_config(tmp_path, upstream.addr, tcp_idle_timeout=0.3, max_tcp_connections=2)
    async with running(config, tmp_path, sync=False) as app:
        tcp = port(app, "tcp")
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", tcp)
        async with asyncio.timeout(3):
            assert await idle_r.read(10) == b""  # closed by the server after 0.3 s idle
        idle_w.close()
        held = [await asyncio.open_connection("127.0.0.1", tcp) for _ in range(2)]
        await asyncio.sleep(0.05)
        extra_r, extra_w = await asyncio.open_connection("127.0.0.1", tcp)
        async with asyncio.timeout(3):
            assert await extra_r.read(10) == b""  # over the cap: closed at once
        extra_w.close()
        for _, w in held:
            w.close()


async def test_sighup_reload_applies_guards_and_refuses_bad_files(
    tmp_path: Path, upstream: Upstream
) -> None:
    text = demo_config(tmp_path, upstream.addr)
    path = tmp_path / "blockd.toml"  # running() writes it; the test rewrites it
    async with running(text, tmp_path, write=True) as app:
        upstream.add("blocked.demo.test", "A", "192.0.2.88")
        path.write_text(text.replace("[dns]", '[guards]\nnever_block = ["bad name!"]\n[dns]'))
        assert (await app.reload()).startswith("reload refused")
        reply = await ask(app, "blocked.demo.test")
        assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]
        path.write_text(
            text.replace("[dns]", '[guards]\nnever_block = ["blocked.demo.test"]\n[dns]')
        )
        assert await app.reload() == "reloaded"
        reply = await ask(app, "blocked.demo.test")
        assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.88"]
        assert app.readiness().ready


async def test_a_reload_cannot_rename_the_audit_log(tmp_path: Path, upstream: Upstream) -> None:
    text = demo_config(tmp_path, upstream.addr, demo=False)
    path = tmp_path / "blockd.toml"  # running() writes it; the test rewrites it
    async with running(text, tmp_path, write=True) as app:
        path.write_text(text.replace("isp.test/blockd/test", "isp.test/blockd/renamed"))
        result = await app.reload()
        assert result == (
            "reload refused: audit: the log is named 'isp.test/blockd/test' and signed by "
            "'isp.test/blockd/test', not 'isp.test/blockd/renamed' by 'isp.test/blockd/renamed': "
            "a log's origin and key name never change"
        )
        path.write_text(text.replace("[dns]", "[dns]\nttl = 30", 1))
        assert await app.reload() == "reloaded"


async def test_serves_ipv6_loopback_too(tmp_path: Path, upstream: Upstream) -> None:
    config = demo_config(tmp_path, upstream.addr, listen=["127.0.0.1:0", "[::1]:0"])
    async with running(config, tmp_path) as app:
        v6 = next(p for t, a, p in app.listeners() if t == "udp" and a == "::1")
        q = dnslib.DNSRecord.question("blocked.demo.test", "AAAA")
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, ("::1", v6))
            await loop.sock_sendall(sock, q.pack())
            async with asyncio.timeout(3):
                reply = dnslib.DNSRecord.parse(await loop.sock_recv(sock, 4096))
        assert [str(rr.rdata) for rr in reply.rr] == ["::1"]
