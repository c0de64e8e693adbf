"""Scrape time: a Metrics' tallies and state turned into metric families.

Labels are low-cardinality by construction: authority and list ids come from the trust
policy, the rest are slugs from blockd's own code, and any other value is reported as
`other`. No query name, URL or client is ever a label.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import registry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from blockd.events import DNS_TRANSPORTS
from blockd.metrics.catalogue import (
    CATALOGUE,
    DNS_RESULTS,
    RPZ_REFUSALS,
    RPZ_TRANSFER_KINDS,
    SYNC_OUTCOMES,
    WITNESS_OUTCOMES,
    Labels,
    Spec,
)

if TYPE_CHECKING:
    from blockd.feeds.store import ListStatus
    from blockd.metrics import Metrics

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,47}")  # reasons, kinds, outcomes: never a name or IP
_IDENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # authority and list ids (the trust policy's)
_WITNESS = re.compile(r"[\x21-\x7e]{1,120}")  # a configured witness key's name+key ID


class Collector(registry.Collector):
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
        yield from self._fleet()
        yield from self._rpz()

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
        for (authority, lst, _version, action, transport, _), n in list(m.blocks.dns.items()):
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
        yield _gauge("blockd_upstreams_down", {(): sum(s.down for s in states)})

    def _http(self) -> Iterator[Metric]:
        t = self.m.tallies
        yield _counter("blockd_http_decisions_total", t.http)
        http_blocked: Counter[Labels] = Counter()
        for (authority, lst, _version, outcome, transport, _), n in list(
            self.m.blocks.http.items()
        ):
            http_blocked[(authority, lst, outcome, transport)] += n
        yield _counter("blockd_http_blocked_total", http_blocked)
        yield _counter("blockd_http_problems_total", t.http_problems)
        yield _gauge("blockd_http_connections", {(): self.m.state.http_connections()})

    def _feeds(self, lists: Sequence[ListStatus]) -> Iterator[Metric]:
        t = self.m.tallies
        refs = [_split(s.ref) for s in lists]
        yield _counter("blockd_feed_syncs_total", t.syncs, _product(refs, SYNC_OUTCOMES))
        yield _counter("blockd_feed_rejections_total", t.rejections)
        yield _counter("blockd_feed_revocations_total", t.revocations)
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
        yield from self._witnesses()
        yield from self._workers()
        t = self.m.tallies
        yield _counter("blockd_selftest_runs_total", t.selftests, [("passed",), ("failed",)])
        yield _counter("blockd_selftest_failures_total", {(): t.selftest_failures})
        if self.m.selftest is not None:
            result, at = self.m.selftest
            yield _gauge("blockd_selftest_passed", {(): int(result.passed)})
            yield _gauge("blockd_selftest_last_run_timestamp_seconds", {(): at})
            yield _gauge("blockd_selftest_checks", {(): result.checks})

    def _rpz(self) -> Iterator[Metric]:
        rpz = self.m.state.rpz()
        if rpz is None:
            return
        kinds: dict[Labels, float] = {(k,): n for k, n in rpz.transfers.items()}
        yield _counter("blockd_rpz_transfers_total", kinds, [(k,) for k in RPZ_TRANSFER_KINDS])
        reasons: dict[Labels, float] = {(r,): n for r, n in rpz.refused.items()}
        yield _counter("blockd_rpz_refused_total", reasons, [(r,) for r in RPZ_REFUSALS])
        if rpz.serial is not None:
            yield _gauge("blockd_rpz_zone_serial", {(): rpz.serial})
        if rpz.entries is not None:
            yield _gauge("blockd_rpz_zone_entries", {(): rpz.entries})

    def _workers(self) -> Iterator[Metric]:
        workers = self.m.state.workers()
        yield _gauge("blockd_workers", {(): len(workers)})
        yield _gauge("blockd_worker_up", {(str(w.index),): int(w.up) for w in workers})
        yield _counter(
            "blockd_worker_restarts_total", {(str(w.index),): w.restarts for w in workers}
        )
        generations: dict[Labels, float] = {
            (str(w.index),): w.generation for w in workers if w.generation is not None
        }
        yield _gauge("blockd_worker_policy_generation", generations)

    def _fleet(self) -> Iterator[Metric]:
        fleet = self.m.state.fleet()
        if fleet is None:
            return
        yield _gauge("blockd_fleet_redis_up", {(): int(fleet.redis_up)})
        yield _gauge("blockd_fleet_syncer", {(): int(fleet.syncer)})
        if fleet.nodes is not None:
            yield _gauge("blockd_fleet_nodes", {(): fleet.nodes})
        if fleet.divergent is not None:
            yield _gauge("blockd_fleet_divergent_nodes", {(): fleet.divergent})

    def _witnesses(self) -> Iterator[Metric]:
        statuses = self.m.state.witnesses()
        counts: dict[Labels, float] = {
            (w.name, o): float(n) for w in statuses for o, n in w.outcomes.items()
        }
        seed = _product([w.name for w in statuses], WITNESS_OUTCOMES)
        yield _counter("blockd_witness_cosignatures_total", counts, seed)
        sizes: dict[Labels, float] = {
            (w.name,): w.cosigned_size for w in statuses if w.cosigned_size is not None
        }
        yield _gauge("blockd_witness_cosigned_size", sizes)
        times: dict[Labels, float] = {
            (w.name,): w.cosigned_time for w in statuses if w.cosigned_time is not None
        }
        yield _gauge("blockd_witness_cosigned_timestamp_seconds", times)


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
    if label == "witness":  # from the configuration, never from a client
        return value if _WITNESS.fullmatch(value) else "other"
    pattern = _IDENT if label in ("authority", "list") else _SLUG
    return value if pattern.fullmatch(value) else "other"


def _split(ref: str) -> Labels:
    authority, _, lst = ref.partition("/")
    return authority, lst


def _product(firsts: Iterable[Labels | str], seconds: Sequence[str]) -> list[Labels]:
    heads = [(f,) if isinstance(f, str) else f for f in firsts]
    return [(*head, s) for head in heads for s in seconds]
