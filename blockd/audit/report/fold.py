"""Fold audit entries, in log order, into what the report's sections are derived from.

Entries before the report's start are read only to know the state at the start (versions
in force, each list's last sync) and are not counted. An entry of a type this version does
not know, or with fields it cannot read, goes to "other", never dropped.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

from blockd.audit.report.entries import Fields, Malformed, is_time, parse_time
from blockd.audit.report.model import (
    Activation,
    DaemonEvent,
    Intervention,
    ListSize,
    LoggedEntry,
    OperatorActionRow,
    Period,
    Rejection,
    SelfTest,
    TrustUpdate,
    measure,
)

Ref = tuple[str, str]  # authority, list
Handler = Callable[["Fold", int, str, Fields, bool], None]


class Fold:
    """Fold entries, in log order, into the state and rows the report is built from."""

    def __init__(self, start: str | None) -> None:
        self.start = start
        self.first_index: int | None = None
        self.last_index: int | None = None
        self.count = 0
        self.names: dict[str, Ref] = {}  # "authority/list" -> (authority, list)
        self.in_force: dict[Ref, tuple[int, str]] = {}  # ref -> (version, since)
        self.periods: dict[tuple[Ref, int], list[Period]] = defaultdict(list)
        self.accepted: dict[tuple[Ref, int], tuple[str, str, tuple[str, ...], int]] = {}
        self.first_seen: dict[Ref, str] = {}
        self.syncs: dict[Ref, list[str]] = defaultdict(list)
        self.feed_rejections: dict[Ref, list[tuple[str, str]]] = defaultdict(list)
        self.tallies: dict[Ref, Counter[str]] = defaultdict(Counter)
        self.window_versions: set[tuple[Ref, int]] = set()
        self.activations: list[Activation] = []
        self.list_sizes: list[ListSize] = []
        self.blocks_by_day: Counter[tuple[str, str, str]] = Counter()  # day, authority, measure
        self.blocks_by_list: Counter[tuple[str, str, int, str, str, bool | None]] = Counter()
        self.count_periods: set[int] = set()  # as block-counts entries state them
        self.longest_span = 0  # of the entries that do not (older blockd)
        self.generation: int | None = None  # the last activation's, and what it enforced
        self.generation_versions: dict[str, int] = {}
        self.started = False  # blockd started since the last activation
        self.rejected: list[Rejection] = []
        self.trust_updates: list[TrustUpdate] = []
        self.interventions: list[Intervention] = []
        self.operator_actions: list[OperatorActionRow] = []
        self.self_tests: list[SelfTest] = []
        self.daemon: list[DaemonEvent] = []
        self.purges: list[LoggedEntry] = []
        self.other: list[LoggedEntry] = []

    def add(self, index: int, entry: dict[str, object]) -> None:
        """Fold one entry in (it is in the window unless it precedes `start`)."""
        time, kind = entry.get("time"), entry.get("type")
        if not isinstance(time, str) or not is_time(time):
            self._count(index)
            self.other.append(_logged(index, None, entry, "no valid 'time'"))
            return
        in_window = self.start is None or time >= self.start
        if in_window:
            self._count(index)
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            if in_window:
                self.other.append(_logged(index, time, entry, "type not known to this report"))
            return
        try:
            handler(self, index, time, Fields(entry), in_window)
        except Malformed as e:
            if in_window:
                self.other.append(_logged(index, time, entry, str(e)))

    def _count(self, index: int) -> None:
        self.count += 1
        self.first_index = index if self.first_index is None else self.first_index
        self.last_index = index

    def _ref(self, f: Fields) -> Ref:
        ref = (f.text("authority"), f.text("list"))
        self.names.setdefault(f"{ref[0]}/{ref[1]}", ref)
        return ref

    def _seen(self, ref: Ref, time: str) -> None:
        self.first_seen.setdefault(ref, time)

    # Each handler reads every field before it changes any state.

    def feed_accepted(self, index: int, time: str, f: Fields, in_window: bool) -> None:
        ref, version = self._ref(f), f.number("version")
        sha, keyids, entries = f.text("envelope_sha256"), f.texts("keyids"), f.number("entries")
        rejected = f.tally("rejected_entries")
        self._seen(ref, time)
        self.syncs[ref].append(time)
        self.accepted.setdefault((ref, version), (time, sha, keyids, entries))
        if in_window:
            self.tallies[ref]["accepted"] += 1
            self.window_versions.add((ref, version))
            self.list_sizes.append(ListSize(index, time, *ref, version, entries, rejected))

    def feed_unchanged(self, index: int, time: str, f: Fields, in_window: bool) -> None:
        ref = self._ref(f)
        self._seen(ref, time)
        self.syncs[ref].append(time)
        if in_window:
            self.tallies[ref]["unchanged"] += 1

    def feed_rejected(self, index: int, time: str, f: Fields, in_window: bool) -> None:
        ref, version, reason = self._ref(f), f.opt_number("version"), f.text("reason")
        sha = f.opt_text("envelope_sha256")
        self._seen(ref, time)
        self.feed_rejections[ref].append((time, reason))
        if in_window:
            self.tallies[ref]["rejected"] += 1
            self.rejected.append(Rejection(index, time, "feed", *ref, version, sha, reason))

    def trust_accepted(self, index: int, time: str, f: Fields, in_window: bool) -> None:
        row = TrustUpdate(
            index, time, f.number("version"), f.text("envelope_sha256"), f.texts("keyids")
        )
        if in_window:
            self.trust_updates.append(row)

    def trust_rejected(self, index: int, time: str, f: Fields, in_window: bool) -> None:
        version, sha, reason = (
            f.opt_number("version"),
            f.opt_text("envelope_sha256"),
            f.text("reason"),
        )
        if in_window:
            self.rejected.append(Rejection(index, time, "trust", None, None, version, sha, reason))

    def guard_intervention(self, index: int, time: str, f: Fields, in_window: bool) -> None:
        kind, ref, version = f.text("kind"), self._ref(f), f.number("version")
        row = Intervention(index, time, kind, *ref, version, f.text("detail"), f.number("count"))
        if in_window:
            self.interventions.append(row)

    def policy_activated(self, index: int, time: str, f: Fields, in_window: bool) -> None:
        generation, entries = f.number("generation"), f.number("entries")
        versions = f.tally("versions")
        refs = {self._split(name): v for name, v in versions.items()}
        for ref, (version, _) in list(self.in_force.items()):
            if refs.get(ref) != version:
                self._close(ref, time)
        for ref, version in refs.items():
            self._seen(ref, time)
            if ref not in self.in_force:
                self.in_force[ref] = (version, time)
        note = self._change(generation, versions)
        self.generation, self.generation_versions, self.started = generation, versions, False
        if in_window:
            self.activations.append(Activation(index, time, generation, entries, versions, note))

    def _change(self, generation: int, versions: dict[str, int]) -> str:
        """Say what an activation changed, and why its generation does not follow on."""
        last, before = self.generation, self.generation_versions
        if last is None:
            return "the first policy in the log"
        notes = []
        if self.started or generation <= last:
            notes.append("blockd restarted: generations count again from its start")
        elif generation > last + 1:
            n = generation - last - 1
            notes.append(
                f"{n} generation number{'s' if n > 1 else ''} skipped: "
                f"{'policies' if n > 1 else 'a policy'} built but never put in force"
            )
        changes = [
            f"{ref} v{before[ref]} to v{v}" if ref in before else f"{ref} v{v} added"
            for ref, v in versions.items()
            if before.get(ref) != v
        ] + [f"{ref} v{v} removed" for ref, v in before.items() if ref not in versions]
        notes.append(
            ", ".join(changes)
            if changes
            else "the same list versions as before (the policy was built again)"
        )
        return "; ".join(notes)

    def _split(self, name: str) -> Ref:
        if name not in self.names:
            authority, _, list_id = name.partition("/")
            self.names[name] = (authority, list_id)
        return self.names[name]

    def _close(self, ref: Ref, time: str) -> None:
        version, since = self.in_force.pop(ref)
        self.periods[(ref, version)].append(Period(since, time))

    def operator_action(self, index: int, time: str, f: Fields, in_window: bool) -> None:
        row = OperatorActionRow(
            index, time, f.text("action"), f.text("detail"), f.opt_text("config_sha256") or ""
        )
        if in_window:
            self.operator_actions.append(row)

    def self_test(self, index: int, time: str, f: Fields, in_window: bool) -> None:
        row = SelfTest(index, time, f.flag("passed"), f.number("checks"), f.texts("failures"))
        if in_window:
            self.self_tests.append(row)

    def block_counts(self, index: int, time: str, f: Fields, in_window: bool) -> None:
        period_start = f.text("period_start")
        try:
            day = parse_time(period_start).date().isoformat()
        except ValueError:
            raise Malformed("field 'period_start' is not an ISO 8601 UTC time") from None
        try:
            span = int(
                (parse_time(f.text("period_end")) - parse_time(period_start)).total_seconds()
            )
        except ValueError:
            raise Malformed("field 'period_end' is not an ISO 8601 UTC time") from None
        stated = f.opt_number("period_seconds")
        rows = [
            (
                r.text("authority"),
                r.text("list"),
                r.number("version"),
                r.text("action"),
                r.text("transport"),
                r.opt_flag("selftest"),
                r.number("count"),
            )
            for r in f.rows("counts")
        ]
        if in_window:
            if stated is not None:
                self.count_periods.add(stated)
            else:
                self.longest_span = max(self.longest_span, span)
            for authority, list_id, version, action, transport, probe, n in rows:
                if not probe:
                    self.blocks_by_day[(day, authority, measure(action, transport))] += n
                self.blocks_by_list[(authority, list_id, version, action, transport, probe)] += n

    def daemon_event(self, index: int, time: str, f: Fields, in_window: bool) -> None:
        event = f.text("type").removeprefix("daemon-")
        self.started = self.started or event == "start"
        if event == "stop":  # nothing is enforced while blockd is down
            for ref in list(self.in_force):
                self._close(ref, time)
        if in_window:
            self.daemon.append(DaemonEvent(index, time, event, f.opt_text("blockd") or ""))

    def retention_purge(self, index: int, time: str, f: Fields, in_window: bool) -> None:
        if in_window:
            self.purges.append(_logged(index, time, f.entry))


def _logged(index: int, time: str | None, entry: dict[str, object], note: str = "") -> LoggedEntry:
    fields = {k: v for k, v in entry.items() if k not in ("time", "type")}
    return LoggedEntry(index, time, str(entry.get("type", "")), fields, note)


_HANDLERS: dict[str, Handler] = {
    "feed-accepted": Fold.feed_accepted,
    "feed-unchanged": Fold.feed_unchanged,
    "feed-rejected": Fold.feed_rejected,
    "trust-accepted": Fold.trust_accepted,
    "trust-rejected": Fold.trust_rejected,
    "guard-intervention": Fold.guard_intervention,
    "policy-activated": Fold.policy_activated,
    "operator-action": Fold.operator_action,
    "self-test": Fold.self_test,
    "block-counts": Fold.block_counts,
    "daemon-start": Fold.daemon_event,
    "daemon-stop": Fold.daemon_event,
    "retention-purge": Fold.retention_purge,
}
