"""Prometheus metrics: events and state in, the exposition text out.

Nothing calls into metrics to record: handlers subscribed to the event bus bump plain-int
tallies, the DNS pipeline bumps `DnsCounters` for the answers that publish no event,
`BlockCounts` counts the answers lists decided (shared with the audit log), and state
(lists, trust, cache, upstreams, audit log, readiness) is read through `MetricsState` when
Prometheus scrapes. One `Collector` turns all of it into metric families.

`catalogue` names every metric and makes the README's table, `counters` holds what the DNS
pipeline counts and the block counts, `collector` builds the families at scrape time; this
module keeps the tallies the events feed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from blockd import __version__
from blockd.events import (
    DNS_TRANSPORTS,
    DnsProblem,
    EventBus,
    FeedAccepted,
    FeedRejected,
    FeedRevoked,
    FeedUnchanged,
    GuardIntervention,
    HttpDecision,
    HttpProblem,
    OperatorAction,
    PolicyActivated,
    SelfTestResult,
    TrustAccepted,
    TrustRejected,
)
from blockd.metrics.catalogue import (
    CATALOGUE,
    DNS_RESULTS,
    PROCESS_CATALOGUE,
    SYNC_OUTCOMES,
    Kind,
    Labels,
    Spec,
    metrics_table,
)
from blockd.metrics.collector import Collector
from blockd.metrics.counters import UPSTREAM_BUCKETS, BlockCounts, DnsCounters, LatencyHistogram

if TYPE_CHECKING:  # the DNS pipeline imports this module: keep its imports light
    from blockd.feeds.model import TrustPolicy
    from blockd.feeds.store import ListStatus


class Upstream(Protocol):
    """What metrics read of one upstream resolver (blockd.dns.forward.UpstreamState)."""

    @property
    def healthy(self) -> bool:
        """Whether the upstream is in use (not set aside after failures)."""
        ...

    @property
    def down(self) -> bool:
        """Whether the upstream is down (failed attempts in a row, no answer since)."""
        ...


__all__ = [
    "CATALOGUE",
    "DNS_RESULTS",
    "DNS_TRANSPORTS",
    "PROCESS_CATALOGUE",
    "SYNC_OUTCOMES",
    "UPSTREAM_BUCKETS",
    "AuditStatus",
    "BlockCounts",
    "CacheView",
    "DnsCounters",
    "FleetStatus",
    "Kind",
    "Labels",
    "LatencyHistogram",
    "Metrics",
    "MetricsState",
    "RpzStatus",
    "Spec",
    "Tally",
    "WitnessStatus",
    "WorkerStatus",
    "metrics_table",
]


class CacheView(Protocol):
    """The answer cache as metrics see it (AnswerCache is one)."""

    hits: int
    misses: int

    def __len__(self) -> int:
        """Return the number of cached answers."""
        ...


@dataclass(frozen=True)
class AuditStatus:
    """The audit log as metrics see it."""

    size: int  # entries (tree size)
    last_checkpoint: float | None  # Unix time of the last signed checkpoint
    checkpoint_interval: float  # configured longest time between checkpoints, seconds


@dataclass(frozen=True)
class WitnessStatus:
    """One configured witness as metrics see it."""

    name: str  # the witness key's name+key ID
    outcomes: Mapping[str, int]  # submissions by outcome (cosigned, error, fork...)
    cosigned_size: int | None  # tree size of the latest checkpoint it cosigned
    cosigned_time: float | None  # that cosignature's timestamp (Unix time)


@dataclass(frozen=True)
class FleetStatus:
    """This node of a fleet as metrics see it."""

    redis_up: bool
    syncer: bool
    nodes: int | None  # nodes with a recent heartbeat; None before the first survey
    divergent: int | None


@dataclass(frozen=True)
class RpzStatus:
    """The served policy zone as metrics see it."""

    transfers: Mapping[str, int]  # completed transfers by kind (RPZ_TRANSFER_KINDS)
    refused: Mapping[str, int]  # refused requests by reason
    serial: int | None  # of the zone served; None before the first build
    entries: int | None  # trigger names in it


@dataclass(frozen=True)
class WorkerStatus:
    """One worker process as metrics see it."""

    index: int
    up: bool  # answering now
    restarts: int
    generation: int | None  # of the policy it answers from; None before its first report


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class MetricsState:
    """Where metrics read state when scraped; each callable is cheap and never raises."""

    lists: Callable[[], Sequence[ListStatus]] = tuple  # every configured list
    intervals: Callable[[], Mapping[str, float]] = dict  # 'authority/list' -> sync interval
    trust: Callable[[], TrustPolicy | None] = _nothing
    cache: Callable[[], CacheView | None] = _nothing
    upstreams: Callable[[], Sequence[Upstream]] = tuple
    audit: Callable[[], AuditStatus | None] = _nothing  # None: audit is off
    ready: Callable[[], bool] = bool  # bool() is False
    http_connections: Callable[[], int] = int
    witnesses: Callable[[], Sequence[WitnessStatus]] = tuple  # configured witnesses
    workers: Callable[[], Sequence[WorkerStatus]] = tuple  # empty: one process answers
    fleet: Callable[[], FleetStatus | None] = _nothing  # None: not in a fleet
    rpz: Callable[[], RpzStatus | None] = _nothing  # None: [rpz] is off


Tally = defaultdict[Labels, int]  # label values in their Spec's order -> count


def _tally() -> Tally:
    return defaultdict(int)  # quicker to bump than a Counter


@dataclass
class _Tallies:
    """Event counts."""

    dns_problems: Tally = field(default_factory=_tally)  # kind reason transport
    http: Tally = field(default_factory=_tally)  # transport outcome
    http_problems: Tally = field(default_factory=_tally)
    syncs: Tally = field(default_factory=_tally)
    rejections: Tally = field(default_factory=_tally)
    revocations: Tally = field(default_factory=_tally)
    trust: Tally = field(default_factory=_tally)
    trust_rejections: Tally = field(default_factory=_tally)
    guards: Tally = field(default_factory=_tally)
    operator: Tally = field(default_factory=_tally)
    selftests: Tally = field(default_factory=_tally)
    selftest_failures: int = 0


class Metrics:
    """blockd's metrics, in a registry of their own."""

    def __init__(
        self,
        bus: EventBus,
        state: MetricsState | None = None,
        *,
        dns: DnsCounters | None = None,
        blocks: BlockCounts | None = None,
        clock: Callable[[], float] = time.time,
        version: str = __version__,
    ) -> None:
        """Subscribe to bus; read state, the pipeline's dns counters and blocks when scraped.

        Without blocks, count them here (blockd shares one BlockCounts with its audit log).
        """
        self.state = state or MetricsState()
        self.dns = dns or DnsCounters()
        self.blocks = blocks or BlockCounts(bus)
        self.clock = clock
        self.version = version
        self.tallies = _Tallies()
        self.policy: tuple[PolicyActivated, float] | None = None
        self.selftest: tuple[SelfTestResult, float] | None = None
        self.registry = CollectorRegistry()
        self.registry.register(Collector(self))
        ProcessCollector(namespace="blockd", registry=self.registry)
        bus.subscribe(DnsProblem, self._on_dns_problem)
        bus.subscribe(HttpDecision, self._on_http)
        bus.subscribe(HttpProblem, self._on_http_problem)
        bus.subscribe(FeedAccepted, self._on_feed_accepted)
        bus.subscribe(FeedUnchanged, self._on_feed_unchanged)
        bus.subscribe(FeedRejected, self._on_feed_rejected)
        bus.subscribe(FeedRevoked, self._on_feed_revoked)
        bus.subscribe(TrustAccepted, self._on_trust_accepted)
        bus.subscribe(TrustRejected, self._on_trust_rejected)
        bus.subscribe(GuardIntervention, self._on_guard)
        bus.subscribe(PolicyActivated, self._on_policy)
        bus.subscribe(OperatorAction, self._on_operator)
        bus.subscribe(SelfTestResult, self._on_selftest)

    def render(self) -> tuple[bytes, str]:
        """Return the exposition text and its content type, for GET /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # -- event handlers: each bumps a tally and returns -----------------------------------

    def _on_dns_problem(self, event: DnsProblem) -> None:
        # Hot under a flood of junk packets: as cheap as _on_dns.
        self.tallies.dns_problems[(event.kind, event.reason, event.transport)] += 1

    def _on_http(self, event: HttpDecision) -> None:
        self.tallies.http[(event.transport, event.outcome)] += 1

    def _on_http_problem(self, event: HttpProblem) -> None:
        self.tallies.http_problems[(event.transport, event.kind, event.reason)] += 1

    def _on_feed_accepted(self, event: FeedAccepted) -> None:
        self.tallies.syncs[(event.authority, event.list, "accepted")] += 1

    def _on_feed_unchanged(self, event: FeedUnchanged) -> None:
        self.tallies.syncs[(event.authority, event.list, "unchanged")] += 1

    def _on_feed_rejected(self, event: FeedRejected) -> None:
        self.tallies.syncs[(event.authority, event.list, "rejected")] += 1
        self.tallies.rejections[(event.authority, event.list, event.reason)] += 1

    def _on_feed_revoked(self, event: FeedRevoked) -> None:
        self.tallies.revocations[(event.authority, event.list, event.reason)] += 1

    def _on_trust_accepted(self, event: TrustAccepted) -> None:
        self.tallies.trust[("accepted",)] += 1

    def _on_trust_rejected(self, event: TrustRejected) -> None:
        self.tallies.trust[("rejected",)] += 1
        self.tallies.trust_rejections[(event.reason,)] += 1

    def _on_guard(self, event: GuardIntervention) -> None:
        self.tallies.guards[(event.authority, event.list, event.kind)] += 1
        if event.kind == "quarantine":  # a sync that verified an update and held it back
            self.tallies.syncs[(event.authority, event.list, "quarantined")] += 1

    def _on_policy(self, event: PolicyActivated) -> None:
        self.policy = (event, self.clock())

    def _on_operator(self, event: OperatorAction) -> None:
        self.tallies.operator[(event.action,)] += 1

    def _on_selftest(self, event: SelfTestResult) -> None:
        self.selftest = (event, self.clock())
        self.tallies.selftests[("passed" if event.passed else "failed",)] += 1
        self.tallies.selftest_failures += len(event.failures)
