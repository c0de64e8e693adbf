"""A real DNS server on loopback for tests: it answers from the records you add, scripted per name.

Use the `upstream` fixture (one server) or `make_upstream` (as many as a test needs) from a test
module with

    pytest_plugins = ["tests.dnsupstream"]            # in the module or in tests/conftest.py

and import `Upstream` only under `TYPE_CHECKING`, so that pytest can still rewrite this module's
asserts. Outside pytest, `async with Upstream() as upstream:` does the same.

    upstream.add("www.example.com", "A", "192.0.2.1", ttl=300)
    upstream.add("alias.example.com", "CNAME", "www.example.com")
    upstream.add("www.example.com", "RRSIG", bytes.fromhex("0001..."))   # opaque raw rdata
    upstream.behave("slow.example.com", delay=0.5)    # per name; behave(None, ...) for every name
    upstream.behave("dead.example.com", "silent")     # the same, positionally (value defaults True)
    forwarder = Forwarder([upstream.addr])
    ...
    transport, qname, qtype, qid, raw = upstream.queries[-1]   # every query seen, in order
    assert upstream.peers[-1][1] != upstream.peers[-2][1]       # the client's source ports

The server listens on 127.0.0.1 with one OS-picked port for both UDP and TCP and answers for
every name, as a resolver that knows only its records would: unknown names get NXDOMAIN and
existing names without the asked type NODATA (NOERROR), both with an SOA in the authority
section: that of the closest enclosing name owning one (`example.com` has one by default), else
one made up for the name's last two labels. CNAME chains are followed. RRSIGs covering the
answer's type are added when the query sets DO. UDP answers larger than the client's EDNS payload
size (512 without EDNS) are truncated (TC=1, no records), as a real server does. Datagrams and
frames that do not parse as queries are counted in `garbage` and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self

import pytest_asyncio
from dnslib import AAAA, CLASS, EDNS0, QTYPE, RCODE, RD, RR, A, DNSRecord

HOST = "127.0.0.1"
DEFAULT_ORIGIN = "example.com"
DEFAULT_SOA = "ns1.{origin}. hostmaster.{origin}. 1 7200 900 1209600 300"
FORGED_ADDRESS = "203.0.113.66"  # the A record forged answers carry (AAAA: FORGED_ADDRESS6)
FORGED_ADDRESS6 = "2001:db8:bad::66"
SERVER_PAYLOAD = 1232  # the EDNS payload size the server advertises
_MAX_CHAIN = 8  # CNAME links followed before giving up
_DO = 0x8000  # the DNSSEC OK bit in an OPT record's TTL field

Zone = dict[str, dict[str, str | bytes | list[str | bytes]]]
Rdata = str | bytes
Transport = Literal["udp", "tcp"]


class Query(NamedTuple):
    """One query the server received."""

    transport: Transport
    qname: str  # as received (case kept), without the trailing dot
    qtype: str  # "A", "AAAA", ... or "TYPE65400" for a type dnslib does not name
    id: int
    raw: bytes  # the message exactly as received (without the TCP length prefix)


@dataclass
class Behaviour:
    """How the server answers a name; forgeries are sent first, in field order, then the answer."""

    silent: bool = False  # record the query, never answer (an unreachable upstream)
    delay: float = 0.0  # seconds to wait before answering
    truncate: bool = False  # over UDP, answer TC=1 with no records; TCP gets the full answer
    servfail: bool = False  # answer SERVFAIL with no records
    ad: bool = False  # set the AD bit on answers
    wrong_id: bool = False  # first a forged answer with the wrong ID, from the right port
    wrong_question: bool = False  # first a forged answer for another name, right ID and port
    spoof_port: bool = False  # first a forged answer with the right ID from another port (UDP)
    junk: bool = False  # first a short non-DNS datagram/frame from the right port
    tcp_close: bool = False  # over TCP, close the connection instead of answering


class Upstream:
    """An asyncio DNS server on 127.0.0.1 (one OS-picked port for UDP and TCP) serving a zone."""

    def __init__(self, zone: Zone | None = None, *, origin: str | None = DEFAULT_ORIGIN) -> None:
        """Serve zone ({name: {type: rdata or [rdata, ...]}}) plus an SOA at origin."""
        self.queries: list[Query] = []
        self.peers: list[tuple[str, int]] = []  # the client (address, port) of each query
        self.garbage = 0  # datagrams or frames that were not a parsable query
        self._records: dict[str, dict[int, list[RR]]] = {}
        self._sigs: dict[tuple[str, int], list[RR]] = {}  # (owner, type covered) -> RRSIGs
        self._behaviours: dict[str, Behaviour] = {}
        self._default = Behaviour()
        self._port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        if origin is not None and QTYPE.SOA not in self._records.get(_norm(origin), {}):
            self.add(origin, "SOA", DEFAULT_SOA.format(origin=_norm(origin)))
        for name, rrsets in (zone or {}).items():
            for rtype, values in rrsets.items():
                for value in values if isinstance(values, list) else [values]:
                    self.add(name, rtype, value)

    @property
    def addr(self) -> tuple[str, int]:
        """Return the (host, port) the server listens on, for UDP and TCP alike."""
        assert self._port, "Upstream is not running"
        return (HOST, self._port)

    def add(self, name: str, rtype: str | int, rdata: Rdata, *, ttl: int = 300) -> RR:
        """Add a record: rdata in zone-file syntax, or bytes taken as opaque raw rdata."""
        owner = _norm(name)
        code = _type_code(rtype)
        if isinstance(rdata, bytes):
            rr = RR(owner + ".", rtype=code, rclass=CLASS.IN, ttl=ttl, rdata=RD(rdata))
        else:
            rr = RR.fromZone(f"{owner}. {ttl} IN {QTYPE[code]} {rdata}")[0]
        self._records.setdefault(owner, {}).setdefault(code, []).append(rr)
        if code == QTYPE.RRSIG:
            covered = int.from_bytes(rdata[:2], "big") if isinstance(rdata, bytes) else 0
            covered = covered or int(getattr(rr.rdata, "covered", 0))
            self._sigs.setdefault((owner, covered), []).append(rr)
        return rr

    def behave(
        self, name: str | None = None, kind: str | None = None, value: Any = True, /, **changes: Any
    ) -> Behaviour:
        """Change how name (None: every name without its own) is answered; return its Behaviour.

        Either `behave(name, "delay", 0.5)` / `behave(name, "silent")` or `behave(name, delay=0.5)`.
        """
        if kind is not None:
            changes[kind] = value
        known = {f.name for f in fields(Behaviour)}
        if unknown := set(changes) - known:
            raise TypeError(f"unknown behaviour {sorted(unknown)}; known: {sorted(known)}")
        if name is None:
            target = self._default
        else:
            target = self._behaviours.setdefault(_norm(name), Behaviour())
        for key, value in changes.items():
            setattr(target, key, value)
        return target

    def seen(self, name: str) -> list[Query]:
        """Return the queries received for name (compared case-insensitively)."""
        return [q for q in self.queries if _norm(q.qname) == _norm(name)]

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        for _ in range(50):  # the OS picks the UDP port; TCP must get the same one
            udp, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(HOST, 0), family=socket.AF_INET
            )
            port = udp.get_extra_info("sockname")[1]
            with contextlib.suppress(OSError):  # room for bursts of parallel queries
                udp.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20
                )
            try:
                self._tcp = await asyncio.start_server(self._accept_tcp, HOST, port)
            except OSError:
                udp.close()
                continue
            self._udp, self._port = udp, port
            return self
        raise OSError("no port free for both UDP and TCP on " + HOST)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        if self._tcp is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._tcp.wait_closed()
            self._tcp = None

    def _spawn(self, coro: Awaitable[None]) -> None:
        """Run coro as a task that shutdown cancels."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _udp_received(self, data: bytes, peer: tuple[str, int]) -> None:
        """Answer one datagram in its own task, so a delay holds up no other query."""
        request = self._parse(data)
        if request is None:
            return
        self._spawn(self._answer_udp(request, data, peer))

    async def _answer_udp(self, request: DNSRecord, data: bytes, peer: tuple[str, int]) -> None:
        behaviour = self._record("udp", request, data, peer)
        if behaviour.silent:
            return
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        udp = self._udp
        if udp is None:
            return
        for forgery, other_port in self._forgeries(request, behaviour, udp=True):
            if other_port:
                _send_from_other_port(forgery, peer)
            else:
                udp.sendto(forgery, peer)
        reply = self._resolve(request, behaviour)
        if behaviour.truncate or len(reply.pack()) > _payload_size(request):
            reply = _truncated(reply)
        udp.sendto(reply.pack(), peer)

    def _accept_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve a new connection in a task of our own, which shutdown cancels."""
        self._writers.add(writer)
        self._spawn(self._serve_tcp(reader, writer))

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer length-prefixed queries on one connection, in order, until it closes."""
        peer = writer.get_extra_info("peername")
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(size)
                request = self._parse(data)
                if request is None:
                    continue
                behaviour = self._record("tcp", request, data, (peer[0], peer[1]))
                if behaviour.tcp_close:
                    break
                if behaviour.silent:
                    continue
                if behaviour.delay:
                    await asyncio.sleep(behaviour.delay)
                for message, _other_port in self._forgeries(request, behaviour, udp=False):
                    writer.write(len(message).to_bytes(2, "big") + message)
                reply = self._resolve(request, behaviour).pack()
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _parse(self, data: bytes) -> DNSRecord | None:
        """Return data as a query with one question, or None (counted as garbage)."""
        try:
            request = DNSRecord.parse(data)
        except Exception:  # dnslib raises several types on hostile input
            self.garbage += 1
            return None
        if request.header.qr or len(request.questions) != 1:
            self.garbage += 1
            return None
        return request

    def _record(
        self, transport: Transport, request: DNSRecord, data: bytes, peer: tuple[str, int]
    ) -> Behaviour:
        """Note the query in `queries`; return the behaviour for its name."""
        qname = str(request.q.qname).removesuffix(".")
        qtype = QTYPE[request.q.qtype]
        self.queries.append(Query(transport, qname, qtype, request.header.id, data))
        self.peers.append(peer)
        return self._behaviours.get(_norm(qname), self._default)

    def _forgeries(
        self, request: DNSRecord, behaviour: Behaviour, *, udp: bool
    ) -> list[tuple[bytes, bool]]:
        """Return the forged messages to send before the answer, each with "from another port"."""
        out: list[tuple[bytes, bool]] = []
        if behaviour.wrong_id:
            forged = _forged(request)
            forged.header.id = (request.header.id + 1) & 0xFFFF
            out.append((forged.pack(), False))
        if behaviour.wrong_question:
            other = DNSRecord.question("forged." + DEFAULT_ORIGIN, QTYPE[request.q.qtype])
            other.header.id = request.header.id
            out.append((_forged(other).pack(), False))
        if behaviour.spoof_port and udp:
            out.append((_forged(request).pack(), True))
        if behaviour.junk:
            out.append((b"\x00junk", False))
        return out

    def _resolve(self, request: DNSRecord, behaviour: Behaviour) -> DNSRecord:
        """Build the authoritative reply to request from the zone."""
        reply = request.reply()
        reply.header.tc = 0
        reply.header.ad = int(behaviour.ad)
        opt = _opt(request)
        if opt is not None:
            flags = "do" if opt.ttl & _DO else ""
            reply.add_ar(EDNS0(udp_len=SERVER_PAYLOAD, flags=flags))
        if behaviour.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        name, qtype = _norm(str(request.q.qname)), request.q.qtype
        dnssec = opt is not None and bool(opt.ttl & _DO)
        for _ in range(_MAX_CHAIN):
            rrsets = self._records.get(name, {})
            if qtype in rrsets or (qtype == QTYPE.ANY and rrsets):
                for code, rrs in rrsets.items():
                    if code == qtype or qtype == QTYPE.ANY:
                        reply.rr.extend(rrs)
                        if dnssec and code != QTYPE.RRSIG:
                            reply.rr.extend(self._sigs.get((name, code), []))
                return reply
            if QTYPE.CNAME in rrsets:
                cname = rrsets[QTYPE.CNAME][0]
                reply.rr.append(cname)
                if dnssec:
                    reply.rr.extend(self._sigs.get((name, QTYPE.CNAME), []))
                name = _norm(str(cname.rdata.label))
                continue
            break
        if not self._exists(name):
            reply.header.rcode = RCODE.NXDOMAIN
        reply.auth.append(self._soa(name))
        return reply

    def _soa(self, name: str) -> RR:
        """Return the SOA of the closest enclosing name owning one, else one for its last labels."""
        labels = name.split(".") if name else []
        for start in range(len(labels) + 1):
            soa = self._records.get(".".join(labels[start:]), {}).get(QTYPE.SOA)
            if soa:
                return soa[0]
        zone = ".".join(labels[-2:])
        text = DEFAULT_SOA.format(origin=zone or "invalid")
        return RR.fromZone(f"{zone}. 300 IN SOA {text}")[0]

    def _exists(self, name: str) -> bool:
        """Say whether name owns records or is an empty non-terminal."""
        suffix = "." + name
        return name in self._records or any(owner.endswith(suffix) for owner in self._records)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: Upstream) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._server._udp_received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        """Ignore ICMP errors from clients that went away."""


def _norm(name: str) -> str:
    """Return name lower-cased without the trailing dot."""
    return name.lower().rstrip(".")


def _type_code(rtype: str | int) -> int:
    """Return the numeric type for "A", "TYPE65400" or 65400."""
    if isinstance(rtype, int):
        return rtype
    upper = rtype.upper()
    if upper.startswith("TYPE") and upper[4:].isdigit():
        return int(upper[4:])
    return int(getattr(QTYPE, upper))


def _opt(request: DNSRecord) -> RR | None:
    """Return the request's OPT record, if any."""
    return next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)


def _payload_size(request: DNSRecord) -> int:
    """Return the largest UDP answer the client accepts (RFC 6891: at least 512)."""
    opt = _opt(request)
    return 512 if opt is None else max(512, min(int(opt.rclass), SERVER_PAYLOAD))


def _truncated(reply: DNSRecord) -> DNSRecord:
    """Return reply with TC=1 and only its question and OPT record."""
    reply.header.tc = 1
    reply.rr, reply.auth = [], []
    reply.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    return reply


def _forged(request: DNSRecord) -> DNSRecord:
    """Return a plausible answer to request that carries FORGED_ADDRESS (or FORGED_ADDRESS6)."""
    forged = request.reply()
    if request.q.qtype == QTYPE.AAAA:
        forged.add_answer(RR(request.q.qname, QTYPE.AAAA, rdata=AAAA(FORGED_ADDRESS6), ttl=86400))
    else:
        forged.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(FORGED_ADDRESS), ttl=86400))
    return forged


def _send_from_other_port(message: bytes, peer: tuple[str, int]) -> None:
    """Send message to peer from a fresh socket, i.e. from a port that is not the server's."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        with contextlib.suppress(OSError):
            sock.sendto(message, peer)


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """Yield a running Upstream with an empty example.com zone; see the module docstring."""
    async with Upstream() as server:
        yield server


@pytest_asyncio.fixture
async def make_upstream() -> AsyncIterator[Callable[..., Awaitable[Upstream]]]:
    """Yield a factory `await make_upstream(zone=None, origin=...)` of running Upstreams."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(zone: Zone | None = None, **options: Any) -> Upstream:
            return await stack.enter_async_context(Upstream(zone, **options))

        yield start
