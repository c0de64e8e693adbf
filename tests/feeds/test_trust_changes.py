"""A trust change reaches every stored list; nothing a source sends stops the sync loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from blockd.events import EventBus, FeedRejected, FeedRevoked, TrustAccepted, TrustRejected
from blockd.feeds.authoring import sign_trust
from blockd.feeds.fetch import Fetcher, FetchPolicy, FetchResult
from blockd.feeds.sync import FeedSync
from tests.factories import NOW, Recorder, authority, config, key, signed_list, signed_trust, trust

A, B, R1 = key("auth-1"), key("auth-2"), key("regulator-1")


def start(tmp: Path, fetcher: Fetcher | None = None, **guards: Any) -> tuple[FeedSync, Recorder]:
    if not (tmp / "trust.dsse").exists():
        (tmp / "trust.dsse").write_bytes(signed_trust(trust([authority(keys=[A])])))
    (tmp / "updates").mkdir(exist_ok=True)
    cfg = config(
        tmp,
        [{"authority": "auth", "list": "hosts", "source": f"file://{tmp}/hosts.dsse"}],
        **guards,
    )
    cfg = cfg.model_copy(
        update={"trust": cfg.trust.model_copy(update={"updates": f"file://{tmp}/updates"})}
    )
    bus = EventBus()
    rec = Recorder(bus)
    feeds = FeedSync(cfg, bus, fetcher=fetcher, clock=lambda: NOW)
    feeds.load()
    return feeds, rec


def publish(tmp: Path, *entries: str, version: int = 1, signer: Any = A) -> None:
    (tmp / "hosts.dsse").write_bytes(signed_list(list(entries), keys=[signer], version=version))


def rotate_to_b(tmp: Path) -> None:
    (tmp / "updates" / "2.trust.dsse").write_bytes(
        sign_trust(trust([authority(keys=[B])], version=2), [R1])
    )


async def test_every_stored_version_signed_by_rotated_keys_is_dropped(tmp_path: Path) -> None:
    feeds, rec = start(tmp_path)
    cfg = feeds.config.lists[0]
    publish(tmp_path, "one.example")
    assert await feeds.sync_list(cfg) == "accepted"
    publish(tmp_path, "two.example", version=2)
    assert await feeds.sync_list(cfg) == "accepted"
    # The regulator rotates A out; the authority re-signs its list as v3 with B.
    rotate_to_b(tmp_path)
    publish(tmp_path, "three.example", version=3, signer=B)
    assert await feeds.sync_list(cfg) == "accepted"
    assert feeds.snapshot.versions == {"auth/hosts": 3}
    revoked = {e.version: e for e in rec.of(FeedRevoked)}
    assert sorted(revoked) == [1, 2]
    assert revoked[2].entries == 1 and "no longer enforced" in revoked[2].detail
    assert revoked[1].entries == 0 and "rollback" in revoked[1].detail
    assert {e.reason for e in revoked.values()} == {"signature"}
    assert {e.trust_version for e in revoked.values()} == {2}
    # Nothing signed by the revoked key can come back through an operator rollback.
    assert feeds.store.state("auth", "hosts").previous == []
    with pytest.raises(KeyError, match="no previous version"):
        await feeds.rollback("auth/hosts")


async def test_enforced_list_revoked_while_stopped_is_audited_at_start(tmp_path: Path) -> None:
    feeds, _ = start(tmp_path)
    publish(tmp_path, "old.example")
    assert await feeds.sync_list(feeds.config.lists[0]) == "accepted"
    # blockd stops; the rotation is stored (as a running daemon would have); it starts again.
    rotate_to_b(tmp_path)
    (tmp_path / "state" / "trust").mkdir(parents=True, exist_ok=True)
    (tmp_path / "state" / "trust" / "2.dsse").write_bytes(
        (tmp_path / "updates" / "2.trust.dsse").read_bytes()
    )
    again, rec = start(tmp_path)
    assert again.trust is not None and again.trust.version == 2
    assert again.snapshot.versions == {}
    [revoked] = rec.of(FeedRevoked)
    assert (revoked.authority, revoked.list, revoked.version, revoked.entries) == (
        "auth",
        "hosts",
        1,
        0,
    )
    # ... once: the state now says nothing is enforced, so a restart does not repeat it.
    _, rec2 = start(tmp_path)
    assert rec2.of(FeedRevoked) == []


async def test_narrowed_authority_revokes_what_it_no_longer_allows(tmp_path: Path) -> None:
    feeds, rec = start(tmp_path)
    publish(tmp_path, "fmt.example")
    assert await feeds.sync_list(feeds.config.lists[0]) == "accepted"
    narrowed = trust([authority(keys=[A], formats=["urls"])], version=2)
    (tmp_path / "updates" / "2.trust.dsse").write_bytes(sign_trust(narrowed, [R1]))
    assert await feeds.sync_list(feeds.config.lists[0]) == "rejected"
    [revoked] = rec.of(FeedRevoked)
    assert revoked.reason == "format-not-authorised" and revoked.entries == 1
    assert feeds.snapshot.host_verdict("fmt.example") is None


class Exploding(Fetcher):
    """A fetcher whose every call fails in a way no rule foresaw (a bug, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def fetch(self, url: str, policy: FetchPolicy, **kw: Any) -> FetchResult:
        self.calls += 1
        raise ZeroDivisionError("unforeseen")


async def test_unforeseen_errors_are_rejections_and_the_loop_goes_on(tmp_path: Path) -> None:
    fetcher = Exploding()
    feeds, rec = start(tmp_path, fetcher=fetcher)
    cfg = feeds.config.lists[0]
    assert await feeds.sync_list(cfg) == "rejected"
    [trust_rejected] = rec.of(TrustRejected)
    [rejected] = rec.of(FeedRejected)
    assert trust_rejected.reason == rejected.reason == "internal"
    assert "ZeroDivisionError" in rejected.message
    assert feeds.store.state("auth", "hosts").last_error_reason == "internal"
    # The scheduled loop survives it and waits for the next interval.
    run = asyncio.get_running_loop().create_task(feeds.run())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if fetcher.calls >= 4:
            break
    assert not run.done()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert fetcher.calls >= 4


async def test_trust_refresh_is_shared_by_concurrent_syncs(tmp_path: Path) -> None:
    feeds, rec = start(tmp_path)
    publish(tmp_path, "b.example", signer=B)
    rotate_to_b(tmp_path)
    outcomes = await asyncio.gather(*(feeds.sync_list(feeds.config.lists[0]) for _ in range(5)))
    assert "accepted" in outcomes
    assert len(rec.of(TrustAccepted)) == 1
