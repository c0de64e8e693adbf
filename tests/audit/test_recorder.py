"""The recorder: events become entries; block decisions become one counts entry per period."""

from __future__ import annotations

import json
from pathlib import Path

from blockd.audit.log import open_log
from blockd.audit.recorder import AuditRecorder
from blockd.events import DnsDecision, EventBus, FeedUnchanged, HttpDecision
from blockd.metrics import Metrics
from blockd.metrics.counters import BlockCounts
from blockd.policy.verdict import Verdict
from tests.audit.test_records import Clock

HOSTS = Verdict("notice", "demo-authority", "demo-hosts", 3, "0123456789abcdef0123")
URLS = Verdict("route", "demo-authority", "demo-urls", 5, "3210fedcba9876543210")


def logged(recorder: AuditRecorder, kind: str) -> list[dict[str, object]]:
    """Return the entries of one type in the recorder's log, oldest first."""
    log = recorder.log
    entries = [json.loads(data) for _, data in log.entries(0, log.head().size)]
    return [e for e in entries if e["type"] == kind]


async def test_each_period_logs_only_the_blocks_it_saw(tmp_path: Path) -> None:
    clock = Clock(7200.0 + 10)
    bus = EventBus()
    log = open_log(tmp_path / "audit", "isp.example/blockd/t", "op")
    recorder = AuditRecorder(log, bus, clock=clock, period=3600)
    for _ in range(3):
        bus.publish(DnsDecision(HOSTS, "udp"))
    bus.publish(DnsDecision(URLS, "tcp"))
    bus.publish(HttpDecision(URLS, "notice", "http"))
    bus.publish(HttpDecision(None, "pass", "http"))  # not a block: not counted
    clock.now = 3 * 3600.0 + 5  # the first period has ended
    await recorder.flush()
    bus.publish(DnsDecision(HOSTS, "udp"))
    clock.now = 4 * 3600.0 + 5
    await recorder.flush()
    clock.now = 5 * 3600.0 + 5
    await recorder.flush()  # a period without blocks logs no counts entry
    first, second = logged(recorder, "block-counts")
    assert (first["period_start"], first["period_end"]) == (
        "1970-01-01T02:00:00Z",
        "1970-01-01T03:00:00Z",
    )
    assert first["counts"] == [
        {"action": "notice", "authority": "demo-authority", "count": 3, "list": "demo-hosts",
         "transport": "udp", "version": 3},
        {"action": "notice", "authority": "demo-authority", "count": 1, "list": "demo-urls",
         "transport": "http", "version": 5},
        {"action": "route", "authority": "demo-authority", "count": 1, "list": "demo-urls",
         "transport": "tcp", "version": 5},
    ]  # fmt: skip
    assert second["period_start"] == "1970-01-01T03:00:00Z"
    assert second["counts"] == [
        {"action": "notice", "authority": "demo-authority", "count": 1, "list": "demo-hosts",
         "transport": "udp", "version": 3},
    ]  # fmt: skip


async def test_metrics_and_audit_share_one_count(tmp_path: Path) -> None:
    clock = Clock(3600.0 + 1)
    bus = EventBus()
    blocks = BlockCounts(bus)
    metrics = Metrics(bus, blocks=blocks)
    log = open_log(tmp_path / "audit", "isp.example/blockd/t", "op")
    recorder = AuditRecorder(log, bus, clock=clock, period=3600, blocks=blocks)
    bus.publish(DnsDecision(HOSTS, "udp"))
    bus.publish(FeedUnchanged("demo-authority", "demo-hosts", 3))
    await recorder.flush(close_period=True)
    bus.publish(DnsDecision(HOSTS, "udp"))
    await recorder.flush(close_period=True)
    assert blocks.dns == {("demo-authority", "demo-hosts", 3, "notice", "udp"): 2}
    text = metrics.render()[0].decode()
    expected = (
        'blockd_dns_blocked_total{action="notice",authority="demo-authority",'
        'list="demo-hosts",transport="udp"} 2.0'
    )
    assert expected in text
    assert [c["counts"][0]["count"] for c in logged(recorder, "block-counts")] == [1, 1]  # type: ignore[index]
    assert len(logged(recorder, "feed-unchanged")) == 1
