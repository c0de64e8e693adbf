"""The upstream forwarder over real UDP and TCP sockets on loopback, against tests.dnsupstream."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import dnslib
import pytest

from blockd.dns.forward import (
    DOWN_AFTER,
    Forwarder,
    ForwardError,
    UpstreamState,
    resolv_conf_upstreams,
)

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

    MakeUpstream = Callable[..., Awaitable[Upstream]]

FORGED = "203.0.113.66"  # what tests.dnsupstream's forged answers carry


def query(name: str, qtype: str = "A", *, qid: int = 0x1234, edns: bool = False) -> bytes:
    """Build a query packet as the DNS server would hand it to the forwarder."""
    q = dnslib.DNSRecord.question(name, qtype)
    q.header.id = qid
    if edns:
        q.add_ar(dnslib.EDNS0(udp_len=1232))
    packet: bytes = q.pack()
    return packet


def addresses(response: bytes) -> list[str]:
    """Return the A/AAAA addresses in a response."""
    record = dnslib.DNSRecord.parse(response)
    return [str(rr.rdata) for rr in record.rr if rr.rtype in (dnslib.QTYPE.A, dnslib.QTYPE.AAAA)]


def closed_port() -> tuple[str, int]:
    """Return a loopback address where nothing listens (a port the OS just handed out)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()
    return host, port


async def test_forwards_and_restores_the_original_id(upstream: Upstream) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1")
    forwarder = Forwarder([upstream.addr])
    response = await forwarder.query(query("www.example.com", qid=0xBEEF))
    reply = dnslib.DNSRecord.parse(response)
    assert reply.header.id == 0xBEEF and reply.header.qr
    assert addresses(response) == ["192.0.2.1"]
    [seen] = upstream.queries
    assert (seen.transport, seen.qname, seen.qtype) == ("udp", "www.example.com", "A")
    await forwarder.close()


async def test_ids_and_source_ports_are_fresh_per_query(upstream: Upstream) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1")
    forwarder = Forwarder([upstream.addr])
    for _ in range(20):
        response = await forwarder.query(query("www.example.com", qid=7))
        assert response[:2] == b"\x00\x07"
    ids = [q.id for q in upstream.queries]
    ports = [port for _host, port in upstream.peers]
    assert 7 not in ids
    assert len(set(ids)) >= 18 and len(set(ports)) >= 18  # random, so rare repeats are fine


async def test_the_id_comes_from_the_given_rng(upstream: Upstream) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1")
    expected = random.Random(42).getrandbits(16)
    forwarder = Forwarder([upstream.addr], rng=random.Random(42))
    await forwarder.query(query("www.example.com", qid=(expected + 1) & 0xFFFF))
    assert upstream.queries[0].id == expected


@pytest.mark.parametrize("forgery", ["wrong_id", "wrong_question", "spoof_port", "junk"])
async def test_forged_answers_are_ignored_and_the_real_one_accepted(
    upstream: Upstream, forgery: str
) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1")
    upstream.behave("www.example.com", forgery)
    forwarder = Forwarder([upstream.addr], attempt_timeout=1.0)
    start = time.monotonic()
    response = await forwarder.query(query("www.example.com", qid=99))
    assert addresses(response) == ["192.0.2.1"] and FORGED not in addresses(response)
    assert response[:2] == (99).to_bytes(2, "big")
    assert time.monotonic() - start < 0.5  # accepted at once, not after a timeout
    assert forwarder.states()[0].healthy


async def test_case_of_the_echoed_question_does_not_matter(upstream: Upstream) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1")
    forwarder = Forwarder([upstream.addr])
    response = await forwarder.query(query("WwW.ExAmPlE.CoM"))
    assert addresses(response) == ["192.0.2.1"]


async def test_truncated_udp_answer_is_retried_over_tcp(upstream: Upstream) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1")
    upstream.behave("www.example.com", truncate=True, wrong_id=True)
    forwarder = Forwarder([upstream.addr])
    response = await forwarder.query(query("www.example.com", qid=5, edns=True))
    assert addresses(response) == ["192.0.2.1"] and response[:2] == b"\x00\x05"
    assert not dnslib.DNSRecord.parse(response).header.tc
    assert [q.transport for q in upstream.queries] == ["udp", "tcp"]
    assert upstream.queries[1].id != upstream.queries[0].id


async def test_big_answer_comes_whole_over_tcp(upstream: Upstream) -> None:
    wanted = [f"192.0.2.{i}" for i in range(1, 41)]
    for address in wanted:
        upstream.add("big.example.com", "A", address)
    forwarder = Forwarder([upstream.addr])
    response = await forwarder.query(query("big.example.com"))  # no EDNS: 512 bytes over UDP
    assert sorted(addresses(response)) == sorted(wanted)
    assert [q.transport for q in upstream.queries] == ["udp", "tcp"]


async def test_truncated_answer_without_tcp_fails_as_truncated(upstream: Upstream) -> None:
    upstream.behave("www.example.com", truncate=True, tcp_close=True)
    forwarder = Forwarder([upstream.addr])
    with pytest.raises(ForwardError) as raised:
        await forwarder.query(query("www.example.com"))
    assert raised.value.reason == "truncated"
    assert "example" not in str(raised.value)


async def test_silent_upstream_times_out_within_the_total_budget(upstream: Upstream) -> None:
    upstream.behave(None, silent=True)
    forwarder = Forwarder([upstream.addr], attempt_timeout=0.2, total_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(ForwardError) as raised:
        await forwarder.query(query("secret.example.com"))
    elapsed = time.monotonic() - start
    assert raised.value.reason == "timeout" and 0.45 <= elapsed < 0.5 + 0.25
    assert "secret" not in str(raised.value)
    assert len(upstream.queries) == 3  # 0.2 + 0.2 + what was left
    [state] = forwarder.states()
    assert not state.healthy and state.failures == 3 and state.last_failure is not None


async def test_down_and_back_are_each_told_once(make_upstream: MakeUpstream) -> None:
    first, second = await make_upstream(), await make_upstream()
    second.add("www.example.com", "A", "192.0.2.2")
    first.add("www.example.com", "A", "192.0.2.1")
    first.behave(None, silent=True)
    changes: list[UpstreamState] = []
    forwarder = Forwarder(
        [first.addr, second.addr], attempt_timeout=0.2, retry_after=0.0, on_change=changes.append
    )
    for _ in range(DOWN_AFTER - 1):  # set aside, probed each time, not yet down
        assert addresses(await forwarder.query(query("www.example.com"))) == ["192.0.2.2"]
    assert changes == [] and not forwarder.states()[0].healthy
    for _ in range(3):  # down: said once however many queries fail over
        await forwarder.query(query("www.example.com"))
    [down] = changes
    assert down.down and down.name == f"127.0.0.1:{first.addr[1]}"
    assert down.failures == DOWN_AFTER and down.last_reason == "timeout"
    assert down.down_since is not None
    first.behave(None, silent=False)
    for _ in range(2):
        await forwarder.query(query("www.example.com"))
    assert [c.down for c in changes] == [True, False]
    assert not forwarder.states()[0].down


async def test_fails_over_then_prefers_the_healthy_upstream(make_upstream: MakeUpstream) -> None:
    first, second = await make_upstream(), await make_upstream()
    first.behave(None, silent=True)
    second.add("www.example.com", "A", "192.0.2.2")
    forwarder = Forwarder([first.addr, second.addr], attempt_timeout=0.3, total_timeout=2.0)
    start = time.monotonic()
    response = await forwarder.query(query("www.example.com"))
    assert addresses(response) == ["192.0.2.2"]
    assert 0.3 <= time.monotonic() - start < 0.6
    one, two = forwarder.states()
    assert not one.healthy and one.failures == 1 and two.healthy and two.srtt is not None
    start = time.monotonic()
    await forwarder.query(query("www.example.com"))
    assert time.monotonic() - start < 0.25  # straight to the second
    assert len(first.queries) == 1 and len(second.queries) == 2


async def test_a_recovered_upstream_comes_back_after_the_back_off(
    make_upstream: MakeUpstream,
) -> None:
    first, second = await make_upstream(), await make_upstream()
    first.add("www.example.com", "A", "192.0.2.1")
    second.add("www.example.com", "A", "192.0.2.2")
    first.behave(None, silent=True)
    forwarder = Forwarder([first.addr, second.addr], attempt_timeout=0.2, retry_after=0.4)
    assert addresses(await forwarder.query(query("www.example.com"))) == ["192.0.2.2"]
    first.behave(None, silent=False)
    assert addresses(await forwarder.query(query("www.example.com"))) == ["192.0.2.2"]
    assert len(first.queries) == 1  # still backing off
    await asyncio.sleep(0.45)
    assert addresses(await forwarder.query(query("www.example.com"))) == ["192.0.2.1"]
    assert forwarder.states()[0].healthy and forwarder.states()[0].failures == 0


async def test_a_failed_probe_costs_one_query_per_back_off(make_upstream: MakeUpstream) -> None:
    first, second = await make_upstream(), await make_upstream()
    first.behave(None, silent=True)
    second.add("www.example.com", "A", "192.0.2.2")
    forwarder = Forwarder([first.addr, second.addr], attempt_timeout=0.2, retry_after=0.3)
    await forwarder.query(query("www.example.com"))
    await asyncio.sleep(0.35)
    answers = await asyncio.gather(*(forwarder.query(query("www.example.com")) for _ in range(20)))
    assert all(addresses(a) == ["192.0.2.2"] for a in answers)
    assert len(first.queries) == 2  # the first failure, then a single probe


async def test_faster_upstream_is_preferred(make_upstream: MakeUpstream) -> None:
    slow, fast = await make_upstream(), await make_upstream()
    for server, address in ((slow, "192.0.2.1"), (fast, "192.0.2.2")):
        server.add("www.example.com", "A", address)
    slow.behave(None, delay=0.1)
    forwarder = Forwarder([slow.addr, fast.addr])
    for _ in range(5):
        await forwarder.query(query("www.example.com"))
    assert len(slow.queries) == 1 and len(fast.queries) == 4  # each tried, then the faster
    one, two = forwarder.states()
    assert one.srtt is not None and two.srtt is not None and two.srtt < one.srtt


async def test_servfail_is_relayed_not_an_error(upstream: Upstream) -> None:
    upstream.behave("broken.example.com", servfail=True)
    forwarder = Forwarder([upstream.addr])
    response = await forwarder.query(query("broken.example.com", qid=3))
    reply = dnslib.DNSRecord.parse(response)
    assert reply.header.rcode == dnslib.RCODE.SERVFAIL and reply.header.id == 3
    assert forwarder.states()[0].healthy


async def test_negative_answers_and_dnssec_bits_are_relayed(upstream: Upstream) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1")
    upstream.add("www.example.com", "RRSIG", bytes.fromhex("0001 0d03 0000012c") + b"\x00" * 20)
    upstream.behave(None, ad=True)
    forwarder = Forwarder([upstream.addr])
    nx = dnslib.DNSRecord.parse(await forwarder.query(query("missing.example.com")))
    assert nx.header.rcode == dnslib.RCODE.NXDOMAIN and nx.auth[0].rtype == dnslib.QTYPE.SOA
    q = dnslib.DNSRecord.question("www.example.com", "A")
    q.add_ar(dnslib.EDNS0(udp_len=1232, flags="do"))
    signed = dnslib.DNSRecord.parse(await forwarder.query(q.pack()))
    assert signed.header.ad
    assert [dnslib.QTYPE[rr.rtype] for rr in signed.rr] == ["A", "RRSIG"]
    assert upstream.queries[-1].raw[2:] == q.pack()[2:]  # forwarded untouched but for the ID


async def test_closed_port_fails_over_at_once(upstream: Upstream) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1")
    forwarder = Forwarder([closed_port(), upstream.addr], attempt_timeout=2.0)
    start = time.monotonic()
    assert addresses(await forwarder.query(query("www.example.com"))) == ["192.0.2.1"]
    assert time.monotonic() - start < 1.0  # the ICMP refusal, not the attempt timeout
    assert [s.healthy for s in forwarder.states()] == [False, True]


async def test_nothing_listening_anywhere_is_a_network_error() -> None:
    forwarder = Forwarder([closed_port(), closed_port()], attempt_timeout=2.0)
    with pytest.raises(ForwardError) as raised:
        await forwarder.query(query("www.example.com"))
    assert raised.value.reason == "network"


async def test_no_upstreams_is_a_network_error() -> None:
    with pytest.raises(ForwardError) as raised:
        await Forwarder([]).query(query("www.example.com"))
    assert raised.value.reason == "network"


async def test_concurrent_queries_get_their_own_answers(upstream: Upstream) -> None:
    for i in range(200):
        upstream.add(f"n{i}.example.com", "A", f"10.0.{i // 256}.{i % 256}")
    upstream.behave("n7.example.com", delay=0.2)
    upstream.behave("n8.example.com", truncate=True)
    forwarder = Forwarder([upstream.addr])
    responses = await asyncio.gather(
        *(forwarder.query(query(f"n{i}.example.com", qid=i)) for i in range(200))
    )
    for i, response in enumerate(responses):
        reply = dnslib.DNSRecord.parse(response)
        assert reply.header.id == i and str(reply.q.qname) == f"n{i}.example.com."
        assert addresses(response) == [f"10.0.{i // 256}.{i % 256}"]


async def test_cancelled_queries_leave_no_socket_open(upstream: Upstream) -> None:
    upstream.behave(None, silent=True)
    forwarder = Forwarder([upstream.addr])
    before = len(os.listdir("/proc/self/fd"))
    tasks = [asyncio.create_task(forwarder.query(query("www.example.com"))) for _ in range(50)]
    await asyncio.sleep(0.1)
    assert len(os.listdir("/proc/self/fd")) >= before + 50
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)
    assert len(os.listdir("/proc/self/fd")) == before


async def test_close_waits_for_queries_in_flight_and_refuses_new_ones(upstream: Upstream) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1")
    upstream.behave("www.example.com", delay=0.2)
    forwarder = Forwarder([upstream.addr])
    pending = asyncio.create_task(forwarder.query(query("www.example.com")))
    await asyncio.sleep(0.05)
    await forwarder.close()
    assert pending.done() and addresses(pending.result()) == ["192.0.2.1"]
    with pytest.raises(ForwardError):
        await forwarder.query(query("www.example.com"))


@pytest.mark.parametrize(
    "packet",
    [
        b"\x12\x34",
        query("www.example.com")[:20],
        bytes.fromhex("abcd01000001000000000000") + b"\xc0\x0c\x00\x01\x00\x01",
        bytes.fromhex("abcd81800001000000000000") + b"\x00\x00\x01\x00\x01",  # a response
        bytes.fromhex("abcd01000001000000000000") + b"\x3f" + b"a" * 63 + b"\x3f" * 200,
    ],
)
async def test_malformed_query_is_refused_before_sending(upstream: Upstream, packet: bytes) -> None:
    forwarder = Forwarder([upstream.addr])
    with pytest.raises(ValueError, match="query"):
        await forwarder.query(packet)
    assert not upstream.queries


def test_upstream_addresses_must_be_numeric() -> None:
    with pytest.raises(ValueError, match="not a usable IP address"):
        Forwarder([("dns.example.net", 53)])


def test_resolv_conf_nameservers(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# generated\n"
        "; also a comment\n"
        "search example.com\n"
        "nameserver 192.0.2.53\n"
        "nameserver   2001:DB8::53   # trailing comment\n"
        "nameserver fe80::1%eth0\n"
        "nameserver\n"
        "nameserver 300.1.2.3\n"
        "nameserver resolver.example.net\n"
        "#nameserver 192.0.2.99\n"
        "options ndots:2 nameserver\n"
        "nameserver 192.0.2.53\n"
        "\x00\xff garbage \n"
    )
    assert resolv_conf_upstreams(str(conf)) == [
        ("192.0.2.53", 53),
        ("2001:db8::53", 53),
        ("fe80::1%eth0", 53),
    ]
    assert resolv_conf_upstreams(str(tmp_path / "missing")) == []
    assert resolv_conf_upstreams(str(tmp_path)) == []  # a directory: unreadable
