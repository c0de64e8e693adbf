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
    key_id: str = ""  # the key's 8 hex digits: a name alone does not identify a key
    vkey: str = ""  # the whole verifier key (name+id+key), as regulators hold it


# What each block count counts: events of different kinds, never added into one number.
# One visit can be counted in two of them (a DNS blocked answer, then the notice page or
# the refused HTTPS connection that follows it).
MEASURES = {
    "dns-blocked": "DNS answers blocked",
    "notice-page": "Notice pages served",
    "tls-refused": "HTTPS connections refused",
    "dns-routed": "DNS answers routed to the URL proxy (not blocks)",
}


def measure(action: str, transport: str) -> str:
    """Return what a block count of this action (or outcome) and transport counts."""
    if transport in ("http", "https"):
        return "tls-refused" if action == "refused" else "notice-page"
    return "dns-routed" if action == "route" else "dns-blocked"


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
    note: str = ""  # what changed since the activation before, and why numbers skip


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
    """One measure of one authority on one day (UTC, by the start of the counting period).

    Self-test probes are not in it.
    """

    day: str
    authority: str
    measure: str
    count: int


@dataclass(frozen=True)
class ListBlocks:
    """Blocks of one list version, by action and transport, over the whole period."""

    authority: str
    list: str
    version: int
    action: str
    transport: str
    measure: str
    selftest: bool | None  # an authority's self-test entry matched; None: not told (older)
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
    count_periods: tuple[int, ...]  # seconds each block count covered (configured)
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

    def totals(self, *, selftest: bool = False) -> dict[str, int]:
        """Return {measure: count} over the period, of self-tests or of everything else."""
        out = dict.fromkeys(MEASURES, 0)
        for r in self.blocks_by_list:
            if bool(r.selftest) == selftest:
                out[r.measure] = out.get(r.measure, 0) + r.count
        return out

    def blocks_per_authority(self, what: str = "dns-blocked") -> dict[str, int]:
        """Return {authority: count of one measure} over the period (self-tests apart)."""
        totals: Counter[str] = Counter()
        for r in self.blocks_by_day:
            if r.measure == what:
                totals[r.authority] += r.count
        return dict(sorted(totals.items()))

    def block_days(self) -> list[str]:
        """Return the days the blocks per day cover, in order."""
        return sorted({d.day for d in self.blocks_by_day})

    def blocks_grid(self, what: str = "dns-blocked") -> dict[tuple[str, str], int]:
        """Return {(day, authority): count of one measure}."""
        return {(d.day, d.authority): d.count for d in self.blocks_by_day if d.measure == what}
