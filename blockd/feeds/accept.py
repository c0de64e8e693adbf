"""Acceptance, pure: whether a verified list version may be enforced, and as what.

No I/O and no state: the holder calls these with what it holds. Verification proper (DSSE,
the trust policy's rules) is `blockd.feeds.verify`; this adds what blockd decides about a
verified version before it is enforced: its entries validated, never-block applied, indexed,
the acceptance event built, and whether the change is large enough to quarantine.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from blockd.config import Config, GuardsConfig, ListConfig
from blockd.events import FeedAccepted, GuardIntervention
from blockd.feeds.model import ListPayload, TrustPolicy
from blockd.feeds.verify import Rejected, VerifiedList, verify_list
from blockd.policy import entries as entry_rules
from blockd.policy.compile import IndexedList, index_list
from blockd.policy.guards import Change, NeverBlock, change
from blockd.policy.snapshot import ListInfo
from blockd.policy.verdict import ListSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A verified version made ready to enforce, and the events that say so."""

    indexed: IndexedList
    accepted: FeedAccepted
    guard: GuardIntervention | None  # never-block dropped some entries


def verify(
    cfg: ListConfig,
    envelope: bytes,
    trust: TrustPolicy,
    now: datetime,
    guards: GuardsConfig,
    *,
    last: int | None,
    freshness: bool,
    equal_is_new: bool = False,
) -> VerifiedList | None:
    """Verify an envelope for the configured list; None when it is not newer than last."""
    return verify_list(
        envelope,
        trust,
        now,
        expect=(cfg.authority, cfg.list),
        last_version=last,
        skew=timedelta(seconds=guards.clock_skew),
        freshness=freshness,
        equal_is_new=equal_is_new,
    )


def prepare(
    cfg: ListConfig, v: VerifiedList, body: bytes | None, never_block: NeverBlock
) -> Prepared:
    """Validate entries, apply never-block, and index: pure, so it may run in a worker
    thread while DNS keeps answering. Raise Rejected ("entries") for a bad entry list."""
    p: ListPayload = v.payload
    try:
        lines = (
            p.entries
            if p.entries is not None
            else entry_rules.split_body(body or b"", p.entry_count)
        )
    except entry_rules.EntriesError as e:
        raise v.reject("entries", str(e)) from None
    entries = entry_rules.build(p.format, lines, p.test_entries)
    dropped = never_block.apply(entries)
    guard = None
    if dropped:
        guard = GuardIntervention(
            "never-block",
            p.authority,
            p.list,
            p.version,
            f"{dropped} entries touch never-block names",
            dropped,
        )
    info = ListInfo(
        ListSource(p.authority, p.list, p.version, cfg.action),
        p.issued_at,
        p.expires,
        entries.count,
        tuple(entries.probes),
    )
    accepted = FeedAccepted(
        p.authority,
        p.list,
        p.version,
        v.envelope_sha256,
        v.keyids,
        entries.count,
        dict(entries.rejected),
        v.payload_sha256,
    )
    return Prepared(index_list(info, entries), accepted, guard)


def stored_at(prepared: Prepared, envelope: str, body: str | None) -> Prepared:
    """Return prepared with its acceptance event naming where the exact bytes are stored."""
    event = replace(prepared.accepted, envelope_path=envelope, body_path=body)
    return replace(prepared, accepted=event)


def quarantine(
    old: IndexedList | None, new: IndexedList, guards: GuardsConfig
) -> GuardIntervention | None:
    """Return the quarantine intervention when new changes too much of old, else None."""
    if old is None:
        return None
    delta = _change(old, new)
    if not (
        delta.added + delta.removed >= guards.min_change_entries
        and delta.fraction > guards.max_change_fraction
    ):
        return None
    source = new.info.source
    return GuardIntervention(
        "quarantine",
        source.authority,
        source.list,
        source.version,
        f"update adds {delta.added} and removes {delta.removed} of "
        f"{delta.before} entries ({delta.fraction:.0%}); approval needed",
        delta.added + delta.removed,
    )


def _change(old: IndexedList, new: IndexedList) -> Change:
    """Compare two versions over every key kind: hosts, routes and URLs."""
    return change([old.hosts, old.routes, old.urls], [new.hosts, new.routes, new.urls])


def internal(cfg: ListConfig, e: Exception) -> Rejected:
    """Turn an unforeseen error into a rejection (a bug: its traceback is logged at debug).

    The rejection is logged once, as any other (blockd.failures); the traceback of every
    occurrence is at debug level, which SIGUSR1 turns on.
    """
    log.debug("%s: sync failed unexpectedly", cfg.ref, exc_info=e)
    return Rejected(
        "internal",
        f"{cfg.ref}: unexpected {type(e).__name__}: {e}"[:500].replace("\n", " "),
        authority=cfg.authority,
        list_id=cfg.list,
    )


def feed_hosts(config: Config) -> list[str]:
    """Return the names blockd fetches lists and trust from: no list may ever block them.

    A list that blocked its own source (or the trust mirror) would freeze enforcement:
    neither a fix nor a revocation could reach this resolver any more.
    """
    sources = [
        config.trust.updates,
        *(c.source for c in config.lists),
        *(c.manifest for c in config.lists),
    ]
    hosts = {urlsplit(u).hostname for u in sources if u}
    return sorted(h for h in hosts if h and not _is_address(h))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
