"""The DNS pipeline sans IO: wire bytes into decide()/handle()/forward(), answers and events out.

Each test is a scripted conversation: a pipeline built directly (a fake upstream, a fake
clock, a snapshot source whose `.snapshot` is replaced to change the policy), queries as
wire bytes, and assertions on the answer bytes (parsed with dnslib) and on the events
published on the bus. No sockets, no sleeps.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field
from types import SimpleNamespace

import dnslib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockd.config import DnsConfig
from blockd.dns import wire
from blockd.dns.answers import AnswerPolicy
from blockd.dns.cache import AnswerCache
from blockd.dns.forward import FORWARD_FAILURES
from blockd.dns.pipeline import AccessList, DnsPipeline
from blockd.events import DnsDecision, DnsProblem, DnsTransport, EventBus
from blockd.policy.snapshot import PolicySnapshot
from blockd.policy.verdict import Verdict
from tests.factories import FakeForwarder, Recorder, dns_config, query, snapshot

CLIENT = "127.0.0.1"
STRANGER = "192.0.2.7"  # outside the default allow networks (127.0.0.0/8, ::1/128)

NOTICE_V4, NOTICE_V6 = "192.0.2.80", "2001:db8::80"
PROXY_V4, PROXY_V6 = "192.0.2.81", "2001:db8::81"
# Distinct notice and proxy addresses, so an answer says which decision made it.
CFG = dns_config(
    notice_v4=[NOTICE_V4], notice_v6=[NOTICE_V6], proxy_v4=[PROXY_V4], proxy_v6=[PROXY_V6]
)


def policy() -> PolicySnapshot:
    return snapshot(
        hosts=["blocked.example"],
        urls=["partial.example/listed/page.html"],
        nxdomain=["gone.example"],
    )


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """A pipeline and everything around it that a test looks at."""

    pipeline: DnsPipeline
    source: SimpleNamespace
    upstream: FakeForwarder
    clock: Clock
    events: Recorder
    blocks: list[tuple[str, Verdict, str]] = field(default_factory=list)

    def decisions(self) -> list[DnsDecision]:
        return self.events.of(DnsDecision)

    def problems(self) -> list[DnsProblem]:
        return self.events.of(DnsProblem)

    async def ask(
        self, data: bytes, transport: DnsTransport = "udp", client: str = CLIENT
    ) -> dnslib.DNSRecord:
        raw = await self.pipeline.handle(data, client, transport)
        assert raw is not None
        reply = dnslib.DNSRecord.parse(raw)
        assert reply.header.id == dnslib.DNSRecord.parse(data).header.id
        assert reply.header.qr == 1
        return reply


def make(
    snap: PolicySnapshot | None = None,
    cfg: DnsConfig = CFG,
    upstream: FakeForwarder | None = None,
) -> Harness:
    source = SimpleNamespace(snapshot=policy() if snap is None else snap)
    upstream = FakeForwarder() if upstream is None else upstream
    clock = Clock()
    bus = EventBus()
    events = Recorder(bus)
    pipeline = DnsPipeline(
        source,
        AnswerPolicy.build(cfg, None),
        upstream,
        AnswerCache(1000, clock),
        bus,
        AccessList(cfg.allow),
    )
    h = Harness(pipeline, source, upstream, clock, events)
    pipeline.on_block = lambda client, verdict, transport: h.blocks.append(
        (client, verdict, transport)
    )
    return h


@pytest.fixture
def h() -> Harness:
    return make()


def parse(raw: bytes | wire.Query | None) -> dnslib.DNSRecord:
    assert isinstance(raw, bytes)
    return dnslib.DNSRecord.parse(raw)


def addresses(reply: dnslib.DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr]


def ede(reply: dnslib.DNSRecord) -> list[int]:
    """Return the Extended DNS Error info codes of a reply."""
    return [
        struct.unpack("!H", opt.data[:2])[0]
        for rr in reply.ar
        if rr.rtype == dnslib.QTYPE.OPT
        for opt in rr.rdata
        if opt.code == wire.EDE
    ]


def is_policy_soa(reply: dnslib.DNSRecord) -> bool:
    [soa] = reply.auth
    return soa.rtype == dnslib.QTYPE.SOA and str(soa.rname) == "blocked.policy.invalid."


def two_questions() -> bytes:
    q = dnslib.DNSRecord(q=dnslib.DNSQuestion("a.example"))
    q.add_question(dnslib.DNSQuestion("b.example"))
    return bytes(q.pack())


def with_opcode(opcode: int) -> bytes:
    q = dnslib.DNSRecord.question("clean.example")
    q.header.opcode = opcode
    return bytes(q.pack())


# Blocked hosts: the notice action.


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_blocked_host_a_gets_the_notice_address_and_ede_censored(
    h: Harness, transport: DnsTransport
) -> None:
    reply = await h.ask(query("blocked.example"), transport)
    assert reply.header.rcode == dnslib.RCODE.NOERROR
    assert addresses(reply) == [NOTICE_V4]
    assert reply.rr[0].ttl == CFG.ttl
    assert ede(reply) == [wire.EDE_CENSORED]
    [decision] = h.decisions()
    assert decision.verdict.action == "notice" and decision.verdict.list == "hosts"
    assert decision.transport == transport
    assert h.upstream.asked == []


async def test_blocked_host_aaaa_gets_the_v6_notice_address(h: Harness) -> None:
    reply = await h.ask(query("blocked.example", "AAAA"))
    assert addresses(reply) == [NOTICE_V6]
    assert ede(reply) == [wire.EDE_CENSORED]


async def test_blocked_host_with_default_config_gets_the_default_notice_addresses() -> None:
    h = make(cfg=dns_config())
    assert addresses(await h.ask(query("blocked.example"))) == ["127.0.0.1"]
    assert addresses(await h.ask(query("blocked.example", "AAAA"))) == ["::1"]


async def test_blocked_host_aaaa_without_v6_notice_gets_nodata_with_soa() -> None:
    h = make(cfg=dns_config(notice_v6=[]))
    reply = await h.ask(query("blocked.example", "AAAA"))
    assert reply.header.rcode == dnslib.RCODE.NOERROR and not reply.rr
    assert is_policy_soa(reply)
    assert ede(reply) == [wire.EDE_CENSORED]


@pytest.mark.parametrize("qtype", ["HTTPS", "SVCB", "MX", "TXT"])
async def test_blocked_host_other_types_get_nodata_with_the_policy_soa(
    h: Harness, qtype: str
) -> None:
    reply = await h.ask(query("blocked.example", qtype))
    assert reply.header.rcode == dnslib.RCODE.NOERROR and not reply.rr
    assert is_policy_soa(reply)
    assert ede(reply) == [wire.EDE_CENSORED]
    assert len(h.decisions()) == 1
    assert h.upstream.asked == []


@pytest.mark.parametrize("name", ["www.blocked.example", "a.b.c.blocked.example"])
async def test_subdomains_of_a_blocked_host_are_blocked(h: Harness, name: str) -> None:
    reply = await h.ask(query(name))
    assert addresses(reply) == [NOTICE_V4]
    assert ede(reply) == [wire.EDE_CENSORED]
    assert h.upstream.asked == []


async def test_blocked_answer_without_edns_carries_no_opt(h: Harness) -> None:
    reply = await h.ask(query("blocked.example", edns=None))
    assert addresses(reply) == [NOTICE_V4]
    assert reply.ar == [] and ede(reply) == []


@pytest.mark.parametrize("name", ["gone.example", "deep.sub.gone.example"])
@pytest.mark.parametrize("qtype", ["A", "AAAA", "HTTPS"])
async def test_nxdomain_action_gives_nxdomain_with_soa_and_ede_censored(
    h: Harness, name: str, qtype: str
) -> None:
    reply = await h.ask(query(name, qtype))
    assert reply.header.rcode == dnslib.RCODE.NXDOMAIN and not reply.rr
    assert is_policy_soa(reply)
    assert reply.auth[0].ttl == CFG.ttl
    assert ede(reply) == [wire.EDE_CENSORED]
    [decision] = h.decisions()
    assert decision.verdict.action == "nxdomain"


# Routed hosts: URL-level entries.


@pytest.mark.parametrize(("qtype", "want"), [("A", PROXY_V4), ("AAAA", PROXY_V6)])
async def test_routed_host_gets_the_proxy_address_without_ede(
    h: Harness, qtype: str, want: str
) -> None:
    reply = await h.ask(query("partial.example", qtype))
    assert reply.header.rcode == dnslib.RCODE.NOERROR
    assert addresses(reply) == [want]
    assert ede(reply) == []
    [decision] = h.decisions()
    assert decision.verdict.action == "route" and decision.verdict.list == "urls"
    assert h.upstream.asked == []


async def test_routed_host_https_gets_nodata_with_soa(h: Harness) -> None:
    reply = await h.ask(query("partial.example", "HTTPS"))
    assert reply.header.rcode == dnslib.RCODE.NOERROR and not reply.rr
    assert is_policy_soa(reply)
    assert ede(reply) == []


@pytest.mark.parametrize(
    ("qtype", "record"),
    [
        ("MX", "partial.example. 300 IN MX 10 mail.partial.example."),
        ("TXT", 'partial.example. 300 IN TXT "v=spf1 -all"'),
    ],
)
async def test_routed_host_mail_and_text_queries_are_forwarded(
    h: Harness, qtype: str, record: str
) -> None:
    h.upstream.add("partial.example", record)
    assert isinstance(h.pipeline.decide(query("partial.example", qtype), CLIENT, "udp"), wire.Query)
    reply = await h.ask(query("partial.example", qtype))
    assert h.upstream.asked == ["partial.example"]
    assert dnslib.QTYPE[reply.rr[0].rtype] == qtype
    assert h.decisions() == []


# Clean names: forwarded and cached.


async def test_clean_name_decide_returns_the_query_to_forward(h: Harness) -> None:
    decided = h.pipeline.decide(query("clean.example", qid=0x4242), CLIENT, "udp")
    assert isinstance(decided, wire.Query)
    assert decided.qname == "clean.example" and decided.qtype == wire.A
    assert decided.id == 0x4242
    assert h.upstream.asked == [] and h.events.events == []


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_clean_name_is_forwarded_with_the_clients_id(
    h: Harness, transport: DnsTransport
) -> None:
    h.upstream.add("clean.example", "clean.example. 300 IN A 192.0.2.10")
    reply = await h.ask(query("clean.example", qid=0xBEEF), transport)
    assert reply.header.id == 0xBEEF
    assert addresses(reply) == ["192.0.2.10"] and reply.rr[0].ttl == 300
    assert h.upstream.asked == ["clean.example"]
    assert h.pipeline.counts.forwarded[transport] == 1
    assert h.pipeline.counts.cached[transport] == 0
    assert h.events.events == []


async def test_forward_takes_the_query_decide_returned(h: Harness) -> None:
    h.upstream.add("clean.example", "clean.example. 300 IN A 192.0.2.10")
    decided = h.pipeline.decide(query("clean.example", qid=7), CLIENT, "tcp")
    assert isinstance(decided, wire.Query)
    reply = parse(await h.pipeline.forward(decided, "tcp", CLIENT))
    assert reply.header.id == 7 and addresses(reply) == ["192.0.2.10"]


async def test_unknown_clean_name_gets_the_upstreams_nxdomain(h: Harness) -> None:
    reply = await h.ask(query("missing.example"))
    assert reply.header.rcode == dnslib.RCODE.NXDOMAIN
    assert h.upstream.asked == ["missing.example"]
    assert h.decisions() == []


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_second_identical_query_is_answered_from_the_cache(
    h: Harness, transport: DnsTransport
) -> None:
    h.upstream.add("clean.example", "clean.example. 300 IN A 192.0.2.10")
    await h.ask(query("clean.example", qid=1), transport)
    h.clock.now += 10
    again = await h.ask(query("clean.example", qid=2), transport)
    assert again.header.id == 2
    assert addresses(again) == ["192.0.2.10"]
    assert again.rr[0].ttl == 290  # counted down
    assert h.upstream.asked == ["clean.example"]
    assert h.pipeline.counts.cached[transport] == 1
    assert h.pipeline.counts.forwarded[transport] == 1


async def test_cached_answer_is_served_by_decide_without_forwarding(h: Harness) -> None:
    h.upstream.add("clean.example", "clean.example. 300 IN A 192.0.2.10")
    await h.ask(query("clean.example"), "tcp")
    reply = parse(h.pipeline.decide(query("clean.example", qid=9), CLIENT, "tcp"))
    assert reply.header.id == 9 and addresses(reply) == ["192.0.2.10"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_cached_answer_expires_after_its_ttl(h: Harness, transport: DnsTransport) -> None:
    h.upstream.add("clean.example", "clean.example. 300 IN A 192.0.2.10")
    await h.ask(query("clean.example"), transport)
    h.clock.now += 299
    await h.ask(query("clean.example"), transport)
    assert h.upstream.asked == ["clean.example"]
    h.clock.now += 1  # 300 s after it was stored
    assert isinstance(h.pipeline.decide(query("clean.example"), CLIENT, transport), wire.Query)
    reply = await h.ask(query("clean.example"), transport)
    assert reply.rr[0].ttl == 300  # a fresh answer
    assert h.upstream.asked == ["clean.example", "clean.example"]
    assert h.pipeline.counts.cached[transport] == 1
    assert h.pipeline.counts.forwarded[transport] == 2


# The replay memo (UDP).


async def test_replayed_block_publishes_one_decision_per_answer_with_each_id(h: Harness) -> None:
    first = await h.ask(query("blocked.example", qid=0x1111))
    second = await h.ask(query("blocked.example", qid=0x2222))
    assert (first.header.id, second.header.id) == (0x1111, 0x2222)
    assert addresses(first) == addresses(second) == [NOTICE_V4]
    assert ede(second) == [wire.EDE_CENSORED]
    decisions = h.decisions()
    assert len(decisions) == 2
    assert decisions[0] == decisions[1]
    assert [d.transport for d in decisions] == ["udp", "udp"]


async def test_replayed_answer_is_the_first_answer_but_for_the_id(h: Harness) -> None:
    first = h.pipeline.decide(query("blocked.example", qid=1), CLIENT, "udp")
    second = h.pipeline.decide(query("blocked.example", qid=2), CLIENT, "udp")
    assert isinstance(first, bytes) and isinstance(second, bytes)
    assert first[:2] == b"\x00\x01" and second[:2] == b"\x00\x02"
    assert first[2:] == second[2:]


async def test_replayed_route_publishes_a_decision_each_time(h: Harness) -> None:
    for qid in (1, 2, 3):
        reply = await h.ask(query("partial.example", qid=qid))
        assert addresses(reply) == [PROXY_V4]
    assert [d.verdict.action for d in h.decisions()] == ["route"] * 3


async def test_tcp_has_no_memo_but_gives_the_same_answer(h: Harness) -> None:
    udp = h.pipeline.decide(query("blocked.example"), CLIENT, "udp")
    tcp1 = h.pipeline.decide(query("blocked.example"), CLIENT, "tcp")
    tcp2 = h.pipeline.decide(query("blocked.example"), CLIENT, "tcp")
    assert udp == tcp1 == tcp2
    assert [d.transport for d in h.decisions()] == ["udp", "tcp", "tcp"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_new_snapshot_applies_to_the_very_next_query(
    h: Harness, transport: DnsTransport
) -> None:
    h.upstream.add("blocked.example", "blocked.example. 300 IN A 192.0.2.77")
    for qid in (1, 2, 3):  # from the policy, then (UDP) from the memo
        assert addresses(await h.ask(query("blocked.example", qid=qid), transport)) == [NOTICE_V4]
    h.source.snapshot = snapshot(hosts=["other.example"])  # no longer lists the name
    reply = await h.ask(query("blocked.example", qid=4), transport)
    assert addresses(reply) == ["192.0.2.77"] and ede(reply) == []
    assert h.upstream.asked == ["blocked.example"]
    assert len(h.decisions()) == 3


async def test_a_new_snapshot_blocks_a_name_the_memo_sent_to_the_cache(h: Harness) -> None:
    h.upstream.add("clean.example", "clean.example. 300 IN A 192.0.2.10")
    await h.ask(query("clean.example", qid=1))
    cached = await h.ask(query("clean.example", qid=2))  # replayed from the cache
    assert addresses(cached) == ["192.0.2.10"]
    assert h.pipeline.counts.cached["udp"] == 1
    h.source.snapshot = snapshot(hosts=["clean.example"])
    reply = await h.ask(query("clean.example", qid=3))
    assert addresses(reply) == [NOTICE_V4] and ede(reply) == [wire.EDE_CENSORED]
    assert len(h.decisions()) == 1


async def test_memo_does_not_serve_a_different_query(h: Harness) -> None:
    await h.ask(query("blocked.example"))
    reply = await h.ask(query("blocked.example", "AAAA"))
    assert addresses(reply) == [NOTICE_V6]
    no_edns = await h.ask(query("blocked.example", edns=None))
    assert ede(no_edns) == [] and addresses(no_edns) == [NOTICE_V4]


# CNAME chains.

CHAIN = (
    "alias.example. 300 IN CNAME hop.example.",
    "hop.example. 300 IN CNAME www.blocked.example.",
    "www.blocked.example. 300 IN A 192.0.2.66",
)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_upstream_cname_to_a_blocked_host_is_blocked(
    h: Harness, transport: DnsTransport
) -> None:
    h.upstream.add("alias.example", *CHAIN)
    reply = await h.ask(query("alias.example"), transport)
    assert addresses(reply) == [NOTICE_V4]
    assert ede(reply) == [wire.EDE_CENSORED]
    assert str(reply.q.qname) == "alias.example."
    [decision] = h.decisions()
    assert decision.verdict.action == "notice" and decision.transport == transport
    assert h.upstream.asked == ["alias.example"]
    assert h.pipeline.counts.forwarded[transport] == 0  # counted as blocked instead


async def test_upstream_cname_to_an_nxdomain_host_gets_nxdomain(h: Harness) -> None:
    h.upstream.add("alias.example", "alias.example. 300 IN CNAME x.gone.example.")
    reply = await h.ask(query("alias.example"))
    assert reply.header.rcode == dnslib.RCODE.NXDOMAIN and is_policy_soa(reply)


async def test_upstream_cname_to_a_routed_host_is_not_blocked(h: Harness) -> None:
    h.upstream.add(
        "alias.example",
        "alias.example. 300 IN CNAME partial.example.",
        "partial.example. 300 IN A 192.0.2.67",
    )
    reply = await h.ask(query("alias.example"))
    assert addresses(reply)[-1] == "192.0.2.67"
    assert h.decisions() == [] and h.blocks == []


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_cached_cname_to_a_blocked_host_stays_blocked(
    h: Harness, transport: DnsTransport
) -> None:
    h.upstream.add("alias.example", *CHAIN)
    for qid in (1, 2, 3):  # forwarded, then from the cache (UDP: via the memo's cache key)
        reply = await h.ask(query("alias.example", qid=qid), transport)
        assert addresses(reply) == [NOTICE_V4] and reply.header.id == qid
    assert h.upstream.asked == ["alias.example"]
    assert len(h.decisions()) == 3
    assert h.pipeline.counts.cached[transport] == 0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_cached_cname_is_blocked_when_a_new_snapshot_lists_its_target(
    transport: DnsTransport,
) -> None:
    h = make(snapshot(hosts=["other.example"]))
    h.upstream.add("alias.example", *CHAIN)
    for qid in (1, 2):  # forwarded, then cached (UDP: the memo now points at the cache)
        assert addresses(await h.ask(query("alias.example", qid=qid), transport))[-1] == (
            "192.0.2.66"
        )
    assert h.pipeline.counts.cached[transport] == 1
    h.source.snapshot = policy()
    for qid in (3, 4):  # the full path, then (UDP) the replay path, both from the cache
        reply = await h.ask(query("alias.example", qid=qid), transport)
        assert addresses(reply) == [NOTICE_V4] and ede(reply) == [wire.EDE_CENSORED]
    assert h.upstream.asked == ["alias.example"]
    assert len(h.decisions()) == 2
    assert [b[2] for b in h.blocks] == [transport, transport]


async def test_forwarded_answer_is_checked_against_the_snapshot_in_force_after_the_wait(
    h: Harness,
) -> None:
    h.source.snapshot = snapshot(hosts=["other.example"])
    h.upstream.add("alias.example", *CHAIN)
    decided = h.pipeline.decide(query("alias.example"), CLIENT, "udp")
    assert isinstance(decided, wire.Query)
    h.source.snapshot = policy()  # changed while the upstream was asked
    reply = parse(await h.pipeline.forward(decided, "udp", CLIENT))
    assert addresses(reply) == [NOTICE_V4]
    assert len(h.decisions()) == 1


@pytest.mark.parametrize("action", ["notice", "nxdomain"])
async def test_a_name_listed_while_it_was_forwarded_is_answered_by_the_new_policy(
    h: Harness, action: str
) -> None:
    # Decided clean by one policy, answered after the next listed it: the whole answer is
    # the new policy's (never the old verdict for the name with the new one's CNAME check).
    h.source.snapshot = snapshot(hosts=["other.example"])
    h.upstream.add("late.example")
    decided = h.pipeline.decide(query("late.example"), CLIENT, "udp")
    assert isinstance(decided, wire.Query)
    listed = {"hosts": ["late.example"]} if action == "notice" else {"nxdomain": ["late.example"]}
    h.source.snapshot = snapshot(**listed)
    reply = parse(await h.pipeline.forward(decided, "udp", CLIENT))
    if action == "notice":
        assert addresses(reply) == [NOTICE_V4]
    else:
        assert reply.header.rcode == dnslib.RCODE.NXDOMAIN and is_policy_soa(reply)
    [decision] = h.decisions()
    assert decision.verdict.action == action
    assert h.pipeline.counts.forwarded["udp"] == 0  # counted as blocked


async def test_new_answers_are_not_replayed_from_before(h: Harness) -> None:
    # A reload changes how blocked names are answered: the UDP replay memo must not keep
    # serving the old answer.
    first = await h.ask(query("blocked.example", qid=1))
    assert addresses(first) == [NOTICE_V4]
    h.pipeline.answers = AnswerPolicy.build(dns_config(notice_v4=["192.0.2.99"]), None)
    again = await h.ask(query("blocked.example", qid=2))
    assert addresses(again) == ["192.0.2.99"]


# Access.


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("name", ["clean.example", "blocked.example"])
async def test_client_outside_allow_is_refused_without_asking_upstream(
    h: Harness, transport: DnsTransport, name: str
) -> None:
    reply = await h.ask(query(name), transport, client=STRANGER)
    assert reply.header.rcode == dnslib.RCODE.REFUSED and not reply.rr
    assert h.problems() == [DnsProblem("refused", "access-list", transport)]
    assert h.decisions() == [] and h.blocks == []
    assert h.upstream.asked == []


async def test_client_outside_allow_is_refused_a_query_in_the_memo(h: Harness) -> None:
    await h.ask(query("blocked.example"))
    reply = await h.ask(query("blocked.example"), client=STRANGER)
    assert reply.header.rcode == dnslib.RCODE.REFUSED and not reply.rr
    assert len(h.decisions()) == 1


async def test_allow_networks_from_the_config_are_honoured() -> None:
    h = make(cfg=dns_config(allow=["192.0.2.0/24"]))
    assert addresses(await h.ask(query("blocked.example"), client=STRANGER)) == ["127.0.0.1"]
    reply = await h.ask(query("blocked.example"), client=CLIENT)
    assert reply.header.rcode == dnslib.RCODE.REFUSED


# Parsing hostile packets.


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "short"),
        (b"\x12\x34\x01", "short"),
        (b"\xff" * 11, "short"),
        (b"\x12\x34\x81\x80" + b"\x00" * 8, "response"),
    ],
)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_garbage_and_truncated_headers_are_dropped(
    h: Harness, data: bytes, reason: str, transport: DnsTransport
) -> None:
    assert h.pipeline.decide(data, CLIENT, transport) is None
    assert await h.pipeline.handle(data, CLIENT, transport) is None
    assert h.problems() == [DnsProblem("dropped", reason, transport)] * 2
    assert h.upstream.asked == []


@pytest.mark.parametrize(
    ("data", "rcode", "reason"),
    [
        (with_opcode(2), wire.NOTIMP, "notimp-opcode"),
        (two_questions(), wire.FORMERR, "formerr-qdcount"),
        (query("blocked.example")[:20], wire.FORMERR, "formerr-truncated"),
        (query("clean.example", "AXFR"), wire.REFUSED, "refused-xfr"),
    ],
)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_malformed_queries_get_an_error_response(
    h: Harness, data: bytes, rcode: int, reason: str, transport: DnsTransport
) -> None:
    with pytest.raises(wire.Reject) as rejected:
        wire.parse_query(data)
    raw = h.pipeline.decide(data, CLIENT, transport)
    assert raw == rejected.value.response
    reply = parse(raw)
    assert reply.header.rcode == rcode == rejected.value.rcode
    assert reply.header.id == struct.unpack("!H", data[:2])[0]
    assert not reply.rr
    assert h.problems() == [DnsProblem("rejected", reason, transport)]
    assert h.upstream.asked == [] and h.decisions() == []


# Upstream failures.


@pytest.mark.parametrize("reason", FORWARD_FAILURES)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_upstream_failure_gives_servfail_with_ede(
    h: Harness, reason: str, transport: DnsTransport
) -> None:
    h.upstream.fail("dead.example", reason)
    reply = await h.ask(query("dead.example", qid=0x5151), transport)
    assert reply.header.rcode == dnslib.RCODE.SERVFAIL and not reply.rr
    want = wire.EDE_NO_REACHABLE_AUTHORITY if reason == "timeout" else wire.EDE_NETWORK_ERROR
    assert ede(reply) == [want]
    assert h.problems() == [DnsProblem("upstream", reason, transport)]
    assert h.pipeline.counts.forwarded[transport] == 0


async def test_upstream_timeout_is_ede_22_and_network_error_ede_23(h: Harness) -> None:
    assert (wire.EDE_NO_REACHABLE_AUTHORITY, wire.EDE_NETWORK_ERROR) == (22, 23)
    h.upstream.fail("slow.example", "timeout")
    h.upstream.fail("down.example", "network")
    assert ede(await h.ask(query("slow.example"))) == [22]
    assert ede(await h.ask(query("down.example"))) == [23]


async def test_upstream_failure_is_not_cached(h: Harness) -> None:
    h.upstream.fail("flaky.example", "timeout")
    await h.ask(query("flaky.example"))
    del h.upstream.failures["flaky.example"]
    h.upstream.add("flaky.example", "flaky.example. 300 IN A 192.0.2.12")
    assert addresses(await h.ask(query("flaky.example"))) == ["192.0.2.12"]
    assert h.upstream.asked == ["flaky.example", "flaky.example"]


class JunkUpstream(FakeForwarder):
    """An upstream that answers with bytes that are not a DNS response."""

    def __init__(self, junk: bytes) -> None:
        super().__init__()
        self.junk = junk

    async def query(self, packet: bytes) -> bytes:
        self.asked.append("junk")
        return self.junk


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"\x12\x34\x81",
        b"\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\x07example",  # cut question
        query("clean.example"),  # a query, not a response (QR clear)
        b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00\x01\x00\x01\xc0\x0c",
    ],
)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_malformed_upstream_response_gives_servfail(
    junk: bytes, transport: DnsTransport
) -> None:
    h = make(upstream=JunkUpstream(junk))
    reply = await h.ask(query("clean.example"), transport)
    assert reply.header.rcode == dnslib.RCODE.SERVFAIL and not reply.rr
    assert ede(reply) == [wire.EDE_NETWORK_ERROR]
    assert h.problems() == [DnsProblem("upstream", "malformed-response", transport)]
    assert len(h.pipeline.cache) == 0


# UDP truncation.


async def test_big_upstream_answer_is_truncated_over_udp_and_whole_over_tcp(h: Harness) -> None:
    h.upstream.add("big.example", "big.example. 300 IN A 192.0.2.1", pad=1000)
    udp = await h.ask(query("big.example", edns=None), "udp")
    assert udp.header.tc == 1 and not udp.rr
    assert udp.header.rcode == dnslib.RCODE.NOERROR
    assert str(udp.q.qname) == "big.example."
    tcp = await h.ask(query("big.example", edns=None), "tcp")
    assert tcp.header.tc == 0
    assert len(tcp.pack()) > 512
    assert {dnslib.QTYPE[rr.rtype] for rr in tcp.rr} == {"A", "TXT"}
    assert h.pipeline.counts.forwarded["udp"] == h.pipeline.counts.forwarded["tcp"] == 1


MANY = [f"many.example. 300 IN A 192.0.2.{i}" for i in range(1, 61)]  # about 1 KB, cached


async def test_big_cached_answer_is_truncated_over_udp_and_whole_over_tcp(h: Harness) -> None:
    h.upstream.add("many.example", *MANY)
    for qid in (1, 2, 3):  # forwarded, then from the cache (the memo leaves it to the full path)
        udp = await h.ask(query("many.example", qid=qid, edns=None), "udp")
        assert udp.header.tc == 1 and not udp.rr and udp.header.id == qid
    tcp = await h.ask(query("many.example", qid=4, edns=None), "tcp")
    assert tcp.header.tc == 0 and len(tcp.rr) == 60 and tcp.header.id == 4
    assert h.upstream.asked == ["many.example"]
    assert h.pipeline.counts.cached["udp"] == 2
    assert h.pipeline.counts.cached["tcp"] == 1


async def test_big_answer_fits_a_client_with_a_large_edns_size(h: Harness) -> None:
    h.upstream.add("many.example", *MANY)
    reply = await h.ask(query("many.example", edns=1232), "udp")
    assert reply.header.tc == 0 and len(reply.rr) == 60
    small = await h.ask(query("many.example", edns=512), "udp")  # the same cache entry
    assert small.header.tc == 1 and not small.rr
    assert ede(small) == []
    assert h.upstream.asked == ["many.example"]


# The legal-records hook.


async def test_on_block_is_called_for_blocks_with_client_verdict_and_transport(
    h: Harness,
) -> None:
    await h.ask(query("blocked.example"), "udp", client="127.0.0.5")
    await h.ask(query("gone.example"), "tcp", client="::1")
    [(c1, v1, t1), (c2, v2, t2)] = h.blocks
    assert (c1, v1.action, t1) == ("127.0.0.5", "notice", "udp")
    assert (c2, v2.action, t2) == ("::1", "nxdomain", "tcp")
    assert [v1, v2] == [d.verdict for d in h.decisions()]


async def test_on_block_is_called_for_replayed_blocks(h: Harness) -> None:
    await h.ask(query("blocked.example", qid=1), client="127.0.0.5")
    await h.ask(query("blocked.example", qid=2), client="127.0.0.6")
    assert [(c, t) for c, _, t in h.blocks] == [("127.0.0.5", "udp"), ("127.0.0.6", "udp")]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_on_block_is_called_for_cname_chain_blocks(
    h: Harness, transport: DnsTransport
) -> None:
    h.upstream.add("alias.example", *CHAIN)
    await h.ask(query("alias.example", qid=1), transport, client="127.0.0.5")
    await h.ask(query("alias.example", qid=2), transport, client="127.0.0.6")  # from the cache
    assert [(c, v.action, t) for c, v, t in h.blocks] == [
        ("127.0.0.5", "notice", transport),
        ("127.0.0.6", "notice", transport),
    ]


async def test_on_block_is_never_called_for_routes_or_clean_names(h: Harness) -> None:
    h.upstream.add("clean.example")
    for _ in range(2):
        await h.ask(query("partial.example"))
        await h.ask(query("partial.example", "MX"))
        await h.ask(query("clean.example"))
        await h.ask(query("clean.example"), "tcp")
    assert h.blocks == []
    assert [d.verdict.action for d in h.decisions()] == ["route", "route"]


async def test_no_on_block_hook_by_default() -> None:
    h = make()
    h.pipeline.on_block = None
    assert addresses(await h.ask(query("blocked.example"))) == [NOTICE_V4]
    assert len(h.decisions()) == 1


# Events say nothing about the client.


async def test_dns_decision_carries_only_verdict_and_transport(h: Harness) -> None:
    assert [f.name for f in dataclasses.fields(DnsDecision)] == ["verdict", "transport"]
    assert [f.name for f in dataclasses.fields(DnsProblem)] == ["kind", "reason", "transport"]
    await h.ask(query("blocked.example"), client="127.0.0.99")
    await h.ask(query("clean.example"), client="192.0.2.99")
    for event in h.events.events:
        assert "127.0.0.99" not in repr(event) and "192.0.2.99" not in repr(event)
    verdict = policy().host_verdict("blocked.example")
    assert verdict is not None
    assert h.decisions() == [DnsDecision(verdict, "udp")]


# Hostile input never raises.


BLOCKED_QUERY = query("blocked.example")
DEEP_QUERY = query("www.blocked.example")


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=600),
        st.binary(min_size=1, max_size=40).map(lambda tail: BLOCKED_QUERY[:12] + tail),
        st.tuples(st.integers(0, 60), st.binary(max_size=8)).map(
            lambda cut: DEEP_QUERY[: cut[0]] + cut[1]
        ),
    ),
    transport=st.sampled_from(["udp", "tcp"]),
    client=st.sampled_from([CLIENT, STRANGER]),
)
def test_decide_never_raises_on_arbitrary_bytes(
    data: bytes, transport: DnsTransport, client: str
) -> None:
    h = make()
    for _ in range(2):  # the second time through the replay memo
        decided = h.pipeline.decide(data, client, transport)
        assert decided is None or isinstance(decided, bytes | wire.Query)


# -- start strategy ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_fail_closed_refuses_what_the_policy_does_not_decide(
    h: Harness, transport: DnsTransport
) -> None:
    h.pipeline.closed = True
    h.upstream.add("clean.example")
    reply = await h.ask(query("clean.example"), transport)
    assert reply.header.rcode == dnslib.RCODE.REFUSED and not reply.rr
    assert ede(reply) == [wire.EDE_NOT_READY]
    assert h.upstream.asked == []  # nothing is forwarded while closed
    assert [(p.kind, p.reason) for p in h.problems()] == [("refused", "not-ready")]
    # What is loaded is enforced meanwhile: blocked and routed names are answered.
    assert addresses(await h.ask(query("blocked.example"), transport)) == ["192.0.2.80"]
    assert addresses(await h.ask(query("partial.example"), transport)) == ["192.0.2.81"]
    h.pipeline.closed = False
    assert addresses(await h.ask(query("clean.example", qid=9), transport)) == ["192.0.2.1"]
