"""Say every failure once in the daemon log, and say when it is over.

One subscriber to the event bus turns failure events into log lines: list updates rejected,
quarantined or revoked by a trust change; trust updates refused and the trust policy
expired; upstream resolvers down and back; the audit log not being written, or its helper
process replaced; self-tests failing; worker processes exiting and answering again. Each
line is one structured record: a readable `event` text, a `kind` slug to search and alert
on (`feed-rejected`, `upstream-down`, ...), and the facts as keys (`list`, `reason`,
`version`, `upstream`, `detail`).

Once means once per state, not per attempt: a list that fails every sync interval is logged
when it starts failing, again only if the reason or the version changes, and once when it
syncs again. Producers that hold the state themselves (the forwarder, the audit recorder)
publish only transitions. Lines carry no client, no queried name and no list entry: events
hold none.
"""

from __future__ import annotations

import logging

from blockd.events import (
    AuditHelperRestarted,
    AuditWriteFailed,
    AuditWriteRecovered,
    EventBus,
    FeedAccepted,
    FeedRejected,
    FeedRevoked,
    FeedUnchanged,
    GuardIntervention,
    SelfTestResult,
    TrustAccepted,
    TrustRejected,
    TrustUpToDate,
    UpstreamDown,
    UpstreamRecovered,
    WorkerExited,
    WorkerRecovered,
)

log = logging.getLogger("blockd.failures")

# Reasons that say the source could not be reached, not that it sent something wrong.
UNREACHABLE = frozenset({"fetch", "deadline"})


class FailureLog:
    """Log each failure when it starts or changes, and its end; nothing per attempt."""

    def __init__(self, bus: EventBus, logger: logging.Logger = log) -> None:
        """Subscribe to the failure events (and the successes that end them) on bus."""
        self.log = logger
        # ref -> (reason, version, payload SHA-256) of the failure in progress: another
        # document refused is said again, the same one fetched again is not
        self._lists: dict[str, tuple[str, int | None, str | None]] = {}
        self._trust: tuple[str, int | None] | None = None  # a trust refresh failing
        self._trust_expired = False  # said; until a new trust policy is accepted
        self._audit_failing = False
        self._selftest: tuple[str, ...] | None = None
        bus.subscribe(FeedRejected, self._feed_rejected)
        bus.subscribe(FeedAccepted, self._feed_ok)
        bus.subscribe(FeedUnchanged, self._feed_ok)
        bus.subscribe(FeedRevoked, self._feed_revoked)
        bus.subscribe(GuardIntervention, self._guard)
        bus.subscribe(TrustRejected, self._trust_rejected)
        bus.subscribe(TrustAccepted, self._trust_accepted)
        bus.subscribe(TrustUpToDate, self._trust_current)
        bus.subscribe(UpstreamDown, self._upstream_down)
        bus.subscribe(UpstreamRecovered, self._upstream_recovered)
        bus.subscribe(AuditWriteFailed, self._audit_failed)
        bus.subscribe(AuditWriteRecovered, self._audit_recovered)
        bus.subscribe(AuditHelperRestarted, self._audit_restarted)
        bus.subscribe(SelfTestResult, self._selftest_result)
        bus.subscribe(WorkerExited, self._worker_exited)
        bus.subscribe(WorkerRecovered, self._worker_recovered)

    def _say(self, level: int, kind: str, text: str, **facts: object) -> None:
        self.log.log(level, text, extra={"kind": kind, **facts})

    # -- lists ------------------------------------------------------------------------

    def _feed_rejected(self, e: FeedRejected) -> None:
        ref = f"{e.authority}/{e.list}"
        if e.reason == "trust-expired":  # one cause for every list: said once, as trust
            self._expired(e.message)
            return
        failure = (e.reason, e.version, e.payload_sha256)
        if self._lists.get(ref) == failure:
            return
        self._lists[ref] = failure
        what = f"{ref} v{e.version}" if e.version is not None else ref
        self._say(
            logging.WARNING if e.reason in UNREACHABLE else logging.ERROR,
            "feed-rejected",
            f"list update rejected: {what}: {e.reason}: {e.message}; the version in force stays",
            list=ref,
            reason=e.reason,
            version=e.version,  # None until the signature verifies: unsigned bytes say nothing
            payload_sha256=e.payload_sha256,
            detail=e.message,
        )

    def _feed_ok(self, e: FeedAccepted | FeedUnchanged) -> None:
        ref = f"{e.authority}/{e.list}"
        failed = self._lists.pop(ref, None)
        if failed is None:
            return
        self._say(
            logging.INFO,
            "feed-recovered",
            f"list {ref} syncs again (it had failed: {failed[0]}); "
            f"version in force: {e.version if e.version is not None else 'none'}",
            list=ref,
            reason=failed[0],
            version=e.version,
        )

    def _feed_revoked(self, e: FeedRevoked) -> None:
        self._say(
            logging.ERROR,
            "feed-revoked",
            f"trust changed: {e.detail}",
            list=f"{e.authority}/{e.list}",
            reason=e.reason,
            version=e.version,
            trust_version=e.trust_version,
            entries=e.entries,
        )

    def _guard(self, e: GuardIntervention) -> None:
        if e.kind != "quarantine":  # the others are operator actions or routine drops
            return
        ref = f"{e.authority}/{e.list}"
        self._say(
            logging.WARNING,
            "feed-quarantined",
            f"list update quarantined: {ref} v{e.version}: {e.detail}; the version in force "
            f"stays until: blockd approve {ref} {e.version}",
            list=ref,
            reason="max-change",
            version=e.version,
            detail=e.detail,
        )

    # -- trust ------------------------------------------------------------------------

    def _trust_rejected(self, e: TrustRejected) -> None:
        if self._trust == (e.reason, e.version):
            return
        self._trust = (e.reason, e.version)
        what = f"v{e.version}" if e.version is not None else "update"
        self._say(
            logging.WARNING if e.reason in UNREACHABLE else logging.ERROR,
            "trust-rejected",
            f"trust update refused: {what}: {e.reason}: {e.message}; "
            "the trust policy in force stays",
            reason=e.reason,
            version=e.version,
            detail=e.message,
        )

    def _trust_accepted(self, e: TrustAccepted) -> None:
        self._trust = None
        self._trust_expired = False
        self._say(
            logging.INFO,
            "trust-accepted",
            f"trust policy v{e.version} accepted: every stored list is verified again",
            version=e.version,
        )

    def _trust_current(self, e: TrustUpToDate) -> None:
        if self._trust is None:
            return
        reason, _ = self._trust
        self._trust = None
        self._say(
            logging.INFO,
            "trust-recovered",
            f"trust updates checked again (they had failed: {reason}); v{e.version} is current",
            reason=reason,
            version=e.version,
        )

    def _expired(self, message: str) -> None:
        if self._trust_expired:
            return
        self._trust_expired = True
        self._say(
            logging.ERROR,
            "trust-expired",
            f"{message}: no list update is accepted until the regulator publishes a newer "
            "trust policy; enforced lists stay until they expire",
            reason="trust-expired",
            detail=message,
        )

    # -- upstreams --------------------------------------------------------------------

    def _upstream_down(self, e: UpstreamDown) -> None:
        self._say(
            logging.WARNING,
            "upstream-down",
            f"upstream {e.upstream} down: {e.failures} failed attempts in a row ({e.reason}); "
            "names not on a list go to the other upstreams, or get SERVFAIL",
            upstream=e.upstream,
            reason=e.reason,
            failures=e.failures,
        )

    def _upstream_recovered(self, e: UpstreamRecovered) -> None:
        self._say(
            logging.INFO,
            "upstream-recovered",
            f"upstream {e.upstream} answers again after {e.down_for:.0f} s down",
            upstream=e.upstream,
            down_for=round(e.down_for, 1),
        )

    # -- workers ----------------------------------------------------------------------

    def _worker_exited(self, e: WorkerExited) -> None:
        when = "now" if e.restart_in <= 0 else f"in {e.restart_in:g} s"
        again = f" ({e.crashes} times in a row)" if e.crashes > 1 else ""
        self._say(
            logging.ERROR,
            "worker-exited",
            f"worker {e.worker} {e.detail}{again}; the other workers keep answering; "
            f"restarting it {when}",
            worker=e.worker,
            reason=e.reason,
            crashes=e.crashes,
            restart_in=e.restart_in,
        )

    def _worker_recovered(self, e: WorkerRecovered) -> None:
        self._say(
            logging.INFO,
            "worker-recovered",
            f"worker {e.worker} answers again (restarts so far: {e.restarts})",
            worker=e.worker,
            restarts=e.restarts,
        )

    # -- audit ------------------------------------------------------------------------

    def _audit_failed(self, e: AuditWriteFailed) -> None:
        self._audit_failing = True
        self._say(
            logging.ERROR,
            "audit-write-failed",
            f"audit log {e.stage} failing ({e.reason}): {e.detail}; {e.pending} entries "
            "wait and are retried every second",
            stage=e.stage,
            reason=e.reason,
            detail=e.detail,
            pending=e.pending,
        )

    def _audit_recovered(self, e: AuditWriteRecovered) -> None:
        self._audit_failing = False
        self._say(
            logging.INFO,
            "audit-write-recovered",
            f"audit log {e.stage} works again after {e.failed_for:.0f} s; nothing was lost",
            stage=e.stage,
            failed_for=round(e.failed_for, 1),
        )

    def _audit_restarted(self, e: AuditHelperRestarted) -> None:
        if self._audit_failing and e.reason == "died":
            return  # part of the write failure already said
        self._say(logging.WARNING, "audit-helper-restarted", e.detail, reason=e.reason)

    # -- self-tests -------------------------------------------------------------------

    def _selftest_result(self, e: SelfTestResult) -> None:
        if e.passed:
            if self._selftest is not None:
                self._selftest = None
                self._say(logging.INFO, "selftest-recovered", "self-test passes again")
            return
        if self._selftest == e.failures:
            return
        self._selftest = e.failures
        self._say(
            logging.ERROR,
            "selftest-failed",
            f"self-test FAILED: {'; '.join(e.failures)}",
            checks=e.checks,
            failures=len(e.failures),
        )
