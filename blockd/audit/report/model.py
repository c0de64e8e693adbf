"""The transparency report as data: its source, the rows of each section, and the whole."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from blockd.audit.anomalies import Anomaly


@dataclass(frozen=True)
class ReportSource:
    """What the report is derived from, printed on it so its numbers can be verified."""

    origin: str
    checkpoint_size: int
    checkpoint_root_b64: str
    key_name: str
    verified: bool


# -- the rows of each section ------------------------------------------------------------


@dataclass(frozen=True)
class ListSummary:
    """One list: how often it synced in the period and which versions were enforced."""

    authority: str
    list: str
    versions: tuple[int, ...]
    accepted: int
    unchanged: int
    rejected: int
    last_sync: str | None


@dataclass(frozen=True)
class Period:
    """A span a version was in force; `end` None means still in force when the report ends."""

    start: str
    end: str | None


@dataclass(frozen=True)
class EnforcedVersion:
    """A list version that was accepted or enforced in the period."""

    authority: str
    list: str
    version: int
    accepted: str | None
    first_enforced: str | None
    in_force_at_end: bool
    periods: tuple[Period, ...]
    envelope_sha256: str | None
    keyids: tuple[str, ...]
    entries: int | None


@dataclass(frozen=True)
class Activation:
    """A policy snapshot came into force."""

    index: int
    time: str
    generation: int
    entries: int
    versions: dict[str, int]


@dataclass(frozen=True)
class ListSize:
    """The number of entries in an accepted list version."""

    index: int
    time: str
    authority: str
    list: str
    version: int
    entries: int
    rejected_entries: dict[str, int]


@dataclass(frozen=True)
class DayBlocks:
    """Blocks of one authority on one day (UTC, by the start of the counting period)."""

    day: str
    authority: str
    count: int


@dataclass(frozen=True)
class ListBlocks:
    """Blocks of one list version, by action and transport, over the whole period."""

    authority: str
    list: str
    version: int
    action: str
    transport: str
    count: int


@dataclass(frozen=True)
class Rejection:
    """A list or trust policy update that was refused; `source` is `feed` or `trust`."""

    index: int
    time: str
    source: str
    authority: str | None
    list: str | None
    version: int | None
    envelope_sha256: str | None
    reason: str


@dataclass(frozen=True)
class TrustUpdate:
    """A trust policy version became the root of trust."""

    index: int
    time: str
    version: int
    envelope_sha256: str
    keyids: tuple[str, ...]


@dataclass(frozen=True)
class Intervention:
    """A guard-rail reduced blocking or held an update back, or an operator released one."""

    index: int
    time: str
    kind: str
    authority: str
    list: str
    version: int
    detail: str
    count: int


@dataclass(frozen=True)
class OperatorActionRow:
    """Something an operator did."""

    index: int
    time: str
    action: str
    detail: str
    config_sha256: str


@dataclass(frozen=True)
class SelfTest:
    """One run of the self-tests."""

    index: int
    time: str
    passed: bool
    checks: int
    failures: tuple[str, ...]


@dataclass(frozen=True)
class StaleGap:
    """A list went more than `stale_after` seconds without a sync.

    `last_sync` is None when the list never synced before the gap (counted from when it
    was first seen); `ongoing` when the gap lasts to the end of the report.
    """

    authority: str
    list: str
    last_sync: str | None
    stale_from: str
    until: str
    ongoing: bool
    seconds: int
    rejections: dict[str, int]


@dataclass(frozen=True)
class LoggedEntry:
    """An entry reported as it is: retention purges, and entries of unknown shape."""

    index: int
    time: str | None
    type: str
    fields: dict[str, object]
    note: str = ""


@dataclass(frozen=True)
class DaemonEvent:
    """blockd started or stopped."""

    index: int
    time: str
    event: str
    blockd: str


@dataclass(frozen=True)
class Report:
    """Everything the transparency report says, in the order it says it."""

    generated: str
    start: str | None
    end: str | None
    stale_after: int
    source: ReportSource
    first_index: int | None
    end_index: int | None
    entries: int
    beyond_checkpoint: int
    lists: tuple[ListSummary, ...]
    enforced: tuple[EnforcedVersion, ...]
    activations: tuple[Activation, ...]
    list_sizes: tuple[ListSize, ...]
    blocks_by_day: tuple[DayBlocks, ...]
    blocks_by_list: tuple[ListBlocks, ...]
    stale: tuple[StaleGap, ...]
    rejected: tuple[Rejection, ...]
    trust_updates: tuple[TrustUpdate, ...]
    interventions: tuple[Intervention, ...]
    operator_actions: tuple[OperatorActionRow, ...]
    self_tests: tuple[SelfTest, ...]
    daemon: tuple[DaemonEvent, ...]
    retention_purges: tuple[LoggedEntry, ...]
    other: tuple[LoggedEntry, ...]
    anomalies: tuple[Anomaly, ...] = ()  # duplicates (counted once) and backdated entries

    @property
    def block_total(self) -> int:
        """Return the number of blocks counted in the period."""
        return sum(r.count for r in self.blocks_by_list)

    def blocks_per_authority(self) -> dict[str, int]:
        """Return {authority: blocks} over the period."""
        totals: Counter[str] = Counter()
        for r in self.blocks_by_day:
            totals[r.authority] += r.count
        return dict(sorted(totals.items()))

    def block_days(self) -> list[str]:
        """Return the days the blocks per day cover, in order."""
        return sorted({d.day for d in self.blocks_by_day})

    def blocks_grid(self) -> dict[tuple[str, str], int]:
        """Return {(day, authority): blocks}."""
        return {(d.day, d.authority): d.count for d in self.blocks_by_day}
