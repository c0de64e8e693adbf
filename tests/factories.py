"""Test factories: keys, trust policies, signed lists, configs and snapshots in one call each."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dnslib

from blockd.config import Config, DnsConfig, parse
from blockd.config.demo import DEMO_VALUES
from blockd.config.notice import NoticeConfig
from blockd.dns.forward import ForwardError
from blockd.events import E, Event, EventBus
from blockd.feeds.authoring import list_payload, sign_list, sign_trust
from blockd.feeds.keys import SigningKey
from blockd.feeds.model import Authority, Format, ListPayload, Regulator, TrustPolicy
from blockd.http import h1
from blockd.policy import entries as entry_rules
from blockd.policy.compile import IndexedList, compile_snapshot, index_list
from blockd.policy.snapshot import ListInfo, PolicySnapshot
from blockd.policy.verdict import HostAction, ListSource

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def key(label: str) -> SigningKey:
    """Return a deterministic TEST key for label."""
    return SigningKey.from_seed(hashlib.sha256(f"blockd TEST KEY {label}".encode()).digest())


def authority(
    id: str = "auth",
    keys: Sequence[SigningKey] = (),
    threshold: int = 1,
    lists: Sequence[str] = ("hosts", "urls", "hashed"),
    formats: Sequence[Format] = ("hosts", "urls", "sha256"),
    **over: Any,
) -> Authority:
    """Return an authority entry for a trust policy."""
    keys = keys or [key(f"{id}-1")]
    fields: dict[str, Any] = dict(
        id=id,
        name=f"Test authority {id}",
        keys=[k.public.b64 for k in keys],
        threshold=threshold,
        lists=list(lists),
        formats=list(formats),
        max_entries=10_000,
        max_bytes=1 << 20,
        max_age_seconds=30 * 86400,
    )
    fields.update(over)
    return Authority(**fields)


def trust(
    authorities: Sequence[Authority] = (),
    regulator_keys: Sequence[SigningKey] = (),
    threshold: int = 1,
    version: int = 1,
    expires: datetime = NOW + timedelta(days=365),
) -> TrustPolicy:
    """Return a trust policy (unsigned)."""
    regulator_keys = regulator_keys or [key("regulator-1")]
    return TrustPolicy(
        version=version,
        issued_at=NOW - timedelta(days=1),
        expires=expires,
        regulator=Regulator(
            name="Test regulator", keys=[k.public.b64 for k in regulator_keys], threshold=threshold
        ),
        authorities=list(authorities) or [authority()],
    )


def signed_trust(policy: TrustPolicy | None = None, keys: Sequence[SigningKey] = ()) -> bytes:
    """Return a trust policy envelope signed by the regulator keys."""
    return sign_trust(policy or trust(), keys or [key("regulator-1")])


def payload(
    entries: Sequence[str] = ("blocked.example",),
    *,
    authority_id: str = "auth",
    list_id: str = "hosts",
    version: int = 1,
    fmt: Format = "hosts",
    issued_at: datetime = NOW - timedelta(hours=1),
    expires: datetime = NOW + timedelta(days=7),
    body_name: str | None = None,
) -> tuple[ListPayload, bytes | None]:
    """Return a list payload and its body (when body_name is given)."""
    return list_payload(
        authority_id,
        list_id,
        version,
        fmt,
        entries,
        issued_at=issued_at,
        expires=expires,
        body_name=body_name,
    )


def signed_list(
    entries: Sequence[str] = ("blocked.example",),
    keys: Sequence[SigningKey] = (),
    **kw: Any,
) -> bytes:
    """Return a list envelope (inline entries) signed by the authority's test key."""
    p, _ = payload(entries, **kw)
    return sign_list(p, keys or [key(f"{p.authority}-1")])


# Who a production (not demo) test configuration says it is: every setting only the demo
# may leave out, with test names.
OPERATOR: dict[str, dict[str, str]] = {
    "dns": {"operator": "Test ISP"},
    "http.notice": {
        "operator_name": "Test ISP",
        "operator_url": "https://isp.test/blocking",
        "operator_contact": "abuse@isp.test",
        "helpline_name": "Test Helpline",
        "helpline_number": "1280",
        "hotline_name": "the test reporting site",
        "hotline_url": "https://report.test/",
    },
    "audit": {"origin": "isp.test/blockd/test"},
}


def operator_toml(*tables: str) -> str:
    """Return TOML tables (all by default) with the settings OPERATOR gives them."""
    lines = []
    for table in tables or tuple(OPERATOR):
        lines.append(f"[{table}]")
        lines += [f'{k} = "{v}"' for k, v in OPERATOR[table].items()]
    return "\n".join(lines)


def demo_values(section: str) -> dict[str, Any]:
    """Return the demo's values for one section's settings ('dns', 'http.notice', 'audit')."""
    prefix = f"{section}."
    return {
        path.removeprefix(prefix): value
        for path, value in DEMO_VALUES.items()
        if path.startswith(prefix) and "." not in path.removeprefix(prefix)
    }


def notice_config(**over: Any) -> NoticeConfig:
    """Return the notice page's configuration with the demo's values, changed by over."""
    return NoticeConfig(**{**demo_values("http.notice"), **over})


def dns_config(**over: Any) -> DnsConfig:
    """Return the DNS section with the demo's operator, changed by over."""
    return DnsConfig(**{**demo_values("dns"), **over})


def config(tmp: Path, lists: Sequence[dict[str, Any]], **guards: Any) -> Config:
    """Return a production Config: the pinned trust at tmp/trust.dsse, state in tmp/state."""
    lines = ["[trust]", f'pinned = "{tmp / "trust.dsse"}"', "[state]", f'dir = "{tmp / "state"}"']
    lines.append(operator_toml())
    if guards:
        lines.append("[guards]")
        lines += [f"{k} = {_toml(v)}" for k, v in guards.items()]
    for item in lists:
        lines.append("[[lists]]")
        lines += [f"{k} = {_toml(v)}" for k, v in item.items()]
    return parse("\n".join(lines), tmp)


def _toml(v: object) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return str(v)


class Recorder:
    """Collect every event published on a bus."""

    def __init__(self, bus: EventBus) -> None:
        """Subscribe to everything on bus."""
        self.events: list[Event] = []
        bus.subscribe(Event, self.events.append)

    def of(self, kind: type[E]) -> list[E]:
        """Return the recorded events of one kind."""
        return [e for e in self.events if isinstance(e, kind)]


def indexed(
    list_id: str,
    fmt: Format,
    lines: Sequence[str],
    action: HostAction = "notice",
    version: int = 1,
    authority: str = "auth",
) -> IndexedList:
    """Return one list, validated and indexed as an accepted version would be."""
    entries = entry_rules.build(fmt, lines)
    info = ListInfo(ListSource(authority, list_id, version, action), NOW, NOW, entries.count)
    return index_list(info, entries)


def snapshot(
    hosts: Sequence[str] = (),
    urls: Sequence[str] = (),
    *,
    nxdomain: Sequence[str] = (),
    hashed: Sequence[str] = (),
) -> PolicySnapshot:
    """Return a snapshot of up to four lists: notice hosts, URLs, NXDOMAIN hosts, sha256."""
    kinds: list[tuple[str, Format, Sequence[str], HostAction]] = [
        ("hosts", "hosts", hosts, "notice"),
        ("urls", "urls", urls, "notice"),
        ("nx", "hosts", nxdomain, "nxdomain"),
        ("hashed", "sha256", hashed, "notice"),
    ]
    lists = [indexed(list_id, fmt, lines, action) for list_id, fmt, lines, action in kinds if lines]
    return compile_snapshot(lists, ref_key=b"k" * 32)


def query(
    name: str,
    qtype: str = "A",
    *,
    qid: int = 0x1234,
    edns: int | None = 1232,
    do: bool = False,
) -> bytes:
    """Return a DNS query's wire bytes (EDNS with `edns` as UDP size unless None)."""
    q = dnslib.DNSRecord.question(name, qtype)
    q.header.id = qid
    if edns is not None:
        q.add_ar(dnslib.EDNS0(udp_len=edns, flags="do" if do else ""))
    return bytes(q.pack())


def answer_to(packet: bytes, *records: str, rcode: int = 0, pad: int = 0) -> bytes:
    """Return an upstream answer to `packet` holding zone-file `records` (TXT padding: pad)."""
    q = dnslib.DNSRecord.parse(packet)
    reply = q.reply()
    reply.header.rcode = rcode
    for text in records:
        reply.add_answer(*dnslib.RR.fromZone(text))
    if pad:
        reply.add_answer(
            dnslib.RR(q.q.qname, dnslib.QTYPE.TXT, rdata=dnslib.TXT([b"x" * 200] * (pad // 200)))
        )
    return bytes(reply.pack())


class FakeForwarder:
    """A scripted upstream: answers by question name, or fails with a ForwardError reason."""

    def __init__(self) -> None:
        self.answers: dict[str, Callable[[bytes], bytes]] = {}
        self.failures: dict[str, str] = {}
        self.asked: list[str] = []

    def add(self, name: str, *records: str, rcode: int = 0, pad: int = 0) -> None:
        """Answer name with zone-file records (default: one A record)."""
        records = records or (f"{name}. 300 IN A 192.0.2.1",)
        self.answers[name.lower()] = lambda p: answer_to(p, *records, rcode=rcode, pad=pad)

    def fail(self, name: str, reason: str) -> None:
        """Make queries for name fail with ForwardError(reason)."""
        self.failures[name.lower()] = reason

    async def query(self, packet: bytes) -> bytes:
        """Answer as scripted; an unscripted name gets NXDOMAIN."""
        name = str(dnslib.DNSRecord.parse(packet).q.qname).rstrip(".").lower()
        self.asked.append(name)
        if name in self.failures:
            reason = self.failures[name]
            raise ForwardError(reason, f"scripted {reason}")  # type: ignore[arg-type]
        make = self.answers.get(name)
        return make(packet) if make else answer_to(packet, rcode=3)


def http_request(
    target: str = "/",
    host: str | None = "partial.demo.test",
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    version: str = "HTTP/1.1",
) -> h1.Request:
    """Return a parsed request head, as the proxy sees it."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    return h1.parse_request(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
