"""The metrics blockd exposes: a Spec for each, and the README's table made from them.

`CATALOGUE` names every metric blockd exposes; the README's table is `metrics_table()`, so
the code and the documentation cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    ("blockd_ready", "gauge", "", "1 when /readyz would answer 200 (every configured list "
     "enforced and current, the sync running, an upstream answering unless "
     "ready_needs_upstream is off), else 0."),
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
    ("blockd_upstreams_down", "gauge", "", "Upstream resolvers down: 3 failed attempts in a "
     "row and no answer since (the log and readiness use the same rule)."),
    ("blockd_workers", "gauge", "", "Worker processes configured (daemon.workers); 0 when "
     "one process answers."),
    ("blockd_worker_up", "gauge", "worker", "1 while the worker answers, 0 while it is "
     "restarting or waiting to (after repeated crashes)."),
    ("blockd_worker_restarts_total", "counter", "worker", "Times the worker was restarted "
     "after it exited, was killed, or stopped reporting."),
    ("blockd_worker_policy_generation", "gauge", "worker", "Generation of the policy snapshot "
     "the worker answers from (compare blockd_policy_generation)."),
    ("blockd_fleet_redis_up", "gauge", "", "In a fleet: 1 while this node reaches the "
     "fleet's Redis, 0 while it does not (it keeps enforcing its last verified policy and "
     "retries). Absent outside a fleet."),
    ("blockd_fleet_syncer", "gauge", "", "In a fleet: 1 on the node holding the syncer lease "
     "(the one that fetches from the authorities), else 0. Exactly one node should say 1."),
    ("blockd_fleet_nodes", "gauge", "", "In a fleet: nodes whose heartbeat is recent (within "
     "three of their heartbeats), as this node last read them from Redis."),
    ("blockd_fleet_divergent_nodes", "gauge", "", "In a fleet: of those nodes, how many "
     "enforce another version than the newest published of some list (alert when above 0 "
     "for longer than a sync takes)."),
    ("blockd_http_decisions_total", "counter", "transport outcome", "HTTP requests and TLS "
     "connections by outcome: notice, pass, splice, refused, misdirected."),
    ("blockd_http_blocked_total", "counter", "authority list outcome transport",
     "Notice pages served (notice) and TLS connections refused (refused), by matching list."),
    ("blockd_http_problems_total", "counter", "transport kind reason", "HTTP and TLS "
     "connections rejected (client's fault, reason such as bad-target, body-not-allowed, "
     "too-many-chunks, slow-client), failed at the origin (timeout, closed, loop, "
     "forbidden-address, connect-failed), or dropped (limits: connections, "
     "client-connections, write-timeout)."),
    ("blockd_http_connections", "gauge", "", "Client connections being served."),
    ("blockd_feed_syncs_total", "counter", "authority list outcome",
     "List syncs by outcome: accepted, unchanged, quarantined, rejected."),
    ("blockd_feed_rejections_total", "counter", "authority list reason",
     "List versions or fetches rejected, by reason (signature, fetch, expired, rollback...)."),
    ("blockd_feed_revocations_total", "counter", "authority list reason",
     "Accepted list versions dropped because they no longer verify under a new trust policy "
     "(alert: the list is not enforced until its authority re-signs it)."),
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
    ("blockd_witness_cosignatures_total", "counter", "witness outcome", "Checkpoint "
     "submissions to each configured witness (name+key ID) by outcome: cosigned, conflict "
     "(resent from the witness's size), fork or inconsistent (the witness refused: another "
     "history), refused, invalid (no valid cosignature), error (unreachable, 5xx)."),
    ("blockd_witness_cosigned_size", "gauge", "witness",
     "Tree size of the latest checkpoint the witness cosigned (compare blockd_audit_log_entries)."),
    ("blockd_witness_cosigned_timestamp_seconds", "gauge", "witness",
     "When the witness made its latest cosignature (its timestamp, Unix time)."),
    ("blockd_rpz_transfers_total", "counter", "kind", "Transfers of the served policy zone "
     "([rpz]) completed, by kind: axfr, ixfr, ixfr-axfr (an IXFR answered with the whole "
     "zone), ixfr-current (an IXFR from a secondary already current: the SOA alone, not "
     "audited)."),
    ("blockd_rpz_refused_total", "counter", "reason", "Requests to the policy zone's listener "
     "refused: not-client (not in rpz.clients), unsigned (no TSIG), tsig (bad key, "
     "signature or time), malformed."),
    ("blockd_rpz_zone_serial", "gauge", "", "SOA serial of the policy zone served; absent "
     "before the first zone is built."),
    ("blockd_rpz_zone_entries", "gauge", "", "Trigger names in the policy zone served (a "
     "name with its subdomains counts once)."),
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
SYNC_OUTCOMES = ("accepted", "unchanged", "quarantined", "rejected")
RPZ_TRANSFER_KINDS = ("axfr", "ixfr", "ixfr-axfr", "ixfr-current")
RPZ_REFUSALS = ("not-client", "unsigned", "tsig", "malformed")
# Outcomes of one submission to a witness (blockd.audit.witnessing).
WITNESS_OUTCOMES = ("cosigned", "conflict", "fork", "inconsistent", "refused", "invalid", "error")


def metrics_table() -> str:
    """Return the README's metrics table (markdown): name, type, labels, meaning."""
    lines = ["| Metric | Type | Labels | Meaning |", "|---|---|---|---|"]
    for spec in (*CATALOGUE.values(), *PROCESS_CATALOGUE.values()):
        labels = ", ".join(spec.labels) or "-"
        lines.append(f"| `{spec.name}` | {spec.kind} | {labels} | {spec.help} |")
    return "\n".join(lines) + "\n"
