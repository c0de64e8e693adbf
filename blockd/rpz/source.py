"""The served lists' entries, from the stored envelopes, verified again before use.

The compiled snapshot keeps no plaintext (by design), so the zone is built from what the
holder stored: the exact envelope (and body) of each served list's version in force,
verified again under the trust policy in force, its entries validated by the same rules
and never-block applied, as when it was accepted. Hashed lists hold no names to serve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from blockd.config import Config, ListConfig
from blockd.feeds.model import TrustPolicy
from blockd.feeds.store import ListStore
from blockd.feeds.verify import Rejected, check_body, verify_list
from blockd.policy import entries as entry_rules
from blockd.policy.guards import NeverBlock
from blockd.rpz.triggers import ServedList
from blockd.rpz.zone import ACTION_NAMES


class NotServed(Exception):
    """A served list's version cannot be in the zone; the message says why."""

    def __init__(self, message: str, *, hashed: bool = False) -> None:
        """Say why; hashed: the list is hashed (never servable), not broken."""
        super().__init__(message)
        self.hashed = hashed


@dataclass(frozen=True)
class Sources:
    """What the zone is built from, read when a policy is activated."""

    config: Config
    store: ListStore
    trust: TrustPolicy
    never_block: NeverBlock


def served_configs(config: Config) -> list[ListConfig]:
    """Return the configured lists the zone serves, in configuration order."""
    wanted = set(config.rpz.lists)
    return [c for c in config.lists if not wanted or c.ref in wanted]


def load(src: Sources, cfg: ListConfig, version: int) -> ServedList:
    """Read, verify and parse one stored list version; NotServed when it cannot be served."""
    try:
        envelope, body = src.store.load_version(cfg.authority, cfg.list, version)
    except OSError as e:
        raise NotServed(f"{cfg.ref} v{version}: stored version unreadable: {e}") from None
    try:
        verified = verify_list(
            envelope,
            src.trust,
            datetime.now(UTC),
            expect=(cfg.authority, cfg.list),
            skew=timedelta(seconds=src.config.guards.clock_skew),
            freshness=False,
        )
        assert verified is not None  # no last version given: never "unchanged"
        p = verified.payload
        if p.format == "sha256":
            raise NotServed(
                f"{cfg.ref} v{version} is a hashed list: it has no names to serve", hashed=True
            )
        if p.body is not None:
            if body is None:
                raise NotServed(f"{cfg.ref} v{version}: its body file is missing")
            check_body(verified, body)
        lines = (
            p.entries
            if p.entries is not None
            else entry_rules.split_body(body or b"", p.entry_count)
        )
    except (Rejected, entry_rules.EntriesError) as e:
        raise NotServed(f"{cfg.ref} v{version} does not verify again: {e}") from None
    entries = entry_rules.build(p.format, lines, p.test_entries)
    src.never_block.apply(entries)
    return ServedList(
        cfg.ref,
        version,
        ACTION_NAMES[cfg.action],
        entries.hosts,
        sorted(entries.routed_hosts()),
    )


def load_all(src: Sources, versions: Mapping[str, int]) -> tuple[list[ServedList], list[str]]:
    """Load every served list in force; return them, and the hashed ones left out.

    A list named in rpz.lists that turns out hashed is left out (check-config says so);
    with rpz.lists empty, hashed lists are left out silently. Any other failure raises
    NotServed: the zone then keeps its previous version rather than lose a list's names.
    """
    out, left_out = [], []
    for cfg in served_configs(src.config):
        version = versions.get(cfg.ref)
        if version is None:
            continue
        try:
            out.append(load(src, cfg, version))
        except NotServed as e:
            if not e.hashed:
                raise
            if src.config.rpz.lists:
                left_out.append(str(e))
    return out, left_out
