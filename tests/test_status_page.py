"""The status page on its own: trust, upstream health, the checkpoint read for people, escaping."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from blockd.admin import Operated, render_status
from blockd.audit.log import MerkleLog, open_log
from blockd.feeds.store import ListState, ListStatus
from blockd.health import EnforcedList, Facts, Readiness, TrustFact, UpstreamFact, assess

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
HOSTS = "demo-authority/demo-hosts"
SCRIPT = "<script>alert(1)</script>"


@dataclass
class _Feeds:
    lists: list[ListStatus]

    def status(self) -> list[ListStatus]:
        return self.lists


@dataclass
class _Audit:
    log: MerkleLog


@dataclass
class FakeDaemon:
    """Just what the status page reads of a daemon."""

    facts: Facts
    feeds: _Feeds
    audit: _Audit | None = None
    fleet: dict[str, Any] | None = None

    def readiness(self) -> Readiness:
        return assess(self.facts)

    def fleet_view(self) -> dict[str, Any] | None:
        return self.fleet

    def listeners(self) -> list[tuple[str, str, int]]:
        return [("udp", "127.0.0.1", 5300)]


def daemon(
    *,
    ref: str = HOSTS,
    upstreams: list[UpstreamFact] | None = None,
    audit: MerkleLog | None = None,
    fleet: dict[str, Any] | None = None,
) -> Operated:
    expires = NOW + timedelta(days=7)
    facts = Facts(
        now=NOW,
        configured=[ref],
        enforced={ref: EnforcedList(3, expires)},
        trust=TrustFact(4, NOW + timedelta(days=30, hours=2)),
        upstreams=upstreams
        if upstreams is not None
        else [
            UpstreamFact("192.0.2.53:53", down=False),
            UpstreamFact("[2001:db8::53]:53", True, "timeout", NOW.timestamp() - 600),
        ],
    )
    status = ListStatus(ref, 3, 12, NOW - timedelta(hours=1), expires, ListState(active=3))
    fake = FakeDaemon(facts, _Feeds([status]), _Audit(audit) if audit is not None else None, fleet)
    return fake  # type: ignore[return-value]  # a structural stand-in for the App


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_the_page_shows_trust_version_and_expiry() -> None:
    page = text_of(render_status(daemon(), NOW))
    assert "Version 4; expires 2026-12-23T14:00:00Z (in 30 days)" in page


def test_the_page_shows_each_upstreams_health() -> None:
    page = render_status(daemon(), NOW)
    words = text_of(page)
    assert "192.0.2.53:53: answering" in words
    assert "[2001:db8::53]:53: DOWN (timeout) since 2026-11-23T11:50:00Z" in words
    assert '<li class="bad">[2001:db8::53]:53' in page
    nothing = text_of(render_status(daemon(upstreams=[]), NOW))
    assert "None configured" in nothing


def test_the_checkpoint_is_read_for_people_and_kept_raw(tmp_path: Path) -> None:
    log = open_log(tmp_path, "isp.example/blockd/resolver-1", "op")
    log.sign_checkpoint("2026-11-23T11:53:00Z")
    page = render_status(daemon(audit=log), NOW)
    words = text_of(page)
    assert (
        "Log isp.example/blockd/resolver-1 : 0 entries, signed 2026-11-23T11:53:00Z "
        "(7 minutes ago)." in words
    )
    note = log.latest_checkpoint()
    assert note is not None and note.splitlines()[0] in page  # the raw signed note too
    assert "<pre>isp.example/blockd/resolver-1\n0\n" in page


def test_without_a_checkpoint_or_audit_the_page_says_so(tmp_path: Path) -> None:
    assert "No checkpoint signed yet" in render_status(daemon(audit=open_log(tmp_path, "o", "k")))
    assert "The audit log is off" in render_status(daemon())


def test_hostile_list_names_and_checkpoint_notes_are_escaped(tmp_path: Path) -> None:
    log = open_log(tmp_path, f"isp.example/{SCRIPT}", "op")
    log.sign_checkpoint(f"2026-11-23T11:00:00Z{SCRIPT}")
    page = render_status(daemon(ref=f"{SCRIPT}/x", audit=log), NOW)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;/x" in page
    assert "Log <strong>isp.example/&lt;script&gt;" in page
    assert "signing time not recorded" in page  # a time that does not parse is not shown as one


def test_a_note_that_does_not_verify_is_shown_escaped_and_said_so(tmp_path: Path) -> None:
    log = open_log(tmp_path, "isp.example/blockd/t", "op")
    forged = f"isp.example/blockd/t\n1\n{SCRIPT}\n\n— op+00000000 AAAA\n"
    log.latest_checkpoint = lambda: forged  # type: ignore[method-assign]
    page = render_status(daemon(audit=log), NOW)
    assert "does not verify" in page
    assert "<script" not in page.lower() and "&lt;script&gt;" in page


def fleet_view(**changes: Any) -> dict[str, Any]:
    """A fleet as the admin API gives it: three nodes, one behind, one silent."""
    node = {"syncer": False, "policy_generation": 14, "stale": False, "divergent": False}
    view: dict[str, Any] = {
        "node": "pop1-resolver1",
        "redis": "up",
        "problem": None,
        "down_since": None,
        "syncer": True,
        "read_at": "2026-11-23T11:59:58Z",
        "newest": {HOSTS: 3},
        "live": 2,
        "divergent": 1,
        "nodes": [
            {
                **node,
                "node": "pop1-resolver1",
                "syncer": True,
                "versions": {HOSTS: 3},
                "heartbeat_age": 2.2,
            },
            {
                **node,
                "node": "pop1-resolver2",
                "versions": {HOSTS: 2},
                "heartbeat_age": 1.0,
                "divergent": True,
                "policy_generation": 13,
            },
            {
                **node,
                "node": "pop2-resolver1",
                "versions": {HOSTS: None},
                "heartbeat_age": 61.0,
                "stale": True,
            },
        ],
        "skipped": [],
    }
    return view | changes


def test_the_fleet_table_lists_every_node_and_flags_the_ones_behind_or_silent() -> None:
    page = render_status(daemon(fleet=fleet_view()), NOW)
    words = text_of(page)
    assert "Fleet This node: pop1-resolver1 (the syncer); Redis up." in words
    assert "3 node(s), 2 live, 1 divergent, as read 2026-11-23T11:59:58Z" in words
    assert f"pop1-resolver1 syncer 2 s ago 14 {HOSTS} v3 ok" in words
    assert f"pop1-resolver2 follower 1 s ago 13 {HOSTS} v2 DIVERGENT" in words
    assert f"pop2-resolver1 follower 61 s ago 14 {HOSTS} none STALE" in words
    assert page.count('<tr class="bad"><td>pop') == 2


def test_without_a_fleet_there_is_no_fleet_table() -> None:
    assert "<h2>Fleet</h2>" not in render_status(daemon(), NOW)


def test_the_fleet_table_says_redis_is_down_and_escapes_what_redis_carries() -> None:
    view = fleet_view(
        redis="down",
        syncer=False,
        problem=f"ConnectionError: {SCRIPT}",
        skipped=[{"node": "junk", "reason": f"versions: {SCRIPT}"}],
    )
    view["nodes"][1]["node"] = SCRIPT
    view["nodes"][1]["versions"] = {SCRIPT: 1}
    page = render_status(daemon(fleet=view), NOW)
    assert "<script" not in page.lower()
    words = text_of(page)
    assert "This node: pop1-resolver1 ; Redis DOWN (ConnectionError: &lt;script&gt;" in words
    assert "Heartbeats skipped as malformed: junk: versions: &lt;script&gt;" in words
    before = text_of(render_status(daemon(fleet=fleet_view(read_at=None, nodes=[])), NOW))
    assert "Not read from Redis yet" in before
