"""Metrics as Prometheus scrapes them: events on a real bus in, the exposition text parsed."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from blockd.dns.cache import AnswerCache
from blockd.dns.forward import UpstreamState
from blockd.events import (
    DNS_TRANSPORTS,
    DnsDecision,
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
from blockd.feeds.store import ListState
from blockd.feeds.sync import FeedSync, ListStatus
from blockd.metrics import (
    CATALOGUE,
    DNS_RESULTS,
    PROCESS_CATALOGUE,
    AuditStatus,
    FleetStatus,
    Metrics,
    MetricsState,
    RpzStatus,
    WitnessStatus,
    WorkerStatus,
    metrics_table,
)
from blockd.policy.verdict import Action, Verdict
from tests.factories import NOW, authority, config, signed_list, signed_trust, trust

METRICS_MD = Path(__file__).parent.parent / "deploy" / "METRICS.md"
T = 1_800_000_000.0  # the metrics' clock (a real Prometheus gets the time of day instead)
ISSUED = datetime.fromtimestamp(T - 3600, UTC)
EXPIRES = ISSUED + timedelta(days=7)
CLIENT = "198.51.100.23"  # a client address: must never reach a label
UPSTREAM = ("192.0.2.53", 53)
BLOCKED_NAME = "blocked.example"

Sample = tuple[str, frozenset[tuple[str, str]]]


def verdict(action: Action = "notice", lst: str = "hosts", version: int = 42) -> Verdict:
    """Return a verdict of authority iwf."""
    return Verdict(action, "iwf", lst, version, "00aa11bb22cc33dd44ee")


def state(now: float = T) -> MetricsState:
    """Return state for two lists (one loaded, one failing with an update held back)."""
    issued = datetime.fromtimestamp(now - 3600, UTC)
    cache = AnswerCache(100)
    cache.hits, cache.misses = 9, 3
    lists = [
        ListStatus(
            "iwf/hosts",
            42,
            1234,
            issued,
            issued + timedelta(days=7),
            ListState(active=42, last_attempt=now - 60, last_success=now - 60),
        ),
        ListStatus(
            "iwf/urls",
            None,
            0,
            None,
            None,
            ListState(quarantined=7, last_attempt=now - 30, last_error_reason="signature"),
        ),
    ]
    policy = trust(
        [authority("iwf", lists=("hosts", "urls"), max_age_seconds=86400)],
        expires=datetime.fromtimestamp(now, UTC) + timedelta(days=365),
    )
    return MetricsState(
        lists=lambda: lists,
        intervals=lambda: {"iwf/hosts": 3600.0, "iwf/urls": 900.0},
        trust=lambda: policy,
        cache=lambda: cache,
        upstreams=lambda: [
            UpstreamState(UPSTREAM),
            UpstreamState(("192.0.2.54", 53), False, failures=3, down=True),
        ],
        audit=lambda: AuditStatus(17, now - 100, 300.0),
        ready=lambda: True,
        http_connections=lambda: 4,
        witnesses=lambda: [
            WitnessStatus("regulator.example/w+0a1b2c3d", {"cosigned": 3}, 17, now - 90),
            WitnessStatus("other.example/w+01020304", {"error": 2}, None, None),
        ],
        workers=lambda: [WorkerStatus(1, True, 0, 7), WorkerStatus(2, False, 3, None)],
        fleet=lambda: FleetStatus(redis_up=False, syncer=True, nodes=3, divergent=1),
        rpz=lambda: RpzStatus({"axfr": 2, "ixfr": 5}, {"tsig": 1}, 17, 1234),
    )


def populated(bus: EventBus | None = None, now: float = T) -> Metrics:
    """Return Metrics that know every kind of state and have seen one of every event."""
    bus = bus or EventBus()
    metrics = Metrics(bus, state(now), clock=lambda: now, version="1.2.3")
    for event in (
        *[DnsDecision(verdict(), "udp")] * 3,
        DnsDecision(verdict("nxdomain"), "tcp"),
        *[DnsDecision(verdict("route", "urls", 7), "udp")] * 2,
        DnsProblem("dropped", "short", "udp"),
        DnsProblem("dropped", "send-buffer", "udp"),
        DnsProblem("rejected", "formerr-label", "udp"),
        DnsProblem("rejected", "refused-xfr", "tcp"),
        DnsProblem("refused", "access-list", "udp"),
        *[DnsProblem("upstream", "timeout", "udp")] * 2,
        HttpDecision(verdict("notice", "urls", 7), "notice", "http"),
        HttpDecision(None, "pass", "http"),
        HttpDecision(None, "splice", "https"),
        HttpDecision(verdict("notice", "urls", 7), "refused", "https"),
        HttpDecision(None, "misdirected", "http"),
        HttpProblem("rejected", "bad-host", "http"),
        HttpProblem("origin", "connect-failed", "https"),
        HttpProblem("dropped", "connections", "http"),
        FeedAccepted("iwf", "hosts", 42, "ab" * 32, ("k1",), 1234),
        FeedUnchanged("iwf", "hosts", 42),
        FeedRejected("iwf", "urls", 8, None, (), "signature", "bad signature"),
        FeedRevoked("iwf", "urls", 7, "ab" * 32, "cd" * 32, 3, "signature", "key rotated out", 5),
        GuardIntervention("quarantine", "iwf", "urls", 7, "update adds 90%", 900),
        GuardIntervention("never-block", "iwf", "hosts", 42, "2 entries touch never-block", 2),
        TrustAccepted(2, "cd" * 32, ("r1",)),
        TrustRejected(None, None, "fetch", "connection refused"),
        PolicyActivated(3, {"iwf/hosts": 42}, 1234),
        OperatorAction("reload", "/etc/blockd/blockd.toml"),
        SelfTestResult(False, 3, (f"{BLOCKED_NAME}: DNS answer not blocked",)),
    ):
        bus.publish(event)
    metrics.dns.cached["udp"] += 5
    metrics.dns.forwarded["udp"] += 7
    metrics.dns.forwarded["tcp"] += 1
    for seconds in (0.004, 0.02, 0.3):
        metrics.dns.upstream_seconds.observe(seconds)
    return metrics


def scrape(metrics: Metrics) -> dict[Sample, float]:
    """Render and parse the exposition, as Prometheus would: sample -> value."""
    body, _ = metrics.render()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    """Return one sample's value."""
    return samples[(name, frozenset(labels.items()))]


def names(samples: Iterable[Sample]) -> set[str]:
    """Return the metric names of samples."""
    return {name for name, _ in samples}


def test_blocked_answers_count_by_list_action_and_transport_never_by_version() -> None:
    s = scrape(populated())
    blocked = "blockd_dns_blocked_total"
    assert value(s, blocked, authority="iwf", list="hosts", action="notice", transport="udp") == 3
    assert value(s, blocked, authority="iwf", list="hosts", action="nxdomain", transport="tcp") == 1
    assert value(s, "blockd_dns_routed_total", authority="iwf", list="urls", transport="udp") == 2
    assert value(s, "blockd_list_version", authority="iwf", list="hosts") == 42
    assert all("version" not in dict(labels) for name, labels in s if name != "blockd_build_info")


def test_every_query_counts_once_under_how_it_was_answered() -> None:
    s = scrape(populated())

    def queries(transport: str, result: str) -> float:
        return value(s, "blockd_dns_queries_total", transport=transport, result=result)

    assert queries("udp", "blocked") == 3 and queries("tcp", "blocked") == 1
    assert queries("udp", "routed") == 2
    assert queries("udp", "cached") == 5
    assert (queries("udp", "forwarded"), queries("tcp", "forwarded")) == (7, 1)
    assert queries("udp", "servfail") == 2
    assert queries("udp", "malformed") == 1
    assert (queries("udp", "refused"), queries("tcp", "refused")) == (1, 1)  # ACL, zone transfer
    assert queries("udp", "dropped") == 1  # a send-buffer drop was answered (and counted) first
    assert queries("tcp", "cached") == 0  # every result is there from the start
    assert value(s, "blockd_dns_dropped_total", transport="udp", reason="send-buffer") == 1
    assert value(s, "blockd_dns_rejected_total", transport="udp", reason="formerr-label") == 1
    assert value(s, "blockd_upstream_errors_total", reason="timeout") == 2


def test_upstream_latency_is_a_histogram_in_seconds() -> None:
    s = scrape(populated())
    name = "blockd_upstream_query_duration_seconds"
    assert value(s, f"{name}_bucket", le="0.005") == 1
    assert value(s, f"{name}_bucket", le="0.025") == 2
    assert value(s, f"{name}_bucket", le="0.25") == 2
    assert value(s, f"{name}_bucket", le="+Inf") == 3
    assert value(s, f"{name}_count") == 3
    assert abs(value(s, f"{name}_sum") - 0.324) < 1e-9
    assert value(s, "blockd_upstreams") == 2 and value(s, "blockd_upstreams_healthy") == 1
    assert value(s, "blockd_upstreams_down") == 1


def test_cache_http_and_connections() -> None:
    s = scrape(populated())
    assert value(s, "blockd_dns_cache_hits_total") == 9
    assert value(s, "blockd_dns_cache_misses_total") == 3
    assert value(s, "blockd_dns_cache_entries") == 0
    decisions = "blockd_http_decisions_total"
    for transport, outcome in [
        ("http", "notice"),
        ("http", "pass"),
        ("https", "splice"),
        ("https", "refused"),
        ("http", "misdirected"),
    ]:
        assert value(s, decisions, transport=transport, outcome=outcome) == 1
    http_blocked = "blockd_http_blocked_total"
    for transport, outcome in [("http", "notice"), ("https", "refused")]:
        labels = dict(authority="iwf", list="urls", outcome=outcome, transport=transport)
        assert value(s, http_blocked, **labels) == 1
    problems = "blockd_http_problems_total"
    assert value(s, problems, transport="https", kind="origin", reason="connect-failed") == 1
    assert value(s, "blockd_http_connections") == 4


def test_feed_syncs_start_at_zero_for_every_configured_list() -> None:
    s = scrape(Metrics(EventBus(), state()))
    for lst in ("hosts", "urls"):
        for outcome in ("accepted", "unchanged", "quarantined", "rejected"):
            labels = dict(authority="iwf", list=lst, outcome=outcome)
            assert value(s, "blockd_feed_syncs_total", **labels) == 0


def test_feed_trust_guard_and_operator_events() -> None:
    s = scrape(populated())
    syncs = "blockd_feed_syncs_total"
    assert value(s, syncs, authority="iwf", list="hosts", outcome="accepted") == 1
    assert value(s, syncs, authority="iwf", list="hosts", outcome="unchanged") == 1
    assert value(s, syncs, authority="iwf", list="urls", outcome="rejected") == 1
    assert value(s, syncs, authority="iwf", list="urls", outcome="quarantined") == 1
    rejections = "blockd_feed_rejections_total"
    assert value(s, rejections, authority="iwf", list="urls", reason="signature") == 1
    guards = "blockd_guard_interventions_total"
    assert value(s, guards, authority="iwf", list="urls", kind="quarantine") == 1
    assert value(s, guards, authority="iwf", list="hosts", kind="never-block") == 1
    assert value(s, "blockd_trust_updates_total", outcome="accepted") == 1
    assert value(s, "blockd_trust_rejections_total", reason="fetch") == 1
    assert value(s, "blockd_operator_actions_total", action="reload") == 1
    assert value(s, "blockd_trust_policy_version") == 1
    assert value(s, "blockd_trust_policy_expiry_timestamp_seconds") == T + 365 * 86400


def test_list_state_freshness_and_expiry() -> None:
    s = scrape(populated())

    def hosts(name: str) -> float:
        return value(s, f"blockd_list_{name}", authority="iwf", list="hosts")

    assert hosts("entries") == 1234
    assert hosts("issued_timestamp_seconds") == ISSUED.timestamp()
    assert hosts("expiry_timestamp_seconds") == EXPIRES.timestamp()
    assert hosts("max_age_seconds") == 86400
    assert hosts("sync_interval_seconds") == 3600
    assert hosts("last_success_timestamp_seconds") == T - 60
    assert hosts("quarantine_pending") == 0
    urls = dict(authority="iwf", list="urls")
    assert value(s, "blockd_list_quarantine_pending", **urls) == 1
    assert value(s, "blockd_list_last_attempt_timestamp_seconds", **urls) == T - 30
    assert value(s, "blockd_list_sync_error", **urls, reason="signature") == 1
    assert ("blockd_list_version", frozenset(urls.items())) not in s  # nothing enforced
    assert ("blockd_list_last_success_timestamp_seconds", frozenset(urls.items())) not in s
    assert not any(n == "blockd_list_sync_error" and ("list", "hosts") in ls for n, ls in s)


def test_policy_audit_selftest_build_and_readiness() -> None:
    s = scrape(populated())
    assert value(s, "blockd_policy_activated_timestamp_seconds") == T
    assert value(s, "blockd_policy_generation") == 3
    assert value(s, "blockd_policy_entries") == 1234
    assert value(s, "blockd_audit_log_entries") == 17
    assert value(s, "blockd_audit_last_checkpoint_timestamp_seconds") == T - 100
    assert value(s, "blockd_audit_checkpoint_interval_seconds") == 300
    assert value(s, "blockd_selftest_passed") == 0
    assert value(s, "blockd_selftest_last_run_timestamp_seconds") == T
    assert value(s, "blockd_selftest_checks") == 3
    assert value(s, "blockd_selftest_runs_total", outcome="failed") == 1
    assert value(s, "blockd_selftest_runs_total", outcome="passed") == 0
    assert value(s, "blockd_selftest_failures_total") == 1
    assert value(s, "blockd_build_info", version="1.2.3") == 1
    assert value(s, "blockd_ready") == 1


def test_nothing_is_claimed_before_it_is_known() -> None:
    s = scrape(Metrics(EventBus()))
    assert value(s, "blockd_ready") == 0
    for absent in (
        "blockd_selftest_passed",
        "blockd_policy_activated_timestamp_seconds",
        "blockd_audit_log_entries",
        "blockd_dns_cache_entries",
        "blockd_trust_policy_version",
    ):
        assert absent not in names(s)


def test_labels_never_carry_a_name_url_or_client() -> None:
    bus = EventBus()
    metrics = populated(bus)
    # A producer that slips free text into a slug gets 'other', not a new series per value.
    bus.publish(DnsProblem("dropped", f"from {CLIENT}", "udp"))
    bus.publish(HttpProblem("origin", f"http://{BLOCKED_NAME}/x", "http"))
    bus.publish(HttpProblem("origin", "2001:db8::1", "http"))
    s = scrape(metrics)
    assert value(s, "blockd_dns_dropped_total", transport="udp", reason="other") == 1
    assert value(s, "blockd_http_problems_total", transport="http", kind="origin", reason="other")
    allowed = {"authority", "list", "action", "outcome", "transport", "reason", "kind"}
    allowed |= {"result", "version", "le", "witness", "worker"}  # a key name+ID; 1..N
    for name, labels in s:
        assert {label for label, _ in labels} <= allowed, name
        for label, text in labels:
            assert CLIENT not in text and BLOCKED_NAME not in text and UPSTREAM[0] not in text
            if label not in ("authority", "list", "version", "le", "witness"):
                assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", text), (name, label, text)


def test_names_use_the_prefix_and_base_units() -> None:
    s = scrape(populated())
    for name in names(s):
        assert name.startswith("blockd_"), name
        assert not re.search(r"_(ms|milliseconds|minutes|hours|days|kb|kilobytes)(_|$)", name)
    for spec in CATALOGUE.values():
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name


def test_each_metrics_has_its_own_registry() -> None:
    before = {m.name for m in REGISTRY.collect()}
    first, second = populated(), Metrics(EventBus())
    assert scrape(first) != scrape(second)
    assert {m.name for m in REGISTRY.collect()} == before
    body, content_type = second.render()
    assert content_type.startswith("text/plain") and body.startswith(b"# HELP")


def test_every_catalogued_metric_is_exposed_and_nothing_else() -> None:
    exposed = names(scrape(populated()))
    documented = set(CATALOGUE) | set(PROCESS_CATALOGUE)
    queried = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exposed}
    assert queried == documented


def test_workers_show_liveness_restarts_and_policy_each() -> None:
    s = scrape(populated())
    assert value(s, "blockd_workers") == 2
    assert value(s, "blockd_worker_up", worker="1") == 1
    assert value(s, "blockd_worker_up", worker="2") == 0
    assert value(s, "blockd_worker_restarts_total", worker="2") == 3
    assert value(s, "blockd_worker_policy_generation", worker="1") == 7
    assert ("blockd_worker_policy_generation", frozenset({("worker", "2")})) not in s


def test_fleet_says_redis_syncer_size_and_divergence_and_nothing_outside_a_fleet() -> None:
    s = scrape(populated())
    assert value(s, "blockd_fleet_redis_up") == 0
    assert value(s, "blockd_fleet_syncer") == 1
    assert value(s, "blockd_fleet_nodes") == 3
    assert value(s, "blockd_fleet_divergent_nodes") == 1
    alone = scrape(Metrics(EventBus()))
    assert not {n for n in names(alone) if n.startswith("blockd_fleet_")}


def test_the_served_zone_shows_transfers_refusals_serial_and_entries() -> None:
    s = scrape(populated())
    assert value(s, "blockd_rpz_transfers_total", kind="axfr") == 2
    assert value(s, "blockd_rpz_transfers_total", kind="ixfr") == 5
    assert value(s, "blockd_rpz_transfers_total", kind="ixfr-axfr") == 0
    assert value(s, "blockd_rpz_refused_total", reason="tsig") == 1
    assert value(s, "blockd_rpz_refused_total", reason="not-client") == 0
    assert value(s, "blockd_rpz_zone_serial") == 17
    assert value(s, "blockd_rpz_zone_entries") == 1234


def test_no_zone_metrics_while_rpz_is_off() -> None:
    off = Metrics(EventBus(), MetricsState())
    assert not any(n.startswith("blockd_rpz_") for n in names(scrape(off)))


def test_metrics_md_is_the_catalogue() -> None:
    text = METRICS_MD.read_text()
    assert metrics_table() in text, "regenerate deploy/METRICS.md from blockd.metrics"
    readme = (METRICS_MD.parent.parent / "README.md").read_text()
    assert metrics_table() in readme, "the README's metrics table differs from blockd.metrics"
    exposed = names(scrape(populated()))
    for name in exposed:
        family = re.sub(r"_(bucket|count|sum)$", "", name)
        assert f"`{family}`" in text, name


async def test_a_real_sync_shows_in_list_metrics(tmp_path: Path) -> None:
    (tmp_path / "trust.dsse").write_bytes(signed_trust())
    source = tmp_path / "hosts.dsse"
    source.write_bytes(signed_list(["a.example", "b.example"], version=2))
    cfg = config(tmp_path, [{"authority": "auth", "list": "hosts", "source": source.as_uri()}])
    bus = EventBus()
    sync = FeedSync(cfg, bus, clock=lambda: NOW)
    metrics = Metrics(
        bus,
        MetricsState(
            lists=sync.status,
            intervals=lambda: {c.ref: c.interval for c in cfg.lists},
            trust=lambda: sync.trust,
        ),
    )
    sync.load()
    assert await sync.sync_list(cfg.lists[0]) == "accepted"
    source.write_bytes(signed_list(["a.example"], version=1))
    assert await sync.sync_list(cfg.lists[0]) == "rejected"
    await sync.close()
    s = scrape(metrics)
    hosts = dict(authority="auth", list="hosts")
    assert value(s, "blockd_list_version", **hosts) == 2
    assert value(s, "blockd_list_entries", **hosts) == 2
    assert value(s, "blockd_list_sync_interval_seconds", **hosts) == 3600
    assert value(s, "blockd_list_sync_error", **hosts, reason="rollback") == 1
    assert value(s, "blockd_feed_syncs_total", **hosts, outcome="accepted") == 1
    assert value(s, "blockd_feed_rejections_total", **hosts, reason="rollback") == 1
    assert value(s, "blockd_policy_entries") == 2


def test_every_dns_transport_has_every_result_from_the_start() -> None:
    # A listener whose transport is in events.DnsTransport cannot vanish from the metrics.
    s = scrape(Metrics(EventBus()))
    for transport in DNS_TRANSPORTS:
        for result in DNS_RESULTS:
            assert value(s, "blockd_dns_queries_total", transport=transport, result=result) == 0


def test_witness_metrics_name_each_witness_and_every_outcome() -> None:
    s = scrape(populated())
    w = "regulator.example/w+0a1b2c3d"
    assert value(s, "blockd_witness_cosignatures_total", witness=w, outcome="cosigned") == 3
    assert value(s, "blockd_witness_cosignatures_total", witness=w, outcome="fork") == 0
    assert value(s, "blockd_witness_cosigned_size", witness=w) == 17
    sizes = [dict(labels) for name, labels in s if name == "blockd_witness_cosigned_size"]
    assert sizes == [{"witness": w}]  # none yet from the other witness
