"""Build the transparency report from audit log entries; render it as JSON, CSV or HTML.

The report is derived only from entries a signed checkpoint covers, and names that
checkpoint and the index range it read, so a regulator can recompute every number from the
log. Pass the whole log: entries before `start` are read only to know the state at `start`
(versions in force, each list's last sync) and are not counted; entries at or after `end`
are not read. Entries of a type this version does not know, or with fields it cannot read,
are listed under "other", never dropped.

JSON (`render_json`) is the reference form; its structure is `report.schema.json` next to
this file. CSV (`render_csv`) flattens it to one fact per row:
`section,index,time,authority,list,version,key,value`. HTML (`render_html`) is one page
with no scripts and a content security policy that allows only its own stylesheet.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import TYPE_CHECKING

from blockd import __version__

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

FORMAT = "blockd-transparency-report"
FORMAT_VERSION = 1
STALE_AFTER = 7200  # seconds without a sync before a list counts as stale
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
CSV_COLUMNS = ("section", "index", "time", "authority", "list", "version", "key", "value")

Json = dict[str, object]


@dataclass(frozen=True)
class ReportSource:
    """What the report is derived from, printed on it so its numbers can be verified."""

    origin: str
    checkpoint_size: int
    checkpoint_root_b64: str
    key_name: str
    verified: bool


# -- the rows of each section ------------------------------------------------------------


@dataclass(frozen=True)
class ListSummary:
    """One list: how often it synced in the period and which versions were enforced."""

    authority: str
    list: str
    versions: tuple[int, ...]
    accepted: int
    unchanged: int
    rejected: int
    last_sync: str | None


@dataclass(frozen=True)
class Period:
    """A span a version was in force; `end` None means still in force when the report ends."""

    start: str
    end: str | None


@dataclass(frozen=True)
class EnforcedVersion:
    """A list version that was accepted or enforced in the period."""

    authority: str
    list: str
    version: int
    accepted: str | None
    first_enforced: str | None
    in_force_at_end: bool
    periods: tuple[Period, ...]
    envelope_sha256: str | None
    keyids: tuple[str, ...]
    entries: int | None


@dataclass(frozen=True)
class Activation:
    """A policy snapshot came into force."""

    index: int
    time: str
    generation: int
    entries: int
    versions: dict[str, int]


@dataclass(frozen=True)
class ListSize:
    """The number of entries in an accepted list version."""

    index: int
    time: str
    authority: str
    list: str
    version: int
    entries: int
    rejected_entries: dict[str, int]


@dataclass(frozen=True)
class DayBlocks:
    """Blocks of one authority on one day (UTC, by the start of the counting period)."""

    day: str
    authority: str
    count: int


@dataclass(frozen=True)
class ListBlocks:
    """Blocks of one list version, by action and transport, over the whole period."""

    authority: str
    list: str
    version: int
    action: str
    transport: str
    count: int


@dataclass(frozen=True)
class Rejection:
    """A list or trust policy update that was refused; `source` is `feed` or `trust`."""

    index: int
    time: str
    source: str
    authority: str | None
    list: str | None
    version: int | None
    envelope_sha256: str | None
    reason: str


@dataclass(frozen=True)
class TrustUpdate:
    """A trust policy version became the root of trust."""

    index: int
    time: str
    version: int
    envelope_sha256: str
    keyids: tuple[str, ...]


@dataclass(frozen=True)
class Intervention:
    """A guard-rail reduced blocking or held an update back, or an operator released one."""

    index: int
    time: str
    kind: str
    authority: str
    list: str
    version: int
    detail: str
    count: int


@dataclass(frozen=True)
class OperatorActionRow:
    """Something an operator did."""

    index: int
    time: str
    action: str
    detail: str
    config_sha256: str


@dataclass(frozen=True)
class SelfTest:
    """One run of the self-tests."""

    index: int
    time: str
    passed: bool
    checks: int
    failures: tuple[str, ...]


@dataclass(frozen=True)
class StaleGap:
    """A list went more than `stale_after` seconds without a sync.

    `last_sync` is None when the list never synced before the gap (counted from when it
    was first seen); `ongoing` when the gap lasts to the end of the report.
    """

    authority: str
    list: str
    last_sync: str | None
    stale_from: str
    until: str
    ongoing: bool
    seconds: int
    rejections: dict[str, int]


@dataclass(frozen=True)
class LoggedEntry:
    """An entry reported as it is: retention purges, and entries of unknown shape."""

    index: int
    time: str | None
    type: str
    fields: dict[str, object]
    note: str = ""


@dataclass(frozen=True)
class DaemonEvent:
    """blockd started or stopped."""

    index: int
    time: str
    event: str
    blockd: str


@dataclass(frozen=True)
class Report:
    """Everything the transparency report says, in the order it says it."""

    generated: str
    start: str | None
    end: str | None
    stale_after: int
    source: ReportSource
    first_index: int | None
    end_index: int | None
    entries: int
    beyond_checkpoint: int
    lists: tuple[ListSummary, ...]
    enforced: tuple[EnforcedVersion, ...]
    activations: tuple[Activation, ...]
    list_sizes: tuple[ListSize, ...]
    blocks_by_day: tuple[DayBlocks, ...]
    blocks_by_list: tuple[ListBlocks, ...]
    stale: tuple[StaleGap, ...]
    rejected: tuple[Rejection, ...]
    trust_updates: tuple[TrustUpdate, ...]
    interventions: tuple[Intervention, ...]
    operator_actions: tuple[OperatorActionRow, ...]
    self_tests: tuple[SelfTest, ...]
    daemon: tuple[DaemonEvent, ...]
    retention_purges: tuple[LoggedEntry, ...]
    other: tuple[LoggedEntry, ...]

    @property
    def block_total(self) -> int:
        """Return the number of blocks counted in the period."""
        return sum(r.count for r in self.blocks_by_list)

    def blocks_per_authority(self) -> dict[str, int]:
        """Return {authority: blocks} over the period."""
        totals: Counter[str] = Counter()
        for r in self.blocks_by_day:
            totals[r.authority] += r.count
        return dict(sorted(totals.items()))


# -- reading entries ---------------------------------------------------------------------


class _Malformed(Exception):
    """An entry of a known type lacks a field, or has one of the wrong kind."""


class _Fields:
    """Typed access to one entry's fields; raises _Malformed naming the bad field."""

    def __init__(self, entry: dict[str, object]) -> None:
        self.entry = entry

    def _get(self, name: str, kinds: type | tuple[type, ...], what: str) -> object:
        value = self.entry.get(name)
        if not isinstance(value, kinds) or isinstance(value, bool) != (kinds is bool):
            raise _Malformed(f"field {name!r} is not {what}")
        return value

    def text(self, name: str) -> str:
        return str(self._get(name, str, "text"))

    def opt_text(self, name: str) -> str | None:
        return None if self.entry.get(name) is None else self.text(name)

    def number(self, name: str) -> int:
        value = self._get(name, int, "an integer")
        assert isinstance(value, int)
        return value

    def opt_number(self, name: str) -> int | None:
        return None if self.entry.get(name) is None else self.number(name)

    def flag(self, name: str) -> bool:
        return bool(self._get(name, bool, "true or false"))

    def texts(self, name: str) -> tuple[str, ...]:
        value = self._get(name, list, "a list of text")
        assert isinstance(value, list)
        if not all(isinstance(v, str) for v in value):
            raise _Malformed(f"field {name!r} is not a list of text")
        return tuple(str(v) for v in value)

    def tally(self, name: str) -> dict[str, int]:
        value = self.entry.get(name, {})
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in value.items()
        ):
            raise _Malformed(f"field {name!r} is not a map of integers")
        return {str(k): int(v) for k, v in sorted(value.items())}

    def rows(self, name: str) -> list[_Fields]:
        value = self._get(name, list, "a list of objects")
        assert isinstance(value, list)
        if not all(isinstance(v, dict) for v in value):
            raise _Malformed(f"field {name!r} is not a list of objects")
        return [_Fields(v) for v in value]


def _parse(time: str) -> datetime:
    return datetime.strptime(time, TIME_FORMAT).replace(tzinfo=UTC)


def _format(time: datetime) -> str:
    return time.astimezone(UTC).strftime(TIME_FORMAT)


def normalize_time(value: str, what: str) -> str:
    """Return a date or date-time as ISO 8601 UTC seconds; raise ValueError naming `what`."""
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{what}: {value!r} is not a date or time (accepted: 2024-05-01, "
            "2024-05-01T06:00:00Z, 2024-05-01T08:00:00+02:00)"
        ) from None
    return _format(t if t.tzinfo else t.replace(tzinfo=UTC))


# -- building ----------------------------------------------------------------------------

Ref = tuple[str, str]  # authority, list
Handler = Callable[["_Builder", int, str, "_Fields", bool], None]


class _Builder:
    """Fold entries, in log order, into the report's sections."""

    def __init__(self, start: str | None) -> None:
        self.start = start
        self.first_index: int | None = None
        self.last_index: int | None = None
        self.count = 0
        self.names: dict[str, Ref] = {}  # "authority/list" -> (authority, list)
        self.in_force: dict[Ref, tuple[int, str]] = {}  # ref -> (version, since)
        self.periods: dict[tuple[Ref, int], list[Period]] = defaultdict(list)
        self.accepted: dict[tuple[Ref, int], tuple[str, str, tuple[str, ...], int]] = {}
        self.first_seen: dict[Ref, str] = {}
        self.syncs: dict[Ref, list[str]] = defaultdict(list)
        self.feed_rejections: dict[Ref, list[tuple[str, str]]] = defaultdict(list)
        self.tallies: dict[Ref, Counter[str]] = defaultdict(Counter)
        self.window_versions: set[tuple[Ref, int]] = set()
        self.activations: list[Activation] = []
        self.list_sizes: list[ListSize] = []
        self.blocks_by_day: Counter[tuple[str, str]] = Counter()
        self.blocks_by_list: Counter[tuple[str, str, int, str, str]] = Counter()
        self.rejected: list[Rejection] = []
        self.trust_updates: list[TrustUpdate] = []
        self.interventions: list[Intervention] = []
        self.operator_actions: list[OperatorActionRow] = []
        self.self_tests: list[SelfTest] = []
        self.daemon: list[DaemonEvent] = []
        self.purges: list[LoggedEntry] = []
        self.other: list[LoggedEntry] = []

    def add(self, index: int, entry: dict[str, object]) -> None:
        """Fold one entry in (it is in the window unless it precedes `start`)."""
        time, kind = entry.get("time"), entry.get("type")
        if not isinstance(time, str) or not _valid(time):
            self._count(index)
            self.other.append(_logged(index, None, entry, "no valid 'time'"))
            return
        in_window = self.start is None or time >= self.start
        if in_window:
            self._count(index)
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            if in_window:
                self.other.append(_logged(index, time, entry, "type not known to this report"))
            return
        try:
            handler(self, index, time, _Fields(entry), in_window)
        except _Malformed as e:
            if in_window:
                self.other.append(_logged(index, time, entry, str(e)))

    def _count(self, index: int) -> None:
        self.count += 1
        self.first_index = index if self.first_index is None else self.first_index
        self.last_index = index

    def _ref(self, f: _Fields) -> Ref:
        ref = (f.text("authority"), f.text("list"))
        self.names.setdefault(f"{ref[0]}/{ref[1]}", ref)
        return ref

    def _seen(self, ref: Ref, time: str) -> None:
        self.first_seen.setdefault(ref, time)

    # Each handler reads every field before it changes any state.

    def feed_accepted(self, index: int, time: str, f: _Fields, in_window: bool) -> None:
        ref, version = self._ref(f), f.number("version")
        sha, keyids, entries = f.text("envelope_sha256"), f.texts("keyids"), f.number("entries")
        rejected = f.tally("rejected_entries")
        self._seen(ref, time)
        self.syncs[ref].append(time)
        self.accepted.setdefault((ref, version), (time, sha, keyids, entries))
        if in_window:
            self.tallies[ref]["accepted"] += 1
            self.window_versions.add((ref, version))
            self.list_sizes.append(ListSize(index, time, *ref, version, entries, rejected))

    def feed_unchanged(self, index: int, time: str, f: _Fields, in_window: bool) -> None:
        ref = self._ref(f)
        self._seen(ref, time)
        self.syncs[ref].append(time)
        if in_window:
            self.tallies[ref]["unchanged"] += 1

    def feed_rejected(self, index: int, time: str, f: _Fields, in_window: bool) -> None:
        ref, version, reason = self._ref(f), f.opt_number("version"), f.text("reason")
        sha = f.opt_text("envelope_sha256")
        self._seen(ref, time)
        self.feed_rejections[ref].append((time, reason))
        if in_window:
            self.tallies[ref]["rejected"] += 1
            self.rejected.append(Rejection(index, time, "feed", *ref, version, sha, reason))

    def trust_accepted(self, index: int, time: str, f: _Fields, in_window: bool) -> None:
        row = TrustUpdate(
            index, time, f.number("version"), f.text("envelope_sha256"), f.texts("keyids")
        )
        if in_window:
            self.trust_updates.append(row)

    def trust_rejected(self, index: int, time: str, f: _Fields, in_window: bool) -> None:
        version, sha, reason = (
            f.opt_number("version"),
            f.opt_text("envelope_sha256"),
            f.text("reason"),
        )
        if in_window:
            self.rejected.append(Rejection(index, time, "trust", None, None, version, sha, reason))

    def guard_intervention(self, index: int, time: str, f: _Fields, in_window: bool) -> None:
        kind, ref, version = f.text("kind"), self._ref(f), f.number("version")
        row = Intervention(index, time, kind, *ref, version, f.text("detail"), f.number("count"))
        if in_window:
            self.interventions.append(row)

    def policy_activated(self, index: int, time: str, f: _Fields, in_window: bool) -> None:
        generation, entries = f.number("generation"), f.number("entries")
        versions = f.tally("versions")
        refs = {self._split(name): v for name, v in versions.items()}
        for ref, (version, _) in list(self.in_force.items()):
            if refs.get(ref) != version:
                self._close(ref, time)
        for ref, version in refs.items():
            self._seen(ref, time)
            if ref not in self.in_force:
                self.in_force[ref] = (version, time)
        if in_window:
            self.activations.append(Activation(index, time, generation, entries, versions))

    def _split(self, name: str) -> Ref:
        if name not in self.names:
            authority, _, list_id = name.partition("/")
            self.names[name] = (authority, list_id)
        return self.names[name]

    def _close(self, ref: Ref, time: str) -> None:
        version, since = self.in_force.pop(ref)
        self.periods[(ref, version)].append(Period(since, time))

    def operator_action(self, index: int, time: str, f: _Fields, in_window: bool) -> None:
        row = OperatorActionRow(
            index, time, f.text("action"), f.text("detail"), f.opt_text("config_sha256") or ""
        )
        if in_window:
            self.operator_actions.append(row)

    def self_test(self, index: int, time: str, f: _Fields, in_window: bool) -> None:
        row = SelfTest(index, time, f.flag("passed"), f.number("checks"), f.texts("failures"))
        if in_window:
            self.self_tests.append(row)

    def block_counts(self, index: int, time: str, f: _Fields, in_window: bool) -> None:
        period_start = f.text("period_start")
        try:
            day = _parse(period_start).date().isoformat()
        except ValueError:
            raise _Malformed("field 'period_start' is not an ISO 8601 UTC time") from None
        rows = [
            (
                r.text("authority"),
                r.text("list"),
                r.number("version"),
                r.text("action"),
                r.text("transport"),
                r.number("count"),
            )
            for r in f.rows("counts")
        ]
        if in_window:
            for authority, list_id, version, action, transport, n in rows:
                self.blocks_by_day[(day, authority)] += n
                self.blocks_by_list[(authority, list_id, version, action, transport)] += n

    def daemon_event(self, index: int, time: str, f: _Fields, in_window: bool) -> None:
        event = f.text("type").removeprefix("daemon-")
        if event == "stop":  # nothing is enforced while blockd is down
            for ref in list(self.in_force):
                self._close(ref, time)
        if in_window:
            self.daemon.append(DaemonEvent(index, time, event, f.opt_text("blockd") or ""))

    def retention_purge(self, index: int, time: str, f: _Fields, in_window: bool) -> None:
        if in_window:
            self.purges.append(_logged(index, time, f.entry))


def _logged(index: int, time: str | None, entry: dict[str, object], note: str = "") -> LoggedEntry:
    fields = {k: v for k, v in entry.items() if k not in ("time", "type")}
    return LoggedEntry(index, time, str(entry.get("type", "")), fields, note)


_HANDLERS: dict[str, Handler] = {
    "feed-accepted": _Builder.feed_accepted,
    "feed-unchanged": _Builder.feed_unchanged,
    "feed-rejected": _Builder.feed_rejected,
    "trust-accepted": _Builder.trust_accepted,
    "trust-rejected": _Builder.trust_rejected,
    "guard-intervention": _Builder.guard_intervention,
    "policy-activated": _Builder.policy_activated,
    "operator-action": _Builder.operator_action,
    "self-test": _Builder.self_test,
    "block-counts": _Builder.block_counts,
    "daemon-start": _Builder.daemon_event,
    "daemon-stop": _Builder.daemon_event,
    "retention-purge": _Builder.retention_purge,
}


def build_report(
    entries: Iterable[tuple[int, dict[str, object]]],
    source: ReportSource,
    start: str | None,
    end: str | None,
    *,
    now: str,
    stale_after: int = STALE_AFTER,
) -> Report:
    """Return the report on entries (index, entry) in log order, for times in [start, end).

    Entries at or beyond the checkpoint's size are not covered by it and are left out
    (counted in `beyond_checkpoint`). `now` bounds an open-ended staleness gap.
    """
    start = normalize_time(start, "start") if start else None
    end = normalize_time(end, "end") if end else None
    now = normalize_time(now, "now")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"end {end} is not after start {start}")
    builder, beyond = _Builder(start), 0
    for index, entry in entries:
        if index >= source.checkpoint_size:
            beyond += 1
            continue
        time = entry.get("time")
        if end is not None and isinstance(time, str) and _valid(time) and time >= end:
            continue
        builder.add(index, entry)
    bound = min(end, now) if end is not None else now
    enforced = _enforced(builder)
    return Report(
        generated=now,
        start=start,
        end=end,
        stale_after=stale_after,
        source=source,
        first_index=builder.first_index,
        end_index=None if builder.last_index is None else builder.last_index + 1,
        entries=builder.count,
        beyond_checkpoint=beyond,
        lists=_lists(builder, enforced),
        enforced=enforced,
        activations=tuple(builder.activations),
        list_sizes=tuple(builder.list_sizes),
        blocks_by_day=_blocks_by_day(builder),
        blocks_by_list=tuple(
            ListBlocks(*key, n) for key, n in sorted(builder.blocks_by_list.items())
        ),
        stale=_stale(builder, bound, stale_after),
        rejected=tuple(builder.rejected),
        trust_updates=tuple(builder.trust_updates),
        interventions=tuple(builder.interventions),
        operator_actions=tuple(builder.operator_actions),
        self_tests=tuple(builder.self_tests),
        daemon=tuple(builder.daemon),
        retention_purges=tuple(builder.purges),
        other=tuple(builder.other),
    )


def _valid(time: str) -> bool:
    try:
        _parse(time)
    except ValueError:
        return False
    return True


def _enforced(b: _Builder) -> tuple[EnforcedVersion, ...]:
    """Return every version enforced in the window, or accepted in it."""
    periods = {key: list(spans) for key, spans in b.periods.items()}
    for ref, (version, since) in b.in_force.items():
        periods.setdefault((ref, version), []).append(Period(since, None))
    out = []
    for key in sorted(periods.keys() | b.window_versions):
        ref, version = key
        spans = periods.get(key, [])
        shown = [p for p in spans if b.start is None or p.end is None or p.end > b.start]
        if not shown and key not in b.window_versions:
            continue
        accepted = b.accepted.get(key)
        out.append(
            EnforcedVersion(
                *ref,
                version,
                accepted=accepted[0] if accepted else None,
                first_enforced=spans[0].start if spans else None,
                in_force_at_end=b.in_force.get(ref, (None,))[0] == version,
                periods=tuple(shown),
                envelope_sha256=accepted[1] if accepted else None,
                keyids=accepted[2] if accepted else (),
                entries=accepted[3] if accepted else None,
            )
        )
    return tuple(out)


def _lists(b: _Builder, enforced: Sequence[EnforcedVersion]) -> tuple[ListSummary, ...]:
    versions: dict[Ref, list[int]] = defaultdict(list)
    for v in enforced:
        if v.periods:
            versions[(v.authority, v.list)].append(v.version)
    out = []
    for ref in sorted(versions.keys() | b.tallies.keys()):
        tally = b.tallies.get(ref, Counter())
        syncs = b.syncs.get(ref)
        out.append(
            ListSummary(
                *ref,
                versions=tuple(versions.get(ref, ())),
                accepted=tally["accepted"],
                unchanged=tally["unchanged"],
                rejected=tally["rejected"],
                last_sync=max(syncs) if syncs else None,
            )
        )
    return tuple(out)


def _blocks_by_day(b: _Builder) -> tuple[DayBlocks, ...]:
    """Return each authority's count on every day from the first to the last with blocks."""
    if not b.blocks_by_day:
        return ()
    first = datetime.fromisoformat(min(d for d, _ in b.blocks_by_day)).date()
    last = datetime.fromisoformat(max(d for d, _ in b.blocks_by_day)).date()
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    authorities = sorted({a for _, a in b.blocks_by_day})
    return tuple(DayBlocks(d, a, b.blocks_by_day[(d, a)]) for d in days for a in authorities)


def _stale(b: _Builder, bound: str, stale_after: int) -> tuple[StaleGap, ...]:
    """Return the gaps of more than stale_after seconds between a list's syncs, in time order.

    A gap is counted from the last sync, or from when the list was first seen if it never
    synced; the last gap runs to `bound` when the list is still in force there.
    """
    limit = timedelta(seconds=stale_after)
    gaps = []
    for ref in sorted(b.first_seen):
        spans: list[tuple[str, bool, str, bool]] = []  # since, since is a sync, until, ongoing
        since, synced = b.first_seen[ref], False
        for time in sorted(b.syncs.get(ref, [])):
            spans.append((since, synced, time, False))
            since, synced = time, True
        if ref in b.in_force:
            spans.append((since, synced, bound, True))
        for since, synced, until, ongoing in spans:
            lapse = _parse(until) - _parse(since)
            if lapse <= limit or (b.start is not None and until <= b.start):
                continue
            reasons = Counter(r for t, r in b.feed_rejections.get(ref, []) if since < t <= until)
            gaps.append(
                StaleGap(
                    *ref,
                    last_sync=since if synced else None,
                    stale_from=_format(_parse(since) + limit),
                    until=until,
                    ongoing=ongoing,
                    seconds=int((lapse - limit).total_seconds()),
                    rejections=dict(sorted(reasons.items())),
                )
            )
    return tuple(sorted(gaps, key=lambda g: (g.stale_from, g.authority, g.list)))


# -- JSON and CSV ------------------------------------------------------------------------


def report_json(report: Report) -> Json:
    """Return the report as the JSON value `report.schema.json` describes."""

    def section(rows: Sequence[DataclassInstance], **extra: object) -> Json:
        return {"count": len(rows), **extra, "items": [asdict(r) for r in rows]}

    r, src = report, report.source
    by_kind = Counter(i.kind for i in r.interventions)
    passed = sum(t.passed for t in r.self_tests)
    sections: Json = {
        "lists": section(r.lists),
        "enforced": section(r.enforced),
        "activations": section(r.activations),
        "list_sizes": section(r.list_sizes),
        "blocks_by_day": section(
            r.blocks_by_day,
            total=sum(d.count for d in r.blocks_by_day),
            days=sorted({d.day for d in r.blocks_by_day}),
            by_authority=r.blocks_per_authority(),
        ),
        "blocks_by_list": section(r.blocks_by_list, total=r.block_total),
        "stale": section(r.stale),
        "rejected": section(r.rejected),
        "trust_updates": section(r.trust_updates),
        "interventions": section(r.interventions, by_kind=dict(sorted(by_kind.items()))),
        "operator_actions": section(r.operator_actions),
        "self_tests": section(r.self_tests, passed=passed, failed=len(r.self_tests) - passed),
        "daemon": section(r.daemon),
        "retention_purges": section(r.retention_purges),
        "other": section(r.other),
    }
    summary = {name: _count(name, value) for name, value in sections.items()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generator": f"blockd {__version__}",
        "generated": r.generated,
        "period": {"start": r.start, "end": r.end},
        "stale_after_seconds": r.stale_after,
        "source": {
            "origin": src.origin,
            "checkpoint_size": src.checkpoint_size,
            "checkpoint_root": src.checkpoint_root_b64,
            "key_name": src.key_name,
            "verified": src.verified,
            "first_index": r.first_index,
            "end_index": r.end_index,
            "entries": r.entries,
            "beyond_checkpoint": r.beyond_checkpoint,
        },
        "summary": summary,
        **sections,
    }


def _count(name: str, section: object) -> int:
    """Return what the summary says of a section: its total blocks, or its number of items."""
    assert isinstance(section, dict)
    value = section["total"] if name.startswith("blocks_") else section["count"]
    assert isinstance(value, int)
    return value


def render_json(report: Report) -> str:
    """Return the report as JSON (UTF-8 text, two-space indent, keys in a fixed order)."""
    return json.dumps(report_json(report), indent=2, ensure_ascii=False) + "\n"


def render_csv(report: Report) -> str:
    """Return the report as RFC 4180 CSV, one fact a row (see CSV_COLUMNS).

    `report` and `source` rows give the report's own facts, `summary` rows each section's
    count; every other section gives its own counts (index and time empty) and then one row
    per field of each item, with the item's index, time (or day), authority, list and
    version in their columns. Lists repeat the key; maps add `.name` to it; nulls are left
    out. Text a spreadsheet would run as a formula is prefixed with an apostrophe.
    """
    data = report_json(report)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    head = {k: data[k] for k in ("format", "format_version", "generator", "generated")}
    head |= {"start": report.start, "end": report.end, "stale_after_seconds": report.stale_after}
    for section in ("report", "source", "summary"):
        facts = head if section == "report" else data[section]
        assert isinstance(facts, dict)
        for key, value in facts.items():
            writer.writerows((section, "", "", "", "", "", k, v) for k, v in _facts(key, value))
    for section, value in data.items():
        if section in head or section in ("period", "source", "summary"):
            continue
        assert isinstance(value, dict)
        for key, v in value.items():
            if key != "items":
                writer.writerows((section, "", "", "", "", "", k, x) for k, x in _facts(key, v))
        for item in value["items"]:
            row = dict(item)
            where = [row.pop(k, None) for k in ("index", "time", "day", "authority", "list")]
            index, time, day, authority, list_id = ("" if w is None else w for w in where)
            version = row.pop("version", None)
            where_cols = (_cell_text(authority), _cell_text(list_id))
            cols = (section, index, time or day, *where_cols, "" if version is None else version)
            for key, v in row.items():
                writer.writerows((*cols, k, x) for k, x in _facts(key, v))
    return out.getvalue()


def _facts(key: str, value: object) -> Iterable[tuple[str, str]]:
    """Yield (key, value) rows for one field: a row per list element, `.name` per map key."""
    if value is None:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _facts(f"{key}.{k}", v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _facts(key, v)
    elif isinstance(value, bool):
        yield key, "true" if value else "false"
    elif isinstance(value, int | float):
        yield key, str(value)
    else:
        yield key, _cell_text(value)


def _cell_text(value: object) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# -- HTML --------------------------------------------------------------------------------

# One stylesheet, allowed by its hash in the page's own content security policy.
_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, "Segoe UI", Roboto, "Noto Sans", sans-serif; color: #1a1a1a;
  background: #fff; max-width: 75rem; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.7rem; margin: 0 0 .3rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .5rem; padding-bottom: .2rem;
  border-bottom: 2px solid #1a1a1a; }
p { max-width: 48rem; }
a { color: #0b4f8a; }
dl.source { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1.2rem; }
dl.source dt { font-weight: 600; }
dl.source dd { margin: 0; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 1.2rem; font-size: .9rem; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { border: 1px solid #b5b5b5; padding: .3rem .45rem; text-align: left; vertical-align: top; }
thead th { background: #e9edf1; }
tbody th { font-weight: normal; }
tfoot th, tfoot td { font-weight: 600; background: #f4f4f4; }
td, th { overflow-wrap: break-word; }
.n { text-align: right; font-variant-numeric: tabular-nums; }
time span { white-space: nowrap; }
ul.lines { list-style: none; margin: 0; padding: 0; }
ul.lines li + li { margin-top: .3rem; }
.table { overflow-x: auto; }
.table:focus-visible { outline: 2px solid #0b4f8a; }
code { font: .85em ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  overflow-wrap: anywhere; }
.bad { color: #a4000f; font-weight: 600; }
.good { color: #0b6b2c; font-weight: 600; }
.empty { color: #4a4a4a; font-style: italic; }
.chart { max-width: 52rem; margin: .5rem 0 1rem; }
.chart svg { width: 100%; height: auto; }
nav table { width: auto; min-width: 24rem; }
@page { margin: 14mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 9.5pt; }
  th, td { padding: .2rem .3rem; }
  h2 { break-after: avoid; }
  tr, .chart, dl.source { break-inside: avoid; }
  .table { overflow: visible; }
  thead { display: table-header-group; }
  a { color: inherit; text-decoration: none; }
  thead th, tfoot th, tfoot td { background: none; }
}
"""

# Okabe-Ito based colours, told apart by people with the common colour-vision deficiencies.
_PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#8c6d00", "#56b4e9", "#5a5a5a")
_DASH = "—"


class _Safe(str):
    """Markup already escaped."""


Cell = _Safe | str | int | None


def _html(value: Cell) -> str:
    if value is None:
        return _DASH
    if isinstance(value, _Safe):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return escape(value)


def _time(time: str | None) -> _Safe:
    if time is None:
        return _Safe(_DASH)
    day, _, clock = time.removesuffix("Z").partition("T")
    return _Safe(
        f'<time datetime="{escape(time)}"><span>{escape(day)}</span> <span>{escape(clock)}</span>'
        "</time>"
    )


def _code(text: str | None) -> _Safe:
    return _Safe(_DASH if not text else f"<code>{escape(text)}</code>")


def _period(p: Period) -> _Safe:
    return _Safe(f"{_time(p.start)} to {_time(p.end)}" if p.end else f"{_time(p.start)} onwards")


def _lines(cells: Iterable[Cell]) -> _Safe:
    items = "".join(f"<li>{_html(c)}</li>" for c in cells)
    return _Safe(f'<ul class="lines">{items}</ul>' if items else _DASH)


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    parts = [f"{days} d"] if days else []
    parts += [f"{hours} h"] if hours else []
    parts += [f"{rest // 60} min"] if rest // 60 or not parts else []
    return " ".join(parts)


def _table(
    caption: str,
    head: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    numeric: Iterable[int] = (),
    foot: Sequence[Cell] | None = None,
) -> str:
    """Return a table whose first column heads its row; numeric columns align right."""
    if not rows:
        return f'<p class="empty">{escape(caption)}: none in this period.</p>'
    right = set(numeric)

    def row(cells: Sequence[Cell], col_tag: str = "td") -> str:
        out = []
        for i, v in enumerate(cells):
            tag, scope = ("th", ' scope="row"') if i == 0 else (col_tag, "")
            cls = ' class="n"' if i in right else ""
            out.append(f"<{tag}{scope}{cls}>{_html(v)}</{tag}>")
        return "<tr>" + "".join(out) + "</tr>"

    cls = ' class="n"'
    cols = "".join(
        f'<th scope="col"{cls if i in right else ""}>{escape(h)}</th>' for i, h in enumerate(head)
    )
    body = "\n".join(row(r) for r in rows)
    tfoot = f"<tfoot>{row(foot)}</tfoot>" if foot is not None else ""
    # A region that scrolls sideways on a narrow screen, reachable by keyboard.
    return (
        f'<div class="table" role="region" aria-label="{escape(caption)}" tabindex="0">'
        f"<table><caption>{escape(caption)}</caption><thead><tr>{cols}</tr></thead>"
        f"<tbody>\n{body}\n</tbody>{tfoot}</table></div>"
    )


def _chart(rows: Sequence[DayBlocks]) -> str:
    """Return an inline SVG of stacked bars: blocks per authority per day."""
    days = sorted({r.day for r in rows})
    authorities = sorted({r.authority for r in rows})
    grid = {(r.day, r.authority): r.count for r in rows}
    totals = [sum(grid.get((d, a), 0) for a in authorities) for d in days]
    step = _nice(max(max(totals), 1) / 4)
    top = step * max(1, math.ceil(max(totals) / step))
    width, left, right, pad, plot_h = 760, 84, 16, 14, 220
    base = pad + plot_h
    height = base + 34 + 20 * len(authorities) + 6
    plot_w = width - left - right
    slot = plot_w / len(days)
    bar = min(56.0, max(1.0, slot * 0.7))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img"'
        ' aria-labelledby="chart-title chart-desc" font-family="sans-serif" font-size="12">',
        '<title id="chart-title">Blocks per authority per day</title>',
        f'<desc id="chart-desc">Stacked bars, one per UTC day from {days[0]} to {days[-1]}, '
        f"one colour per authority ({escape(', '.join(authorities))}); the same numbers are "
        "in the table below.</desc>",
    ]
    for i in range(top // step + 1):
        y = base - plot_h * i * step / top
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d0d0"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#1a1a1a">'
            f"{i * step:,}</text>"
        )
    for di, day in enumerate(days):
        x, y = left + di * slot + (slot - bar) / 2, float(base)
        for ai, authority in enumerate(authorities):
            n = grid.get((day, authority), 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            out.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{_PALETTE[ai % len(_PALETTE)]}"><title>{day}, {escape(authority)}: '
                f"{n:,}</title></rect>"
            )
    every = max(1, math.ceil(len(days) * 80 / plot_w))
    for di in range(0, len(days), every):
        x = left + (di + 0.5) * slot
        out.append(
            f'<text x="{x:.1f}" y="{base + 18}" text-anchor="middle" fill="#1a1a1a">'
            f"{days[di]}</text>"
        )
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{base}" y2="{base}" stroke="#1a1a1a"/>')
    for ai, authority in enumerate(authorities):
        y = base + 34 + 20 * ai
        out.append(
            f'<rect x="{left}" y="{y}" width="12" height="12" '
            f'fill="{_PALETTE[ai % len(_PALETTE)]}"/>'
            f'<text x="{left + 18}" y="{y + 11}" fill="#1a1a1a">{escape(authority)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _nice(value: float) -> int:
    """Return the smallest 1, 2 or 5 times a power of ten (at least 1) not below value."""
    if value <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(value)))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


Section = tuple[str, str, int, str]  # id, title, count, body


def _sections(r: Report) -> list[Section]:
    """Return the report's sections in reading order."""
    blocks = r.blocks_per_authority()
    days = sorted({d.day for d in r.blocks_by_day})
    grid = {(d.day, d.authority): d.count for d in r.blocks_by_day}
    day_rows: list[list[Cell]] = [
        [d, *(grid[(d, a)] for a in blocks), sum(grid[(d, a)] for a in blocks)] for d in days
    ]
    stale_for = _duration(r.stale_after)
    passed = sum(t.passed for t in r.self_tests)
    return [
        (
            "lists",
            "Lists enforced",
            len(r.lists),
            "<p>Each authority's lists, the versions enforced in this period, and how often "
            "blockd checked for updates.</p>"
            + _table(
                "Lists and their syncs",
                [
                    "Authority",
                    "List",
                    "Versions enforced",
                    "Accepted",
                    "Unchanged",
                    "Rejected",
                    "Last sync",
                ],
                [
                    [
                        x.authority,
                        x.list,
                        ", ".join(map(str, x.versions)) or None,
                        x.accepted,
                        x.unchanged,
                        x.rejected,
                        _time(x.last_sync),
                    ]
                    for x in r.lists
                ],
                numeric=(3, 4, 5),
            ),
        ),
        (
            "enforced",
            "Versions enforced",
            len(r.enforced),
            "<p>When each list version was accepted and in force, with the SHA-256 of its "
            "signed envelope and the keys that signed it. A period with no end (“onwards”) "
            "was still in force when the report ends; stopping blockd ends a period.</p>"
            + _table(
                "List versions",
                [
                    "Authority",
                    "List",
                    "Version",
                    "Accepted",
                    "In force",
                    "Entries",
                    "Envelope SHA-256",
                    "Signing keys",
                ],
                [
                    [
                        v.authority,
                        v.list,
                        v.version,
                        _time(v.accepted),
                        _lines(map(_period, v.periods)),
                        v.entries,
                        _code(v.envelope_sha256),
                        _lines(map(_code, v.keyids)),
                    ]
                    for v in r.enforced
                ],
                numeric=(2, 5),
            ),
        ),
        (
            "activations",
            "Policy activations",
            len(r.activations),
            _table(
                "Policies that came into force",
                ["Time", "Generation", "Entries", "List versions"],
                [
                    [
                        _time(a.time),
                        a.generation,
                        a.entries,
                        _lines(f"{k} version {v}" for k, v in a.versions.items()),
                    ]
                    for a in r.activations
                ],
                numeric=(1, 2),
            ),
        ),
        (
            "list-sizes",
            "Entries per list version",
            len(r.list_sizes),
            _table(
                "Entries in each accepted version",
                ["Accepted", "Authority", "List", "Version", "Entries", "Entries refused"],
                [
                    [
                        _time(s.time),
                        s.authority,
                        s.list,
                        s.version,
                        s.entries,
                        _lines(f"{k}: {n:,}" for k, n in s.rejected_entries.items()),
                    ]
                    for s in r.list_sizes
                ],
                numeric=(3, 4),
            ),
        ),
        (
            "blocks",
            "Blocks per authority per day",
            r.block_total,
            f"<p>{r.block_total:,} blocked answers and refused connections, counted per hour "
            "and added up by the UTC day each counting period began. Nothing about the people "
            "who were blocked is recorded.</p>"
            + (f'<div class="chart">{_chart(r.blocks_by_day)}</div>' if days else "")
            + _table(
                "Blocks per authority per day",
                ["Day (UTC)", *blocks, "Total"],
                day_rows,
                numeric=range(1, len(blocks) + 2),
                foot=["Total", *blocks.values(), r.block_total],
            )
            + _table(
                "Blocks per list version, action and transport",
                ["Authority", "List", "Version", "Action", "Transport", "Blocks"],
                [
                    [b.authority, b.list, b.version, b.action, b.transport, b.count]
                    for b in r.blocks_by_list
                ],
                numeric=(2, 5),
            ),
        ),
        (
            "stale",
            "Periods a list was stale",
            len(r.stale),
            f"<p>A list is stale once it has gone more than {stale_for} without a successful "
            "sync (a version accepted, or the source unchanged). The last accepted version "
            "stays in force meanwhile; an expired list cannot be renewed until its authority "
            "publishes a new one.</p>"
            + _table(
                "Stale periods",
                [
                    "Authority",
                    "List",
                    "Last sync",
                    "Stale from",
                    "Until",
                    "Stale for",
                    "Updates rejected meanwhile",
                ],
                [
                    [
                        g.authority,
                        g.list,
                        _time(g.last_sync),
                        _time(g.stale_from),
                        _Safe(f"{_time(g.until)} (still stale)") if g.ongoing else _time(g.until),
                        _duration(g.seconds),
                        _lines(f"{k}: {n:,}" for k, n in g.rejections.items()),
                    ]
                    for g in r.stale
                ],
            ),
        ),
        (
            "rejected",
            "Rejected updates",
            len(r.rejected),
            "<p>Updates blockd refused; the version in force before stays in force.</p>"
            + _table(
                "Rejected list and trust policy updates",
                ["Time", "Of", "Authority", "List", "Version", "Reason", "Envelope SHA-256"],
                [
                    [
                        _time(x.time),
                        "trust policy" if x.source == "trust" else "list",
                        x.authority,
                        x.list,
                        x.version,
                        x.reason,
                        _code(x.envelope_sha256),
                    ]
                    for x in r.rejected
                ],
                numeric=(4,),
            ),
        ),
        (
            "trust",
            "Trust policy updates",
            len(r.trust_updates),
            _table(
                "Trust policy versions accepted",
                ["Time", "Version", "Envelope SHA-256", "Signing keys"],
                [
                    [
                        _time(t.time),
                        t.version,
                        _code(t.envelope_sha256),
                        _lines(map(_code, t.keyids)),
                    ]
                    for t in r.trust_updates
                ],
                numeric=(1,),
            ),
        ),
        (
            "interventions",
            "Guard-rail interventions",
            len(r.interventions),
            "<p>Entries dropped because they touch never-block names, updates held for "
            "approval, and an operator's approvals, rollbacks and releases.</p>"
            + _table(
                "Guard-rail interventions",
                ["Time", "Kind", "Authority", "List", "Version", "Entries", "Detail"],
                [
                    [_time(i.time), i.kind, i.authority, i.list, i.version, i.count, i.detail]
                    for i in r.interventions
                ],
                numeric=(4, 5),
            ),
        ),
        (
            "operator",
            "Operator actions",
            len(r.operator_actions),
            _table(
                "Operator actions",
                ["Time", "Action", "Detail", "Configuration SHA-256"],
                [
                    [_time(o.time), o.action, o.detail, _code(o.config_sha256)]
                    for o in r.operator_actions
                ],
            ),
        ),
        (
            "self-tests",
            "Self-tests",
            len(r.self_tests),
            f"<p>{passed:,} passed, {len(r.self_tests) - passed:,} failed.</p>"
            + _table(
                "Self-test runs",
                ["Time", "Result", "Checks", "Failures"],
                [
                    [
                        _time(t.time),
                        _Safe('<span class="good">passed</span>')
                        if t.passed
                        else _Safe('<span class="bad">failed</span>'),
                        t.checks,
                        _lines(t.failures),
                    ]
                    for t in r.self_tests
                ],
                numeric=(2,),
            ),
        ),
        (
            "daemon",
            "Daemon starts and stops",
            len(r.daemon),
            _table(
                "blockd starts and stops",
                ["Time", "Event", "blockd version"],
                [
                    [_time(d.time), "started" if d.event == "start" else "stopped", d.blockd]
                    for d in r.daemon
                ],
            ),
        ),
        (
            "retention",
            "Retention purges",
            len(r.retention_purges),
            _table(
                "Retention purges",
                ["Time", "Details"],
                [[_time(p.time), _fields(p.fields)] for p in r.retention_purges],
            ),
        ),
        (
            "other",
            "Other entries",
            len(r.other),
            "<p>Entries this version of blockd cannot read in full, shown as they are.</p>"
            + _table(
                "Other entries",
                ["Log index", "Time", "Type", "Note", "Fields"],
                [[o.index, _time(o.time), o.type, o.note, _fields(o.fields)] for o in r.other],
            ),
        ),
    ]


def _fields(fields: dict[str, object]) -> _Safe:
    return _lines(
        f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
        for k, v in fields.items()
        if k != "blockd"
    )


def render_html(report: Report) -> str:
    """Return the report as one self-contained HTML page: no scripts, one inline style."""
    r, src = report, report.source
    digest = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    sections = _sections(r)
    until = _time(r.end) if r.end else _Safe(f"{_time(r.generated)}, when it was generated")
    since = _time(r.start) if r.start else "the first entry in the log"
    read = (
        f"entries {r.first_index:,} to {r.end_index - 1:,} ({r.entries:,} entries)"
        if r.first_index is not None and r.end_index is not None
        else "no entries"
    )
    verified = (
        '<span class="good">yes: signature and proofs checked</span>'
        if src.verified
        else '<span class="bad">NO: the numbers below are not verified</span>'
    )
    beyond = (
        f"<dt>Not included</dt><dd>{r.beyond_checkpoint:,} entries written after the "
        "checkpoint</dd>"
        if r.beyond_checkpoint
        else ""
    )
    contents = _table(
        "Contents",
        ["Section", "Count"],
        [
            [_Safe(f'<a href="#{sid}">{escape(title)}</a>'), count]
            for sid, title, count, _ in sections
        ],
        numeric=(1,),
    )
    body = "\n".join(
        f'<section id="{sid}" aria-labelledby="{sid}-h">\n'
        f'<h2 id="{sid}-h">{escape(title)} ({count:,})</h2>\n{html}\n</section>'
        for sid, title, count, html in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="blockd {escape(__version__)}">
<title>Transparency report: {escape(src.origin)}</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>Transparency report</h1>
<p>What blockd enforced at <strong>{escape(src.origin)}</strong> from {since} to {until}.
All times are UTC.</p>
</header>
<main>
<section id="source" aria-labelledby="source-h">
<h2 id="source-h">Derived from</h2>
<p>Every number here is computed from the audit log entries named below; anyone holding
the log bundle and the operator's public key can check them.</p>
<dl class="source">
<dt>Log</dt><dd>{escape(src.origin)}</dd>
<dt>Checkpoint</dt><dd>{src.checkpoint_size:,} entries, root {_code(src.checkpoint_root_b64)}</dd>
<dt>Signed by key</dt><dd>{escape(src.key_name)}</dd>
<dt>Verified</dt><dd>{verified}</dd>
<dt>Entries read</dt><dd>{read}</dd>
{beyond}
<dt>Generated</dt><dd>{_time(r.generated)} by blockd {escape(__version__)}</dd>
</dl>
</section>
<nav aria-label="Sections">
{contents}
</nav>
{body}
</main>
</body>
</html>
"""
