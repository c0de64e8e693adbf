"""Judging heartbeats (pure): who is live, who diverges; untrusted fields read safely."""

from __future__ import annotations

import pytest

from blockd.fleet import bus
from blockd.fleet.commands import as_text
from blockd.fleet.status import MAX_CHECKPOINT, BadHeartbeat, Beat, survey

NOW = 1_800_000_000.0


def test_a_node_behind_or_ahead_diverges_and_a_silent_one_is_stale() -> None:
    beats = [
        Beat("a", NOW - 1, {"iwf/hosts": 7}, syncer=True),
        Beat("b", NOW - 2, {"iwf/hosts": 6}),
        Beat("c", NOW - 60, {"iwf/hosts": 7}),  # silent for 12 heartbeats
        Beat("d", NOW - 1, {"iwf/hosts": None}),  # nothing enforced yet
    ]
    s = survey(beats, {"iwf/hosts": 7}, NOW)
    view = {n.beat.node: n for n in s.nodes}
    assert not view["a"].divergent and not view["a"].stale
    assert view["b"].behind == {"iwf/hosts": (6, 7)}
    assert view["c"].stale and not view["c"].divergent
    assert view["d"].divergent
    assert (s.live, s.divergent) == (3, 2)
    text = as_text(s)
    assert "a (syncer)" in text and "DIVERGENT" in text and "STALE" in text
    assert "iwf/hosts: enforces 6, newest 7" in text


def test_a_heartbeat_round_trips_and_junk_is_dropped() -> None:
    beat = Beat(
        "a", NOW, {"iwf/hosts": 7, "iwf/urls": None}, 3, True, 5.0, "cp\n", "0.1.0", "k+1+AA"
    )
    raw = {k.encode(): v.encode() for k, v in beat.fields().items()}
    assert Beat.parse("a", raw) == beat
    odd = Beat.parse("a", {b"time": b"1", b"versions": b'{"x": "7", "y": true}'})
    assert odd.versions == {"x": None, "y": None}
    assert Beat.parse("a", {b"time": b"1", b"colour": b"x" * 100_000}).node == "a"  # not read


@pytest.mark.parametrize(
    ("node", "raw", "why"),
    [
        ("a", {}, "no time"),
        ("a", {b"time": b"soon"}, "not a number"),
        ("a", {b"time": b"nan"}, "not a number"),
        ("a", {b"time": b"inf"}, "not a number"),
        ("a", {b"time": b"1", b"versions": b"[1]"}, "versions"),
        ("a", {b"time": b"1", b"versions": b"[" * 5000 + b"]" * 5000}, "not a number or not JSON"),
        ("a", {b"time": b"1", b"heartbeat": b"-5"}, "out of range"),
        ("a", {b"time": b"1", b"checkpoint": b"x" * (MAX_CHECKPOINT + 1)}, "longer than"),
        ("a", {b"time": b"1", b"checkpoint": b"\xff\xfe"}, "not UTF-8"),
        ("a", {b"time": b"1", b"checkpoint": b"o\n1\x1b[2J\n"}, "control character"),
        ("a", {b"time": b"1", b"audit_key": b"k\x00"}, "not printable"),
        ("a b", {b"time": b"1"}, "node id"),
        ("<script>", {b"time": b"1"}, "node id"),
    ],
)
def test_junk_heartbeats_are_refused_saying_why(
    node: str, raw: dict[bytes, bytes], why: str
) -> None:
    with pytest.raises(BadHeartbeat, match=why):
        Beat.parse(node, raw)


def test_a_checkpoint_too_long_to_publish_is_not_cut() -> None:
    beat = Beat("a", NOW, {}, checkpoint="x" * (MAX_CHECKPOINT + 1))
    assert beat.fields()["checkpoint"] == ""


def test_notifications_are_only_hints() -> None:
    assert bus.notified_ref(b'{"ref": "iwf/hosts", "version": 3}') == "iwf/hosts"
    assert bus.notified_ref(b"not json") is None
    assert bus.notified_ref(b'["iwf/hosts"]') is None
    assert bus.notified_ref(b'{"ref": 5}') is None
    assert bus.notified_ref(b"x" * 10_000) is None
    assert bus.notified_ref("str") is None
