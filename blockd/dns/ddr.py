"""Discovery of Designated Resolvers (RFC 9462): tell clients where blockd speaks DoT and DoH.

A client asks `_dns.resolver.arpa` for SVCB records over plain DNS; each record names the
resolver (its authentication domain name, as in its certificate) and one encrypted
endpoint: ALPN, port, and for DoH the path template (RFC 9461). The client then connects
over TLS and checks the certificate against that name (and, for the same-address upgrade,
that the certificate also covers the address it asked). Every other question under
resolver.arpa is answered here with no data: the name is special-use (RFC 9462 section 6.4),
never forwarded.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from blockd.config.base import split_endpoint
from blockd.config.encrypted import EncryptedDnsConfig
from blockd.dns import wire

DDR_NAME = "_dns.resolver.arpa"
ZONE = "resolver.arpa"
TTL = 300
KEY_ALPN, KEY_PORT, KEY_DOHPATH = 1, 3, 7


@dataclass(frozen=True)
class Ddr:
    """The SVCB records announcing blockd's encrypted listeners."""

    records: tuple[wire.Record, ...]

    @classmethod
    def build(
        cls,
        cfg: EncryptedDnsConfig,
        name: str,
        bound: Sequence[tuple[str, str, int]] = (),
    ) -> Ddr | None:
        """Prepare the records, or None when there is nothing to announce.

        bound: the listeners as bound (kind, address, port), for ports configured as 0.
        """
        if not cfg.ddr or not cfg.enabled:
            return None
        target = wire.encode_name(name)
        records: list[wire.Record] = []
        priority = 1
        for port in _ports(cfg.doh_listen, "doh", bound):
            params = [
                (KEY_ALPN, _alpn(["h2", "http/1.1"])),
                (KEY_PORT, struct.pack("!H", port)),
                (KEY_DOHPATH, f"{cfg.doh_path}{{?dns}}".encode()),
            ]
            records.append(_svcb(priority, target, params))
            priority += 1
        for port in _ports(cfg.dot_listen, "dot", bound):
            params = [(KEY_ALPN, _alpn(["dot"])), (KEY_PORT, struct.pack("!H", port))]
            records.append(_svcb(priority, target, params))
            priority += 1
        return cls(tuple(records))

    def answer(self, q: wire.Query) -> bytes:
        """Answer a question under resolver.arpa: the records for SVCB at _dns, else none."""
        answers = self.records if q.qname == DDR_NAME and q.qtype == wire.SVCB else ()
        return wire.build_response(q, wire.NOERROR, answers=answers, aa=True)


def under(qname: str) -> bool:
    """Say whether a query name is resolver.arpa or below it."""
    return qname == ZONE or qname.endswith("." + ZONE)


def _ports(endpoints: list[str], kind: str, bound: Sequence[tuple[str, str, int]]) -> list[int]:
    """Return each endpoint's port, as bound where it was configured as 0."""
    chosen = [p for k, _, p in bound if k == kind]
    ports = [split_endpoint(e)[1] for e in endpoints]
    return chosen if chosen and len(chosen) == len(ports) else ports


def _alpn(ids: list[str]) -> bytes:
    return b"".join(bytes([len(i)]) + i.encode() for i in ids)


def _svcb(priority: int, target: bytes, params: list[tuple[int, bytes]]) -> wire.Record:
    body = b"".join(struct.pack("!HH", k, len(v)) + v for k, v in sorted(params))
    return wire.Record(None, wire.SVCB, TTL, struct.pack("!H", priority) + target + body)
