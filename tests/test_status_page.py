"""The status page on its own: trust, upstream health, the checkpoint read for people, escaping."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

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

    def readiness(self) -> Readiness:
        return assess(self.facts)

    def listeners(self) -> list[tuple[str, str, int]]:
        return [("udp", "127.0.0.1", 5300)]


def daemon(
    *, ref: str = HOSTS, upstreams: list[UpstreamFact] | None = None, audit: MerkleLog | None = None
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
    fake = FakeDaemon(facts, _Feeds([status]), _Audit(audit) if audit is not None else None)
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
