"""What the audit log says of an event: the entries, and their compact form in transit.

The event loop does as little as it can per audited event: it queues the event's kind, the
time and the event's field values (`Queued`, read with `field_values`), one tuple, which
crosses to the log's helper process cheaply. The helper (or a worker thread) turns them into
entries (`entries_of`). Events are facts: a producer never changes what it published, so
reading the fields later gives what they were when published.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from operator import attrgetter

from blockd import __version__
from blockd.events import (
    Event,
    FeedAccepted,
    FeedRejected,
    FeedUnchanged,
    GuardIntervention,
    OperatorAction,
    PolicyActivated,
    SelfTestResult,
    TrustAccepted,
    TrustRejected,
)

Entry = dict[str, object]
Queued = tuple[type[Event], float, tuple[object, ...]]  # kind, Unix time, field values


def utc(ts: float) -> str:
    """Return a Unix time as ISO 8601 UTC to the second."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


AUDITED: tuple[type[Event], ...] = (
    FeedAccepted,
    FeedRejected,
    FeedUnchanged,
    TrustAccepted,
    TrustRejected,
    GuardIntervention,
    PolicyActivated,
    OperatorAction,
    SelfTestResult,
)

CHECKPOINT_AFTER = (PolicyActivated, OperatorAction)  # events that get a checkpoint at once


def entry_of(event: Event, now: str) -> Entry | None:
    """Return the audit entry for an event, or None if it is not audited itself."""
    entry = _fields(event)
    if entry is not None:
        entry["time"] = now
        entry["blockd"] = __version__
    return entry


def _fields(event: Event) -> Entry | None:
    """Return what an entry says of an event, but for its time and blockd's version."""
    match event:
        case FeedAccepted():
            return {
                "type": "feed-accepted",
                "authority": event.authority,
                "list": event.list,
                "version": event.version,
                "envelope_sha256": event.envelope_sha256,
                "keyids": list(event.keyids),
                "entries": event.entries,
                "rejected_entries": dict(sorted(event.rejected_entries.items())),
            }
        case FeedRejected():
            return {
                "type": "feed-rejected",
                "authority": event.authority,
                "list": event.list,
                "version": event.version,
                "envelope_sha256": event.envelope_sha256,
                "keyids": list(event.keyids),
                "reason": event.reason,
            }
        case FeedUnchanged():
            return {
                "type": "feed-unchanged",
                "authority": event.authority,
                "list": event.list,
                "version": event.version,
            }
        case TrustAccepted():
            return {
                "type": "trust-accepted",
                "version": event.version,
                "envelope_sha256": event.envelope_sha256,
                "keyids": list(event.keyids),
            }
        case TrustRejected():
            return {
                "type": "trust-rejected",
                "version": event.version,
                "envelope_sha256": event.envelope_sha256,
                "reason": event.reason,
            }
        case GuardIntervention():
            return {
                "type": "guard-intervention",
                "kind": event.kind,
                "authority": event.authority,
                "list": event.list,
                "version": event.version,
                "detail": event.detail,
                "count": event.count,
            }
        case PolicyActivated():
            return {
                "type": "policy-activated",
                "generation": event.generation,
                "versions": dict(sorted(event.versions.items())),
                "entries": event.entries,
            }
        case OperatorAction():
            return {
                "type": "operator-action",
                "action": event.action,
                "detail": event.detail,
                "config_sha256": event.config_sha256,
            }
        case SelfTestResult():
            return {
                "type": "self-test",
                "passed": event.passed,
                "checks": event.checks,
                "failures": list(event.failures),
            }
    return None


def field_values(kind: type[Event]) -> Callable[[Event], tuple[object, ...]]:
    """Return a function giving an event's field values, in the order its class takes them."""
    names = [f.name for f in dataclasses.fields(kind)]
    if len(names) == 1:
        get = attrgetter(names[0])
        return lambda event: (get(event),)
    return attrgetter(*names)  # C code: a tuple in one call


def entries_of(items: Sequence[Queued | Entry]) -> list[Entry]:
    """Return the log entries for queued items, in order (events not audited are skipped)."""
    entries: list[Entry] = []
    second, text = -1, ""
    for item in items:
        if isinstance(item, dict):
            entries.append(item)
            continue
        kind, ts, values = item
        if int(ts) != second:  # time as text, formatted once a second
            second = int(ts)
            text = utc(second)
        entry = entry_of(kind(*values), text)
        if entry is not None:
            entries.append(entry)
    return entries
