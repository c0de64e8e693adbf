"""One line for an operator per feed event: what `blockd sync` prints, wherever it ran."""

from __future__ import annotations

from blockd.events import (
    Event,
    FeedAccepted,
    FeedRejected,
    FeedRevoked,
    GuardIntervention,
    TrustAccepted,
    TrustRejected,
)

KINDS: tuple[type[Event], ...] = (
    FeedAccepted,
    FeedRejected,
    FeedRevoked,
    GuardIntervention,
    TrustAccepted,
    TrustRejected,
)


def line(e: Event) -> str | None:
    """Return what an operator should read about a feed or trust event, or None."""
    if isinstance(e, FeedAccepted):
        bad = (
            f", {sum(e.rejected_entries.values())} entries rejected {e.rejected_entries}"
            if e.rejected_entries
            else ""
        )
        return f"accepted     {e.authority}/{e.list} v{e.version}: {e.entries} entries{bad}"
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
