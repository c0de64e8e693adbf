"""What the workers count, merged in the supervisor: one set of totals for all of them.

Each worker reports its totals every second. The supervisor adds the difference from the
same worker's previous report into its own counters (the ones /metrics and the audit log
read), so counts only grow, a restarted worker starts again from zero without taking
anything back, and a lost report is made good by the next. What a worker counted after
its last report is lost if it crashes (at most a second's worth). Reports hold totals by
label (list, action, transport, reason), never a client or a name.

A report comes from a less trusted process: anything that is not the expected shape is
refused whole (ReportError) and changes nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from blockd.dns.forward import UpstreamState
from blockd.metrics import BlockCounts, DnsCounters, Tally
from blockd.metrics.counters import UPSTREAM_BUCKETS

Key = tuple[str | int | bool, ...]
# Report field -> (arity of its keys, which key positions are ints/bools (else strings)).
ROWS: dict[str, tuple[int, dict[int, type]]] = {
    "blocks_dns": (6, {2: int, 5: bool}),
    "blocks_http": (6, {2: int, 5: bool}),
    "dns_problems": (3, {}),
    "http": (2, {}),
    "http_problems": (3, {}),
}
MAX_ROWS = 100_000
# Label sets the supervisor keeps per counter, all workers together: far above what lists,
# versions, actions, transports and reasons make (a few thousand), far below what would let
# a compromised worker grow the supervisor's memory and /metrics without end.
MAX_LABEL_SETS = 50_000
MAX_COUNT = 2**63 - 1  # a worker's total; above it /metrics (float64) could overflow when summed


class ReportError(ValueError):
    """A worker's report is not what a worker sends."""


@dataclass
class WorkerTotals:
    """The totals of one worker process, as of its latest report."""

    rows: dict[str, dict[Key, int]] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)
    forwarded: dict[str, int] = field(default_factory=dict)
    upstream_counts: list[int] = field(default_factory=list)
    upstream_total: float = 0.0
    cache: tuple[int, int, int] = (0, 0, 0)  # hits, misses, entries
    http_connections: int = 0
    upstreams: list[tuple[str, bool, bool, str | None, float | None, int]] = field(
        default_factory=list
    )


@dataclass
class Tallies:
    """Where merged counts go: the supervisor's own counters."""

    blocks: BlockCounts
    dns: DnsCounters
    dns_problems: Tally = field(default_factory=lambda: defaultdict(int))
    http: Tally = field(default_factory=lambda: defaultdict(int))
    http_problems: Tally = field(default_factory=lambda: defaultdict(int))


class Totals:
    """Merge worker reports into the supervisor's counters; answer for all of them."""

    def __init__(self, tallies: Tallies, upstreams: list[tuple[str, int]]) -> None:
        """Count into tallies; report on upstreams (address, port) as configured."""
        self.tallies = tallies
        self.latest: dict[int, WorkerTotals] = {}  # live workers by index
        self.hits = self.misses = 0  # answer-cache lookups over every worker, ever
        self.upstreams = [UpstreamState(address) for address in upstreams]
        self.on_upstream_change: Callable[[UpstreamState], None] | None = None

    def absorb(self, index: int, report: Mapping[str, Any]) -> None:
        """Add what worker index counted since its previous report (ReportError: nothing)."""
        new = parse(report)
        old = self.latest.get(index, WorkerTotals())
        t = self.tallies
        targets: dict[str, defaultdict[Any, int]] = {
            "blocks_dns": t.blocks.dns,
            "blocks_http": t.blocks.http,
            "dns_problems": t.dns_problems,
            "http": t.http,
            "http_problems": t.http_problems,
        }
        for name, target in targets.items():
            unseen = sum(1 for key in new.rows[name] if key not in target)
            if len(target) + unseen > MAX_LABEL_SETS:
                raise ReportError(f"{name}: over {MAX_LABEL_SETS} label sets in all")
        for name, target in targets.items():
            _add(target, new.rows[name], old.rows.get(name, {}))
        _add(t.dns.cached, new.cached, old.cached)
        _add(t.dns.forwarded, new.forwarded, old.forwarded)
        hist = t.dns.upstream_seconds
        if len(new.upstream_counts) == len(hist.counts):
            before = old.upstream_counts or [0] * len(hist.counts)
            for i, (n, was) in enumerate(zip(new.upstream_counts, before, strict=True)):
                hist.counts[i] += max(0, n - was)
            hist.total += max(0.0, new.upstream_total - old.upstream_total)
        self.hits += max(0, new.cache[0] - old.cache[0])
        self.misses += max(0, new.cache[1] - old.cache[1])
        self.latest[index] = new
        self._merge_upstreams()

    def forget(self, index: int) -> None:
        """A worker ended: its counts stay in the totals; its state (cache, upstreams) goes."""
        self.latest.pop(index, None)
        self._merge_upstreams()

    def __len__(self) -> int:
        """Return the answers cached by the live workers together."""
        return sum(w.cache[2] for w in self.latest.values())

    def http_connections(self) -> int:
        """Return the HTTP connections the live workers hold together."""
        return sum(w.http_connections for w in self.latest.values())

    def _merge_upstreams(self) -> None:
        """An upstream is down when every live worker that uses it says so."""
        for state in self.upstreams:
            seen = [u for w in self.latest.values() for u in w.upstreams if u[0] == state.name]
            if not seen:
                continue
            down = all(u[2] for u in seen)
            state.healthy = any(u[1] for u in seen)
            state.failures = max(u[5] for u in seen)
            reasons = [u[3] for u in seen if u[3] is not None]
            state.last_reason = reasons[0] if reasons else state.last_reason  # type: ignore[assignment]
            if down != state.down:
                state.down = down
                if down:
                    since = [u[4] for u in seen if u[4] is not None]
                    state.down_since = min(since) if since else time.time()
                if self.on_upstream_change is not None:
                    self.on_upstream_change(state)  # recovery: down_since says for how long
                if not down:
                    state.down_since = None


def _add(target: defaultdict[Any, int], new: Mapping[Any, int], old: Mapping[Any, int]) -> None:
    for key, n in new.items():
        grown = n - old.get(key, 0)
        if grown > 0:
            target[key] += grown


def parse(report: Mapping[str, Any]) -> WorkerTotals:
    """Check a report's shape and return its totals; ReportError if it is not a report."""
    try:
        out = WorkerTotals()
        for name, (arity, types) in ROWS.items():
            rows = report[name]
            if not isinstance(rows, list) or len(rows) > MAX_ROWS:
                raise ReportError(f"{name}: not a list of rows")
            out.rows[name] = {_key(row, arity, types): _count(row[-1]) for row in rows}
            if len(out.rows[name]) != len(rows):
                raise ReportError(f"{name}: the same labels twice")
        out.cached = _counts(report["cached"])
        out.forwarded = _counts(report["forwarded"])
        counts, total = report["upstream_seconds"]
        if not isinstance(counts, list) or len(counts) != len(UPSTREAM_BUCKETS) + 1:
            raise ReportError("upstream_seconds: wrong number of buckets")
        out.upstream_counts = [_count(n) for n in counts]
        out.upstream_total = _seconds(total)
        hits, misses, entries = report["cache"]
        out.cache = (_count(hits), _count(misses), _count(entries))
        out.http_connections = _count(report["http_connections"])
        upstreams = report["upstreams"]
        if not isinstance(upstreams, list):
            raise ReportError("upstreams: not a list of upstream rows")
        out.upstreams = [_upstream(u) for u in upstreams][:64]
    # RecursionError: the repr() in a message, of a label nested as deep as JSON allows
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        if isinstance(e, ReportError):
            raise
        raise ReportError(f"malformed report: {type(e).__name__}: {e}") from None
    return out


def _key(row: object, arity: int, types: Mapping[int, type]) -> Key:
    if not isinstance(row, list) or len(row) != arity + 1:
        raise ReportError(f"a row of {arity} labels and a count expected, got {row!r:.80}")
    key = tuple(row[:arity])
    for i, value in enumerate(key):
        want = types.get(i, str)
        if type(value) is not want or (isinstance(value, str) and len(value) > 256):
            raise ReportError(f"label {i} of {row!r:.80} is not a {want.__name__}")
    return key


def _count(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise ReportError(f"a count must be a whole number from 0 to 2**63-1, got {value!r:.40}")
    return value


def _counts(value: object) -> dict[str, int]:
    if not isinstance(value, dict) or len(value) > 16:
        raise ReportError("counts by transport expected")
    return {str(k)[:16]: _count(n) for k, n in value.items()}


def _seconds(value: object) -> float:
    if type(value) not in (int, float) or not 0 <= value < 1e12:  # type: ignore[operator]
        raise ReportError(f"seconds expected, got {value!r:.40}")
    return float(value)  # type: ignore[arg-type]


def _upstream(row: object) -> tuple[str, bool, bool, str | None, float | None, int]:
    if not isinstance(row, list) or len(row) != 6:
        raise ReportError("an upstream row of 6 fields expected")
    name, healthy, down, reason, since, failures = row
    if not (isinstance(name, str) and type(healthy) is bool and type(down) is bool):
        raise ReportError("upstream name and flags expected")
    if reason is not None and not (isinstance(reason, str) and len(reason) < 64):
        raise ReportError("upstream reason must be a short string")
    return name, healthy, down, reason, None if since is None else _seconds(since), _count(failures)
