"""What blockd answers for blocked and routed names: pure, Query and Verdict in, bytes out.

Blocked answers are the same in shape and TTL whatever entry matched (no oracle): the
notice address (A/AAAA) or NXDOMAIN per list, NODATA for every other type (HTTPS/SVCB
included, so clients fall back to A/AAAA), an SOA of the policy zone in negative answers,
and Extended DNS Error 16 "Censored" naming the authority in general terms.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from blockd.config import DnsConfig
from blockd.dns import wire
from blockd.feeds.model import TrustPolicy
from blockd.policy.verdict import Verdict

ROUTED_TYPES = frozenset({wire.A, wire.AAAA, wire.HTTPS, wire.SVCB})


@dataclass(frozen=True)
class AuthorityText:
    """The EDE texts for one authority: plain, and structured (draft I-JSON)."""

    plain: bytes
    structured: bytes


@dataclass(frozen=True)
class AnswerPolicy:
    """Everything needed to build blocked and routed answers, prepared once."""

    notice_v4: tuple[wire.Record, ...]
    notice_v6: tuple[wire.Record, ...]
    proxy_v4: tuple[wire.Record, ...]
    proxy_v6: tuple[wire.Record, ...]
    soa: wire.Record
    texts: Mapping[str, AuthorityText]
    default_text: AuthorityText
    structured_option: int | None

    @classmethod
    def build(cls, cfg: DnsConfig, trust: TrustPolicy | None) -> AnswerPolicy:
        """Prepare records and EDE texts from the DNS config and the trust policy."""

        def records(rtype: int, addrs: Sequence[str]) -> tuple[wire.Record, ...]:
            encode = wire.a if rtype == wire.A else wire.aaaa
            return tuple(wire.Record(None, rtype, cfg.ttl, encode(ip)) for ip in addrs)

        soa = wire.Record(
            cfg.policy_zone,
            wire.SOA,
            cfg.ttl,
            wire.soa(
                cfg.policy_zone, f"hostmaster.{cfg.policy_zone}", 1, 3600, 600, 86400, cfg.ttl
            ),
        )
        texts = {
            a.id: _texts(a.name, a.contact, a.legal_basis, cfg.operator)
            for a in (trust.authorities if trust else [])
        }
        return cls(
            records(wire.A, cfg.notice_v4),
            records(wire.AAAA, cfg.notice_v6),
            records(wire.A, cfg.proxy_v4),
            records(wire.AAAA, cfg.proxy_v6),
            soa,
            texts,
            _texts("a recognised child-protection authority", "", "", cfg.operator),
            cfg.structured_error_option,
        )

    def wants_structured(self, q: wire.Query) -> bool:
        """Say whether the client asked for structured DNS errors."""
        if q.edns is None:
            return False
        return any(
            (code == wire.EDE and not data) or code == self.structured_option
            for code, data in q.edns.options
        )

    def blocked(self, q: wire.Query, verdict: Verdict) -> bytes:
        """Answer a query for a wholly blocked host."""
        text = self.texts.get(verdict.authority, self.default_text)
        ede = [(wire.EDE_CENSORED, text.structured if self.wants_structured(q) else text.plain)]
        if verdict.action == "nxdomain":
            return wire.build_response(q, wire.NXDOMAIN, authority=[self.soa], ede=ede)
        answers = self._addresses(q.qtype, self.notice_v4, self.notice_v6)
        if answers:
            return wire.build_response(q, wire.NOERROR, answers=answers, ede=ede)
        return wire.build_response(q, wire.NOERROR, authority=[self.soa], ede=ede)

    def routed(self, q: wire.Query) -> bytes | None:
        """Answer a web query for a host with URL-level entries; None: forward it as usual."""
        if q.qtype not in ROUTED_TYPES:
            return None
        answers = self._addresses(q.qtype, self.proxy_v4, self.proxy_v6)
        if answers:
            return wire.build_response(q, wire.NOERROR, answers=answers)
        # HTTPS/SVCB (and a family with no proxy address): NODATA, so clients use A/AAAA.
        return wire.build_response(q, wire.NOERROR, authority=[self.soa])

    @staticmethod
    def _addresses(
        qtype: int, v4: tuple[wire.Record, ...], v6: tuple[wire.Record, ...]
    ) -> tuple[wire.Record, ...]:
        return v4 if qtype == wire.A else v6 if qtype == wire.AAAA else ()


def _texts(name: str, contact: str, legal_basis: str, operator: str) -> AuthorityText:
    plain = f"Blocked: listed by {name} under child-protection law"
    doc: dict[str, object] = {"j": legal_basis or plain, "l": "en"}
    if contact:
        doc["c"] = [contact]
    if operator:
        doc["o"] = operator
    structured = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return AuthorityText(plain.encode(), structured.encode())
