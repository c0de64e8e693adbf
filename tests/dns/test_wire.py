"""Tests of the DNS wire format: dnslib round trips, a hostile corpus and fuzzing."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import dnslib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockd.dns import wire

ID = 0x1234
QNAME = b"\x03www\x07example\x03com\x00"
QUESTION = QNAME + b"\x00\x01\x00\x01"
OPT0 = b"\x00" + struct.pack("!HHIH", wire.OPT, 1232, 0, 0)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def header(flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    """Return a 12-byte header with ID."""
    return struct.pack("!6H", ID, flags, qd, an, ns, ar)


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 300, rclass: int = 1) -> bytes:
    """Return one raw resource record."""
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def opt(
    options: bytes = b"", version: int = 0, do: bool = False, udp: int = 1232, owner: bytes = b"\0"
) -> bytes:
    """Return a raw OPT record."""
    return rr(owner, wire.OPT, options, (version << 16) | (0x8000 if do else 0), udp)


def dns_query(
    name: str = "www.example.com",
    qtype: str = "A",
    *,
    edns: bool = True,
    do: bool = False,
    udp: int = 1232,
    options: list[tuple[int, bytes]] | None = None,
) -> bytes:
    """Return a query built by dnslib."""
    head = dnslib.DNSHeader(id=0x5EED, rd=1)  # DNSRecord.question would draw a random ID
    q = dnslib.DNSRecord(head, q=dnslib.DNSQuestion(name, getattr(dnslib.QTYPE, qtype)))
    if edns:
        opts = [dnslib.EDNSOption(c, v) for c, v in options or []]
        q.add_ar(dnslib.EDNS0(udp_len=udp, flags="do" if do else "", opts=opts))
    return bytes(q.pack())


def opt_of(message: bytes) -> dnslib.RR:
    """Return the OPT record of a message, parsed by dnslib."""
    (record,) = [r for r in dnslib.DNSRecord.parse(message).ar if r.rtype == wire.OPT]
    return record


def outcome(data: bytes) -> tuple[str | int, str]:
    """Return ("drop", reason) or (rcode, reason) for a packet that does not parse."""
    try:
        wire.parse_query(data)
    except wire.Drop as e:
        return "drop", e.reason
    except wire.Reject as e:
        return e.rcode, e.reason
    raise AssertionError("parsed")


# --- queries: dnslib in, ours out -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "qname"),
    [
        ("www.example.com", "www.example.com"),
        ("WwW.ExAmPlE.CoM", "www.example.com"),
        ("_dmarc.example.org", "_dmarc.example.org"),
        ("*.example.org", "*.example.org"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        (".", ""),
    ],
)
def test_parse_query_reads_a_dnslib_query(name: str, qname: str) -> None:
    data = dns_query(name, "AAAA", do=True, udp=4096, options=[(10, b"12345678"), (8, b"\0\1")])
    q = wire.parse_query(data)
    parsed = dnslib.DNSRecord.parse(data)
    assert (q.id, q.flags, q.qname, q.qtype, q.qclass) == (parsed.header.id, 0x0100, qname, 28, 1)
    assert q.question == data[12 : 12 + len(q.question)]
    assert q.edns == wire.Edns(4096, 0, True, ((10, b"12345678"), (8, b"\0\1")))
    assert q.rd and not q.cd and not q.ad and q.opcode == 0
    assert q.raw == data


def test_parse_query_preserves_question_case_and_reads_flags() -> None:
    data = header(flags=0x0130) + b"\x03WwW\x02Ex\x00\x00\x10\x00\x03"
    q = wire.parse_query(data)
    assert q.question == data[12:]
    assert (q.qname, q.qtype, q.qclass, q.edns) == ("www.ex", wire.TXT, 3, None)
    assert q.rd and q.cd and q.ad


def test_parse_query_floors_udp_size_and_ignores_trailing_bytes() -> None:
    q = wire.parse_query(header(ar=1) + QUESTION + opt(udp=100) + b"trailing junk")
    assert q.edns is not None and q.edns.udp_size == 512


def test_parse_query_skips_other_additional_records() -> None:
    tsig = rr(b"\x03key\xc0\x10", 250, b"\x0bhmac-sha256\x00" + bytes(16), ttl=0, rclass=255)
    q = wire.parse_query(
        header(ar=3) + QUESTION + tsig + opt(b"\0\x0c\0\0") + rr(b"\0", 1, b"1234")
    )
    assert q.edns == wire.Edns(1232, 0, False, ((12, b""),))


# --- qname presentation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "qname"),
    [
        ([b"a.b", b"example"], "a\\.b.example"),
        ([b"a b"], "a\\032b"),
        ([b"\xff\x00", b"Com"], "\\255\\000.com"),
        ([b"back\\slash"], "back\\092slash"),
        ([b"CAPS-And_under*"], "caps-and_under*"),
        ([b'"q"', b"@"], "\\034q\\034.\\064"),
        ([], ""),
    ],
)
def test_qname_escapes_odd_bytes_and_folds_case(labels: list[bytes], qname: str) -> None:
    name = b"".join(bytes((len(x),)) + x for x in labels) + b"\0"
    q = wire.parse_query(header() + name + b"\0\1\0\1")
    assert q.qname == qname
    assert wire.encode_name(q.qname) == name.lower()


def test_encode_name() -> None:
    assert wire.encode_name("www.Example.com.") == b"\x03www\x07Example\x03com\x00"
    assert wire.encode_name("") == wire.encode_name(".") == b"\0"
    assert wire.encode_name("a\\.b.c\\032d") == b"\x03a.b\x03c d\x00"
    assert wire.encode_name("x" * 63) == b"\x3f" + b"x" * 63 + b"\0"


@pytest.mark.parametrize(
    "bad", ["a..b", ".a", "x" * 64, ".".join(["x" * 63] * 4), "bücher.de", "a\\", "a\\1b", "\\256"]
)
def test_encode_name_rejects_bad_names(bad: str) -> None:
    with pytest.raises(ValueError, match="name"):
        wire.encode_name(bad)


# --- answers: ours in, dnslib out -------------------------------------------------------------


def test_build_response_is_read_by_dnslib() -> None:
    q = wire.parse_query(dns_query("Blocked.Example", "A", do=True))
    answers = [wire.Record(None, wire.A, 60, wire.a("192.0.2.1"))]
    authority = [wire.Record("example", wire.NS, 60, wire.encode_name("ns.example"))]
    r = dnslib.DNSRecord.parse(
        wire.build_response(q, wire.NOERROR, answers=answers, authority=authority, aa=True)
    )
    h = r.header
    assert (h.id, h.qr, h.opcode, h.aa, h.tc, h.rd, h.ra, h.rcode) == (q.id, 1, 0, 1, 0, 1, 1, 0)
    assert (h.ad, h.cd) == (0, 0)
    assert str(r.q.qname) == "Blocked.Example." and r.q.qtype == wire.A
    assert [(str(x.rname), x.ttl, str(x.rdata)) for x in r.rr] == [
        ("Blocked.Example.", 60, "192.0.2.1")
    ]
    assert str(r.auth[0].rdata) == "ns.example."
    (o,) = r.ar
    assert (o.rtype, o.rclass, o.ttl, o.rdata) == (wire.OPT, 1232, 0x8000, [])


def test_build_response_negative_with_soa_and_aaaa() -> None:
    q = wire.parse_query(header(flags=0x0110) + b"\x01x\0\0\x1c\0\1")
    soa = wire.soa("ns.policy.invalid", "hostmaster.policy.invalid", 7, 3600, 600, 86400, 30)
    msg = wire.build_response(
        q, wire.NXDOMAIN, authority=[wire.Record("policy.invalid", wire.SOA, 30, soa)]
    )
    r = dnslib.DNSRecord.parse(msg)
    assert (r.header.rcode, r.header.cd, r.header.rd, r.header.ar) == (3, 1, 1, 0)
    s = r.auth[0].rdata
    assert (str(s.mname), str(s.rname), s.times) == (
        "ns.policy.invalid.",
        "hostmaster.policy.invalid.",
        (7, 3600, 600, 86400, 30),
    )
    q6 = wire.parse_query(dns_query("x", "AAAA", edns=False))
    aaaa = [wire.Record(None, wire.AAAA, 5, wire.aaaa("2001:db8::1"))]
    r6 = dnslib.DNSRecord.parse(wire.build_response(q6, wire.NOERROR, answers=aaaa))
    assert str(r6.rr[0].rdata) == "2001:db8::1"


def test_ede_option_bytes_are_rfc_8914() -> None:
    q = wire.parse_query(dns_query(do=True))
    text = b"Blocked by the authority; see https://notice.example/"
    msg = wire.build_response(
        q, wire.NXDOMAIN, ede=[(wire.EDE_CENSORED, text), (wire.EDE_OTHER, b"")]
    )
    option = b"\x00\x0f" + struct.pack("!H", 2 + len(text)) + b"\x00\x10" + text
    empty = b"\x00\x0f\x00\x02\x00\x00"
    rdata = option + empty
    assert msg.endswith(
        b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00" + struct.pack("!H", len(rdata)) + rdata
    )
    o = opt_of(msg)
    assert [(x.code, x.data) for x in o.rdata] == [(15, b"\x00\x10" + text), (15, b"\x00\x00")]


def test_no_opt_without_client_edns_and_ede_ignored() -> None:
    q = wire.parse_query(dns_query(edns=False))
    msg = wire.build_response(q, wire.NXDOMAIN, ede=[(wire.EDE_CENSORED, b"x")])
    assert dnslib.DNSRecord.parse(msg).ar == []
    assert len(msg) == 12 + len(q.question)


def many_a(count: int) -> list[wire.Record]:
    """Return count A records for the query name (16 bytes each on the wire)."""
    return [wire.Record(None, wire.A, 60, bytes((10, 0, i // 256, i % 256))) for i in range(count)]


def test_tc_at_512_without_edns() -> None:
    q = wire.parse_query(dns_query(edns=False))
    fits = (512 - 12 - len(q.question)) // 16
    assert not dnslib.DNSRecord.parse(wire.build_response(q, 0, answers=many_a(fits))).header.tc
    msg = wire.build_response(q, 0, answers=many_a(fits + 1))
    r = dnslib.DNSRecord.parse(msg)
    assert (r.header.tc, r.rr, len(r.questions), r.header.id) == (1, [], 1, q.id)
    assert msg == struct.pack("!6H", q.id, 0x8380, 1, 0, 0, 0) + q.question
    big = wire.build_response(q, 0, answers=many_a(fits + 1), max_size=65535)
    assert len(dnslib.DNSRecord.parse(big).rr) == fits + 1


@pytest.mark.parametrize(("udp", "limit"), [(600, 600), (1232, 1232), (4096, 1232), (100, 512)])
def test_tc_at_the_clients_edns_size(udp: int, limit: int) -> None:
    q = wire.parse_query(dns_query(udp=udp, do=True))
    ede = [(wire.EDE_CENSORED, b"blocked")]
    fixed = 12 + len(q.question) + 11 + 4 + 2 + 7
    fits = (limit - fixed) // 16
    ok = wire.build_response(q, 0, answers=many_a(fits), ede=ede)
    assert len(ok) <= limit and not dnslib.DNSRecord.parse(ok).header.tc
    msg = wire.build_response(q, 0, answers=many_a(fits + 1), authority=many_a(1), ede=ede)
    r = dnslib.DNSRecord.parse(msg)
    assert (r.header.tc, r.rr, r.auth, r.header.q) == (1, [], [], 1)
    o = opt_of(msg)
    assert (o.ttl, [(x.code, x.data) for x in o.rdata]) == (0x8000, [(15, b"\0\x10blocked")])


def test_badvers_reject_splits_the_rcode() -> None:
    data = dns_query("v1.example", "A")[:-11] + opt(version=1, do=True)
    with pytest.raises(wire.Reject) as info:
        wire.parse_query(data)
    e = info.value
    assert (e.rcode, e.reason) == (wire.BADVERS, "badvers")
    r = dnslib.DNSRecord.parse(e.response)
    assert (r.header.id, r.header.qr, r.header.rcode, str(r.q.qname)) == (
        data[0] << 8 | data[1],
        1,
        0,
        "v1.example.",
    )
    o = opt_of(e.response)
    assert (o.rclass, o.ttl >> 24, (o.ttl >> 16) & 0xFF, o.ttl & 0x8000) == (1232, 1, 0, 0x8000)
    assert wire.parse_response(e.response).rcode == wire.BADVERS


def test_build_response_sets_extended_rcode_bits() -> None:
    q = wire.parse_query(dns_query())
    msg = wire.build_response(q, wire.BADVERS)
    assert msg[3] & 0x0F == 0 and opt_of(msg).ttl >> 24 == 1
    assert wire.parse_response(msg).rcode == wire.BADVERS


def test_with_id() -> None:
    msg = wire.build_response(wire.parse_query(dns_query()), wire.NOERROR)
    other = wire.with_id(msg, 0xBEEF)
    assert dnslib.DNSRecord.parse(other).header.id == 0xBEEF and other[2:] == msg[2:]


# --- forwarding -------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_ecs", [False, True])
def test_forward_query_filters_options(keep_ecs: bool) -> None:
    options = [(8, b"\0\1\x18\0\xc0\0\2"), (10, b"cookie!!"), (12, b"\0\0"), (65001, b"x")]
    client = header(flags=0x0130, ar=2) + QUESTION + rr(b"\x01k\0", 250, b"sig")
    client += opt(b"".join(struct.pack("!HH", c, len(v)) + v for c, v in options), do=True)
    q = wire.parse_query(client)
    up = wire.forward_query(q, qid=0xABCD, keep_ecs=keep_ecs, udp_size=1400)
    r = dnslib.DNSRecord.parse(up)
    h = r.header
    assert (h.id, h.qr, h.rd, h.cd, h.ad, h.aa, h.rcode) == (0xABCD, 0, 1, 1, 1, 0, 0)
    assert up[12 : 12 + len(QUESTION)] == QUESTION and len(r.ar) == 1
    o = r.ar[0]
    kept = [(x.code, x.data) for x in o.rdata]
    assert (o.rtype, o.rclass, o.ttl) == (wire.OPT, 1400, 0x8000)
    assert kept == [c for c in options if c[0] != 10 and (keep_ecs or c[0] != 8)]


def test_forward_query_adds_opt_for_a_client_without_edns() -> None:
    q = wire.parse_query(dns_query(edns=False))
    up = wire.forward_query(q, qid=1)
    assert up[12:] == q.question + OPT0
    assert wire.parse_query(up).edns == wire.Edns(1232, 0, False, ())


# --- responses --------------------------------------------------------------------------------


def reply(name: str = "www.example.com", qtype: str = "A") -> dnslib.DNSRecord:
    """Return an empty dnslib reply to a query."""
    return dnslib.DNSRecord.parse(dns_query(name, qtype, edns=False)).reply()


def test_parse_response_of_a_cname_chain_with_glue() -> None:
    r = reply("WWW.Example.COM")
    r.add_answer(dnslib.RR("WWW.Example.COM", 5, rdata=dnslib.CNAME("Alias.Example.NET"), ttl=300))
    r.add_answer(dnslib.RR("alias.example.net", 1, rdata=dnslib.A("192.0.2.7"), ttl=120))
    r.add_auth(dnslib.RR("example.net", 2, rdata=dnslib.NS("ns1.example.net"), ttl=900))
    r.add_ar(dnslib.RR("ns1.example.net", 1, rdata=dnslib.A("192.0.2.53"), ttl=600))
    r.add_ar(dnslib.EDNS0(udp_len=1232))
    data = bytes(r.pack())
    info = wire.parse_response(data)
    assert (info.id, info.rcode, info.flags, info.qname, info.qtype) == (
        r.header.id,
        0,
        struct.unpack_from("!H", data, 2)[0],
        "www.example.com",
        1,
    )
    assert info.question == b"\x03WWW\x07Example\x03COM\x00\x00\x01\x00\x01"
    assert (info.min_ttl, info.cnames, info.truncated) == (120, ("alias.example.net",), False)
    assert len(info.ttl_offsets) == 4
    shifted = dnslib.DNSRecord.parse(wire.ttl_shift(data, info.ttl_offsets, 200))
    ttls = [x.ttl for x in shifted.rr + shifted.auth + shifted.ar if x.rtype != wire.OPT]
    assert ttls == [100, 0, 700, 400]
    assert opt_of(wire.ttl_shift(data, info.ttl_offsets, 200)).rclass == 1232


@pytest.mark.parametrize(
    ("rcode", "qtype", "answer", "min_ttl"),
    [
        (wire.NXDOMAIN, "A", False, 60),
        (wire.NOERROR, "A", False, 60),  # NODATA
        (wire.NOERROR, "A", True, 60),  # NODATA at the end of a CNAME
        (wire.NOERROR, "CNAME", True, 300),
        (wire.SERVFAIL, "A", False, None),
    ],
)
def test_parse_response_negative_ttl(
    rcode: int, qtype: str, answer: bool, min_ttl: int | None
) -> None:
    r = reply(qtype=qtype)
    r.header.rcode = rcode
    if answer:
        r.add_answer(dnslib.RR("www.example.com", 5, rdata=dnslib.CNAME("x.example.com"), ttl=300))
    soa = dnslib.SOA("ns.example.com", "h.example.com", (1, 2, 3, 4, 60))
    if rcode != wire.SERVFAIL:
        r.add_auth(dnslib.RR("example.com", wire.SOA, rdata=soa, ttl=3600))
    info = wire.parse_response(bytes(r.pack()))
    assert (info.rcode, info.min_ttl) == (rcode, min_ttl)


def test_parse_response_reads_dname_and_huge_ttls() -> None:
    r = reply("a.old.example")
    r.add_answer(dnslib.RR("old.example", 39, rdata=dnslib.DNAME("New.Example"), ttl=2**31 + 5))
    r.add_answer(dnslib.RR("a.old.example", 5, rdata=dnslib.CNAME("a.new.example"), ttl=50))
    info = wire.parse_response(bytes(r.pack()))
    assert (info.cnames, info.min_ttl) == (("new.example", "a.new.example"), 0)


def test_parse_response_without_question_and_truncated() -> None:
    info = wire.parse_response(struct.pack("!6H", 7, 0x8381, 0, 0, 0, 0))
    assert (info.question, info.qname, info.qtype, info.rcode, info.truncated) == (
        b"",
        "",
        0,
        1,
        True,
    )
    assert (info.min_ttl, info.ttl_offsets, info.cnames) == (None, (), ())


def test_ttl_shift_floors_at_zero() -> None:
    data = b"\0\0\0\x05\xff\xff\xff\xff"
    assert wire.ttl_shift(data, [0, 4], 10) == b"\0\0\0\0\xff\xff\xff\xf5"


# --- the hostile corpus -----------------------------------------------------------------------

QT = b"\0\1\0\1"


def chain(hops: int) -> bytes:
    """Return a query whose last additional owner name reaches its name through hops pointers."""
    first = 12 + len(QUESTION)
    records = [rr(b"\x01a\0", wire.A, b"\0\0\0\0")]
    starts = [first]
    for _ in range(hops):
        prev = starts[-1]
        starts.append(prev + len(records[-1]))
        records.append(rr(struct.pack("!H", 0xC000 | prev), wire.A, b"\0\0\0\0"))
    return header(ar=len(records)) + QUESTION + b"".join(records)


def name_of(*sizes: int) -> bytes:
    """Return a name made of labels of the given sizes."""
    return b"".join(bytes((s,)) + b"x" * s for s in sizes) + b"\0"


HOSTILE: list[tuple[str, bytes, tuple[str | int, str]]] = [
    ("empty", b"", ("drop", "short")),
    ("11 bytes", header()[:11], ("drop", "short")),
    ("response as query", header(flags=0x8100) + QUESTION, ("drop", "response")),
    ("self pointer", header() + b"\xc0\x0c" + QT, (1, "formerr-pointer")),
    ("two-pointer loop", header() + b"\xc0\x0e\xc0\x0c" + QT, (1, "formerr-pointer")),
    ("forward pointer", header() + b"\x01a\xc0\x14" + QT + b"\0", (1, "formerr-pointer")),
    ("pointer into header", header() + b"\xc0\x04" + QT, (1, "formerr-pointer")),
    ("chain of 20 pointers", chain(20), (1, "formerr-pointer")),
    ("chain of 17 pointers", chain(17), (1, "formerr-pointer")),
    ("label of 64", header() + b"\x40" + b"x" * 64 + b"\0" + QT, (1, "formerr-label")),
    ("label type 0x40", header() + b"\x41\x08\xff\0" + QT, (1, "formerr-label")),
    ("label type 0x80", header() + b"\x80\x00" + QT, (1, "formerr-label")),
    ("name of 256", header() + name_of(63, 63, 63, 62) + QT, (1, "formerr-name-too-long")),
    ("huge name", header() + name_of(*[9] * 40) + QT, (1, "formerr-name-too-long")),
    ("truncated label", header() + b"\x03www\x07exa", (1, "formerr-truncated")),
    ("truncated name", header() + b"\x03www", (1, "formerr-truncated")),
    ("truncated question", header() + QNAME + b"\0\1", (1, "formerr-truncated")),
    ("no question", header(), (1, "formerr-truncated")),
    ("truncated OPT", header(ar=1) + QUESTION + OPT0[:6], (1, "formerr-truncated")),
    (
        "OPT rdata cut",
        header(ar=1) + QUESTION + opt(b"\0\x0a\0\x08abcdefgh")[:-2],
        (1, "formerr-truncated"),
    ),
    ("truncated option", header(ar=1) + QUESTION + opt(b"\0\x0a\0\x08abc"), (1, "formerr-opt")),
    ("option header cut", header(ar=1) + QUESTION + opt(b"\0\x0a"), (1, "formerr-opt")),
    ("QDCOUNT 0", header(qd=0) + QUESTION, (1, "formerr-qdcount")),
    ("QDCOUNT 2", header(qd=2) + QUESTION + QUESTION, (1, "formerr-qdcount")),
    ("ANCOUNT lying", header(an=5) + QUESTION, (1, "formerr-ancount")),
    ("NSCOUNT 1", header(ns=1) + QUESTION + rr(b"\0", 1, b"1234"), (1, "formerr-nscount")),
    ("ARCOUNT lying", header(ar=3) + QUESTION + OPT0, (1, "formerr-truncated")),
    ("two OPT", header(ar=2) + QUESTION + OPT0 + OPT0, (1, "formerr-opt")),
    ("OPT owner a.", header(ar=1) + QUESTION + opt(owner=b"\x01a\0"), (1, "formerr-opt")),
    ("OPT owner qname", header(ar=1) + QUESTION + opt(owner=b"\xc0\x0c"), (1, "formerr-opt")),
    ("garbage record", header(ar=2) + QUESTION + OPT0 + b"\x99junk" * 3, (1, "formerr-label")),
    ("EDNS version 1", header(ar=1) + QUESTION + opt(version=1), (16, "badvers")),
    ("opcode STATUS", header(flags=0x1000) + QUESTION, (4, "notimp-opcode")),
    ("opcode NOTIFY", header(flags=0x2000) + QUESTION, (4, "notimp-opcode")),
    ("opcode UPDATE", header(flags=0x2800, ns=1) + QUESTION + OPT0, (4, "notimp-opcode")),
    ("AXFR", header() + QNAME + b"\0\xfc\0\1", (5, "refused-xfr")),
    ("IXFR", header(ns=0, ar=1) + QNAME + b"\0\xfb\0\1" + OPT0, (5, "refused-xfr")),
]


@pytest.mark.parametrize(
    ("packet", "expected"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE]
)
def test_hostile_packet(packet: bytes, expected: tuple[str | int, str]) -> None:
    assert outcome(packet) == expected
    if expected[0] == "drop":
        return
    with pytest.raises(wire.Reject) as info:
        wire.parse_query(packet)
    e = info.value
    assert e.rcode == expected[0]
    h = dnslib.DNSRecord.parse(e.response).header
    assert (h.id, h.qr, h.opcode, h.rd, h.rcode) == (
        ID,
        1,
        packet[2] >> 3 & 0xF,
        packet[2] & 1,
        e.rcode & 15,
    )
    assert h.a == h.auth == 0


@pytest.mark.parametrize(
    ("packet", "question", "has_opt"),
    [
        (header(ar=1) + QNAME + b"\0\xfc\0\1" + opt(do=True), True, True),
        (header(an=5) + QUESTION, True, False),
        (header(qd=2) + QUESTION + QUESTION, False, False),
        (header(qd=0, ar=1) + OPT0, False, True),
        (header(flags=0x2800) + QUESTION + OPT0, True, False),  # ARCOUNT 0: no OPT to echo
        (header(ar=2) + QUESTION + opt(do=True) + OPT0, True, True),
        (header(ar=1) + QUESTION + opt(b"\0\x0a\0\x08abc"), True, False),
        (header() + b"\x03www\x07exa", False, False),
    ],
)
def test_reject_echoes_what_parsed(packet: bytes, question: bool, has_opt: bool) -> None:
    with pytest.raises(wire.Reject) as info:
        wire.parse_query(packet)
    r = dnslib.DNSRecord.parse(info.value.response)
    assert (r.header.q, r.header.ar) == (int(question), int(has_opt))
    if question:
        assert info.value.response[12 : 12 + len(QUESTION)] == packet[12 : 12 + len(QUESTION)]
    if has_opt:
        assert opt_of(info.value.response).rclass == 1232


def test_chain_of_16_pointers_is_accepted() -> None:
    assert wire.parse_query(chain(16)).edns is None


def test_name_of_255_is_accepted() -> None:
    q = wire.parse_query(header() + name_of(63, 63, 63, 61) + QT)
    assert len(q.question) == 255 + 4


def response(
    an: Sequence[bytes] = (),
    ns: Sequence[bytes] = (),
    ar: Sequence[bytes] = (),
    *,
    flags: int = 0x8180,
    counts: tuple[int, int, int, int] | None = None,
) -> bytes:
    """Return a response to www.example.com A with raw records (first one at offset 33)."""
    qd, ancount, nscount, arcount = counts or (1, len(an), len(ns), len(ar))
    head = struct.pack("!6H", ID, flags, qd, ancount, nscount, arcount)
    return head + QUESTION + b"".join([*an, *ns, *ar])


def as_response(query: bytes) -> bytes:
    """Return a query with QR and RA set."""
    return query[:2] + bytes([query[2] | 0x80, query[3] | 0x80]) + query[4:]


A1 = b"\0\0\0\1"
BAD_RESPONSES = {
    "empty": b"",
    "short": response()[:11],
    "QR unset": response(flags=0x0100),
    "self pointer owner": response([rr(b"\xc0\x21", 1, A1)]),
    "forward pointer": response([rr(b"\xc0\x31", 1, A1), rr(b"\xc0\x0c", 1, A1)]),
    "pointer loop": response([rr(b"\xc0\x0c", 1, A1), rr(b"\xc0\x31", 5, b"\xc0\x21")]),
    "pointer into TTL": response([rr(b"\xc0\x0c", 1, A1), rr(b"\xc0\x27", 1, A1)]),
    "pointer into header": response([rr(b"\xc0\x02", 1, A1)]),
    "pointer mid-label": response([rr(b"\xc0\x0d", 1, A1)]),
    "chain of 20": as_response(chain(20)),
    "chain of 17": as_response(chain(17)),
    "label of 64": response([rr(b"\x40" + b"x" * 64 + b"\0", 1, A1)]),
    "label 0x80": response([rr(b"\x80\0", 1, A1)]),
    "name of 256": response([rr(name_of(63, 63, 63, 62), 1, A1)]),
    "lying ANCOUNT": response(counts=(1, 5, 0, 0)),
    "lying QDCOUNT": response(counts=(1, 0, 0, 0))[:-2],
    "truncated rdata": response([rr(b"\xc0\x0c", 1, A1)])[:-1],
    "truncated fixed part": response([rr(b"\xc0\x0c", 1, A1)])[:-6],
    "CNAME overruns rdata": response([rr(b"\xc0\x0c", 5, b"\x01a")]),
    "CNAME short of rdata": response([rr(b"\xc0\x0c", 5, b"\xc0\x0c\0")]),
    "SOA short": response(ns=[rr(b"\xc0\x10", 6, b"\0\0" + bytes(19))]),
    "two OPT": response(ar=[OPT0, OPT0]),
    "OPT in answers": response([OPT0]),
    "OPT not root": response(ar=[opt(owner=b"\xc0\x0c")]),
    "QDCOUNT 2": response(counts=(2, 0, 0, 0)) + QUESTION,
}


@pytest.mark.parametrize("data", BAD_RESPONSES.values(), ids=BAD_RESPONSES.keys())
def test_bad_response_is_dropped(data: bytes) -> None:
    with pytest.raises(wire.Drop) as info:
        wire.parse_response(data)
    assert info.value.reason == "malformed-response"


def test_response_pointers_into_earlier_rdata_are_followed() -> None:
    ns = rr(b"\xc0\x10", wire.NS, b"\x03ns1\xc0\x10")  # at 33: example.com NS ns1.example.com
    cname = rr(b"\xc0\x0c", wire.CNAME, b"\xc0\x2d")  # to the NS rdata at 45
    glue = rr(b"\xc0\x2d", wire.A, A1)
    info = wire.parse_response(response([ns, cname], ar=[glue]))
    assert info.cnames == ("ns1.example.com",)
    assert wire.parse_response(as_response(chain(16))).ttl_offsets[-1] == len(chain(16)) - 10


# --- fuzzing ----------------------------------------------------------------------------------


def dnslib_reads(message: bytes) -> bool:
    """Return whether dnslib can read our message's question: it refuses non-UTF-8 labels."""
    if message[4:6] == b"\0\0":
        return True
    pos = 12
    while length := message[pos]:
        try:
            message[pos + 1 : pos + 1 + length].decode()
        except UnicodeDecodeError:
            return False
        pos += 1 + length
    return True


def check_query(data: bytes) -> None:
    """Assert parse_query raises only Drop or Reject, with a well-formed Reject response."""
    error: wire.Drop | wire.Reject | None = None
    try:
        q = wire.parse_query(data)
    except (wire.Drop, wire.Reject) as e:
        error = e
    if isinstance(error, wire.Drop):
        assert error.reason in ("short", "response")
    elif isinstance(error, wire.Reject):
        assert error.reason.startswith(("formerr-", "notimp-", "refused-", "badvers"))
        info = wire.parse_response(error.response)
        assert (info.id, info.rcode, info.flags >> 15) == (data[0] << 8 | data[1], error.rcode, 1)
        if dnslib_reads(error.response):
            r = dnslib.DNSRecord.parse(error.response)
            assert r.header.id == info.id and r.header.rcode == error.rcode & 0xF
    else:
        assert q.question == data[12 : 12 + len(q.question)]
        assert wire.encode_name(q.qname) == q.question[:-4].lower()
        out = wire.build_response(q, wire.NXDOMAIN, ede=[(wire.EDE_CENSORED, b"x")])
        assert wire.parse_response(out).question == q.question
        if dnslib_reads(out):
            assert dnslib.DNSRecord.parse(out).header.id == q.id
        assert wire.parse_query(wire.forward_query(q, qid=1)).question == q.question


def check_response(data: bytes) -> None:
    """Assert parse_response raises only Drop and returns in-bounds TTL offsets."""
    try:
        info = wire.parse_response(data)
    except wire.Drop as e:
        reason = e.reason
    else:
        assert all(12 <= off <= len(data) - 4 for off in info.ttl_offsets)
        wire.ttl_shift(data, info.ttl_offsets, 1)
        return
    assert reason == "malformed-response"


@st.composite
def valid_queries(draw: st.DrawFn) -> bytes:
    """Draw a query built by dnslib."""
    label = st.from_regex(r"[A-Za-z0-9_*-]{1,20}", fullmatch=True)
    name = ".".join(draw(st.lists(label, min_size=0, max_size=5))) or "."
    qtype = draw(st.sampled_from(["A", "AAAA", "MX", "TXT", "HTTPS", "ANY", "PTR", "AXFR"]))
    options = draw(st.lists(st.tuples(st.sampled_from([8, 10, 12, 15]), st.binary(max_size=12))))
    return dns_query(name, qtype, edns=draw(st.booleans()), do=draw(st.booleans()), options=options)


@st.composite
def valid_responses(draw: st.DrawFn) -> bytes:
    """Draw a response built by dnslib."""
    r = reply(draw(st.sampled_from(["www.example.com", "a.b.example.net", "."])))
    r.header.rcode = draw(st.sampled_from([0, 2, 3]))
    for _ in range(draw(st.integers(0, 3))):
        r.add_answer(dnslib.RR("www.example.com", 5, rdata=dnslib.CNAME("x.example.net"), ttl=9))
        r.add_answer(dnslib.RR("x.example.net", 1, rdata=dnslib.A("192.0.2.1"), ttl=10))
    if draw(st.booleans()):
        soa = dnslib.SOA("ns.example.com", "h.example.com", (1, 2, 3, 4, 60))
        r.add_auth(dnslib.RR("example.com", wire.SOA, rdata=soa, ttl=30))
        r.add_auth(dnslib.RR("example.com", 2, rdata=dnslib.NS("ns.example.com"), ttl=30))
        r.add_ar(dnslib.RR("ns.example.com", 1, rdata=dnslib.A("192.0.2.53"), ttl=30))
    if draw(st.booleans()):
        r.add_ar(dnslib.EDNS0(udp_len=1232, opts=[dnslib.EDNSOption(15, b"\0\x10x")]))
    return bytes(r.pack())


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """Flip, insert and delete random bytes of a valid message."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "set"]))
        i = draw(st.integers(0, len(data)))
        if op == "insert":
            data.insert(i, draw(st.integers(0, 255)))
        elif i < len(data):
            if op == "delete":
                del data[i]
            elif op == "flip":
                data[i] ^= 1 << draw(st.integers(0, 7))
            else:
                data[i] = draw(st.sampled_from([0, 0x3F, 0x40, 0x80, 0xC0, 0xFF]))
    return bytes(data)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_parse_query_arbitrary_bytes(data: bytes) -> None:
    check_query(data)


@FUZZ
@given(st.binary(min_size=12, max_size=80).map(lambda b: b[:2] + bytes([b[2] & 0x07]) + b[3:]))
def test_fuzz_parse_query_arbitrary_bodies(data: bytes) -> None:
    check_query(data[:4] + b"\0\1\0\0\0\0" + data[10:])


@FUZZ
@given(valid_queries())
def test_valid_dnslib_queries_parse(data: bytes) -> None:
    check_query(data)


@FUZZ
@given(mutated(valid_queries()))
def test_fuzz_parse_query_mutated(data: bytes) -> None:
    check_query(data)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_parse_response_arbitrary_bytes(data: bytes) -> None:
    check_response(data)


@FUZZ
@given(valid_responses())
def test_valid_dnslib_responses_parse(data: bytes) -> None:
    info = wire.parse_response(data)
    parsed = dnslib.DNSRecord.parse(data)
    assert info.id == parsed.header.id
    assert len(info.ttl_offsets) == len(
        [r for r in parsed.rr + parsed.auth + parsed.ar if r.rtype != 41]
    )


@FUZZ
@given(mutated(valid_responses()))
def test_fuzz_parse_response_mutated(data: bytes) -> None:
    check_response(data)
