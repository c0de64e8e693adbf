"""The readiness rule on plain facts: which checks decide, what each reports."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from blockd.health import (
    AuditFact,
    EnforcedList,
    Facts,
    TrustFact,
    UpstreamFact,
    WitnessFact,
    assess,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
HOSTS, URLS = "demo-authority/demo-hosts", "demo-authority/demo-urls"
FRESH = EnforcedList(3, NOW + timedelta(days=7))
UP = UpstreamFact("192.0.2.53:53", down=False)
DOWN = UpstreamFact("[2001:db8::53]:53", down=True, reason="timeout", down_since=1_795_000_000.0)


def facts(**over: object) -> Facts:
    base = Facts(
        now=NOW,
        configured=[HOSTS, URLS],
        enforced={HOSTS: FRESH, URLS: FRESH},
        trust=TrustFact(2, NOW + timedelta(days=300)),
        upstreams=[UP, DOWN],
        upstream_required=True,
        sync_running=True,
        audit=AuditFact(None, 42),
    )
    return replace(base, **over)  # type: ignore[arg-type]


def test_ready_with_every_list_fresh_and_one_upstream_answering() -> None:
    r = assess(facts())
    assert r.ready and r.reason == "policy loaded and current"
    checks = r.checks
    assert set(checks) == {"lists", "feed_sync", "upstreams", "trust", "audit", "witnesses"}
    assert checks["lists"]["lists"][HOSTS] == {
        "state": "fresh",
        "enforced": True,
        "version": 3,
        "expires": "2026-11-30T12:00:00Z",
    }
    ups = checks["upstreams"]
    assert ups["ok"] and ups["required"]
    assert ups["upstreams"]["192.0.2.53:53"] == {
        "healthy": True,
        "reason": None,
        "down_since": None,
    }
    assert ups["upstreams"]["[2001:db8::53]:53"]["healthy"] is False
    assert ups["upstreams"]["[2001:db8::53]:53"]["reason"] == "timeout"
    assert checks["trust"] == {
        "ok": True,
        "required": False,
        "version": 2,
        "expires": "2027-09-19T12:00:00Z",
    }
    assert checks["audit"]["writing"] and checks["audit"]["entries"] == 42
    assert checks["feed_sync"] == {"ok": True, "required": True, "running": True}


def test_no_upstream_answering_is_not_ready_and_names_each() -> None:
    r = assess(facts(upstreams=[DOWN, replace(DOWN, name="192.0.2.54:53", reason="network")]))
    assert not r.ready
    assert r.reason == (
        "no upstream resolver answers: [2001:db8::53]:53 (timeout), 192.0.2.54:53 (network)"
    )
    assert r.checks["upstreams"]["ok"] is False


def test_no_upstream_configured_is_not_ready() -> None:
    r = assess(facts(upstreams=[]))
    assert not r.ready and "no upstream resolver configured" in r.reason


def test_with_upstreams_not_required_readiness_is_about_the_lists() -> None:
    r = assess(facts(upstreams=[DOWN], upstream_required=False))
    assert r.ready
    assert r.checks["upstreams"] == {
        "ok": False,
        "required": False,
        "upstreams": {
            "[2001:db8::53]:53": {
                "healthy": False,
                "reason": "timeout",
                "down_since": "2026-11-18T11:06:40Z",
            }
        },
    }


def test_lists_decide_first_in_their_order() -> None:
    none = assess(facts(enforced={}, upstreams=[DOWN]))
    assert not none.ready and "no verified list" in none.reason
    assert none.checks["lists"]["lists"][HOSTS]["state"] == "missing"
    stale = EnforcedList(2, NOW - timedelta(seconds=1))
    expired = assess(facts(enforced={HOSTS: stale, URLS: FRESH}))
    assert not expired.ready and expired.reason == f"expired lists enforced: {HOSTS}"
    assert expired.checks["lists"]["lists"][HOSTS]["state"] == "expired"
    assert expired.checks["lists"]["ok"] is False
    missing = assess(facts(enforced={HOSTS: FRESH}))
    assert not missing.ready and missing.reason == f"lists not loaded yet: {URLS}"
    assert missing.checks["lists"]["lists"][URLS] == {
        "state": "missing",
        "enforced": False,
        "version": None,
        "expires": None,
    }


def test_a_stopped_sync_loop_is_not_ready() -> None:
    r = assess(facts(sync_running=False))
    assert not r.ready and "feed sync stopped" in r.reason
    assert r.checks["feed_sync"]["ok"] is False


def test_trust_and_audit_are_reported_but_do_not_decide() -> None:
    r = assess(
        facts(
            trust=TrustFact(2, NOW - timedelta(days=1)),
            audit=AuditFact("append failing (storage): OSError: disk full", 42),
        )
    )
    assert r.ready
    assert r.checks["trust"]["ok"] is False and r.checks["trust"]["required"] is False
    audit = r.checks["audit"]
    assert (audit["ok"], audit["writing"], audit["required"]) == (False, False, False)
    assert "disk full" in audit["problem"]
    off = assess(facts(audit=None)).checks["audit"]
    assert off["enabled"] is False


def test_witnesses_are_reported_but_never_make_blockd_unready() -> None:
    r = assess(
        facts(
            witnesses=[
                WitnessFact("w1.example", 7, None),
                WitnessFact("w2.example", None, "unreachable"),
            ]
        )
    )
    assert r.ready
    assert r.reason.endswith(
        "; witnesses: w1.example cosigned size 7; w2.example cosigned nothing yet, "
        "failing: unreachable"
    )
    assert r.checks["witnesses"]["ok"] is False and r.checks["witnesses"]["required"] is False
    assert [w["name"] for w in r.checks["witnesses"]["each"]] == ["w1.example", "w2.example"]
