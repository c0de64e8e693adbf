"""The policy zone, pure: which names carry which RPZ action, its changes, its wire form.

A zone maps each trigger name (relative to the zone) to one action code; a code with the
WILD bit also covers the name's subdomains (`*.name`), as blockd's host entries do. The
records of each action are fixed per zone (`Actions`): NXDOMAIN is `CNAME .`, NODATA
`CNAME *.`, the notice page and the URL proxy are local data (A/AAAA), never-block names
`CNAME rpz-passthru.`. Messages are written straight to wire bytes: owner names point at
the question's zone name (offset 12), so a 1,000,000-name transfer is encoded in a few
seconds without a DNS object per record, and streamed message by message.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

NXDOMAIN, NODATA, NOTICE, ROUTE, PASSTHRU = range(5)
WILD = 8  # the code also covers the subdomains: `*.name`
ACTION_NAMES = {"nxdomain": NXDOMAIN, "nodata": NODATA, "notice": NOTICE}

T_A, T_NS, T_CNAME, T_SOA, T_AAAA = 1, 2, 5, 6, 28
T_IXFR, T_AXFR = 251, 252
CLASS_IN = 1
POINTER = b"\xc0\x0c"  # the zone name, right after the header, in every message we write
MESSAGE_BYTES = 16_000  # each message of a transfer stays under this (64 KiB at most)


def name_wire(name: str) -> bytes:
    """Return a name's labels in wire form, without the terminating root label."""
    return b"".join(bytes((len(x),)) + x for x in name.encode("ascii").split(b".")) if name else b""


def fqdn_wire(name: str) -> bytes:
    """Return a fully qualified name in wire form ('' is the root)."""
    return name_wire(name.rstrip(".")) + b"\x00"


@dataclass(frozen=True)
class Actions:
    """What each action answers: the notice page's and the proxy's addresses."""

    notice: tuple[str, ...]
    proxy: tuple[str, ...]
    ttl: int

    def tails(self) -> dict[int, tuple[bytes, ...]]:
        """Return, per action code, each record's bytes after its owner name."""

        def rr(rtype: int, rdata: bytes) -> bytes:
            return struct.pack("!HHIH", rtype, CLASS_IN, self.ttl, len(rdata)) + rdata

        def addresses(addrs: Sequence[str]) -> tuple[bytes, ...]:
            out = []
            for a in addrs:
                ip = ipaddress.ip_address(a)
                out.append(rr(T_A if ip.version == 4 else T_AAAA, ip.packed))
            return tuple(out)

        base = {
            NXDOMAIN: (rr(T_CNAME, b"\x00"),),
            NODATA: (rr(T_CNAME, b"\x01*\x00"),),
            NOTICE: addresses(self.notice) or (rr(T_CNAME, b"\x00"),),
            ROUTE: addresses(self.proxy),
            PASSTHRU: (rr(T_CNAME, fqdn_wire("rpz-passthru")),),
        }
        return base | {code | WILD: tails for code, tails in base.items()}

    def text(self, code: int) -> list[str]:
        """Return an action's records in zone-file text (tests, diagnostics)."""
        action = code & ~WILD
        if action in (NOTICE, ROUTE):
            addrs = self.notice if action == NOTICE else self.proxy
            if addrs:
                return [f"{'A' if ':' not in a else 'AAAA'} {a}" for a in addrs]
        return [{NODATA: "CNAME *.", PASSTHRU: "CNAME rpz-passthru."}.get(action, "CNAME .")]


@dataclass(frozen=True)
class Soa:
    """The zone's SOA timers."""

    refresh: int = 300
    retry: int = 60
    expire: int = 1_209_600
    minimum: int = 60

    def record(self, zone: str, serial: int) -> bytes:
        """Return the SOA record (owner: the zone, by pointer) for serial."""
        rdata = (
            fqdn_wire("localhost")
            + fqdn_wire(f"hostmaster.{zone}")
            + struct.pack("!IIIII", serial, self.refresh, self.retry, self.expire, self.minimum)
        )
        return POINTER + struct.pack("!HHIH", T_SOA, CLASS_IN, self.minimum, len(rdata)) + rdata


@dataclass(frozen=True)
class Zone:
    """One version of the policy zone."""

    name: str
    serial: int
    entries: Mapping[str, int]  # trigger name -> action code (| WILD)
    actions: Actions
    soa: Soa = field(default_factory=Soa)
    zonemd: bytes = b""  # the apex ZONEMD record (RFC 8976), b"" when the zone has none

    def soa_record(self, serial: int | None = None) -> bytes:
        """Return the zone's SOA record, at its serial unless told another."""
        return self.soa.record(self.name, self.serial if serial is None else serial)

    def records(self) -> Iterator[bytes]:
        """Yield every record but the SOA (the apex NS first), each in wire form."""
        yield (
            POINTER
            + struct.pack("!HHIH", T_NS, CLASS_IN, self.actions.ttl, 11)
            + fqdn_wire("localhost")
        )
        if self.zonemd:
            yield self.zonemd
        yield from encode(self.entries.items(), self.actions.tails())

    def text(self) -> list[str]:
        """Return the zone's trigger records as zone-file lines (tests, small zones)."""
        out = []
        for name, code in self.entries.items():
            owners = [name, f"*.{name}"] if code & WILD else [name]
            out += [f"{o} {r}" for o in owners for r in self.actions.text(code)]
        return out


def encode(
    items: Iterable[tuple[str, int]], tails: Mapping[int, tuple[bytes, ...]]
) -> Iterator[bytes]:
    """Yield the records of (name, code) pairs in wire form, owners pointing at the zone."""
    # Hot loop (every name of every transfer): one join per name, owners made once.
    for name, code in items:
        labels = name_wire(name)
        owner = labels + POINTER
        for tail in tails[code]:
            yield owner + tail
        if code & WILD:
            wild = b"\x01*" + owner
            for tail in tails[code]:
                yield wild + tail


def digest(entries: Mapping[str, int], actions: Actions) -> str:
    """Return the SHA-256 of a zone's content (what a serial stands for)."""
    h = hashlib.sha256(repr(actions).encode())
    for name, code in entries.items():
        h.update(b"%s %d\n" % (name.encode(), code))
    return h.hexdigest()


@dataclass(frozen=True)
class Change:
    """What changed from one serial to the next: the names whose action went or came."""

    old: int
    new: int
    removed: dict[str, int]
    added: dict[str, int]
    removed_zonemd: bytes = b""  # the old serial's ZONEMD record, if it had one
    added_zonemd: bytes = b""  # the new serial's

    @property
    def size(self) -> int:
        """Return how many names the change touches."""
        return len(self.removed) + len(self.added)


def changes(old: Zone, new: Zone) -> Change:
    """Return the change from old to new (a name whose action changed is removed and added)."""
    removed = {n: c for n, c in old.entries.items() if new.entries.get(n) != c}
    added = {n: c for n, c in new.entries.items() if old.entries.get(n) != c}
    return Change(old.serial, new.serial, removed, added, old.zonemd, new.zonemd)


def header(qid: int, count: int, *, rcode: int = 0, opcode: int = 0, aa: bool = True) -> bytes:
    """Return a response header with one question and count answers."""
    flags = 0x8000 | (opcode << 11) | (0x0400 if aa else 0) | rcode
    return struct.pack("!HHHHHH", qid, flags, 1, count, 0, 0)


def question(zone: str, qtype: int) -> bytes:
    """Return the question section for the zone."""
    return fqdn_wire(zone) + struct.pack("!HH", qtype, CLASS_IN)


def messages(qid: int, zone: str, qtype: int, records: Iterable[bytes]) -> Iterator[bytes]:
    """Pack records into response messages of at most MESSAGE_BYTES, in order."""
    q = question(zone, qtype)
    batch: list[bytes] = []
    size = 0
    for record in records:
        if batch and size + len(record) > MESSAGE_BYTES:
            yield header(qid, len(batch)) + q + b"".join(batch)
            batch, size = [], 0
        batch.append(record)
        size += len(record)
    if batch:
        yield header(qid, len(batch)) + q + b"".join(batch)


def axfr_records(zone: Zone) -> Iterator[bytes]:
    """Yield a full transfer's records: SOA, the zone, SOA."""
    soa = zone.soa_record()
    yield soa
    yield from zone.records()
    yield soa


def ixfr_records(zone: Zone, steps: Sequence[Change]) -> Iterator[bytes]:
    """Yield an incremental transfer's records (RFC 1995): each step's deletions, additions."""
    tails = zone.actions.tails()
    yield zone.soa_record()
    for step in steps:
        yield zone.soa_record(step.old)
        if step.removed_zonemd:
            yield step.removed_zonemd
        yield from encode(step.removed.items(), tails)
        yield zone.soa_record(step.new)
        if step.added_zonemd:
            yield step.added_zonemd
        yield from encode(step.added.items(), tails)
    yield zone.soa_record()
