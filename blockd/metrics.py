"""Prometheus metrics: events and state in, the exposition text out.

Nothing calls into metrics to record: handlers subscribed to the event bus bump plain-int
tallies, the DNS pipeline bumps `DnsCounters` for the answers that publish no event, and
state (lists, trust, cache, upstreams, audit log, readiness) is read through `MetricsState`
when Prometheus scrapes. One Collector turns all of it into metric families.

`CATALOGUE` names every metric blockd exposes; the README's table is `metrics_table()`, so
the code and the documentation cannot drift apart. Labels are low-cardinality by
construction: authority and list ids come from the trust policy, the rest are slugs from
blockd's own code, and any other value is reported as `other`. No query name, URL or client
is ever a label.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from blockd import __version__
from blockd.events import (
    DnsDecision,
    DnsProblem,
    EventBus,
    FeedAccepted,
    FeedRejected,
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

if TYPE_CHECKING:  # the DNS pipeline imports this module: keep its imports light
    from blockd.dns.forward import UpstreamState
    from blockd.feeds.model import TrustPolicy
    from blockd.feeds.sync import ListStatus

Kind = Literal["counter", "gauge", "histogram"]
Labels = tuple[str, ...]


@dataclass(frozen=True)
class Spec:
    """One metric as users query it (counters end in _total) and as the README lists it."""

    name: str
    kind: Kind
    labels: Labels
    help: str


def _catalogue(*rows: tuple[str, Kind, str, str]) -> dict[str, Spec]:
    return {n: Spec(n, k, tuple(labels.split()), h) for n, k, labels, h in rows}


# fmt: off
CATALOGUE = _catalogue(
    ("blockd_build_info", "gauge", "version", "Always 1; the running blockd version."),
    ("blockd_ready", "gauge", "", "1 when a current policy with every configured list is "
     "enforced (the readiness check), else 0."),
    ("blockd_dns_queries_total", "counter", "transport result", "DNS queries by how they were "
     "answered: blocked, routed, forwarded, cached, refused, malformed, servfail, dropped."),
    ("blockd_dns_blocked_total", "counter", "authority list action transport",
     "DNS answers blocked by a list entry (action notice or nxdomain)."),
    ("blockd_dns_routed_total", "counter", "authority list transport",
     "DNS answers sending a host with URL-level entries to the URL proxy."),
    ("blockd_dns_dropped_total", "counter", "transport reason",
     "DNS packets dropped unanswered: malformed, oversized, overload, send buffer full."),
    ("blockd_dns_rejected_total", "counter", "transport reason", "DNS queries answered with "
     "an error: malformed (FORMERR), unsupported (NOTIMP, BADVERS), refused."),
    ("blockd_dns_cache_hits_total", "counter", "", "Answer cache lookups that found an answer."),
    ("blockd_dns_cache_misses_total", "counter", "", "Answer cache lookups that found none."),
    ("blockd_dns_cache_entries", "gauge", "", "Answers held in the cache."),
    ("blockd_upstream_query_duration_seconds", "histogram", "", "Time the upstream resolvers "
     "took to answer a forwarded query, retries and fail-over included."),
    ("blockd_upstream_errors_total", "counter", "reason", "Forwarded queries no upstream "
     "answered usably (answered SERVFAIL): timeout, network, truncated, mismatch, "
     "malformed-response."),
    ("blockd_upstreams", "gauge", "", "Upstream resolvers configured."),
    ("blockd_upstreams_healthy", "gauge", "", "Upstream resolvers not set aside after a "
     "failure."),
    ("blockd_http_decisions_total", "counter", "transport outcome", "HTTP requests and TLS "
     "connections by outcome: notice, pass, splice, refused, misdirected."),
    ("blockd_http_blocked_total", "counter", "authority list outcome transport",
     "Notice pages served (notice) and TLS connections refused (refused), by matching list."),
    ("blockd_http_problems_total", "counter", "transport kind reason", "HTTP and TLS "
     "connections rejected (client's fault), failed at the origin, or dropped (limits)."),
    ("blockd_http_connections", "gauge", "", "Client connections being served."),
    ("blockd_feed_syncs_total", "counter", "authority list outcome",
     "List syncs by outcome: accepted, unchanged, quarantined, rejected."),
    ("blockd_feed_rejections_total", "counter", "authority list reason",
     "List versions or fetches rejected, by reason (signature, fetch, expired, rollback...)."),
    ("blockd_trust_updates_total", "counter", "outcome",
     "Trust policy updates accepted or rejected."),
    ("blockd_trust_rejections_total", "counter", "reason",
     "Trust policy updates rejected, by reason."),
    ("blockd_trust_policy_version", "gauge", "", "Version of the trust policy in force."),
    ("blockd_trust_policy_expiry_timestamp_seconds", "gauge", "",
     "When the trust policy in force expires (Unix time)."),
    ("blockd_list_version", "gauge", "authority list", "Version of the list enforced."),
    ("blockd_list_entries", "gauge", "authority list", "Entries of the list version enforced."),
    ("blockd_list_issued_timestamp_seconds", "gauge", "authority list",
     "When the enforced list version was issued (Unix time)."),
    ("blockd_list_expiry_timestamp_seconds", "gauge", "authority list",
     "When the enforced list version expires (Unix time)."),
    ("blockd_list_max_age_seconds", "gauge", "authority list",
     "The authority's maximum list age from the trust policy."),
    ("blockd_list_sync_interval_seconds", "gauge", "authority list",
     "Configured time between syncs."),
    ("blockd_list_last_attempt_timestamp_seconds", "gauge", "authority list",
     "When a sync of the list last started (Unix time)."),
    ("blockd_list_last_success_timestamp_seconds", "gauge", "authority list",
     "When a sync of the list last succeeded (Unix time)."),
    ("blockd_list_sync_error", "gauge", "authority list reason",
     "1 while the list's last sync failed, with the reason; absent after a success."),
    ("blockd_list_quarantine_pending", "gauge", "authority list",
     "1 while a verified update waits for operator approval, else 0."),
    ("blockd_guard_interventions_total", "counter", "authority list kind", "Guard-rail "
     "interventions: never-block, quarantine, and operator approve, rollback, release."),
    ("blockd_policy_generation", "gauge", "", "Generation of the policy snapshot in force."),
    ("blockd_policy_entries", "gauge", "", "Entries of every list in the policy in force."),
    ("blockd_policy_activated_timestamp_seconds", "gauge", "",
     "When the policy in force was activated (Unix time)."),
    ("blockd_operator_actions_total", "counter", "action",
     "Operator actions: reload, sync, approve, rollback."),
    ("blockd_audit_log_entries", "gauge", "", "Entries in the audit log (its tree size)."),
    ("blockd_audit_last_checkpoint_timestamp_seconds", "gauge", "",
     "When the audit log's last checkpoint was signed (Unix time)."),
    ("blockd_audit_checkpoint_interval_seconds", "gauge", "",
     "Configured longest time between signed checkpoints."),
    ("blockd_selftest_passed", "gauge", "",
     "1 if the last self-test run passed, 0 if it failed; absent before the first run."),
    ("blockd_selftest_last_run_timestamp_seconds", "gauge", "",
     "When the last self-test run finished (Unix time)."),
    ("blockd_selftest_checks", "gauge", "", "Checks in the last self-test run."),
    ("blockd_selftest_runs_total", "counter", "outcome", "Self-test runs, passed or failed."),
    ("blockd_selftest_failures_total", "counter", "", "Failed self-test checks, all runs."),
)
# From prometheus_client's ProcessCollector: documented here, produced there.
PROCESS_CATALOGUE = _catalogue(
    ("blockd_process_cpu_seconds_total", "counter", "", "CPU time used, user and system."),
    ("blockd_process_resident_memory_bytes", "gauge", "", "Resident memory size."),
    ("blockd_process_virtual_memory_bytes", "gauge", "", "Virtual memory size."),
    ("blockd_process_start_time_seconds", "gauge", "", "When the process started (Unix time)."),
    ("blockd_process_open_fds", "gauge", "", "Open file descriptors."),
    ("blockd_process_max_fds", "gauge", "", "Limit on open file descriptors."),
)
DNS_RESULTS = ("blocked", "routed", "forwarded", "cached",
               "refused", "malformed", "servfail", "dropped")
# fmt: on
DNS_TRANSPORTS = ("udp", "tcp")
SYNC_OUTCOMES = ("accepted", "unchanged", "quarantined", "rejected")
# Seconds; forwarding gives up after dns.total_timeout (3 s by default).
UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,47}")  # reasons, kinds, outcomes: never a name or IP
_IDENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # authority and list ids (the trust policy's)


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


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class MetricsState:
    """Where metrics read state when scraped; each callable is cheap and never raises."""

    lists: Callable[[], Sequence[ListStatus]] = tuple  # every configured list
    intervals: Callable[[], Mapping[str, float]] = dict  # 'authority/list' -> sync interval
    trust: Callable[[], TrustPolicy | None] = _nothing
    cache: Callable[[], CacheView | None] = _nothing
    upstreams: Callable[[], Sequence[UpstreamState]] = tuple
    audit: Callable[[], AuditStatus | None] = _nothing  # None: audit is off
    ready: Callable[[], bool] = bool  # bool() is False
    http_connections: Callable[[], int] = int


Tally = defaultdict[Labels, int]  # label values in their Spec's order -> count


def _tally() -> Tally:
    return defaultdict(int)  # quicker to bump than a Counter


@dataclass
class _Tallies:
    """Event counts."""

    dns: Tally = field(default_factory=_tally)  # authority list action transport
    dns_problems: Tally = field(default_factory=_tally)  # kind reason transport
    http: Tally = field(default_factory=_tally)  # transport outcome
    http_blocked: Tally = field(default_factory=_tally)
    http_problems: Tally = field(default_factory=_tally)
    syncs: Tally = field(default_factory=_tally)
    rejections: Tally = field(default_factory=_tally)
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
        clock: Callable[[], float] = time.time,
        version: str = __version__,
    ) -> None:
        """Subscribe to bus; read state and the pipeline's dns counters when scraped."""
        self.state = state or MetricsState()
        self.dns = dns or DnsCounters()
        self.clock = clock
        self.version = version
        self.tallies = _Tallies()
        self.policy: tuple[PolicyActivated, float] | None = None
        self.selftest: tuple[SelfTestResult, float] | None = None
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        ProcessCollector(namespace="blockd", registry=self.registry)
        bus.subscribe(DnsDecision, self._on_dns)
        bus.subscribe(DnsProblem, self._on_dns_problem)
        bus.subscribe(HttpDecision, self._on_http)
        bus.subscribe(HttpProblem, self._on_http_problem)
        bus.subscribe(FeedAccepted, self._on_feed_accepted)
        bus.subscribe(FeedUnchanged, self._on_feed_unchanged)
        bus.subscribe(FeedRejected, self._on_feed_rejected)
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

    def _on_dns(self, event: DnsDecision) -> None:
        # Hot path (every blocked or routed answer, ~100k/s): one tuple, one dict bump.
        v = event.verdict
        self.tallies.dns[(v.authority, v.list, v.action, event.transport)] += 1

    def _on_dns_problem(self, event: DnsProblem) -> None:
        # Hot under a flood of junk packets: as cheap as _on_dns.
        self.tallies.dns_problems[(event.kind, event.reason, event.transport)] += 1

    def _on_http(self, event: HttpDecision) -> None:
        t = self.tallies
        t.http[(event.transport, event.outcome)] += 1
        v = event.verdict
        if v is not None and event.outcome in ("notice", "refused"):
            t.http_blocked[(v.authority, v.list, event.outcome, event.transport)] += 1

    def _on_http_problem(self, event: HttpProblem) -> None:
        self.tallies.http_problems[(event.transport, event.kind, event.reason)] += 1

    def _on_feed_accepted(self, event: FeedAccepted) -> None:
        self.tallies.syncs[(event.authority, event.list, "accepted")] += 1

    def _on_feed_unchanged(self, event: FeedUnchanged) -> None:
        self.tallies.syncs[(event.authority, event.list, "unchanged")] += 1

    def _on_feed_rejected(self, event: FeedRejected) -> None:
        self.tallies.syncs[(event.authority, event.list, "rejected")] += 1
        self.tallies.rejections[(event.authority, event.list, event.reason)] += 1

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


class _Collector(Collector):
    """Turn a Metrics' tallies and state into metric families at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Metric]:
        """Name every family (so the registry knows them without collecting)."""
        return [_family(spec) for spec in CATALOGUE.values()]

    def collect(self) -> Iterable[Metric]:
        """Yield every family."""
        lists = self.m.state.lists()  # FeedSync.status() reads each list's state file
        yield from self._runtime()
        yield from self._dns()
        yield from self._http()
        yield from self._feeds(lists)
        yield from self._lists(lists)
        yield from self._audit_and_selftest()

    def _runtime(self) -> Iterator[Metric]:
        yield _gauge("blockd_build_info", {(self.m.version,): 1})
        yield _gauge("blockd_ready", {(): int(self.m.state.ready())})
        policy = self.m.policy
        if policy is not None:
            event, at = policy
            yield _gauge("blockd_policy_generation", {(): event.generation})
            yield _gauge("blockd_policy_entries", {(): event.entries})
            yield _gauge("blockd_policy_activated_timestamp_seconds", {(): at})
        trust = self.m.state.trust()
        if trust is not None:
            yield _gauge("blockd_trust_policy_version", {(): trust.version})
            expiry = trust.expires.timestamp()
            yield _gauge("blockd_trust_policy_expiry_timestamp_seconds", {(): expiry})
        t = self.m.tallies
        yield _counter("blockd_trust_updates_total", t.trust, [("accepted",), ("rejected",)])
        yield _counter("blockd_trust_rejections_total", t.trust_rejections)
        yield _counter("blockd_operator_actions_total", t.operator)

    def _dns(self) -> Iterator[Metric]:
        m, t, counts = self.m, self.m.tallies, self.m.dns
        queries: Counter[Labels] = Counter()
        blocked: Counter[Labels] = Counter()
        routed: Counter[Labels] = Counter()
        for (authority, lst, action, transport), n in list(t.dns.items()):
            result = "routed" if action == "route" else "blocked"
            queries[(transport, result)] += n
            if action == "route":
                routed[(authority, lst, transport)] += n
            else:
                blocked[(authority, lst, action, transport)] += n
        dropped: Counter[Labels] = Counter()
        rejected: Counter[Labels] = Counter()
        upstream: Counter[Labels] = Counter()
        for (kind, reason, transport), n in list(t.dns_problems.items()):
            if kind == "upstream":
                queries[(transport, "servfail")] += n
                upstream[(reason,)] += n
            elif kind == "dropped":
                if reason != "send-buffer":  # the query was answered (and counted) already
                    queries[(transport, "dropped")] += n
                dropped[(transport, reason)] += n
            else:  # rejected (an error rcode) or refused (the access list)
                refused = kind == "refused" or reason.startswith("refused")
                queries[(transport, "refused" if refused else "malformed")] += n
                rejected[(transport, reason)] += n
        for result, by_transport in (("cached", counts.cached), ("forwarded", counts.forwarded)):
            for transport, n in list(by_transport.items()):
                queries[(transport, result)] += n
        yield _counter("blockd_dns_queries_total", queries, _product(DNS_TRANSPORTS, DNS_RESULTS))
        yield _counter("blockd_dns_blocked_total", blocked)
        yield _counter("blockd_dns_routed_total", routed)
        yield _counter("blockd_dns_dropped_total", dropped)
        yield _counter("blockd_dns_rejected_total", rejected)
        yield _counter("blockd_upstream_errors_total", upstream)
        cache = m.state.cache()
        if cache is not None:
            yield _counter("blockd_dns_cache_hits_total", {(): cache.hits})
            yield _counter("blockd_dns_cache_misses_total", {(): cache.misses})
            yield _gauge("blockd_dns_cache_entries", {(): len(cache)})
        yield HistogramMetricFamily(
            "blockd_upstream_query_duration_seconds",
            CATALOGUE["blockd_upstream_query_duration_seconds"].help,
            buckets=counts.upstream_seconds.cumulative(),
            sum_value=counts.upstream_seconds.total,
        )
        states = m.state.upstreams()
        yield _gauge("blockd_upstreams", {(): len(states)})
        yield _gauge("blockd_upstreams_healthy", {(): sum(s.healthy for s in states)})

    def _http(self) -> Iterator[Metric]:
        t = self.m.tallies
        yield _counter("blockd_http_decisions_total", t.http)
        yield _counter("blockd_http_blocked_total", t.http_blocked)
        yield _counter("blockd_http_problems_total", t.http_problems)
        yield _gauge("blockd_http_connections", {(): self.m.state.http_connections()})

    def _feeds(self, lists: Sequence[ListStatus]) -> Iterator[Metric]:
        t = self.m.tallies
        refs = [_split(s.ref) for s in lists]
        yield _counter("blockd_feed_syncs_total", t.syncs, _product(refs, SYNC_OUTCOMES))
        yield _counter("blockd_feed_rejections_total", t.rejections)
        yield _counter("blockd_guard_interventions_total", t.guards)

    def _lists(self, lists: Sequence[ListStatus]) -> Iterator[Metric]:
        names = (
            "blockd_list_version",
            "blockd_list_entries",
            "blockd_list_issued_timestamp_seconds",
            "blockd_list_expiry_timestamp_seconds",
            "blockd_list_max_age_seconds",
            "blockd_list_sync_interval_seconds",
            "blockd_list_last_attempt_timestamp_seconds",
            "blockd_list_last_success_timestamp_seconds",
            "blockd_list_quarantine_pending",
        )
        rows: dict[str, dict[Labels, float]] = {name: {} for name in names}
        errors: dict[Labels, float] = {}
        trust, intervals = self.m.state.trust(), self.m.state.intervals()
        for s in lists:
            key = _split(s.ref)
            authority = trust.authority(key[0]) if trust is not None else None
            values = (
                s.version,
                s.entries,
                s.issued_at.timestamp() if s.issued_at else None,
                s.expires.timestamp() if s.expires else None,
                authority.max_age_seconds if authority else None,
                intervals.get(s.ref),
                s.state.last_attempt,
                s.state.last_success,
                int(s.state.quarantined is not None),
            )
            for name, value in zip(names, values, strict=True):
                if value is not None:
                    rows[name][key] = value
            if s.state.last_error_reason is not None:
                errors[(*key, s.state.last_error_reason)] = 1
        for name in names:
            yield _gauge(name, rows[name])
        yield _gauge("blockd_list_sync_error", errors)

    def _audit_and_selftest(self) -> Iterator[Metric]:
        audit = self.m.state.audit()
        if audit is not None:
            yield _gauge("blockd_audit_log_entries", {(): audit.size})
            interval = audit.checkpoint_interval
            yield _gauge("blockd_audit_checkpoint_interval_seconds", {(): interval})
            if audit.last_checkpoint:
                last = audit.last_checkpoint
                yield _gauge("blockd_audit_last_checkpoint_timestamp_seconds", {(): last})
        t = self.m.tallies
        yield _counter("blockd_selftest_runs_total", t.selftests, [("passed",), ("failed",)])
        yield _counter("blockd_selftest_failures_total", {(): t.selftest_failures})
        if self.m.selftest is not None:
            result, at = self.m.selftest
            yield _gauge("blockd_selftest_passed", {(): int(result.passed)})
            yield _gauge("blockd_selftest_last_run_timestamp_seconds", {(): at})
            yield _gauge("blockd_selftest_checks", {(): result.checks})


def _family(spec: Spec) -> Metric:
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    if spec.kind == "histogram":
        return HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


def _counter(
    name: str, values: Mapping[Labels, float], seed: Iterable[Labels] = ()
) -> CounterMetricFamily:
    family = _family(CATALOGUE[name])
    assert isinstance(family, CounterMetricFamily)
    _fill(family, CATALOGUE[name].labels, values, seed)
    return family


def _gauge(name: str, values: Mapping[Labels, float]) -> GaugeMetricFamily:
    family = _family(CATALOGUE[name])
    assert isinstance(family, GaugeMetricFamily)
    _fill(family, CATALOGUE[name].labels, values, ())
    return family


def _fill(
    family: CounterMetricFamily | GaugeMetricFamily,
    labels: Labels,
    values: Mapping[Labels, float],
    seed: Iterable[Labels],
) -> None:
    """Add a sample per label set; values that could be anything but a slug become 'other'."""
    merged: dict[Labels, float] = dict.fromkeys(seed, 0.0)
    for key, value in list(values.items()):  # a copy: a scrape may run in another thread
        clean = tuple(_clean(n, v) for n, v in zip(labels, key, strict=True))
        merged[clean] = merged.get(clean, 0.0) + value
    for key, value in merged.items():
        family.add_metric(list(key), value)


def _clean(label: str, value: str) -> str:
    if label == "version":  # blockd's own
        return value
    pattern = _IDENT if label in ("authority", "list") else _SLUG
    return value if pattern.fullmatch(value) else "other"


def _split(ref: str) -> Labels:
    authority, _, lst = ref.partition("/")
    return authority, lst


def _product(firsts: Iterable[Labels | str], seconds: Sequence[str]) -> list[Labels]:
    heads = [(f,) if isinstance(f, str) else f for f in firsts]
    return [(*head, s) for head in heads for s in seconds]


def metrics_table() -> str:
    """Return the README's metrics table (markdown): name, type, labels, meaning."""
    lines = ["| Metric | Type | Labels | Meaning |", "|---|---|---|---|"]
    for spec in (*CATALOGUE.values(), *PROCESS_CATALOGUE.values()):
        labels = ", ".join(spec.labels) or "-"
        lines.append(f"| `{spec.name}` | {spec.kind} | {labels} | {spec.help} |")
    return "\n".join(lines) + "\n"
