"""Build the transparency report from audit log entries.

Pass the whole log: entries before `start` tell the state at `start`; entries at or after
`end` are not read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from blockd.audit.anomalies import Anomaly
from blockd.audit.report.entries import format_time, is_time, normalize_time, parse_time
from blockd.audit.report.fold import Fold, Ref
from blockd.audit.report.model import (
    MEASURES,
    DayBlocks,
    EnforcedVersion,
    ListBlocks,
    ListSummary,
    Period,
    Report,
    ReportSource,
    StaleGap,
    measure,
)

STALE_AFTER = 7200  # seconds without a sync before a list counts as stale


def build_report(
    entries: Iterable[tuple[int, dict[str, object]]],
    source: ReportSource,
    start: str | None,
    end: str | None,
    *,
    now: str,
    stale_after: int = STALE_AFTER,
    anomalies: Sequence[Anomaly] = (),
) -> Report:
    """Return the report on entries (index, entry) in log order, for times in [start, end).

    Entries at or beyond the checkpoint's size are not covered by it and are left out
    (counted in `beyond_checkpoint`). `now` bounds an open-ended staleness gap. anomalies
    are what the verifier found; an entry that repeats an earlier one is shown among them
    and not counted again (a batch written twice must not double its blocks).
    """
    start = normalize_time(start, "start") if start else None
    end = normalize_time(end, "end") if end else None
    now = normalize_time(now, "now")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"end {end} is not after start {start}")
    fold, beyond = Fold(start), 0
    repeats = {a.index for a in anomalies if a.kind == "duplicate"}
    for index, entry in entries:
        if index in repeats:
            continue
        if index >= source.checkpoint_size:
            beyond += 1
            continue
        time = entry.get("time")
        if end is not None and isinstance(time, str) and is_time(time) and time >= end:
            continue
        fold.add(index, entry)
    bound = min(end, now) if end is not None else now
    enforced = _enforced(fold)
    return Report(
        generated=now,
        start=start,
        end=end,
        stale_after=stale_after,
        source=source,
        first_index=fold.first_index,
        end_index=None if fold.last_index is None else fold.last_index + 1,
        entries=fold.count,
        beyond_checkpoint=beyond,
        lists=_lists(fold, enforced),
        enforced=enforced,
        activations=tuple(fold.activations),
        list_sizes=tuple(fold.list_sizes),
        blocks_by_day=_blocks_by_day(fold),
        blocks_by_list=_blocks_by_list(fold),
        count_periods=tuple(
            sorted(fold.count_periods | ({fold.longest_span} if fold.longest_span else set()))
        ),
        stale=_stale(fold, bound, stale_after),
        rejected=tuple(fold.rejected),
        trust_updates=tuple(fold.trust_updates),
        interventions=tuple(fold.interventions),
        operator_actions=tuple(fold.operator_actions),
        self_tests=tuple(fold.self_tests),
        daemon=tuple(fold.daemon),
        retention_purges=tuple(fold.purges),
        other=tuple(fold.other),
        anomalies=tuple(anomalies),
    )


def _enforced(fold: Fold) -> tuple[EnforcedVersion, ...]:
    """Return every version enforced in the window, or accepted in it."""
    periods = {key: list(spans) for key, spans in fold.periods.items()}
    for ref, (version, since) in fold.in_force.items():
        periods.setdefault((ref, version), []).append(Period(since, None))
    out = []
    for key in sorted(periods.keys() | fold.window_versions):
        ref, version = key
        spans = periods.get(key, [])
        shown = [p for p in spans if fold.start is None or p.end is None or p.end > fold.start]
        if not shown and key not in fold.window_versions:
            continue
        accepted = fold.accepted.get(key)
        out.append(
            EnforcedVersion(
                *ref,
                version,
                accepted=accepted[0] if accepted else None,
                first_enforced=spans[0].start if spans else None,
                in_force_at_end=fold.in_force.get(ref, (None,))[0] == version,
                periods=tuple(shown),
                envelope_sha256=accepted[1] if accepted else None,
                keyids=accepted[2] if accepted else (),
                entries=accepted[3] if accepted else None,
            )
        )
    return tuple(out)


def _lists(fold: Fold, enforced: Sequence[EnforcedVersion]) -> tuple[ListSummary, ...]:
    versions: dict[Ref, list[int]] = defaultdict(list)
    for v in enforced:
        if v.periods:
            versions[(v.authority, v.list)].append(v.version)
    out = []
    for ref in sorted(versions.keys() | fold.tallies.keys()):
        tally = fold.tallies.get(ref, Counter())
        syncs = fold.syncs.get(ref)
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


def _blocks_by_list(fold: Fold) -> tuple[ListBlocks, ...]:
    """Return the counts per list version, action, transport and self-test or not."""
    return tuple(
        ListBlocks(a, lst, version, action, transport, measure(action, transport), probe, n)
        for (a, lst, version, action, transport, probe), n in sorted(
            fold.blocks_by_list.items(), key=lambda item: (*item[0][:5], bool(item[0][5]))
        )
    )


def _blocks_by_day(fold: Fold) -> tuple[DayBlocks, ...]:
    """Return each authority's measures on every day from the first to the last with any."""
    if not fold.blocks_by_day:
        return ()
    first = datetime.fromisoformat(min(d for d, _, _ in fold.blocks_by_day)).date()
    last = datetime.fromisoformat(max(d for d, _, _ in fold.blocks_by_day)).date()
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    authorities = sorted({a for _, a, _ in fold.blocks_by_day})
    return tuple(
        DayBlocks(d, a, m, fold.blocks_by_day[(d, a, m)])
        for d in days
        for a in authorities
        for m in MEASURES
    )


def _stale(fold: Fold, bound: str, stale_after: int) -> tuple[StaleGap, ...]:
    """Return the gaps of more than stale_after seconds between a list's syncs, in time order.

    A gap is counted from the last sync, or from when the list was first seen if it never
    synced; the last gap runs to `bound` when the list is still in force there.
    """
    limit = timedelta(seconds=stale_after)
    gaps = []
    for ref in sorted(fold.first_seen):
        spans: list[tuple[str, bool, str, bool]] = []  # since, since is a sync, until, ongoing
        since, synced = fold.first_seen[ref], False
        for time in sorted(fold.syncs.get(ref, [])):
            spans.append((since, synced, time, False))
            since, synced = time, True
        if ref in fold.in_force:
            spans.append((since, synced, bound, True))
        for since, synced, until, ongoing in spans:
            lapse = parse_time(until) - parse_time(since)
            if lapse <= limit or (fold.start is not None and until <= fold.start):
                continue
            reasons = Counter(r for t, r in fold.feed_rejections.get(ref, []) if since < t <= until)
            gaps.append(
                StaleGap(
                    *ref,
                    last_sync=since if synced else None,
                    stale_from=format_time(parse_time(since) + limit),
                    until=until,
                    ongoing=ongoing,
                    seconds=int((lapse - limit).total_seconds()),
                    rejections=dict(sorted(reasons.items())),
                )
            )
    return tuple(sorted(gaps, key=lambda g: (g.stale_from, g.authority, g.list)))
