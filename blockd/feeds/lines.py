"""One line for an operator per feed event: what `blockd sync` prints, wherever it ran."""

from __future__ import annotations

from collections.abc import Mapping

from blockd.events import (
    Event,
    FeedAccepted,
    FeedRejected,
    FeedRevoked,
    FeedUnchanged,
    GuardIntervention,
    TrustAccepted,
    TrustRejected,
)

KINDS: tuple[type[Event], ...] = (
    FeedAccepted,
    FeedUnchanged,
    FeedRejected,
    FeedRevoked,
    GuardIntervention,
    TrustAccepted,
    TrustRejected,
)


def line(e: Event) -> str | None:
    """Return what an operator should read about a feed or trust event, or None."""
    if isinstance(e, FeedAccepted):
        bad = f"; {rejected_entries(e.rejected_entries)}" if e.rejected_entries else ""
        return f"accepted     {e.authority}/{e.list} v{e.version}: {entries(e.entries)}{bad}"
    if isinstance(e, FeedUnchanged):
        held = f"v{e.version}" if e.version is not None else "no version yet"
        return f"unchanged    {e.authority}/{e.list} {held}"
    if isinstance(e, FeedRejected):
        return f"rejected     {e.authority}/{e.list}: {e.reason}: {e.message}"
    if isinstance(e, GuardIntervention):
        return f"guard        {e.kind} {e.authority}/{e.list} v{e.version}: {e.detail}"
    if isinstance(e, FeedRevoked):
        return (
            f"revoked      {e.authority}/{e.list} v{e.version} under trust "
            f"v{e.trust_version}: {e.reason}: {e.detail}"
        )
    if isinstance(e, TrustAccepted):
        return f"trust        policy v{e.version} accepted"
    if isinstance(e, TrustRejected):
        return f"trust        update rejected: {e.reason}: {e.message}"
    return None


def entries(n: int) -> str:
    """Return '1 entry' or 'N entries'."""
    return f"{n} {'entry' if n == 1 else 'entries'}"


def rejected_entries(counts: Mapping[str, int]) -> str:
    """Return e.g. '3 entries rejected: 2 public-suffix, 1 invalid-name' (most first)."""
    by_count = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return f"{entries(sum(counts.values()))} rejected: " + ", ".join(
        f"{n} {reason}" for reason, n in by_count
    )
