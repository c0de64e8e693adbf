"""Turn enforcement events into audit entries, off the query path.

The event handlers only append a tuple to a list (well under a microsecond, no I/O); a
background task has the batches encoded and written to the MerkleLog in a helper process
(or a worker thread) and signs checkpoints: after every policy activation and at least
every `checkpoint_interval`. Block decisions are never logged one by one: `BlockCounts`
counts them per authority, list, version, action and transport, and whether an authority's
self-test entry matched (the same counts the metrics show), and what each period added is
logged once per period, with the configured period's length. Nothing about a client is
recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from blockd import __version__
from blockd.audit.entries import SHAPES, Entry, Queued, Shape, encode, utc, values_of
from blockd.audit.log import AuditError, Head, MerkleLog
from blockd.audit.records import RecordKeeper
from blockd.audit.writer import LogWriter
from blockd.events import Event, EventBus, OperatorAction, PolicyActivated
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
        self.records = records
        self.writer = writer  # a helper process for writes; without one, a worker thread
        self.period = period
        self.checkpoint_interval = checkpoint_interval
        self.flush_interval = flush_interval
        self.clock = clock
        self.size = log.head().size  # entries in the log as of the last write (for metrics)
        self._pending: list[Queued | Entry] = []  # in order; encoded where they are written
        self.blocks = blocks or BlockCounts(bus)
        self._counted = self.blocks.totals()  # the totals as of the last period's end
        self._period_start = self._align(clock())
        self._want_checkpoint = False
        self.last_checkpoint = 0.0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
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
        """Write what is pending; close the counting period if it ended (or if asked)."""
        now = self.clock()
        if close_period or now >= self._period_start + self.period:
            end = now if close_period else self._period_start + self.period
            counts = self._take_counts(end)
            if counts is not None:
                self._pending.append(counts)
        if self.records is not None:
            await asyncio.to_thread(self._records_work, now)
        batch = self._pending.copy()
        self._pending.clear()  # the same list: the event handlers hold it
        if batch:
            try:
                if self.writer is not None:
                    self.size = (await self.writer.append(batch)).size
                else:
                    self.size = (await asyncio.to_thread(self._append, batch)).size
            except BaseException:
                self._pending[:0] = batch  # nothing is lost: the next flush tries again
                raise
        due = now - self.last_checkpoint >= self.checkpoint_interval
        if checkpoint or self._want_checkpoint or due:
            self._want_checkpoint = False
            self.last_checkpoint = now
            if self.writer is not None:
                await self.writer.sign_checkpoint(utc(now))
            else:
                await asyncio.to_thread(self.log.sign_checkpoint, utc(now))

    def _append(self, batch: list[Queued | Entry]) -> Head:
        return self.log.append_encoded(*encode(batch))

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
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audit log write failed; entries kept for the next attempt")

    async def stop(self) -> None:
        """Write the last counts and a stop entry, sign a final checkpoint."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.record("daemon-stop")
        await self.flush(checkpoint=True, close_period=True)
