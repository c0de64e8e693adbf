"""Every failure said once in the daemon log: the subscriber alone, then a real daemon."""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import dnslib
import pytest

from blockd import logs
from blockd.app import App
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
)
from blockd.failures import FailureLog
from tests.daemon import ask, demo_config, running
from tests.factories import key, signed_list

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

HOSTS = "demo-authority/demo-hosts"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """Send every log line, as blockd writes them (JSON), to a buffer for the test."""
    level = logging.getLogger().level
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    yield stream
    logs.unconfigure()
    logging.getLogger().setLevel(level)


def lines(out: io.StringIO, kind: str | None = None) -> list[dict[str, Any]]:
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    return [g for g in got if kind is None or g.get("kind") == kind]


def kinds(out: io.StringIO) -> list[str]:
    return [g["kind"] for g in lines(out) if "kind" in g]


def rejected(reason: str, version: int | None = 2, list_id: str = "demo-hosts") -> FeedRejected:
    return FeedRejected("demo-authority", list_id, version, None, (), reason, f"{reason} text")


# -- the subscriber on its own --------------------------------------------------------------


def test_a_list_failing_every_sync_is_said_when_it_starts_changes_and_ends(
    out: io.StringIO,
) -> None:
    bus = EventBus()
    FailureLog(bus)
    for _ in range(3):
        bus.publish(rejected("fetch", None))
    bus.publish(rejected("signature", 2))  # the source now serves something else
    bus.publish(rejected("signature", 2))
    bus.publish(rejected("signature", 3))  # another version, another document refused
    bus.publish(FeedUnchanged("demo-authority", "demo-hosts", 1))
    bus.publish(FeedUnchanged("demo-authority", "demo-hosts", 1))
    assert kinds(out) == ["feed-rejected"] * 3 + ["feed-recovered"]
    fetch, sig, sig3, back = lines(out)
    assert (fetch["level"], fetch["reason"], fetch["list"]) == ("warning", "fetch", HOSTS)
    assert (sig["level"], sig["reason"], sig["version"]) == ("error", "signature", 2)
    assert sig3["version"] == 3
    assert back["level"] == "info" and back["version"] == 1
    assert "demo-authority/demo-hosts syncs again" in back["event"]


def test_lists_are_followed_one_by_one(out: io.StringIO) -> None:
    bus = EventBus()
    FailureLog(bus)
    bus.publish(rejected("signature", 2, "demo-hosts"))
    bus.publish(rejected("signature", 2, "demo-urls"))
    bus.publish(FeedAccepted("demo-authority", "demo-urls", 2, "e" * 64, (), 5))
    bus.publish(FeedAccepted("demo-authority", "demo-hashed", 2, "e" * 64, (), 5))
    got = [(g["kind"], g["list"]) for g in lines(out)]
    assert got == [
        ("feed-rejected", HOSTS),
        ("feed-rejected", "demo-authority/demo-urls"),
        ("feed-recovered", "demo-authority/demo-urls"),
    ]


def test_an_expired_trust_policy_is_said_once_for_every_list(out: io.StringIO) -> None:
    bus = EventBus()
    FailureLog(bus)
    for list_id in ("demo-hosts", "demo-urls", "demo-hosts"):
        bus.publish(
            FeedRejected(
                "demo-authority",
                list_id,
                None,
                None,
                (),
                "trust-expired",
                "trust policy version 1 has expired",
            )
        )
    bus.publish(TrustAccepted(2, "e" * 64, ()))
    (expired, accepted) = lines(out)
    assert expired["kind"] == "trust-expired" and expired["level"] == "error"
    assert "trust policy version 1 has expired" in expired["event"]
    assert accepted["kind"] == "trust-accepted" and accepted["version"] == 2


def test_trust_refresh_failures_are_said_once_until_a_refresh_works(out: io.StringIO) -> None:
    bus = EventBus()
    FailureLog(bus)
    for _ in range(3):
        bus.publish(TrustRejected(2, "e" * 64, "signature", "2.trust.dsse: too few signatures"))
    bus.publish(TrustUpToDate(1))
    bus.publish(TrustUpToDate(1))
    bus.publish(TrustRejected(None, None, "fetch", "mirror down"))
    assert kinds(out) == ["trust-rejected", "trust-recovered", "trust-rejected"]
    assert lines(out)[0]["reason"] == "signature" and lines(out)[0]["level"] == "error"


def test_revocations_quarantines_and_upstreams_are_one_line_each(out: io.StringIO) -> None:
    bus = EventBus()
    FailureLog(bus)
    bus.publish(
        FeedRevoked("demo-authority", "demo-hosts", 3, None, None, 2, "signature", "gone", 7)
    )
    bus.publish(GuardIntervention("quarantine", "demo-authority", "demo-hosts", 4, "big", 9))
    bus.publish(GuardIntervention("never-block", "demo-authority", "demo-hosts", 4, "x", 1))
    bus.publish(UpstreamDown("192.0.2.53:53", "timeout", 3))
    bus.publish(UpstreamRecovered("192.0.2.53:53", 61.0))
    assert kinds(out) == [
        "feed-revoked",
        "feed-quarantined",
        "upstream-down",
        "upstream-recovered",
    ]
    quarantined = lines(out, "feed-quarantined")[0]
    assert "blockd approve demo-authority/demo-hosts 4" in quarantined["event"]
    down = lines(out, "upstream-down")[0]
    assert (down["upstream"], down["reason"], down["level"]) == (
        "192.0.2.53:53",
        "timeout",
        "warning",
    )


def test_audit_helper_restarts_during_a_write_failure_are_part_of_it(out: io.StringIO) -> None:
    bus = EventBus()
    FailureLog(bus)
    bus.publish(AuditHelperRestarted("died", "audit log helper process died"))
    bus.publish(AuditWriteFailed("append", "helper-died", "BrokenProcessPool", 12))
    bus.publish(AuditHelperRestarted("died", "audit log helper process died"))
    bus.publish(AuditWriteRecovered("append", 4.0))
    bus.publish(AuditHelperRestarted("starved", "audit log helper starved"))
    assert kinds(out) == [
        "audit-helper-restarted",
        "audit-write-failed",
        "audit-write-recovered",
        "audit-helper-restarted",
    ]


def test_selftest_failures_are_said_when_they_change(out: io.StringIO) -> None:
    bus = EventBus()
    FailureLog(bus)
    bus.publish(SelfTestResult(False, 2, ("probe not blocked",)))
    bus.publish(SelfTestResult(False, 2, ("probe not blocked",)))
    bus.publish(SelfTestResult(True, 2))
    bus.publish(SelfTestResult(True, 2))
    assert kinds(out) == ["selftest-failed", "selftest-recovered"]


# -- a real daemon on loopback -------------------------------------------------------------


async def readyz(app: App) -> tuple[int, dict[str, Any]]:
    host, port = app.admin.bound[0]
    async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/readyz") as r:
        return r.status, await r.json()


async def test_a_list_signed_with_a_wrong_key_is_one_line_with_the_list_and_reason(
    tmp_path: Path, upstream: Upstream, out: io.StringIO
) -> None:
    async with running(demo_config(tmp_path, upstream.addr), tmp_path) as app:
        source = tmp_path / "feeds/demo-hosts.dsse"
        shutil.copy(source, tmp_path / "good.dsse")
        now = datetime.now(UTC)
        source.write_bytes(
            signed_list(
                ["impostor.demo.test"],
                [key("impostor")],
                authority_id="demo-authority",
                list_id="demo-hosts",
                version=2,
                issued_at=now - timedelta(hours=1),
                expires=now + timedelta(days=7),
            )
        )
        for _ in range(3):  # three sync intervals' worth of the same refusal
            await app.feeds.sync_all()
        (line,) = lines(out, "feed-rejected")
        assert line["list"] == HOSTS and line["reason"] == "signature"
        assert line["level"] == "error" and len(line["payload_sha256"]) == 64
        assert line["version"] is None  # what an unverified document says is not repeated
        assert "impostor.demo.test" not in out.getvalue()  # a list entry is never logged
        assert app.feeds.snapshot.versions[HOSTS] == 1  # the version in force stays
        shutil.copy(tmp_path / "good.dsse", source)
        await app.feeds.sync_all()
        (back,) = lines(out, "feed-recovered")
        assert back["list"] == HOSTS


async def test_an_upstream_that_stops_answering_is_down_once_and_readiness_fails(
    tmp_path: Path, upstream: Upstream, out: io.StringIO
) -> None:
    async with running(demo_config(tmp_path, upstream.addr), tmp_path) as app:
        status, body = await readyz(app)
        assert status == 200 and body["checks"]["upstreams"]["ok"] is True
        name = f"{upstream.addr[0]}:{upstream.addr[1]}"
        upstream.behave(None, "silent")
        for i in range(3):
            reply = await ask(app, f"quiet{i}.example.com")
            assert reply.header.rcode == dnslib.RCODE.SERVFAIL
        (down,) = lines(out, "upstream-down")
        assert down["upstream"] == name and down["reason"] == "timeout"
        status, body = await readyz(app)
        assert status == 503 and body["ready"] is False
        assert f"no upstream resolver answers: {name} (timeout)" == body["reason"]
        check = body["checks"]["upstreams"]
        assert check["ok"] is False and check["required"] is True
        assert check["upstreams"][name]["healthy"] is False
        assert body["checks"]["lists"]["ok"] is True  # the lists are fine: only upstreams fail

        upstream.behave(None, silent=False)
        upstream.add("back.example.com", "A", "192.0.2.10")
        reply = await ask(app, "back.example.com")
        assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.10"]
        await ask(app, "again.example.com")
        (recovered,) = lines(out, "upstream-recovered")
        assert recovered["upstream"] == name
        assert len(lines(out, "upstream-down")) == 1
        status, body = await readyz(app)
        assert status == 200 and body["checks"]["upstreams"]["upstreams"][name]["healthy"]
        text = out.getvalue()
        for queried in ("quiet0.example.com", "back.example.com", "again.example.com"):
            assert queried not in text  # no queried name, answered or not, is logged


async def test_with_ready_needs_upstream_off_readiness_ignores_upstreams(
    tmp_path: Path, upstream: Upstream, out: io.StringIO
) -> None:
    text = demo_config(tmp_path, upstream.addr, admin={"ready_needs_upstream": False})
    async with running(text, tmp_path) as app:
        upstream.behave(None, "silent")
        await ask(app, "quiet.example.com")  # answered once the upstream is found down
        assert len(lines(out, "upstream-down")) == 1
        status, body = await readyz(app)
        assert status == 200 and body["ready"] is True
        check = body["checks"]["upstreams"]
        assert check["ok"] is False and check["required"] is False
