"""Test factories: keys, trust policies, signed lists, configs and snapshots in one call each."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from blockd.config import Config, parse
from blockd.events import E, Event, EventBus
from blockd.feeds.authoring import list_payload, sign_list, sign_trust
from blockd.feeds.keys import SigningKey
from blockd.feeds.model import Authority, Format, ListPayload, Regulator, TrustPolicy
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


def config(tmp: Path, lists: Sequence[dict[str, Any]], **guards: Any) -> Config:
    """Return a Config with the pinned trust at tmp/trust.dsse and state in tmp/state."""
    lines = ["[trust]", f'pinned = "{tmp / "trust.dsse"}"', "[state]", f'dir = "{tmp / "state"}"']
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
