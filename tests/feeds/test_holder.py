"""The policy holder's apply seam: a signed version from any source, verified like a fetch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from blockd.events import (
    EventBus,
    FeedAccepted,
    FeedRejected,
    FeedUnchanged,
    GuardIntervention,
    PolicyActivated,
)
from blockd.feeds.authoring import sign_list
from blockd.feeds.holder import PolicyHolder
from blockd.policy.mapped import open_current
from tests.factories import NOW, Recorder, config, key, payload, signed_list, signed_trust

LIST = {"authority": "auth", "list": "hosts", "source": "https://feeds.example/auth/hosts.dsse"}


def stored(path: str) -> bytes:
    return Path(path).read_bytes()


def holder(tmp: Path, **guards: Any) -> tuple[PolicyHolder, Recorder]:
    (tmp / "trust.dsse").write_bytes(signed_trust())
    bus = EventBus()
    rec = Recorder(bus)
    h = PolicyHolder(config(tmp, [LIST], **guards), bus, lambda: NOW)
    h.load()
    return h, rec


async def test_an_applied_version_is_enforced_and_its_exact_bytes_kept(tmp_path: Path) -> None:
    h, rec = holder(tmp_path)
    envelope = signed_list(["blocked.example"])
    assert await h.apply("auth/hosts", envelope, None) == "accepted"
    assert h.snapshot.blocked_host("www.blocked.example") is not None
    [accepted] = rec.of(FeedAccepted)
    assert stored(accepted.envelope_path) == envelope  # for a fleet or RPZ server
    assert accepted.body_path is None
    assert rec.of(PolicyActivated)[-1].versions == {"auth/hosts": 1}


async def test_a_body_is_bound_by_its_digest_and_kept_beside(tmp_path: Path) -> None:
    h, rec = holder(tmp_path)
    p, body = payload(["a.example", "b.example"], body_name="hosts-1.txt")
    assert body is not None
    envelope = sign_list(p, [key("auth-1")])
    assert await h.apply("auth/hosts", envelope, None) == "rejected"
    assert await h.apply("auth/hosts", envelope, body.replace(b"a.ex", b"z.ex")) == "rejected"
    assert [e.reason for e in rec.of(FeedRejected)] == ["digest-mismatch", "digest-mismatch"]
    assert h.snapshot.blocked_host("a.example") is None
    assert await h.apply("auth/hosts", envelope, body) == "accepted"
    [accepted] = rec.of(FeedAccepted)
    assert accepted.body_path is not None and stored(accepted.body_path) == body


async def test_a_body_the_envelope_does_not_sign_is_not_kept(tmp_path: Path) -> None:
    h, rec = holder(tmp_path)
    assert await h.apply("auth/hosts", signed_list(), b"anything") == "accepted"
    assert rec.of(FeedAccepted)[0].body_path is None
    assert not list((tmp_path / "state").rglob("*.body"))


async def test_the_same_or_an_older_version_changes_nothing(tmp_path: Path) -> None:
    h, rec = holder(tmp_path)
    assert await h.apply("auth/hosts", signed_list(["two.example"], version=2), None) == "accepted"
    assert await h.apply("auth/hosts", signed_list(["two.example"], version=2), None) == "unchanged"
    assert await h.apply("auth/hosts", signed_list(["one.example"], version=1), None) in (
        "unchanged",
        "rejected",
    )
    assert h.snapshot.versions == {"auth/hosts": 2}
    assert h.snapshot.blocked_host("one.example") is None
    assert rec.of(FeedUnchanged)


@pytest.mark.parametrize(
    "envelope",
    [
        signed_list(keys=[key("stranger")]),  # a key the trust policy does not know
        signed_list(list_id="other"),  # another list's version delivered as this one
        signed_list(authority_id="nobody"),
        b"{not json",
        b"",
        signed_list()[:-7],
    ],
)
async def test_whatever_delivered_it_an_envelope_that_does_not_verify_is_refused(
    tmp_path: Path, envelope: bytes
) -> None:
    h, rec = holder(tmp_path)
    assert await h.apply("auth/hosts", signed_list(["kept.example"]), None) == "accepted"
    assert await h.apply("auth/hosts", envelope, None) == "rejected"
    [refused] = rec.of(FeedRejected)
    assert refused.reason and refused.message
    assert h.snapshot.blocked_host("kept.example") is not None  # last good stays in force
    state = h.store.state("auth", "hosts")
    assert state.active == 1 and state.last_error_reason == refused.reason


async def test_a_large_change_is_quarantined_whatever_its_source(tmp_path: Path) -> None:
    h, rec = holder(tmp_path, max_change_fraction=0.5, min_change_entries=1)
    first = [f"h{i}.example" for i in range(10)]
    assert await h.apply("auth/hosts", signed_list(first), None) == "accepted"
    other = [f"x{i}.example" for i in range(10)]
    assert await h.apply("auth/hosts", signed_list(other, version=2), None) == "quarantined"
    assert rec.of(GuardIntervention)[-1].kind == "quarantine"
    assert h.snapshot.versions == {"auth/hosts": 1}
    await h.approve("auth/hosts", 2)
    assert h.snapshot.versions == {"auth/hosts": 2}


async def test_only_configured_lists_are_applied(tmp_path: Path) -> None:
    h, _ = holder(tmp_path)
    with pytest.raises(KeyError, match="no configured list"):
        await h.apply("auth/other", signed_list(list_id="other"), None)


async def test_each_new_snapshot_is_published_for_workers_when_asked(tmp_path: Path) -> None:
    (tmp_path / "trust.dsse").write_bytes(signed_trust())
    cfg = config(tmp_path, [LIST])
    cfg = cfg.model_copy(update={"state": cfg.state.model_copy(update={"publish_policy": True})})
    h = PolicyHolder(cfg, EventBus(), lambda: NOW)
    h.load()
    assert await h.apply("auth/hosts", signed_list(["blocked.example"]), None) == "accepted"
    policy = cfg.state.dir / "policy"
    mapped = open_current(policy)
    assert mapped is not None and mapped.generation == h.snapshot.generation
    assert mapped.blocked_host("www.blocked.example") == h.snapshot.blocked_host(
        "www.blocked.example"
    )
    assert len(list(policy.glob("snapshot-*.bps"))) == 1  # the one in force


async def test_no_snapshot_file_is_written_by_default(tmp_path: Path) -> None:
    h, _ = holder(tmp_path)
    assert await h.apply("auth/hosts", signed_list(["blocked.example"]), None) == "accepted"
    assert not (h.config.state.dir / "policy").exists()
