"""The answer cache: TTLs honoured and counted down, negatives cached, memory bounded."""

from __future__ import annotations

import dnslib

from blockd.dns import wire
from blockd.dns.cache import AnswerCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(name: str, ttl: int = 300, rcode: int = 0) -> tuple[wire.Query, bytes]:
    q = dnslib.DNSRecord.question(name, "A")
    reply = q.reply()
    reply.header.rcode = rcode
    if rcode == 0:
        reply.add_answer(*dnslib.RR.fromZone(f"{name} {ttl} A 192.0.2.1"))
    else:
        reply.add_auth(
            *dnslib.RR.fromZone(
                f"example.com 3600 SOA ns.example.com. h.example.com. 1 2 3 4 {ttl}"
            )
        )
    return wire.parse_query(q.pack()), reply.pack()


def test_ttl_is_counted_down_and_expiry_honoured() -> None:
    clock = Clock()
    cache = AnswerCache(10, clock)
    q, data = answer("a.example.com", ttl=300)
    cache.put(cache.key(q), data, wire.parse_response(data))
    clock.now += 100
    hit = cache.get(cache.key(q), 4242)
    assert hit is not None
    reply = dnslib.DNSRecord.parse(hit[0])
    assert reply.header.id == 4242 and reply.rr[0].ttl == 200
    clock.now += 201
    assert cache.get(cache.key(q), 1) is None


def test_negative_answers_use_the_soa_minimum() -> None:
    clock = Clock()
    cache = AnswerCache(10, clock)
    q, data = answer("nx.example.com", ttl=30, rcode=3)
    cache.put(cache.key(q), data, wire.parse_response(data))
    clock.now += 29
    assert cache.get(cache.key(q), 1) is not None
    clock.now += 2
    assert cache.get(cache.key(q), 1) is None


def test_servfail_is_not_cached_and_size_is_bounded() -> None:
    cache = AnswerCache(3, Clock())
    q, data = answer("sf.example.com", rcode=2)
    cache.put(cache.key(q), data, wire.parse_response(data))
    assert len(cache) == 0
    keys = []
    for i in range(5):
        q, data = answer(f"n{i}.example.com")
        cache.put(cache.key(q), data, wire.parse_response(data))
        keys.append(cache.key(q))
    assert len(cache) == 3
    assert cache.get(keys[0], 1) is None and cache.get(keys[4], 1) is not None


def test_disabled_cache_stores_nothing() -> None:
    cache = AnswerCache(0, Clock())
    q, data = answer("a.example.com")
    cache.put(cache.key(q), data, wire.parse_response(data))
    assert len(cache) == 0
