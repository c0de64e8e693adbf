"""A batch sent again after its commit went unheard is logged once, never twice."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from blockd.audit import writer as writer_module
from blockd.audit.entries import Entry, Queued
from blockd.audit.log import Head, MerkleLog, open_log
from blockd.audit.recorder import AuditRecorder
from blockd.audit.writer import LogWriter
from blockd.events import DnsDecision, EventBus, FeedUnchanged
from tests.audit.test_recorder import HOSTS, logged
from tests.audit.test_records import Clock

ORIGIN = "isp.example/blockd/test"


def entries(start: int, n: int) -> list[dict[str, object]]:
    return [{"time": "2026-11-23T00:00:00Z", "type": "t", "n": i} for i in range(start, start + n)]


def commit_then_die(batch: tuple[str | None, Sequence[Queued | Entry]]) -> Head:
    """In the helper: commit the batch, then die before answering, the first time only."""
    head = writer_module._append(batch)
    assert writer_module._LOG is not None
    marker = writer_module._LOG.path.with_name("died-once")
    if not marker.exists():
        marker.touch()
        os._exit(9)  # the OOM killer, between the commit and the acknowledgement
    return head


async def test_a_helper_killed_after_its_commit_does_not_log_the_batch_twice(
    tmp_path: Path,
) -> None:
    writer = LogWriter(tmp_path, ORIGIN, "op", idle=False)
    try:
        assert (await writer.append(entries(0, 4), "run-1")).size == 4
        head = await writer._call(commit_then_die, ("run-2", entries(4, 3)))
        assert (tmp_path / "died-once").exists()  # it did die after committing
        assert head.size == 7  # the new helper found batch run-2 and appended nothing
        assert (await writer.append(entries(7, 1), "run-3")).size == 8
    finally:
        writer.close()
    log = open_log(tmp_path, ORIGIN, "op")
    assert log.verify_disk().size == 8
    assert [json.loads(d)["n"] for _, d in log.entries(0, 8)] == list(range(8))


def test_an_append_under_a_known_batch_identity_appends_nothing(tmp_path: Path) -> None:
    log = open_log(tmp_path, ORIGIN, "op")
    first = log.append(entries(0, 3), "b-1")
    log.sign_checkpoint("2026-11-23T00:00:01Z")
    assert log.append(entries(0, 3), "b-1") == first
    assert log.append(entries(0, 3)).size == 6  # no identity: appended, as before
    log.sign_checkpoint("2026-11-23T00:00:02Z")  # and the log still extends what was signed


async def test_a_retried_block_counts_batch_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(3600.0 + 1)
    bus = EventBus()
    log = open_log(tmp_path / "audit", ORIGIN, "op")
    recorder = AuditRecorder(log, bus, clock=clock, period=3600)
    for _ in range(254):
        bus.publish(DnsDecision(HOSTS, "udp"))
    real = MerkleLog.append_encoded

    def commit_unheard(self: MerkleLog, *args: object) -> Head:
        real(self, *args)  # type: ignore[arg-type]
        raise OSError("the acknowledgement was lost")

    monkeypatch.setattr(MerkleLog, "append_encoded", commit_unheard)
    with pytest.raises(OSError, match="acknowledgement"):
        await recorder.flush(close_period=True)
    monkeypatch.undo()
    bus.publish(FeedUnchanged("demo-authority", "demo-hosts", 3))
    await recorder.flush()  # the batch is sent again, then the new entry
    (counts,) = logged(recorder, "block-counts")
    rows: Any = counts["counts"]
    assert [row["count"] for row in rows] == [254]
    assert len(logged(recorder, "feed-unchanged")) == 1
    assert log.verify_disk().size == 2


def test_a_log_made_before_batch_identities_gains_them(tmp_path: Path) -> None:
    log = open_log(tmp_path, ORIGIN, "op")
    log.append(entries(0, 2))
    log.close()
    db = sqlite3.connect(tmp_path / "log.db")
    db.execute("DROP INDEX batches_batch")
    db.execute("ALTER TABLE batches DROP COLUMN batch")
    db.commit()
    db.close()
    log = open_log(tmp_path, ORIGIN, "op")
    assert log.append(entries(2, 1), "b-1").size == 3
    assert log.append(entries(2, 1), "b-1").size == 3
    assert log.verify_disk().size == 3
