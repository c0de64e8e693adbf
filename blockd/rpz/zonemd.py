"""ZONEMD (RFC 8976): the SHA-384 digest of a policy zone, simple scheme, pure.

The digest covers every record of the zone in DNSSEC canonical order (RFC 4034 §6): owner
names lowercased and uncompressed, sorted label by label from the root; within an owner, by
type, then by RDATA; duplicates once. The apex ZONEMD RRset itself is left out (RFC 8976
§3.3.1: it is the placeholder whose digest is being computed); the zone is not DNSSEC-signed,
so there are no RRSIGs or NSEC records to place around it. Owners are sorted with the
wildcard right after its parent: `*` (0x2a) sorts below every letter, digit, `-` and `_`,
so `*.name` is always the first child of `name` and needs no sort of its own.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping

from blockd.rpz.zone import CLASS_IN, WILD, Zone, fqdn_wire

T_ZONEMD = 63
SCHEME_SIMPLE = 1
HASH_SHA384 = 1


def _canonical(tails: Iterable[bytes]) -> list[bytes]:
    """Return one owner's record tails by type, then RDATA, each once."""
    return sorted(set(tails), key=lambda t: (t[:2], t[10:]))


def digest(zone: Zone) -> bytes:
    """Return the zone's SHA-384 ZONEMD digest (simple scheme) for its serial."""
    h = hashlib.sha384()
    apex = fqdn_wire(zone.name.lower())
    # Apex: NS (2) before SOA (6); the ZONEMD RRset (63) is excluded.
    h.update(apex + _ns_tail(zone))
    h.update(apex + zone.soa_record()[2:])
    tails = {code: _canonical(t) for code, t in zone.actions.tails().items()}
    suffix = apex
    for name in sorted(zone.entries, key=_order):
        code = zone.entries[name]
        owner = _labels(name.lower()) + suffix
        for tail in tails[code]:
            h.update(owner + tail)
        if code & WILD:
            wild = b"\x01*" + owner
            for tail in tails[code]:
                h.update(wild + tail)
    return h.digest()


def record(zone: Zone, value: bytes) -> bytes:
    """Return the apex ZONEMD record (owner: the zone, by pointer) carrying value."""
    rdata = struct.pack("!IBB", zone.serial, SCHEME_SIMPLE, HASH_SHA384) + value
    head = struct.pack("!HHIH", T_ZONEMD, CLASS_IN, zone.soa.minimum, len(rdata))
    return b"\xc0\x0c" + head + rdata


def _ns_tail(zone: Zone) -> bytes:
    ns = fqdn_wire("localhost")
    return struct.pack("!HHIH", 2, CLASS_IN, zone.actions.ttl, len(ns)) + ns


def _labels(name: str) -> bytes:
    return b"".join(bytes((len(x),)) + x for x in name.encode("ascii").split(b"."))


def _order(name: str) -> list[str]:
    """Return name's canonical sort key: its labels from the root (lowercase ASCII)."""
    return name.lower().split(".")[::-1]


def entries_in_order(entries: Mapping[str, int]) -> list[str]:
    """Return the trigger names in canonical order (tests, diagnostics)."""
    return sorted(entries, key=_order)
