"""Serve the policy zone: AXFR/IXFR and SOA on a listener of its own, NOTIFY on each change.

Runs in the supervisor (or the one process): it listens for PolicyActivated, builds the
next zone in a thread from the stored, re-verified lists, gives it the next serial (kept in
<state>/rpz/serial.json, so it only grows across restarts), keeps the last changes for IXFR
and notifies the secondaries. Only rpz.clients may ask anything; TSIG is required of each
of them but the unsigned_clients when a key is configured. Refused requests are counted
and logged without their source address (it may be anyone's); a completed transfer is an
audited event naming the secondary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import struct
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import cast

import dns.exception
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.tsig

from blockd.config import Config, binding, read_tsig_key, split_endpoint
from blockd.events import EventBus, PolicyActivated, ZoneTransferred
from blockd.files import atomic_write
from blockd.rpz import source, zone, zonemd
from blockd.rpz.source import NotServed, Sources
from blockd.rpz.triggers import triggers
from blockd.rpz.tsig import Signer, dns_key, keyring
from blockd.rpz.zone import Actions, Change, Soa, Zone

log = logging.getLogger(__name__)

NOTIFY_TRIES = (1.0, 2.0, 4.0, 8.0, 16.0)  # seconds to wait for each NOTIFY's answer
IDLE_TIMEOUT = 30.0  # seconds a transfer connection may sit idle between requests
MAX_CONNECTIONS = 64
BATCH = 32  # transfer messages made per step in a thread (~0.5 MB)
MAX_SERIAL = 2**32 - 1

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
TSIG_ERRORS = (
    dns.message.UnknownTSIGKey,
    dns.tsig.BadSignature,
    dns.tsig.BadTime,
    dns.tsig.BadKey,
    dns.tsig.BadAlgorithm,
)


@dataclass(frozen=True)
class Asked:
    """A request that passed the checks: what it asks and how to sign the answer."""

    msg: dns.message.Message
    signer: Signer | None


class RpzServer:
    """The policy zone's primary: builds zones, answers transfers, sends NOTIFY."""

    def __init__(
        self, config: Config, bus: EventBus, sources: Callable[[], Sources | None]
    ) -> None:
        """Prepare; nothing listens until start()."""
        self.config = config
        self.bus = bus
        self.sources = sources
        rpz = config.rpz
        self.key = dns_key(read_tsig_key(rpz.tsig_key_file)) if rpz.tsig_key_file else None
        self.clients = [ipaddress.ip_network(c) for c in rpz.clients]
        self.unsigned = [ipaddress.ip_network(c) for c in rpz.unsigned_clients]
        self.zone: Zone | None = None
        self.digest = ""
        self.history: deque[Change] = deque()
        self.refused: Counter[str] = Counter()  # by reason: not-client, unsigned, tsig, malformed
        self.transfers: Counter[str] = Counter()  # by kind: axfr, ixfr, ixfr-axfr, ixfr-current
        self.bound: list[tuple[str, str, int]] = []
        self._path = config.state.dir / "rpz" / "serial.json"
        self._pending: Mapping[str, int] | None = None
        self._wake = asyncio.Event()
        self._built = asyncio.Event()  # set after each build (tests wait on it)
        self._seen = self._done = 0  # activations seen, and built
        self._servers: list[asyncio.Server] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._notifies: dict[str, asyncio.Task[None]] = {}
        self._answers: dict[tuple[int, str], asyncio.Future[None]] = {}
        self._builder: asyncio.Task[None] | None = None
        bus.subscribe(PolicyActivated, self._on_policy)

    # -- the zone ---------------------------------------------------------------------

    def _on_policy(self, event: PolicyActivated) -> None:
        self._pending = dict(event.versions)
        self._seen += 1
        self._wake.set()

    async def _build_forever(self) -> None:
        """Build a zone for each activation (the latest one when several arrive at once)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            versions, self._pending, seen = self._pending, None, self._seen
            if versions is not None:
                try:
                    await self.rebuild(versions)
                except Exception:
                    log.exception("rpz: building the zone failed; the previous one is served")
            self._done = seen
            self._built.set()

    async def rebuild(self, versions: Mapping[str, int]) -> Zone | None:
        """Build the zone for the lists in force; serve it, with the next serial, if changed."""
        src = self.sources()
        if src is None:
            return None
        try:
            built = await asyncio.to_thread(self._build, src, versions)
        except NotServed as e:
            log.error("rpz: %s; the zone keeps serial %s", e, self.zone and self.zone.serial)
            return None
        if built is None:
            return self.zone
        self.zone = built
        self._notify_all()
        return built

    def _build(self, src: Sources, versions: Mapping[str, int]) -> Zone | None:
        """Make the next zone in a thread; None when its content is unchanged."""
        lists, left_out = source.load_all(src, versions)
        for problem in left_out:
            log.error("rpz: %s (left out of the zone)", problem)
        entries = triggers(lists, src.never_block.patterns())
        rpz, dnsc = src.config.rpz, src.config.dns
        actions = Actions(
            tuple(dnsc.notice_v4 + dnsc.notice_v6), tuple(dnsc.proxy_v4 + dnsc.proxy_v6), rpz.ttl
        )
        digest = zone.digest(entries, actions) + rpz.zone + ("+zonemd" if rpz.zonemd else "")
        old = self.zone
        if old is not None and digest == self.digest:
            return None
        serial, kept = self._next_serial(digest)
        new = Zone(rpz.zone, serial, entries, actions, Soa(rpz.refresh, 60, rpz.expire, rpz.ttl))
        if rpz.zonemd:
            new = dataclasses.replace(new, zonemd=zonemd.record(new, zonemd.digest(new)))
        if (
            old is not None
            and old.actions == actions
            and old.name == new.name
            and bool(old.zonemd) == bool(new.zonemd)
        ):
            self._remember(zone.changes(old, new), len(entries))
        else:
            self.history.clear()
        self.digest = digest
        if not kept:
            log.info(
                "rpz: zone %s serial %d: %d names from %s",
                rpz.zone,
                serial,
                len(entries),
                ", ".join(f"{x.ref} v{x.version}" for x in lists) or "no list",
            )
        return new

    def _remember(self, step: Change, size: int) -> None:
        """Keep step for IXFR; forget the oldest beyond the count or the zone's own size."""
        self.history.append(step)
        limit = self.config.rpz.history
        while self.history and (
            len(self.history) > limit or sum(c.size for c in self.history) > max(size, 1000)
        ):
            self.history.popleft()

    def _next_serial(self, digest: str) -> tuple[int, bool]:
        """Return the serial for content digest, and whether it is the stored one (restart)."""
        try:
            saved = json.loads(self._path.read_bytes())
            last, last_digest = int(saved["serial"]), str(saved["digest"])
        except (OSError, ValueError, KeyError, TypeError):
            last, last_digest = 0, ""
        if digest == last_digest and last:
            return last, True
        serial = last % MAX_SERIAL + 1  # RFC 1982: from 2**32 - 1 on to 1
        body = json.dumps({"serial": serial, "digest": digest}).encode() + b"\n"
        atomic_write(self._path, body, mode=0o600, dir_mode=0o700)
        return serial, False

    # -- listening --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the listeners and start building zones."""
        loop = asyncio.get_running_loop()
        try:
            for endpoint in self.config.rpz.listen:
                host, port = split_endpoint(endpoint)
                with binding("rpz tcp", host, port):
                    server = await asyncio.start_server(self._connection, host, port)
                self._servers.append(server)
                port = server.sockets[0].getsockname()[1]
                with binding("rpz udp", host, port):
                    udp, _ = await loop.create_datagram_endpoint(
                        lambda: _Datagrams(self), local_addr=(host, port)
                    )
                self._udp.append(udp)
                self.bound += [("tcp", host, port), ("udp", host, port)]
        except BaseException:
            await self.stop()
            raise
        self._builder = loop.create_task(self._build_forever())

    async def stop(self) -> None:
        """Close the listeners and end every task."""
        for server in self._servers:
            server.close()
        for udp in self._udp:
            udp.close()
        tasks = [t for t in [self._builder, *self._tasks, *self._notifies.values()] if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers, self._udp = [], []

    async def settled(self) -> Zone | None:
        """Wait until every activation seen so far is built; return the zone (tests)."""
        while self._done < self._seen:
            self._built.clear()
            await self._built.wait()
        return self.zone

    # -- requests ---------------------------------------------------------------------

    def _allowed(
        self, address: str, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    ) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in nets)

    def check(self, wire: bytes, address: str) -> Asked | bytes | None:
        """Return the request if it may be answered, else the refusal to send (None: drop)."""
        if len(wire) < 12:
            return None
        qid, flags = struct.unpack_from("!HH", wire)
        if flags & 0x8000:
            return None  # a response: not for this path
        if not self._allowed(address, self.clients):
            return self._refuse(wire, dns.rcode.REFUSED, "not-client", "not a configured client")
        try:
            msg = dns.message.from_wire(wire, keyring=keyring(self.key))
        except TSIG_ERRORS as e:
            log.warning("rpz: request from %s refused: TSIG %s", address, type(e).__name__)
            return self._refuse(wire, dns.rcode.NOTAUTH, "tsig", None)
        except dns.exception.DNSException:
            return self._refuse(wire, dns.rcode.FORMERR, "malformed", "malformed request")
        if self.key is not None and not msg.had_tsig and not self._allowed(address, self.unsigned):
            log.warning("rpz: request from %s refused: not signed with the TSIG key", address)
            return self._refuse(wire, dns.rcode.REFUSED, "unsigned", None)
        signer = Signer(self.key, msg.mac or b"", qid) if msg.had_tsig and self.key else None
        return Asked(msg, signer)

    def _refuse(self, wire: bytes, rcode: int, reason: str, why: str | None) -> bytes:
        """Return a bare refusal (the question echoed when it parses); count it by reason."""
        self.refused[reason] += 1
        total = self.refused.total()
        if (why is not None and total in (1, 10, 100)) or total % 1000 == 0:
            log.warning("rpz: %d requests refused so far (latest: %s)", total, why)
        qid, flags = struct.unpack_from("!HH", wire)
        opcode = (flags >> 11) & 0xF
        head = struct.pack(
            "!HHHHHH", qid, 0x8000 | (opcode << 11) | (flags & 0x0100) | rcode, 0, 0, 0, 0
        )
        try:
            q = dns.message.from_wire(wire, keyring=False, question_only=True)
            if q.question:
                rr = q.question[0]
                qs = rr.name.to_wire()
                assert qs is not None
                return (
                    head[:4]
                    + b"\x00\x01"
                    + head[6:]
                    + qs
                    + struct.pack("!HH", rr.rdtype, rr.rdclass)
                )
        except dns.exception.DNSException:
            pass
        return head

    def answer_soa(self, asked: Asked) -> bytes:
        """Return the answer to an SOA query (or refuse a question outside the zone)."""
        msg = asked.msg
        qid = msg.id
        z = self.zone
        q = msg.question[0] if msg.question else None
        if z is None or q is None or q.name.to_text().rstrip(".").lower() != z.name:
            wire = zone.header(qid, 0, rcode=dns.rcode.REFUSED, aa=False)[:4] + b"\x00" * 8
        elif q.rdtype in (dns.rdatatype.SOA, dns.rdatatype.IXFR):
            wire = zone.header(qid, 1) + zone.question(z.name, q.rdtype) + z.soa_record()
        else:
            wire = zone.header(qid, 0) + zone.question(z.name, q.rdtype)
        return asked.signer.sign(wire) if asked.signer else wire

    def transfer(self, asked: Asked, address: str) -> tuple[str, Iterator[bytes]] | None:
        """Return the kind and the messages of an AXFR or IXFR (None: not a transfer)."""
        msg, z = asked.msg, self.zone
        q = msg.question[0] if msg.question else None
        if q is None or z is None or q.name.to_text().rstrip(".").lower() != z.name:
            return None
        if q.rdtype == dns.rdatatype.AXFR:
            kind, records = "AXFR", zone.axfr_records(z)
        elif q.rdtype == dns.rdatatype.IXFR:
            kind, records = self._ixfr(msg, z)
        else:
            return None
        out = zone.messages(msg.id, z.name, q.rdtype, records)
        if asked.signer is not None:
            signer = asked.signer
            out = (signer.sign(m) for m in out)
        return kind, out

    def _ixfr(self, msg: dns.message.Message, z: Zone) -> tuple[str, Iterator[bytes]]:
        """Return the records answering an IXFR: the steps since the client's serial, or all."""
        serial = None
        for rrset in msg.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                serial = rrset[0].serial
        if serial == z.serial:  # a secondary polling: nothing to send but the SOA
            return "IXFR-CURRENT", iter([z.soa_record()])
        steps = list(self.history)
        start = next((i for i, c in enumerate(steps) if c.old == serial), None)
        if serial is None or start is None or steps[-1].new != z.serial:
            return "IXFR-AXFR", zone.axfr_records(z)
        return "IXFR", zone.ixfr_records(z, steps[start:])

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests on one TCP connection until it closes or idles."""
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if len(self._tasks) > MAX_CONNECTIONS:
                return
            while True:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    (size,) = struct.unpack("!H", await reader.readexactly(2))
                    wire = await reader.readexactly(size)
                checked = self.check(wire, address)
                if checked is None:
                    return
                if isinstance(checked, bytes):
                    writer.write(struct.pack("!H", len(checked)) + checked)
                    await writer.drain()
                    return
                if checked.msg.opcode() != dns.opcode.QUERY:
                    return
                xfr = self.transfer(checked, address)
                if xfr is None:
                    answer = self.answer_soa(checked)
                    writer.write(struct.pack("!H", len(answer)) + answer)
                    await writer.drain()
                    continue
                kind, messages = xfr
                serial = self.zone.serial if self.zone else 0
                await _stream(writer, messages)
                self.transfers[kind.lower()] += 1
                if kind == "IXFR-CURRENT":
                    continue  # counted, not audited: it disclosed no name
                signed = (
                    f" (TSIG key {self.key.name.to_text().rstrip('.')})"
                    if checked.signer and self.key
                    else " (unsigned, allowed by address)"
                )
                zone_name = self.config.rpz.zone
                self.bus.publish(
                    ZoneTransferred(
                        "rpz-transfer",
                        f"{kind} of zone {zone_name} serial {serial} to {address}{signed}",
                        client=address,
                        kind=kind,
                        serial=serial,
                    )
                )
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def datagram(self, wire: bytes, address: str) -> bytes | None:
        """Answer one UDP request (SOA; a transfer question gets the SOA alone)."""
        if len(wire) >= 12 and struct.unpack_from("!H", wire, 2)[0] & 0x8000:
            self._notify_answered(wire, address)
            return None
        checked = self.check(wire, address)
        if checked is None or isinstance(checked, bytes):
            return checked
        if checked.msg.opcode() != dns.opcode.QUERY:
            return None
        return self.answer_soa(checked)

    # -- NOTIFY -----------------------------------------------------------------------

    def _notify_all(self) -> None:
        for target in self.config.rpz.notify:
            old = self._notifies.pop(target, None)
            if old is not None:
                old.cancel()
            task = asyncio.get_running_loop().create_task(self._notify(target))
            self._notifies[target] = task

    async def _notify(self, target: str) -> None:
        """Send NOTIFY (RFC 1996) to one secondary until it answers or the tries run out."""
        z = self.zone
        host, port = split_endpoint(target)
        family_v6 = ":" in host
        udp = next(
            (u for u in self._udp if (":" in u.get_extra_info("sockname")[0]) == family_v6), None
        )
        if z is None or udp is None:
            log.error(
                "rpz: no %s listener to send NOTIFY to %s from",
                "IPv6" if family_v6 else "IPv4",
                target,
            )
            return
        for wait in NOTIFY_TRIES:
            qid = int.from_bytes(os.urandom(2), "big")
            wire = (
                struct.pack("!HHHHHH", qid, (4 << 11) | 0x0400, 1, 1, 0, 0)
                + zone.question(z.name, zone.T_SOA)
                + z.soa_record()
            )
            if self.key is not None and not self._allowed(host, self.unsigned):
                wire = Signer(self.key, b"", qid).sign(wire)
            answered = asyncio.get_running_loop().create_future()
            self._answers[(qid, host)] = answered
            try:
                udp.sendto(wire, (host, port))
                async with asyncio.timeout(wait):
                    await answered
                return
            except TimeoutError:
                continue
            except OSError as e:
                log.warning("rpz: NOTIFY to %s failed: %s", target, e)
                await asyncio.sleep(wait)
            finally:
                self._answers.pop((qid, host), None)
        log.warning("rpz: %s did not answer NOTIFY for serial %d", target, z.serial)

    def _notify_answered(self, wire: bytes, address: str) -> None:
        qid = struct.unpack_from("!H", wire)[0]
        answered = self._answers.get((qid, address))
        if answered is not None and not answered.done():
            answered.set_result(None)


async def _stream(writer: asyncio.StreamWriter, messages: Iterator[bytes]) -> None:
    """Write a transfer's messages as they are made, a batch at a time in a thread."""

    def take() -> list[bytes]:
        out = []
        for m in messages:
            out.append(struct.pack("!H", len(m)) + m)
            if len(out) >= BATCH:
                break
        return out

    while batch := await asyncio.to_thread(take):
        writer.write(b"".join(batch))
        await writer.drain()


class _Datagrams(asyncio.DatagramProtocol):
    """UDP: SOA queries and the answers to our NOTIFY."""

    def __init__(self, server: RpzServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            reply = self.server.datagram(data, str(addr[0]))
        except Exception:
            log.exception("rpz: UDP request failed")
            return
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)
