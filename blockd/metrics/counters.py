"""What the DNS pipeline counts itself, and the answers lists decided, as plain numbers.

Counted on the DNS hot path: keep this module's imports light.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence

from blockd.events import DnsDecision, EventBus, HttpDecision

# Seconds; forwarding gives up after dns.total_timeout (3 s by default).
UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LatencyHistogram:
    """Durations counted into fixed buckets, as plain numbers (hot path: a bisect, two adds)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = UPSTREAM_BUCKETS) -> None:
        """Count into buckets with these upper bounds (seconds, ascending) and +Inf."""
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """Return Prometheus buckets: (upper bound, observations at or below it)."""
        out, running = [], 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out


class DnsCounters:
    """What the DNS pipeline counts itself: answers that publish no event, upstream time.

    Hot path (every clean query): plain ints keyed by transport, no lock; they are read
    when Prometheus scrapes, on the event loop like the pipeline.
    """

    __slots__ = ("cached", "forwarded", "upstream_seconds")

    def __init__(self) -> None:
        """Start at zero."""
        self.cached: defaultdict[str, int] = defaultdict(int)  # answered from the cache
        self.forwarded: defaultdict[str, int] = defaultdict(int)  # answered by an upstream
        self.upstream_seconds = LatencyHistogram()


# authority, list, version, action or outcome, transport, and whether a self-test entry matched
Decided = tuple[str, str, int, str, str, bool]


class BlockCounts:
    """Answers a list decided, counted once for both metrics and the audit log's block counts.

    Hot path (every blocked or routed DNS answer): one subscriber, one tuple, one dict bump.
    `dns` counts DNS answers by verdict action (notice, nxdomain, route); `http` counts the
    notice pages served and TLS connections refused. Each count says whether the matched entry
    is an authority's self-test entry (blockd's own self-tests, mostly), so the audit log can
    keep them apart; the metrics add both. Totals only grow; readers take differences.
    """

    __slots__ = ("dns", "http")

    def __init__(self, bus: EventBus | None = None) -> None:
        """Start at zero; count the decisions published on bus, if given."""
        self.dns: defaultdict[Decided, int] = defaultdict(int)
        self.http: defaultdict[Decided, int] = defaultdict(int)
        if bus is not None:
            bus.subscribe(DnsDecision, self._on_dns)
            bus.subscribe(HttpDecision, self._on_http)

    def _on_dns(self, event: DnsDecision) -> None:
        v = event.verdict
        self.dns[(v.authority, v.list, v.version, v.action, event.transport, v.probe)] += 1

    def _on_http(self, event: HttpDecision) -> None:
        v = event.verdict
        if v is not None and event.outcome in ("notice", "refused"):
            key = (v.authority, v.list, v.version, event.outcome, event.transport, v.probe)
            self.http[key] += 1

    def totals(self) -> dict[Decided, int]:
        """Return a copy of every count, DNS and HTTP (their transports differ)."""
        return {**self.dns, **self.http}
