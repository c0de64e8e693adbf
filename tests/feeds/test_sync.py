"""Feed sync end to end: real HTTPS on loopback, real state directory, real restarts."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from blockd.events import (
    EventBus,
    FeedAccepted,
    FeedRejected,
    FeedUnchanged,
    GuardIntervention,
    PolicyActivated,
    TrustAccepted,
)
from blockd.feeds.authoring import hashed_entry, sign_list, sign_trust
from blockd.feeds.sync import FeedSync
from tests.factories import (
    NOW,
    Recorder,
    authority,
    config,
    key,
    payload,
    signed_list,
    signed_trust,
    trust,
)

if TYPE_CHECKING:
    from tests.feedserver import FeedServer


def make_sync(tmp: Path, lists: list[dict[str, Any]], **guards: Any) -> tuple[FeedSync, Recorder]:
    if not (tmp / "trust.dsse").exists():
        (tmp / "trust.dsse").write_bytes(signed_trust())
    bus = EventBus()
    rec = Recorder(bus)
    sync = FeedSync(config(tmp, lists, **guards), bus, clock=lambda: NOW)
    sync.load()
    return sync, rec


def https_list(server: FeedServer, path: str = "/auth/hosts.dsse", **kw: Any) -> dict[str, Any]:
    return {
        "authority": "auth",
        "list": "hosts",
        "source": server.url(path),
        "ca_file": server.ca_file,
        "deadline": 5,
        **kw,
    }


async def test_accepts_over_https_then_uses_conditional_get(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    route = feed_server.route("/auth/hosts.dsse", signed_list(["blocked.example"]), etag='"v1"')
    sync, rec = make_sync(tmp_path, [https_list(feed_server)])
    assert await sync.sync_list(sync.config.lists[0]) == "accepted"
    assert sync.snapshot.blocked_host("www.blocked.example") is not None
    assert sync.snapshot.host_verdict("blocked.example.org") is None
    [acc] = rec.of(FeedAccepted)
    assert (acc.authority, acc.list, acc.version, acc.entries) == ("auth", "hosts", 1, 1)
    assert acc.keyids == (key("auth-1").keyid,)
    assert await sync.sync_list(sync.config.lists[0]) == "unchanged"
    assert route.request_headers[-1].get("If-None-Match") == '"v1"'
    await sync.close()


async def test_rolled_back_and_stale_versions_keep_the_previous(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    route = feed_server.route("/auth/hosts.dsse", signed_list(["v2.example"], version=2))
    sync, rec = make_sync(tmp_path, [https_list(feed_server)])
    cfg = sync.config.lists[0]
    assert await sync.sync_list(cfg) == "accepted"
    route.content = signed_list(["v1.example"], version=1)
    assert await sync.sync_list(cfg) == "rejected"
    route.content = signed_list(
        ["v3.example"],
        version=3,
        issued_at=NOW - timedelta(days=9),
        expires=NOW - timedelta(days=1),
    )
    assert await sync.sync_list(cfg) == "rejected"
    assert [r.reason for r in rec.of(FeedRejected)] == ["rollback", "expired"]
    assert sync.snapshot.versions == {"auth/hosts": 2}
    assert sync.snapshot.blocked_host("v2.example") is not None
    assert sync.snapshot.blocked_host("v1.example") is None
    status = sync.status()[0]
    assert status.state.last_error_reason == "expired"
    await sync.close()


async def test_slow_and_endless_servers_are_cut_off(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.route("/slow.dsse", signed_list(), trickle=(50, 0.5))
    feed_server.route("/endless.dsse", b"", oversize=True)
    sync, rec = make_sync(
        tmp_path,
        [
            https_list(feed_server, "/slow.dsse", deadline=1.5),
            {**https_list(feed_server, "/endless.dsse"), "list": "urls"},
        ],
    )
    assert await sync.sync_list(sync.config.lists[0]) == "rejected"
    assert await sync.sync_list(sync.config.lists[1]) == "rejected"
    assert [r.reason for r in rec.of(FeedRejected)] == ["deadline", "too-large"]
    assert sync.snapshot.versions == {}
    await sync.close()


async def test_body_beside_is_fetched_and_bound_by_digest(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    p, body = payload(["a.example", "b.example"], body_name="hosts-1.txt")
    assert body is not None
    feed_server.route("/auth/hosts.dsse", sign_list(p, [key("auth-1")]))
    body_route = feed_server.route("/auth/hosts-1.txt", body.replace(b"a.example", b"z.example"))
    sync, rec = make_sync(tmp_path, [https_list(feed_server)])
    cfg = sync.config.lists[0]
    assert await sync.sync_list(cfg) == "rejected"
    assert rec.of(FeedRejected)[0].reason == "digest-mismatch"
    body_route.content = body
    assert await sync.sync_list(cfg) == "accepted"
    assert sync.snapshot.blocked_host("a.example") is not None
    await sync.close()


async def test_restart_enforces_last_known_good_before_any_fetch(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.route("/auth/hosts.dsse", signed_list(["kept.example"], version=7))
    sync, _ = make_sync(tmp_path, [https_list(feed_server)])
    await sync.sync_list(sync.config.lists[0])
    await sync.close()
    again, rec = make_sync(tmp_path, [https_list(feed_server)])
    assert again.snapshot.versions == {"auth/hosts": 7}
    assert again.snapshot.blocked_host("kept.example") is not None
    assert rec.of(PolicyActivated)[0].versions == {"auth/hosts": 7}


def test_tampered_state_is_not_enforced(tmp_path: Path) -> None:
    src = tmp_path / "hosts.dsse"
    src.write_bytes(signed_list(["kept.example"]))
    lists = [{"authority": "auth", "list": "hosts", "source": f"file://{src}"}]
    sync, _ = make_sync(tmp_path, lists)
    assert asyncio.run(sync.sync_list(sync.config.lists[0])) == "accepted"
    stored = tmp_path / "state/lists/auth/hosts/1.dsse"
    stored.write_bytes(stored.read_bytes().replace(b'"sig": "', b'"sig": "AA'))
    again, _ = make_sync(tmp_path, lists)
    assert again.snapshot.versions == {}


async def test_quarantine_then_approval(tmp_path: Path) -> None:
    src = tmp_path / "hosts.dsse"
    src.write_bytes(signed_list([f"h{i}.example" for i in range(10)]))
    lists = [{"authority": "auth", "list": "hosts", "source": f"file://{src}"}]
    sync, rec = make_sync(tmp_path, lists, max_change_fraction=0.3, min_change_entries=1)
    cfg = sync.config.lists[0]
    assert await sync.sync_list(cfg) == "accepted"
    src.write_bytes(signed_list([f"n{i}.example" for i in range(10)], version=2))
    assert await sync.sync_list(cfg) == "quarantined"
    [q] = rec.of(GuardIntervention)
    assert (q.kind, q.version, q.count) == ("quarantine", 2, 20)
    assert sync.snapshot.versions == {"auth/hosts": 1}
    assert sync.snapshot.blocked_host("n1.example") is None
    await sync.approve("auth/hosts", 2)
    assert sync.snapshot.versions == {"auth/hosts": 2}
    assert sync.snapshot.blocked_host("n1.example") is not None
    assert rec.of(GuardIntervention)[-1].kind == "approve"
    with pytest.raises(KeyError):
        await sync.approve("auth/hosts", 2)


async def test_small_change_is_applied_without_quarantine(tmp_path: Path) -> None:
    src = tmp_path / "hosts.dsse"
    src.write_bytes(signed_list(["a.example"]))
    lists = [{"authority": "auth", "list": "hosts", "source": f"file://{src}"}]
    sync, _ = make_sync(tmp_path, lists, max_change_fraction=0.1, min_change_entries=5)
    await sync.sync_list(sync.config.lists[0])
    src.write_bytes(signed_list(["b.example"], version=2))
    assert await sync.sync_list(sync.config.lists[0]) == "accepted"


async def test_operator_rollback_holds_the_undone_version(tmp_path: Path) -> None:
    src = tmp_path / "hosts.dsse"
    lists = [{"authority": "auth", "list": "hosts", "source": f"file://{src}"}]
    src.write_bytes(signed_list(["one.example"], version=1))
    sync, rec = make_sync(tmp_path, lists)
    cfg = sync.config.lists[0]
    await sync.sync_list(cfg)
    src.write_bytes(signed_list(["two.example"], version=2))
    await sync.sync_list(cfg)
    assert await sync.rollback("auth/hosts") == 1
    assert sync.snapshot.versions == {"auth/hosts": 1}
    assert rec.of(GuardIntervention)[-1].kind == "rollback"
    assert await sync.sync_list(cfg) == "unchanged"  # v2 again: held
    assert sync.snapshot.blocked_host("two.example") is None
    src.write_bytes(signed_list(["three.example"], version=3))
    assert await sync.sync_list(cfg) == "accepted"
    with pytest.raises(KeyError):
        await sync.rollback("auth/nothing")
    # the rollback survives a restart
    again, _ = make_sync(tmp_path, lists)
    assert again.snapshot.versions == {"auth/hosts": 3}


async def test_never_block_drops_entries_and_says_so(tmp_path: Path) -> None:
    src = tmp_path / "hosts.dsse"
    src.write_bytes(signed_list(["bad.example", "example.org", "x.gov.example", "gov.example"]))
    lists = [{"authority": "auth", "list": "hosts", "source": f"file://{src}"}]
    sync, rec = make_sync(tmp_path, lists, never_block=["www.example.org", "*.gov.example"])
    await sync.sync_list(sync.config.lists[0])
    [g] = rec.of(GuardIntervention)
    assert (g.kind, g.count) == ("never-block", 3)
    assert sync.snapshot.blocked_host("bad.example") is not None
    for name in ("example.org", "www.example.org", "x.gov.example", "gov.example"):
        assert sync.snapshot.blocked_host(name) is None


async def test_invalid_entries_are_rejected_and_counted(tmp_path: Path) -> None:
    src = tmp_path / "hosts.dsse"
    src.write_bytes(
        signed_list(
            [
                "ok.example",
                "com",
                "co.uk",
                "github.io",
                "",
                "a" * 64 + ".example",
                "bad host!",
                "ok.example",
            ]
        )
    )
    lists = [{"authority": "auth", "list": "hosts", "source": f"file://{src}"}]
    sync, rec = make_sync(tmp_path, lists)
    await sync.sync_list(sync.config.lists[0])
    [acc] = rec.of(FeedAccepted)
    assert acc.entries == 1
    assert acc.rejected_entries == {
        "public-suffix": 3,
        "empty": 1,
        "invalid-name": 2,
        "duplicate": 1,
    }
    assert sync.snapshot.blocked_host("uk") is None


async def test_url_and_hashed_lists(tmp_path: Path) -> None:
    urls_src, hashed_src = tmp_path / "urls.dsse", tmp_path / "hashed.dsse"
    urls_src.write_bytes(
        signed_list(["http://part.example/listed/page.html"], list_id="urls", fmt="urls")
    )
    hashed_src.write_bytes(
        signed_list(
            [
                hashed_entry("host", "secret.example"),
                hashed_entry("url", "part2.example/x/"),
                hashed_entry("route", "part2.example"),
            ],
            list_id="hashed",
            fmt="sha256",
        )
    )
    sync, _ = make_sync(
        tmp_path,
        [
            {"authority": "auth", "list": "urls", "source": f"file://{urls_src}"},
            {
                "authority": "auth",
                "list": "hashed",
                "source": f"file://{hashed_src}",
                "action": "nxdomain",
            },
        ],
    )
    for cfg in sync.config.lists:
        assert await sync.sync_list(cfg) == "accepted"
    snap = sync.snapshot
    route = snap.host_verdict("part.example")
    assert route is not None and route.action == "route"
    assert snap.url_verdict("http://part.example/listed/page.html") is not None
    assert snap.url_verdict("http://PART.example:80/listed/./page.html#x") is not None
    assert snap.url_verdict("http://part.example/other") is None
    hashed = snap.host_verdict("www.secret.example")
    assert hashed is not None and hashed.action == "nxdomain" and hashed.list == "hashed"
    assert snap.host_verdict("part2.example") is not None
    assert snap.url_verdict("http://part2.example/x/y.html") is not None
    assert snap.url_verdict("http://part2.example/y") is None


async def test_trust_update_rotates_an_authority_key(tmp_path: Path) -> None:
    old, new = key("auth-1"), key("auth-2")
    updates = tmp_path / "trust-updates"
    updates.mkdir()
    v2 = trust([authority(keys=[new])], version=2)
    (updates / "2.trust.dsse").write_bytes(sign_trust(v2, [key("regulator-1")]))
    src = tmp_path / "hosts.dsse"
    src.write_bytes(signed_list(["rotated.example"], keys=[new]))
    (tmp_path / "trust.dsse").write_bytes(signed_trust(trust([authority(keys=[old])])))
    bus = EventBus()
    rec = Recorder(bus)
    cfg = config(tmp_path, [{"authority": "auth", "list": "hosts", "source": f"file://{src}"}])
    cfg = cfg.model_copy(
        update={"trust": cfg.trust.model_copy(update={"updates": f"file://{updates}"})}
    )
    sync = FeedSync(cfg, bus, clock=lambda: NOW)
    sync.load()
    # Every sync refreshes trust first: the list signed by the new key is accepted at once.
    assert await sync.sync_list(cfg.lists[0]) == "accepted"
    kinds = [type(e) for e in rec.events if isinstance(e, TrustAccepted | FeedAccepted)]
    assert kinds == [TrustAccepted, FeedAccepted]
    assert rec.of(TrustAccepted)[0].version == 2
    assert sync.snapshot.blocked_host("rotated.example") is not None
    # The update is stored and re-verified from the pinned policy on restart.
    again = FeedSync(cfg, EventBus(), clock=lambda: NOW)
    again.load()
    assert again.trust is not None and again.trust.version == 2


@pytest.mark.slow  # a real subprocess or schedule
async def test_each_list_syncs_on_its_own_schedule(tmp_path: Path) -> None:
    fast, slow = tmp_path / "fast.dsse", tmp_path / "slow.dsse"
    fast.write_bytes(signed_list(["fast.example"]))
    slow.write_bytes(b"")
    sync, rec = make_sync(
        tmp_path,
        [
            {"authority": "auth", "list": "hosts", "source": f"file://{fast}", "interval": 0.2},
            {"authority": "auth", "list": "urls", "source": f"file://{slow}", "interval": 600},
        ],
    )
    task = asyncio.create_task(sync.run())
    await asyncio.sleep(1.1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    fast_syncs = [
        e
        for e in rec.events
        if getattr(e, "list", None) == "hosts" and isinstance(e, FeedAccepted | FeedUnchanged)
    ]
    slow_syncs = [
        e for e in rec.events if getattr(e, "list", None) == "urls" and isinstance(e, FeedRejected)
    ]
    assert len(fast_syncs) >= 4  # one accept, then "not modified" every ~0.2 s
    assert len(slow_syncs) == 1  # the empty file was tried once, at start
    assert sync.snapshot.blocked_host("fast.example") is not None
