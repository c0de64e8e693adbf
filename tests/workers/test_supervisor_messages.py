"""Workers._on_message against what a compromised worker may send (no process started).

The supervisor reads a worker's messages in the slot's task: anything other than
ReportError (or ChannelError) escaping _on_message ends that task, so the worker is
neither killed nor ever restarted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from blockd.config import parse
from blockd.events import EventBus, WorkerRecovered
from blockd.metrics import BlockCounts, DnsCounters
from blockd.workers.supervisor import Workers
from blockd.workers.totals import ReportError, Tallies, Totals
from blockd.workers.zygote import Zygote
from tests.factories import operator_toml
from tests.workers.test_totals_hostile import nested, report


def workers(tmp: Path) -> tuple[Workers, list[WorkerRecovered]]:
    text = f'[trust]\npinned = "{tmp / "t.dsse"}"\n[daemon]\nworkers = 2\n{operator_toml()}'
    bus = EventBus()
    recovered: list[WorkerRecovered] = []
    bus.subscribe(WorkerRecovered, recovered.append)
    totals = Totals(Tallies(BlockCounts(), DnsCounters()), [("127.0.0.1", 53)])
    w = Workers(parse(text, tmp), 2, bus, cast(Zygote, object()), totals, tmp / "policy")
    return w, recovered


DEEP = nested()
HOSTILE: dict[str, dict[str, Any]] = {
    "no type": {},
    "unknown type": {"t": "exec", "code": "__import__('os')"},
    "type a list": {"t": ["report"]},
    "type deeply nested": {"t": DEEP},
    "type an object": {"t": {"t": "report"}},
    "type a number": {"t": 1},
    "type null": {"t": None},
    "type 1 MB": {"t": "r" * (1 << 20)},
    "report without counts": {"t": "report"},
    "report with a bad count": report(1, cache=[1, 1, -1]),
    "ready without counts": {"t": "ready", "bound": []},
    "ready with a bad report": {**report(1, http="x"), "t": "ready"},
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_message_raises_report_error_and_changes_nothing(
    name: str, tmp_path: Path
) -> None:
    w, recovered = workers(tmp_path)
    slot = w.slots[0]
    slot.generation = 4
    before = (slot.state, slot.generation, dict(w.totals.tallies.http), w.bound)
    with pytest.raises(ReportError):
        w._on_message(slot, HOSTILE[name])
    assert (slot.state, slot.generation, dict(w.totals.tallies.http), w.bound) == before
    assert recovered == []


@pytest.mark.parametrize(
    "generation", ["5", True, False, 5.0, None, [5], {"g": 5}, DEEP], ids=lambda g: type(g).__name__
)
def test_a_generation_that_is_not_a_whole_number_is_ignored(
    generation: object, tmp_path: Path
) -> None:
    w, _ = workers(tmp_path)
    slot = w.slots[0]
    slot.generation = 4
    assert w._on_message(slot, {"t": "applied", "generation": generation}) is None
    assert w._on_message(slot, report(1, generation=generation)) is None
    assert slot.generation == 4
    assert w._on_message(slot, {"t": "applied", "generation": 9}) is None
    assert slot.generation == 9


@pytest.mark.parametrize(
    ("said", "means"),
    [
        ("no room", "no room"),
        ("x" * 100_000, "x" * 500),
        ("", ""),
        (None, "failed"),
        (7, "failed"),
        (["a", "b"], "failed"),
        (DEEP, "failed"),  # str() of it would raise RecursionError
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else repr(v[:8]),
)
def test_a_failure_message_is_a_short_string(said: object, means: str, tmp_path: Path) -> None:
    w, _ = workers(tmp_path)
    assert w._on_message(w.slots[0], {"t": "failed", "message": said}) == means
    assert w._on_message(w.slots[0], {"t": "failed"}) == "failed"


@pytest.mark.parametrize(
    "bound",
    [
        [1],
        ["udp"],
        [["udp", "127.0.0.1"]],
        [["udp", "127.0.0.1", 53, 54]],
        [[DEEP, "127.0.0.1", 53]],
        [["udp", "127.0.0.1", True]],
        [["udp", "127.0.0.1", "53"]],
        [{"udp": 53}],
        "udp 127.0.0.1 53",
        DEEP,
        None,
    ],
    ids=lambda b: type(b).__name__,
)
def test_a_ready_with_hostile_listeners_is_served_and_keeps_only_well_formed_ones(
    bound: object, tmp_path: Path
) -> None:
    w, _ = workers(tmp_path)
    slot = w.slots[0]
    message = {**report(1), "t": "ready", "bound": bound}
    if isinstance(bound, list):
        message["bound"] = [*bound, ["tcp", "127.0.0.1", 5300]]
    assert w._on_message(slot, message) is None
    assert slot.state == "serving"
    assert w.bound == ([("tcp", "127.0.0.1", 5300)] if isinstance(bound, list) else [])


def test_a_restarted_worker_recovers_once_however_often_it_says_ready(tmp_path: Path) -> None:
    w, recovered = workers(tmp_path)
    slot = w.slots[0]
    slot.restarts = 2
    for n in range(1, 5):
        w._on_message(slot, {**report(n), "t": "ready", "bound": []})
    assert recovered == [WorkerRecovered(1, 2)]
