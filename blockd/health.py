"""The readiness rule: whether blockd enforces a current policy, and every check behind it.

Pure: `assess` takes plain facts (what is configured and enforced, the trust policy, the
upstreams, the sync loop, the audit log, the time) and returns a `Readiness`, so the rule is
tested without sockets. The admin's `/readyz` and status page, the metrics' ready gauge and
systemd's status line all read the same answer.

A check is `required` when it decides readiness: the lists (every configured list enforced,
none expired), the feed sync loop, and (with `[admin] ready_needs_upstream`) at least one
upstream not down. The trust policy and the audit log are reported, not required: an
expired trust policy stops updates but the enforced lists stay valid until their own expiry
(which is required), and taking resolvers out of service because the audit log cannot be
written would not block one more name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

ListState = Literal["fresh", "expired", "missing"]
READY = "policy loaded and current"


@dataclass(frozen=True)
class EnforcedList:
    """A list version in force: its version and when it expires."""

    version: int
    expires: datetime


@dataclass(frozen=True)
class UpstreamFact:
    """One upstream resolver as the forwarder sees it."""

    name: str  # "address:port" from the configuration
    down: bool
    reason: str | None = None  # the latest failure, if any
    down_since: float | None = None  # Unix time


@dataclass(frozen=True)
class TrustFact:
    """The trust policy in force."""

    version: int
    expires: datetime


@dataclass(frozen=True)
class AuditFact:
    """The audit log: whether it is being written, and if not, why."""

    problem: str | None = None  # None while writing works
    entries: int = 0


@dataclass(frozen=True)
class WitnessFact:
    """One configured witness: the size it last cosigned, and its failure, if any."""

    name: str
    cosigned_size: int | None = None
    problem: str | None = None


@dataclass(frozen=True)
class WorkersFact:
    """The worker processes: how many answer, and what is wrong, if anything."""

    configured: int
    serving: int
    problem: str | None
    each: Sequence[Mapping[str, Any]] = ()  # per worker: index, state, pid, restarts, policy


@dataclass(frozen=True)
class FleetFact:
    """This node of a fleet: whether Redis answers, and what the fleet looks like."""

    node: str
    redis_up: bool
    problem: str | None = None  # why Redis is unreachable
    down_since: float | None = None  # Unix time
    syncer: bool = False
    nodes: int | None = None  # nodes with a recent heartbeat (None: not known yet)
    divergent: int | None = None  # of those, nodes enforcing other versions than the newest


@dataclass(frozen=True)
class Facts:
    """Everything readiness depends on, as plain values."""

    now: datetime
    configured: Sequence[str]  # 'authority/list' refs, in configuration order
    enforced: Mapping[str, EnforcedList]
    trust: TrustFact | None = None
    upstreams: Sequence[UpstreamFact] = ()
    upstream_required: bool = True
    sync_running: bool = True
    audit: AuditFact | None = None  # None: the audit log is off
    witnesses: Sequence[WitnessFact] = ()
    workers: WorkersFact | None = None  # None: one process answers
    fleet: FleetFact | None = None  # None: not in a fleet


@dataclass(frozen=True)
class Readiness:
    """Whether blockd enforces a current policy, why not, and the checks behind it."""

    ready: bool
    reason: str
    checks: Mapping[str, Any] = field(default_factory=dict)  # JSON-ready, by check name


def assess(f: Facts) -> Readiness:
    """Apply the readiness rule to facts."""
    checks = {
        "lists": _lists(f),
        "feed_sync": {"ok": f.sync_running, "required": True, "running": f.sync_running},
        "upstreams": _upstreams(f),
        "trust": _trust(f),
        "audit": _audit(f),
        "witnesses": _witnesses(f),
    }
    if f.workers is not None:
        w = f.workers
        checks["workers"] = {
            "ok": w.problem is None,
            "required": True,
            "configured": w.configured,
            "serving": w.serving,
            **({"problem": w.problem} if w.problem else {}),
            "workers": list(w.each),
        }
    if f.fleet is not None:
        checks["fleet"] = _fleet(f.fleet)
    reason = _reason(f)
    return Readiness(
        reason is None, reason or READY + _witness_detail(f) + _fleet_detail(f), checks
    )


def list_state(f: Facts, ref: str) -> ListState:
    """Say whether a configured list is enforced and fresh, enforced but expired, or missing."""
    enforced = f.enforced.get(ref)
    if enforced is None:
        return "missing"
    return "fresh" if f.now < enforced.expires else "expired"


def _reason(f: Facts) -> str | None:
    """Return why blockd is not ready (the first required check that fails), or None."""
    if not f.enforced:
        return "no verified list loaded yet (forwarding only)"
    expired = [ref for ref, e in f.enforced.items() if e.expires <= f.now]
    if expired:
        return f"expired lists enforced: {', '.join(expired)}"
    if not f.sync_running:
        return "feed sync stopped: lists are no longer kept current"
    if f.workers is not None and f.workers.problem is not None:
        return f"workers: {f.workers.problem}"
    missing = [ref for ref in f.configured if ref not in f.enforced]
    if missing:
        return f"lists not loaded yet: {', '.join(sorted(missing))}"
    if f.upstream_required and not any(not u.down for u in f.upstreams):
        if not f.upstreams:
            return "no upstream resolver configured: names not on a list get SERVFAIL"
        down = ", ".join(f"{u.name} ({u.reason or 'down'})" for u in f.upstreams)
        return f"no upstream resolver answers: {down}"
    return None


def _lists(f: Facts) -> dict[str, Any]:
    refs = list(dict.fromkeys([*f.configured, *f.enforced]))
    items = {}
    for ref in refs:
        e = f.enforced.get(ref)
        items[ref] = {
            "state": list_state(f, ref),
            "enforced": e is not None,
            "version": e.version if e else None,
            "expires": _iso(e.expires) if e else None,
        }
    ok = bool(f.enforced) and all(i["state"] == "fresh" for i in items.values())
    return {"ok": ok, "required": True, "lists": items}


def _upstreams(f: Facts) -> dict[str, Any]:
    items = {
        u.name: {
            "healthy": not u.down,
            "reason": u.reason if u.down else None,
            "down_since": _iso(datetime.fromtimestamp(u.down_since, UTC))
            if u.down and u.down_since is not None
            else None,
        }
        for u in f.upstreams
    }
    ok = any(not u.down for u in f.upstreams)
    return {"ok": ok, "required": f.upstream_required, "upstreams": items}


def _trust(f: Facts) -> dict[str, Any]:
    t = f.trust
    if t is None:
        return {"ok": False, "required": False, "version": None, "expires": None}
    return {
        "ok": f.now < t.expires,
        "required": False,
        "version": t.version,
        "expires": _iso(t.expires),
    }


def _audit(f: Facts) -> dict[str, Any]:
    a = f.audit
    if a is None:
        return {"ok": True, "required": False, "enabled": False, "writing": False}
    return {
        "ok": a.problem is None,
        "required": False,
        "enabled": True,
        "writing": a.problem is None,
        "problem": a.problem,
        "entries": a.entries,
    }


def _fleet(fleet: FleetFact) -> dict[str, Any]:
    """Redis never makes blockd unready: without it a node enforces what it verified."""
    since = fleet.down_since
    return {
        "ok": fleet.redis_up,
        "required": False,
        "node": fleet.node,
        "redis": "up" if fleet.redis_up else "down",
        "problem": fleet.problem,
        "down_since": _iso(datetime.fromtimestamp(since, UTC)) if since is not None else None,
        "syncer": fleet.syncer,
        "nodes": fleet.nodes,
        "divergent_nodes": fleet.divergent,
    }


def _fleet_detail(f: Facts) -> str:
    """Say when this node cannot reach the fleet's Redis, after the ready reason."""
    if f.fleet is None or f.fleet.redis_up:
        return ""
    return f"; fleet: Redis unreachable ({f.fleet.problem}), enforcing the last verified policy"


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _witnesses(f: Facts) -> dict[str, Any]:
    """Witnesses never make blockd unready: a checkpoint waits for them, queries do not."""
    return {
        "ok": all(w.problem is None for w in f.witnesses),
        "required": False,
        "each": [
            {"name": w.name, "cosigned_size": w.cosigned_size, "problem": w.problem}
            for w in f.witnesses
        ],
    }


def _witness_detail(f: Facts) -> str:
    """Say how the witnesses are doing, after the ready reason."""
    parts = []
    for w in f.witnesses:
        size = "nothing yet" if w.cosigned_size is None else f"size {w.cosigned_size}"
        parts.append(f"{w.name} cosigned {size}" + (f", failing: {w.problem}" if w.problem else ""))
    return "; witnesses: " + "; ".join(parts) if parts else ""
