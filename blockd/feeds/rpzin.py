"""RPZ in: a list version delivered as a zone, bound to the authority's signed manifest.

TSIG proves who sent a transfer, not who wrote the list; so a zone is a list only with its
manifest: a list envelope, signed like any other, whose `rpz` field names the zone, its SOA
serial and its ZONEMD digest (RFC 8976), and whose `body` signs the hosts the zone converts
to. Here, pure but for `transfer`: the zone's ZONEMD is verified, its serial and digest
compared with the manifest's, and its records turned into blockd host entries (the body);
the caller hands manifest and body to the holder, which checks them as any list.

What converts: `name` with `*.name` (blockd blocks a name with its subdomains) as `CNAME .`
(NXDOMAIN) or local data (A/AAAA), each answered with the list's configured action. What
blockd cannot represent is refused, naming the record: a name without its wildcard or the
reverse (blockd would block more than the zone says), passthru, drop, tcp-only, NODATA,
redirects, other types, and IP/NSDNAME/NSIP/client-IP triggers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.name
import dns.node
import dns.rdatatype
import dns.tsig
import dns.xfr
import dns.zone

from blockd.config import TsigKey
from blockd.feeds.authoring import body_bytes
from blockd.feeds.model import RpzBinding
from blockd.files import atomic_write

_APEX_TYPES = {dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.ZONEMD}
_LOCAL_DATA = {dns.rdatatype.A, dns.rdatatype.AAAA}
_TRIGGER_LABELS = ("rpz-ip", "rpz-nsdname", "rpz-nsip", "rpz-client-ip")
SHOWN = 5  # records named in a refusal


class ZoneError(Exception):
    """A zone is not the list its manifest signs; `reason` is a rejection slug."""

    def __init__(self, reason: str, message: str) -> None:
        """Say why, with a stable reason."""
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ZoneList:
    """A zone read as a list: its serial, ZONEMD digest and host entries."""

    zone: str
    serial: int
    zonemd: str  # lowercase hex of the SHA-384 simple-scheme digest
    hosts: list[str]

    def body(self) -> bytes:
        """Return the body file these hosts make (what the manifest's body signs)."""
        return body_bytes(self.hosts)


def read(zone: dns.zone.Zone) -> ZoneList:
    """Verify a zone's ZONEMD and convert it; ZoneError when either fails."""
    name = zone.origin.to_text(omit_final_dot=True).lower() if zone.origin else ""
    soa = zone.get_rdataset("@", dns.rdatatype.SOA)
    if soa is None or not len(soa):
        raise ZoneError("malformed", f"zone {name} has no SOA")
    serial = int(soa[0].serial)
    zonemd = zone.get_rdataset("@", dns.rdatatype.ZONEMD)
    simple = [r for r in zonemd or () if r.scheme == 1 and r.hash_algorithm == 1]
    if not simple:
        raise ZoneError("zonemd", f"zone {name} serial {serial} has no SHA-384 ZONEMD record")
    try:
        zone.verify_digest(simple[0])
    except dns.zone.DigestVerificationFailure:
        raise ZoneError(
            "zonemd", f"zone {name} serial {serial}: its content does not match its ZONEMD"
        ) from None
    if simple[0].serial != serial:
        raise ZoneError("zonemd", f"zone {name}: ZONEMD serial {simple[0].serial} is not {serial}")
    return ZoneList(name, serial, simple[0].digest.hex(), hosts(zone))


def check(found: ZoneList, binding: RpzBinding) -> None:
    """Raise ZoneError unless the zone is the one the manifest names."""
    if found.zone != binding.zone:
        raise ZoneError("zone-mismatch", f"zone {found.zone} is not {binding.zone}")
    if found.serial != binding.serial:
        raise ZoneError(
            "zone-mismatch",
            f"zone {found.zone} has serial {found.serial}, the manifest signs {binding.serial}",
        )
    if found.zonemd != binding.zonemd:
        raise ZoneError(
            "zone-mismatch",
            f"zone {found.zone} serial {found.serial}: ZONEMD {found.zonemd[:16]}... is not "
            f"the manifest's {binding.zonemd[:16]}...",
        )


def hosts(zone: dns.zone.Zone) -> list[str]:
    """Return the zone's triggers as blockd host entries; ZoneError naming what cannot be."""
    plain: set[str] = set()
    wild: set[str] = set()
    refused: list[str] = []
    for owner, node in zone.nodes.items():
        rel = owner.relativize(zone.origin) if zone.origin and owner.is_absolute() else owner
        text = rel.to_text().lower()
        types = {rds.rdtype for rds in node}
        if rel == dns.name.empty:
            if types - _APEX_TYPES:
                refused.append(f"apex {_types(types - _APEX_TYPES)}")
            continue
        why = _unrepresentable(text, node)
        if why:
            refused.append(f"{text}: {why}")
            continue
        if text.startswith("*."):
            wild.add(text[2:])
        else:
            plain.add(text)
    for name in sorted(plain - wild):
        refused.append(
            f"{name}: listed without *.{name} (blockd blocks a name with its subdomains)"
        )
    for name in sorted(wild - plain):
        refused.append(
            f"*.{name}: listed without {name} (blockd blocks a name with its subdomains)"
        )
    if refused:
        more = f" and {len(refused) - SHOWN} more" if len(refused) > SHOWN else ""
        raise ZoneError(
            "entries",
            f"zone {zone.origin}: records blockd cannot represent: "
            + "; ".join(refused[:SHOWN])
            + more,
        )
    return sorted(plain)


def _unrepresentable(text: str, node: dns.node.Node) -> str | None:
    """Return why a trigger's records cannot be a blockd host entry, or None."""
    labels = text.split(".")
    if any(x in _TRIGGER_LABELS for x in labels):
        return "IP, NSDNAME, NSIP and client-IP triggers are not host entries"
    if "*" in labels[1:]:
        return "a wildcard that is not the first label"
    types = {rds.rdtype for rds in node}
    if types <= _LOCAL_DATA:
        return None
    if types == {dns.rdatatype.CNAME}:
        target = node.get_rdataset(node.rdatasets[0].rdclass, dns.rdatatype.CNAME)
        assert target is not None
        name = target[0].target.to_text()
        if name == ".":
            return None
        return {
            "*.": "NODATA (CNAME *.)",
            "rpz-passthru.": "passthru: the only local lever is never_block",
            "rpz-drop.": "drop",
            "rpz-tcp-only.": "tcp-only",
        }.get(name, f"a redirect (CNAME {name})")
    return f"record types {_types(types)}"


def _types(types: set[dns.rdatatype.RdataType]) -> str:
    return ", ".join(sorted(dns.rdatatype.to_text(t) for t in types))


class TransferError(Exception):
    """A zone transfer failed (refused, bad TSIG, timeout, network)."""


async def transfer(
    host: str,
    port: int,
    zone: str,
    key: TsigKey | None,
    seconds: float,
    base: dns.zone.Zone | None = None,
) -> dns.zone.Zone:
    """Transfer zone from host:port, TSIG-signed with key; TransferError if it fails.

    With base (the copy of the zone this node holds, changed in place), an IXFR asks for the
    differences since base's serial; a primary that keeps no history answers with the whole
    zone, which replaces base. Without, an AXFR. dnspython checks the TSIG of every message
    of the answer when the query is signed.
    """
    out = base if base is not None else dns.zone.Zone(zone + ".")
    kind = "AXFR" if base is None else "IXFR"
    ring = None
    keyname = None
    if key is not None:
        tkey = dns.tsig.Key(key.name + ".", key.secret, dns.tsig.HMAC_SHA256)
        ring, keyname = {tkey.name: tkey}, tkey.name
    # serial 0: an IXFR from out's own SOA serial; None: an AXFR
    serial = 0 if base is not None else None
    query, _ = dns.xfr.make_query(out, serial=serial, keyring=ring, keyname=keyname)
    failures = []
    try:
        async with asyncio.timeout(seconds):
            for address in await _addresses(host, port):
                try:
                    await dns.asyncquery.inbound_xfr(
                        address, out, query, port=port, lifetime=seconds
                    )
                    return out
                except OSError as e:  # not reached: the primary's next address
                    failures.append(f"{address}: {e.strerror or e}")
    except TimeoutError:
        raise TransferError(
            f"{kind} of {zone} from {host}:{port}: no answer in {seconds:.0f} s"
        ) from None
    except (dns.exception.DNSException, OSError, EOFError) as e:
        raise TransferError(
            f"{kind} of {zone} from {host}:{port} failed: {type(e).__name__}: {e}"
        ) from None
    raise TransferError(f"{kind} of {zone} from {host}:{port}: {'; '.join(failures)}")


async def _addresses(host: str, port: int) -> list[str]:
    """Return the primary's addresses: itself if an address, else what its name resolves to.

    Whoever answers for the name can at worst withhold the list: TSIG, ZONEMD and the
    manifest decide what is accepted.
    """
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise TransferError(f"cannot resolve the primary {host}: {e}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def save(zone: dns.zone.Zone, path: Path) -> None:
    """Keep a transferred zone as a zone file, the base of the next IXFR."""
    atomic_write(path, zone.to_text(relativize=False).encode(), mode=0o600)


def load(path: Path, name: str, serial: int) -> dns.zone.Zone | None:
    """Return the zone kept at path if it is zone name at serial (None: missing or other).

    Only a base for an IXFR: what the IXFR makes of it is verified (ZONEMD, the manifest)
    as any transfer.
    """
    try:
        zone = dns.zone.from_file(str(path), origin=name + ".", relativize=True)
    except (OSError, dns.exception.DNSException, UnicodeDecodeError):
        return None
    soa = zone.get_rdataset("@", dns.rdatatype.SOA)
    if soa is None or not len(soa) or int(soa[0].serial) != serial:
        return None
    return zone
