"""The recorder: events become entries; block decisions become one counts entry per period."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockd import __version__
from blockd.audit.canonical import canonical
from blockd.audit.entries import (
    BY_TYPE,
    SHAPES,
    Entry,
    Queued,
    encode,
    entries_of,
    entry_of,
    shape_of,
    utc,
    values_of,
)
from blockd.audit.log import Head, open_log
from blockd.audit.recorder import AuditRecorder
from blockd.audit.writer import LogWriter
from blockd.events import (
    AuditWriteFailed,
    AuditWriteRecovered,
    DnsDecision,
    Event,
    EventBus,
    FeedAccepted,
    FeedRejected,
    FeedUnchanged,
    GuardIntervention,
    HttpDecision,
    OperatorAction,
    PolicyActivated,
    SelfTestResult,
    TrustAccepted,
    TrustRejected,
)
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
    bus.publish(DnsDecision(replace(HOSTS, probe=True), "udp"))  # a self-test probe
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
    assert first["period_seconds"] == 3600
    assert first["counts"] == [
        {"action": "notice", "authority": "demo-authority", "count": 3, "list": "demo-hosts",
         "selftest": False, "transport": "udp", "version": 3},
        {"action": "notice", "authority": "demo-authority", "count": 1, "list": "demo-hosts",
         "selftest": True, "transport": "udp", "version": 3},
        {"action": "notice", "authority": "demo-authority", "count": 1, "list": "demo-urls",
         "selftest": False, "transport": "http", "version": 5},
        {"action": "route", "authority": "demo-authority", "count": 1, "list": "demo-urls",
         "selftest": False, "transport": "tcp", "version": 5},
    ]  # fmt: skip
    assert second["period_start"] == "1970-01-01T03:00:00Z"
    assert second["counts"] == [
        {"action": "notice", "authority": "demo-authority", "count": 1, "list": "demo-hosts",
         "selftest": False, "transport": "udp", "version": 3},
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
    assert blocks.dns == {("demo-authority", "demo-hosts", 3, "notice", "udp", False): 2}
    text = metrics.render()[0].decode()
    expected = (
        'blockd_dns_blocked_total{action="notice",authority="demo-authority",'
        'list="demo-hosts",transport="udp"} 2.0'
    )
    assert expected in text
    assert [c["counts"][0]["count"] for c in logged(recorder, "block-counts")] == [1, 1]  # type: ignore[index]
    assert len(logged(recorder, "feed-unchanged")) == 1


AUDITED_EVENTS: list[Event] = [
    FeedAccepted("a", "hosts", 3, "ab" * 32, ("k1", "k2"), 10, {"wildcard": 2, "ip": 1}),
    FeedRejected("a", "hosts", None, None, (), "signature", "bad signature"),
    FeedUnchanged("a", "hosts", 3),
    TrustAccepted(2, "cd" * 32, ("root",)),
    TrustRejected(None, None, "expired", "too old"),
    GuardIntervention("never-block", "a", "hosts", 3, "example.com", 1),
    PolicyActivated(7, {"a/urls": 5, "a/hosts": 3}, 12),
    OperatorAction("reload", "config", "ef" * 32),
    SelfTestResult(False, 4, ("probe failed",)),
]


@pytest.mark.parametrize("helper", [False, True], ids=["thread", "helper"])
async def test_events_become_the_entries_they_describe_in_order(
    tmp_path: Path, helper: bool
) -> None:
    # The event loop queues (kind, time, field values); entries are made where they are
    # written, and must be what entry_of gives for the event at the time it was published.
    clock = Clock(1_795_459_200.0)
    bus = EventBus()
    log = open_log(tmp_path / "audit", "isp.example/blockd/t", "op")
    writer = LogWriter(tmp_path / "audit", "isp.example/blockd/t", "op") if helper else None
    recorder = AuditRecorder(log, bus, clock=clock, writer=writer)
    expected = []
    try:
        for i, event in enumerate(AUDITED_EVENTS):
            clock.now += i * 0.7  # some share a second, some do not
            bus.publish(event)
            expected.append(entry_of(event, utc(clock.now)))
            if i == 4:  # an entry made on the loop keeps its place among the events
                recorder.record("retention-purge", records=2)
                purge = {"time": utc(clock.now), "blockd": __version__, "records": 2}
                expected.append({**purge, "type": "retention-purge"})
        bus.publish(DnsDecision(HOSTS, "udp"))  # counted, not logged
        await recorder.flush()
    finally:
        if writer is not None:
            writer.close()
    entries = [json.loads(data) for _, data in log.entries(0, log.head().size)]
    assert entries == json.loads(json.dumps(expected))


def test_entries_of_keeps_order() -> None:
    items: list[Queued | Entry] = [
        ("feed-unchanged", 59.9, ("a", "hosts", 1)),
        {"time": "x", "type": "daemon-start"},
        ("feed-unchanged", 60.0, ("a", "hosts", 2)),
    ]
    got = entries_of(items)
    assert [(e["type"], e["time"], e.get("version")) for e in got] == [
        ("feed-unchanged", "1970-01-01T00:00:59Z", 1),
        ("daemon-start", "x", None),
        ("feed-unchanged", "1970-01-01T00:01:00Z", 2),
    ]
    assert encode(items) == (
        [canonical(e) for e in got],
        ["1970-01-01T00:00:59Z", "x", "1970-01-01T00:01:00Z"],
    )


@dataclass(frozen=True)
class _Later(FeedUnchanged):
    detail: str = ""


def test_a_subclass_is_logged_as_its_audited_base() -> None:
    assert shape_of(_Later) is SHAPES[FeedUnchanged]
    assert shape_of(DnsDecision) is None
    event = _Later("a", "hosts", 1, "more")
    assert values_of(SHAPES[FeedUnchanged])(event) == ("a", "hosts", 1)
    assert entry_of(event, "t") == entry_of(FeedUnchanged("a", "hosts", 1), "t")
    assert entry_of(DnsDecision(HOSTS, "udp"), "t") is None


def test_every_shape_names_fields_its_event_has() -> None:
    for kind, shape in SHAPES.items():
        names = {f.name for f in fields(kind)}
        assert set(shape.fields) <= names, kind
        assert shape.type not in BY_TYPE or BY_TYPE[shape.type] is shape


@pytest.mark.parametrize(
    ("ts", "want"),
    [
        (1_795_478_399.9999995, "2026-11-23T23:59:59Z"),  # fromtimestamp would round it up
        (1_795_478_400.0, "2026-11-24T00:00:00Z"),
        (0.9999999, "1970-01-01T00:00:00Z"),
    ],
)
def test_times_are_truncated_to_the_second_by_both_encoders(ts: float, want: str) -> None:
    # One rule for every time text: the floor of the time, whichever path encodes it.
    item: Queued = ("feed-unchanged", ts, ("a", "hosts", 1))
    assert utc(ts) == want
    datas, times = encode([item])
    assert times == [want] == [str(e["time"]) for e in entries_of([item])]
    assert json.loads(datas[0])["time"] == want


# Values the fast encoder must encode exactly as canonical() does, or refuse as it does.
text = st.text()  # lone surrogates included
scalars = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | text
values = st.recursive(
    scalars | st.floats(allow_nan=True),
    lambda c: st.lists(c, max_size=3) | st.tuples(c) | st.dictionaries(text, c, max_size=3),
    max_leaves=6,
)
WIDEST = max(len(shape.fields) for shape in BY_TYPE.values())


@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(BY_TYPE)),
            st.floats(0, 4e9),
            st.lists(st.one_of(scalars, values), min_size=WIDEST, max_size=WIDEST),
        ),
        max_size=4,
    )
)
def test_encode_gives_the_canonical_json_of_the_entries(
    raw: list[tuple[str, float, list[object]]],
) -> None:
    items: list[Queued | Entry] = [
        (kind, ts, tuple(vals[: len(BY_TYPE[kind].fields)])) for kind, ts, vals in raw
    ]
    datas, times = encode(items)
    assert times == [str(e["time"]) for e in entries_of(items)]
    for data, want in zip(datas, entries_of(items), strict=True):
        try:
            assert data == canonical(want)
        except ValueError:  # canonical JSON cannot hold it: a refusal is logged in its place
            got = json.loads(data)
            assert (got["type"], got["entry_type"], got["time"]) == (
                "entry-refused",
                want["type"],
                want["time"],
            )
            assert got["reason"]


async def test_an_entry_canonical_json_cannot_hold_does_not_hold_up_the_log(
    tmp_path: Path,
) -> None:
    # A producer's mistake (a float where an integer belongs) is logged as refused, with the
    # reason; the events before and after it are logged as usual.
    bus = EventBus()
    log = open_log(tmp_path / "audit", "isp.example/blockd/t", "op")
    recorder = AuditRecorder(log, bus, clock=Clock(1_795_459_200.0))
    bus.publish(FeedUnchanged("a", "hosts", 1))
    bus.publish(FeedUnchanged("a", "hosts", 1.5))  # type: ignore[arg-type]
    bus.publish(SelfTestResult(True, 2, ("lone \ud800",)))
    bus.publish(FeedUnchanged("a", "hosts", 2))
    await recorder.flush()
    entries = [json.loads(data) for _, data in log.entries(0, log.head().size)]
    assert [(e["type"], e.get("version"), e.get("entry_type")) for e in entries] == [
        ("feed-unchanged", 1, None),
        ("entry-refused", None, "feed-unchanged"),
        ("entry-refused", None, "self-test"),
        ("feed-unchanged", 2, None),
    ]
    assert "floats are not allowed" in entries[1]["reason"]
    assert "valid Unicode" in entries[2]["reason"]
    assert log.verify_disk().size == 4


async def test_a_failing_write_is_told_once_and_its_entries_wait(tmp_path: Path) -> None:
    bus = EventBus()
    log = open_log(tmp_path / "audit", "isp.example/blockd/t", "op")
    recorder = AuditRecorder(log, bus, clock=Clock(1_795_459_200.0))
    told: list[Event] = []
    bus.subscribe(AuditWriteFailed, told.append)
    bus.subscribe(AuditWriteRecovered, told.append)
    real = recorder._append
    failing = [True]

    def append(batch: list[Queued | Entry], batch_id: str) -> Head:
        if failing[0]:
            raise OSError(28, "No space left on device")
        return real(batch, batch_id)

    recorder._append = append  # type: ignore[method-assign]
    bus.publish(FeedUnchanged("a", "hosts", 1))
    for _ in range(3):
        assert await recorder.write() is False
        bus.publish(FeedUnchanged("a", "hosts", 2))
    [failed] = told
    assert isinstance(failed, AuditWriteFailed)
    assert (failed.stage, failed.reason) == ("append", "storage")
    assert "No space left" in failed.detail and failed.pending == 1
    assert recorder.problem == failed  # what readiness reports meanwhile
    failing[0] = False
    assert await recorder.write() is True
    assert [type(e) for e in told] == [AuditWriteFailed, AuditWriteRecovered]
    assert vars(recorder)["problem"] is None
    assert [e["version"] for e in logged(recorder, "feed-unchanged")] == [1, 2, 2, 2]


async def test_flushes_at_once_log_every_batch_once(tmp_path: Path) -> None:
    """Two flushes at once (the loop's and a caller's) neither lose nor repeat a batch."""
    bus = EventBus()
    log = open_log(tmp_path / "audit", "isp.example/blockd/t", "op")
    writer = LogWriter(tmp_path / "audit", "isp.example/blockd/t", "op")
    recorder = AuditRecorder(log, bus, writer=writer)
    try:
        flushes = []
        for i in range(6):
            bus.publish(OperatorAction("sync", f"call {i}", "0" * 64))
            flushes.append(asyncio.ensure_future(recorder.flush(checkpoint=i % 2 == 0)))
        await asyncio.gather(*flushes)
        await recorder.flush()
    finally:
        writer.close()
    details = [e["detail"] for e in logged(recorder, "operator-action")]
    assert details == [f"call {i}" for i in range(6)]
