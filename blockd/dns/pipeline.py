"""The DNS request contract: a query's bytes in, the answer's bytes out (None: drop).

Stages, in order (each may answer and stop); `DnsPipeline.decide` reads as this list:
0. replay   a UDP query seen before (same bytes after the ID) under this snapshot, whose
            answer came from the policy or the cache, gets it again without parsing
1. parse    our own bounded parser; hostile packets are dropped or get FORMERR/NOTIMP/...
2. access   clients outside the allowed networks get REFUSED
3. policy   wholly blocked host: blocked answer; host with URL entries: the proxy address
   start    fail-closed (the default start strategy): REFUSED until every list is in force
4. cache    a cached upstream answer, re-decided: a CNAME to a blocked host is blocked
5. forward  to the upstreams; the answer's CNAME chain is checked like the cache's
The policy comes before the cache so that a new snapshot applies to the very next query.
Every policy answer (block or route, from any stage) is reported by `_decided`, the one
place a DnsDecision is published and the legal-records hook called.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol

from blockd.dns import cache, ddr, wire
from blockd.dns.answers import AnswerPolicy
from blockd.dns.cache import AnswerCache
from blockd.dns.forward import ForwardError
from blockd.events import DnsDecision, DnsProblem, DnsTransport, EventBus
from blockd.metrics.counters import DnsCounters
from blockd.policy.snapshot import PolicySnapshot
from blockd.policy.verdict import Verdict


class CacheKey(NamedTuple):
    """A remembered query that goes to the cache: its key and the client's UDP limit."""

    key: cache.CacheKey
    udp_limit: int


MEMO_ENTRIES = 65536  # remembered policy answers; cleared when full or when policy changes
MEMO_QUERY_BYTES = 512
NOT_READY = [(wire.EDE_NOT_READY, b"blockd is loading its verified lists")]


BlockHook = Callable[[str, Verdict, str], None]  # client, verdict, transport


class SnapshotSource(Protocol):
    """Anything holding the current snapshot (replaced whole, read without a lock)."""

    snapshot: PolicySnapshot


class Upstream(Protocol):
    """Where forwarded queries go: the Forwarder, or a scripted one in tests."""

    async def query(self, packet: bytes) -> bytes:
        """Return the upstream's answer to packet, with its ID; raise ForwardError."""
        ...


class AccessList:
    """Client networks allowed to query."""

    def __init__(self, networks: Iterable[str]) -> None:
        """Parse the networks."""
        self._nets = [ipaddress.ip_network(n) for n in networks]
        self._allowed: dict[str, bool] = {}

    def allows(self, ip: str) -> bool:
        """Say whether a client address may query (memoised: clients repeat)."""
        allowed = self._allowed.get(ip)
        if allowed is None:
            addr = ipaddress.ip_address(ip.partition("%")[0])
            allowed = any(addr in net for net in self._nets)
            if len(self._allowed) > 65536:
                self._allowed.clear()
            self._allowed[ip] = allowed
        return allowed


class DnsPipeline:
    """Decide and answer one query at a time; shared by the UDP and TCP servers."""

    def __init__(
        self,
        source: SnapshotSource,
        answers: AnswerPolicy,
        forwarder: Upstream,
        cache: AnswerCache,
        bus: EventBus,
        access: AccessList,
        *,
        keep_client_subnet: bool = False,
        counts: DnsCounters | None = None,
    ) -> None:
        """Wire the stages."""
        self.source = source
        self._answers = answers
        self.forwarder = forwarder
        self.cache = cache
        self.bus = bus
        self.access = access
        self.keep_client_subnet = keep_client_subnet
        # Answers no event reports (cached, forwarded) and upstream latency, for metrics.
        self.counts = counts if counts is not None else DnsCounters()
        # Policy answers by query bytes (after the ID); valid for one snapshot only.
        self._memo: dict[bytes, CacheKey | tuple[bytes, DnsDecision]] = {}
        self._memo_snapshot: PolicySnapshot | None = None
        # Set only when the operator keeps legally required records (off by default).
        self.on_block: BlockHook | None = None
        # Start strategy fail-closed: REFUSED for what the policy does not decide, until the
        # app says every configured list is in force.
        self.closed = False
        # What _dns.resolver.arpa announces (DDR): blockd's DoT and DoH listeners, if any.
        self.ddr = ddr.Ddr(())

    @property
    def answers(self) -> AnswerPolicy:
        """Return how blocked and routed names are answered."""
        return self._answers

    @answers.setter
    def answers(self, answers: AnswerPolicy) -> None:
        """Answer blocked and routed names so from now on (replayed answers forgotten)."""
        self._answers = answers
        self._memo.clear()

    async def handle(self, data: bytes, client: str, transport: DnsTransport) -> bytes | None:
        """Answer one query; None means drop it."""
        decided = self.decide(data, client, transport)
        if isinstance(decided, wire.Query):
            return await self.forward(decided, transport, client)
        return decided

    def decide(
        self, data: bytes, client: str, transport: DnsTransport
    ) -> bytes | wire.Query | None:
        """Run every stage that needs no network: an answer, None (drop), or the Query to
        forward. The UDP server answers from here without creating a task."""
        snapshot = self.source.snapshot
        if snapshot is not self._memo_snapshot:  # a new policy: forget its predecessor's answers
            self._memo.clear()
            self._memo_snapshot = snapshot
        # 0. replay (hot path: most UDP queries repeat; no parse, no allocation but the ID)
        if transport == "udp" and self.access.allows(client):
            memo = self._memo.get(data[2:])
            if memo is not None:
                if isinstance(memo, CacheKey):
                    replayed = self._cache_replay(memo, data, snapshot)
                    if replayed is not None:
                        return replayed
                else:  # a policy answer, reported as every policy answer is
                    self._decided(memo[1], client)
                    return data[:2] + memo[0]
        # 1. parse
        try:
            q = wire.parse_query(data)
        except wire.Drop as e:
            self.bus.publish(DnsProblem("dropped", e.reason, transport))
            return None
        except wire.Reject as e:
            self.bus.publish(DnsProblem("rejected", e.reason, transport))
            return e.response
        # 2. access
        if not self.access.allows(client):
            self.bus.publish(DnsProblem("refused", "access-list", transport))
            return wire.build_response(q, wire.REFUSED)
        # 2b. resolver.arpa: answered here (DDR), never forwarded
        if q.qname.endswith(ddr.ZONE) and ddr.under(q.qname):
            return self.ddr.answer(q)
        # 3. policy
        answer = self._policy(q, data, client, snapshot, transport)
        if answer is not None:
            return answer
        # 3b. start: fail-closed until the policy is whole (after the policy: what is
        # loaded is enforced; before the cache: nothing is forwarded)
        if self.closed:
            self.bus.publish(DnsProblem("refused", "not-ready", transport))
            return wire.build_response(q, wire.REFUSED, ede=NOT_READY)
        # 4. cache; else 5. forward (the caller awaits forward(q))
        return self._cache(q, data, client, snapshot, transport)

    def _cache_replay(self, memo: CacheKey, data: bytes, snapshot: PolicySnapshot) -> bytes | None:
        """Answer a remembered query from the cache with its own ID; None: the full path."""
        hit = self._cache_hit(memo, data, snapshot)
        if hit is not None:
            self.counts.cached["udp"] += 1
        return hit

    def _policy(
        self,
        q: wire.Query,
        data: bytes | None,
        client: str,
        snapshot: PolicySnapshot,
        transport: DnsTransport,
    ) -> bytes | None:
        """Answer a blocked or routed name from the policy; None when it does not decide.

        data: the query's bytes, to replay the answer to the same bytes (UDP), if given.
        """
        verdict = snapshot.host_verdict(q.qname) if q.qname else None
        if verdict is None:
            return None
        if verdict.action == "route":
            answer = self.answers.routed(q)
            if answer is None:
                return None  # a mail or text query for a routed host: forward it
        else:
            answer = self.answers.blocked(q, verdict)
        decision = DnsDecision(verdict, transport)
        self._decided(decision, client)
        if transport == "udp" and data is not None:
            self._remember(data, (answer[2:], decision))
        return answer

    def _cache(
        self,
        q: wire.Query,
        data: bytes,
        client: str,
        snapshot: PolicySnapshot,
        transport: DnsTransport,
    ) -> bytes | wire.Query:
        """Answer from the cache (its CNAME chain re-decided), or return q to forward."""
        key = self.cache.key(q)
        cached = self.cache.get(key, q.id)
        if transport == "udp":
            self._remember(data, CacheKey(key, _udp_limit(q)))
        if cached is None:
            return q
        return self._checked(
            q, cached[0], cached[1], client, snapshot, transport, self.counts.cached
        )

    def _decided(self, decision: DnsDecision, client: str) -> None:
        """Report a policy answer: the one place its event is published (and records kept)."""
        self.bus.publish(decision)
        if self.on_block is not None and decision.verdict.action != "route":
            self.on_block(client, decision.verdict, decision.transport)

    def _cache_hit(self, memo: CacheKey, data: bytes, snapshot: PolicySnapshot) -> bytes | None:
        """Serve a repeated query from the cache without parsing it, when nothing needs q."""
        cached = self.cache.get_tail(memo.key)
        if cached is None:
            return None
        tail, cnames = cached
        if len(tail) + 2 > memo.udp_limit:
            return None  # needs truncating: the full path does it
        for target in cnames:
            if snapshot.blocked_host(target) is not None:
                return None  # blocked by its CNAME chain: the full path builds the answer
        return data[:2] + tail

    def _remember(self, data: bytes, value: CacheKey | tuple[bytes, DnsDecision]) -> None:
        if len(data) <= MEMO_QUERY_BYTES:
            if len(self._memo) >= MEMO_ENTRIES:
                self._memo.clear()
            self._memo[data[2:]] = value

    async def forward(self, q: wire.Query, transport: DnsTransport, client: str = "") -> bytes:
        """Ask the upstreams, cache the answer, and check its CNAME chain."""
        try:
            started = time.perf_counter()
            upstream = await self.forwarder.query(
                wire.forward_query(q, qid=q.id, keep_ecs=self.keep_client_subnet)
            )
            self.counts.upstream_seconds.observe(time.perf_counter() - started)
            info = wire.parse_response(upstream)
        except (ForwardError, wire.Drop) as e:
            reason = e.reason if isinstance(e, ForwardError) else "malformed-response"
            self.bus.publish(DnsProblem("upstream", reason, transport))
            code = (
                wire.EDE_NO_REACHABLE_AUTHORITY if reason == "timeout" else wire.EDE_NETWORK_ERROR
            )
            return wire.build_response(
                q, wire.SERVFAIL, ede=[(code, b"upstream " + reason.encode())]
            )
        self.cache.put(self.cache.key(q), upstream, info)
        # The policy may have changed while we waited: decide the whole answer, the name
        # and its CNAME chain, by the one in force now (never half by each). A name is
        # looked up again: a microsecond, against an upstream's round trip.
        snapshot = self.source.snapshot
        answer = self._policy(q, None, client, snapshot, transport)
        if answer is not None:
            return answer
        return self._checked(
            q, upstream, info.cnames, client, snapshot, transport, self.counts.forwarded
        )

    def _checked(
        self,
        q: wire.Query,
        data: bytes,
        cnames: Sequence[str],
        client: str,
        snapshot: PolicySnapshot,
        transport: DnsTransport,
        answered: dict[str, int],
    ) -> bytes:
        """Block an upstream answer whose CNAME chain reaches a blocked host; fit it to UDP."""
        for target in cnames:
            verdict = snapshot.blocked_host(target)
            if verdict is not None:
                self._decided(DnsDecision(verdict, transport), client)  # counted as blocked
                return self.answers.blocked(q, verdict)
        answered[transport] += 1
        if transport == "udp" and len(data) > _udp_limit(q):
            truncated = bytearray(wire.build_response(q, data[3] & 0x0F))
            truncated[2] |= 0x02  # TC: ask the client to retry over TCP
            return bytes(truncated)
        return data


def _udp_limit(q: wire.Query) -> int:
    """Return the largest UDP answer the client takes (RFC 6891; 1232 is our ceiling)."""
    return min(q.edns.udp_size, 1232) if q.edns is not None else 512
