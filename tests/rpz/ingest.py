"""An authority's policy zone as text, with its ZONEMD, for the RPZ-in tests."""

from __future__ import annotations

from collections.abc import Sequence

import dns.name
import dns.zone
import dns.zonetypes


def zone_text(origin: str, serial: int, names: Sequence[str], extra: str = "") -> str:
    """Return a zone file blocking names (and subdomains) by NXDOMAIN, with a valid ZONEMD."""
    lines = ["$TTL 60", f"@ SOA localhost. hostmaster.localhost. {serial} 300 60 86400 60"]
    lines.append("@ NS localhost.")
    for name in names:
        lines += [f"{name} CNAME .", f"*.{name} CNAME ."]
    zone = dns.zone.from_text("\n".join(lines) + "\n" + extra, origin + ".", relativize=True)
    digest = zone.compute_digest(dns.zonetypes.DigestHashAlgorithm.SHA384)
    with zone.writer() as txn:
        txn.add(dns.name.empty, 60, digest)
    return zone.to_text()
