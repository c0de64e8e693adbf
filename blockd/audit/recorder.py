"""Turn enforcement events into audit entries, off the query path.

The event handlers only append a tuple to a list (well under a microsecond, no I/O); a
background task has the batches encoded and written to the MerkleLog in a helper process
(or a worker thread) and signs checkpoints: after every policy activation and at least
every `checkpoint_interval`. Block decisions are never logged one by one: `BlockCounts`
counts them per authority, list, version, action and transport, and whether an authority's
self-test entry matched (the same counts the metrics show), and what each period added is
logged once per period, with the configured period's length. Nothing about a client is
recorded. A write that fails keeps its entries, under their batch's identity, for the next
attempt; the failure (when it starts or its reason changes) and the recovery are events, so
they are logged once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool

from blockd import __version__
from blockd.audit.entries import SHAPES, Entry, Queued, Shape, encode, utc, values_of
from blockd.audit.log import AuditError, Head, MerkleLog
from blockd.audit.records import RecordKeeper
from blockd.audit.writer import LogWriter
from blockd.events import (
    AuditHelperRestarted,
    AuditWriteFailed,
    AuditWriteRecovered,
    Event,
    EventBus,
    OperatorAction,
    PolicyActivated,
)
from blockd.metrics.counters import BlockCounts, Decided

log = logging.getLogger(__name__)

CHECKPOINT_AFTER = (PolicyActivated, OperatorAction)  # events that get a checkpoint at once


class AuditRecorder:
    """Subscribe to the bus; batch entries and counts into the log; sign checkpoints."""

    def __init__(
        self,
        log: MerkleLog,
        bus: EventBus,
        *,
        period: float = 3600.0,
        checkpoint_interval: float = 300.0,
        flush_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        records: RecordKeeper | None = None,
        writer: LogWriter | None = None,
        blocks: BlockCounts | None = None,
    ) -> None:
        """Record into log; counts cover `period` seconds (aligned to the epoch).

        records, when the operator keeps legally required records, is sealed and purged on
        the same schedule, and each purge is logged. blocks are the running block counts
        (blockd shares its metrics' ones); without them, the recorder counts on bus itself.
        """
        self.log = log
        self.bus = bus
        self.records = records
        self.writer = writer  # a helper process for writes; without one, a worker thread
        if writer is not None:
            writer.on_restart = self._helper_restarted
        self.problem: AuditWriteFailed | None = None  # the write failure in progress, if any
        self._problem_since = 0.0
        self._stage = "append"  # what flush is doing: append or checkpoint
        self.period = period
        self.checkpoint_interval = checkpoint_interval
        self.flush_interval = flush_interval
        self.clock = clock
        self.size = log.head().size  # entries in the log as of the last write (for metrics)
        self._pending: list[Queued | Entry] = []  # in order; encoded where they are written
        # Batches taken from _pending and not yet acknowledged, oldest first, each with an
        # identity the log stores with it: one sent again after an unheard commit is skipped.
        self._unsent: list[tuple[str, list[Queued | Entry]]] = []
        self._run_id, self._batches = os.urandom(8).hex(), 0
        self.blocks = blocks or BlockCounts(bus)
        self._counted = self.blocks.totals()  # the totals as of the last period's end
        self._period_start = self._align(clock())
        self._want_checkpoint = False
        self.last_checkpoint = 0.0
        self.on_checkpoint: Callable[[], None] | None = None  # told after each signature
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        for kind, shape in SHAPES.items():  # not Event: decisions, the hot ones, are counted
            bus.subscribe(kind, self._queue(shape, issubclass(kind, CHECKPOINT_AFTER)))

    def _align(self, ts: float) -> float:
        return ts - ts % self.period

    def _queue(self, shape: Shape, checkpoint: bool) -> Callable[[Event], None]:
        """Return the handler that queues events of shape; checkpoint: sign one at once."""
        # Hot path (up to 10,000 events a second on the event loop): one tuple per event.
        pending, clock, values, kind = self._pending, self.clock, values_of(shape), shape.type

        def queue(event: Event) -> None:
            pending.append((kind, clock(), values(event)))

        def queue_and_checkpoint(event: Event) -> None:
            queue(event)
            self._want_checkpoint = True
            self._wake.set()

        return queue_and_checkpoint if checkpoint else queue

    def record(self, kind: str, **fields: object) -> None:
        """Queue an entry that has no event (daemon start and stop, retention purges)."""
        self._pending.append(
            {"time": utc(self.clock()), "blockd": __version__, "type": kind} | fields
        )

    def _take_counts(self, end: float) -> Entry | None:
        """Return the counts entry for the period that ends at `end`, and start anew."""
        totals = self.blocks.totals()
        counts: dict[Decided, int] = {}
        for key, n in totals.items():
            if n > self._counted.get(key, 0):
                counts[key] = n - self._counted.get(key, 0)
        self._counted = totals
        start, self._period_start = self._period_start, self._align(end)
        if not counts:
            return None
        rows = [
            {
                "authority": a,
                "list": lst,
                "version": ver,
                "action": action,
                "transport": transport,
                "selftest": probe,
                "count": n,
            }
            for (a, lst, ver, action, transport, probe), n in sorted(counts.items())
        ]
        return {
            "time": utc(end),
            "blockd": __version__,
            "type": "block-counts",
            "period_start": utc(start),
            "period_end": utc(end),
            "period_seconds": int(self.period),  # the configured period; the last is cut short
            "counts": rows,
        }

    async def flush(self, *, checkpoint: bool = False, close_period: bool = False) -> None:
        """Write what is pending; close the counting period if it ended (or if asked).

        One flush at a time: two at once would both send the oldest unsent batch and then
        both drop it from the queue, dropping the next one unsent.
        """
        async with self._flushing:
            await self._flush(checkpoint, close_period)

    async def _flush(self, checkpoint: bool, close_period: bool) -> None:
        now = self.clock()
        if close_period or now >= self._period_start + self.period:
            end = now if close_period else self._period_start + self.period
            counts = self._take_counts(end)
            if counts is not None:
                self._pending.append(counts)
        if self.records is not None:
            self._stage = "records"
            await asyncio.to_thread(self._records_work, now)
            self._wrote("records")
        batch = self._pending.copy()
        self._pending.clear()  # the same list: the event handlers hold it
        if batch:
            self._batches += 1
            self._unsent.append((f"{self._run_id}-{self._batches}", batch))
        while self._unsent:  # a batch that failed stays, under its identity, for the next flush
            self._stage = "append"
            batch_id, items = self._unsent[0]
            if self.writer is not None:
                self.size = (await self.writer.append(items, batch_id)).size
            else:
                self.size = (await asyncio.to_thread(self._append, items, batch_id)).size
            del self._unsent[0]
            self._wrote("append")
        due = now - self.last_checkpoint >= self.checkpoint_interval
        if checkpoint or self._want_checkpoint or due:
            self._want_checkpoint = False
            self.last_checkpoint = now
            self._stage = "checkpoint"
            if self.writer is not None:
                await self.writer.sign_checkpoint(utc(now))
            else:
                await asyncio.to_thread(self.log.sign_checkpoint, utc(now))
            self._wrote("checkpoint")
            if self.on_checkpoint is not None:
                self.on_checkpoint()

    def _failed(self, e: Exception) -> None:
        """Publish a write failure when it starts or its reason changes (not per attempt)."""
        log.debug("audit log %s failed", self._stage, exc_info=e)
        reason = _failure_reason(e)
        problem = self.problem
        if problem is not None and (problem.stage, problem.reason) == (self._stage, reason):
            return
        if problem is None:
            self._problem_since = self.clock()
        detail = f"{type(e).__name__}: {e}"[:300].replace("\n", " ")
        waiting = len(self._pending) + sum(len(items) for _, items in self._unsent)
        self.problem = AuditWriteFailed(self._stage, reason, detail, waiting)
        self.bus.publish(self.problem)

    def _wrote(self, stage: str) -> None:
        """Publish the recovery when the stage that was failing succeeds."""
        if self.problem is not None and self.problem.stage == stage:
            self.problem = None
            self.bus.publish(AuditWriteRecovered(stage, self.clock() - self._problem_since))

    def _helper_restarted(self, reason: str, detail: str) -> None:
        self.bus.publish(AuditHelperRestarted(reason, detail))

    def _append(self, batch: list[Queued | Entry], batch_id: str) -> Head:
        return self.log.append_encoded(*encode(batch), batch_id)

    def _records_work(self, now: float) -> None:
        """Seal queued records; destroy the periods past their retention, logging each."""
        assert self.records is not None
        self.records.flush()
        for index in self.records.due(now):
            purge = self.records.purge(index, now)
            self.record(
                "retention-purge",
                period_start=utc(purge.start),
                period_end=utc(purge.end),
                records=purge.records,
            )

    def start(self, **fields: object) -> None:
        """Record the start (with fields) and start writing in the background."""
        self.record("daemon-start", **fields)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:  # the whole history once per start; every checkpoint checks what is new
            await asyncio.to_thread(self.log.verify_disk)
        except AuditError as e:
            log.error("audit log damaged, no checkpoint will be signed: %s", e)
        while True:
            try:
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.write()

    async def write(self) -> bool:
        """Flush what is due; on failure keep the entries, say so once, and return False."""
        try:
            await self.flush()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # entries are kept for the next attempt
            self._failed(e)
            return False
        return True

    async def stop(self) -> None:
        """Write the last counts and a stop entry, sign a final checkpoint."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.record("daemon-stop")
        await self.flush(checkpoint=True, close_period=True)


def _failure_reason(e: Exception) -> str:
    """Return a slug for why a write failed."""
    if isinstance(e, BrokenProcessPool):
        return "helper-died"
    if isinstance(e, AuditError):
        return "refused"  # the log refuses: damaged, or a checkpoint that does not extend
    if isinstance(e, OSError | sqlite3.Error):
        return "storage"
    return "internal"
