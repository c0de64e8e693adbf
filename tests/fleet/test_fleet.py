"""A fleet of real blockd daemons on one real redis-server, over loopback.

Each node is an App with its own state directory; the authority's list is a file:// source
the test signs new versions of. A node's DNS answers are what the test checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from datetime import timedelta

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from blockd import tasks
from blockd.app import App
from blockd.cli import main
from blockd.config import parse
from blockd.config.fleet import FleetConfig
from blockd.events import FeedRejected
from blockd.fleet import bus, connect
from blockd.fleet.keys import Keys
from blockd.fleet.lease import Lease
from blockd.fleet.node import FleetNode
from tests.factories import Recorder, key, signed_list
from tests.fleet.nodes import (
    NOW,
    WAIT,
    Fleet,
    blocked,
    fetched,
    one_syncer,
    redis,
    sign,
    syncer,
    until,
    version,
)
from tests.fleet.servers import RedisServer

pytestmark = pytest.mark.slow


# -- the lease and the publish script, against Redis alone ------------------------------------


async def test_a_node_that_lost_its_lease_cannot_publish(redis_server: RedisServer) -> None:
    r = redis(redis_server)
    keys = Keys("t")
    a, b = Lease(keys, "a", 2), Lease(keys, "b", 2)
    try:
        assert await a.hold(r) and not await b.hold(r)
        assert await bus.publish(r, keys, a.holder, "x/y", 1, b"env1", None) == "published"
        await r.delete(keys.lease)  # a's lease expires (a paused: a GC, a partition)
        assert await b.hold(r) and b.token > a.token
        assert not await a.hold(r)  # a learns it on its next renewal...
        stale = f"{a.token or 1} a"  # ...but a publish in between carries its old token
        assert await bus.publish(r, keys, stale, "x/y", 2, b"env2", b"body") == "fenced"
        assert await bus.latest(r, keys, ["x/y"]) == {"x/y": 1}
        assert await bus.publish(r, keys, b.holder, "x/y", 2, b"env2", b"body") == "published"
        assert await bus.publish(r, keys, b.holder, "x/y", 1, b"env1", None) == "not-newer"
        assert await bus.latest(r, keys, ["x/y"]) == {"x/y": 2}
        assert await bus.fetch(r, keys, "x/y", 2) == (b"env2", b"body")
        assert await r.pttl(keys.version("x/y", 1)) > 0  # superseded: kept a while, not forever
        await b.release(r)
        assert await r.get(keys.lease) is None
    finally:
        await r.aclose()


# -- whole nodes ------------------------------------------------------------------------------


async def test_one_node_syncs_and_the_other_enforces_what_it_published(fleet: Fleet) -> None:
    async with fleet.node("a") as a, fleet.node("b") as b:
        await until(lambda: one_syncer(a, b), "one syncer")
        await until(lambda: version(a) == 1 and version(b) == 1, "both enforce v1")
        assert await blocked(a, "one.example") and await blocked(b, "one.example")
        leader = syncer(a, b)
        follower = b if leader is a else a
        fleet.publish(2, ["one.example", "two.example"])
        await leader.feeds.sync_all()
        await until(lambda: version(follower) == 2, "the follower enforces v2")
        assert await blocked(follower, "two.example") and await blocked(leader, "two.example")
        assert fetched(leader) and not fetched(follower)  # only the syncer asks the authority
        assert follower.readiness().checks["fleet"]["redis"] == "up"

        def status() -> dict[str, object]:
            out = fleet.tmp / "status.json"
            conf = fleet.tmp / "a" / "blockd.toml"
            conf.write_text(fleet.config("a"))
            with contextlib.redirect_stdout(out.open("w")):
                code = main(["fleet", "status", "-c", str(conf), "--json"])
            return {"code": code, **json.loads(out.read_text())}

        async def converged() -> bool:
            s = await asyncio.to_thread(status)
            return s["code"] == 0 and s["live"] == 2

        await until(converged, "fleet status: two live nodes, none divergent")
        s = await asyncio.to_thread(status)
        assert s["newest"] == {"auth/hosts": 2}
        nodes = {n["node"]: n for n in s["nodes"]}  # type: ignore[attr-defined]
        assert nodes["a"]["versions"] == {"auth/hosts": 2} == nodes["b"]["versions"]
        assert nodes[leader.config.fleet.node]["syncer"]  # type: ignore[union-attr]
        assert leader.fleet_node is not None and leader.fleet_node.fleet is not None
        want = [
            "blockd_fleet_nodes 2.0",
            "blockd_fleet_divergent_nodes 0.0",
            "blockd_fleet_syncer 1.0",
            "blockd_fleet_redis_up 1.0",
        ]

        def metrics() -> bool:
            body = leader.metrics.render()[0].decode()
            return all(line in body.splitlines() for line in want)

        await until(metrics, "the syncer's metrics: two nodes, none divergent, it syncs")


async def test_a_tampered_envelope_in_redis_is_refused_by_every_node(fleet: Fleet) -> None:
    async with fleet.node("a") as a, fleet.node("b") as b:
        await until(lambda: version(a) == 1 and version(b) == 1, "both enforce v1")
        seen = [Recorder(a.bus), Recorder(b.bus)]
        good = json.loads(sign(2, ["one.example", "evil.example"]))
        good["payload"] = good["payload"][:-8] + "AAAAAAA="  # a payload the signature is not over
        forged_by_other = signed_list(
            ["one.example", "evil.example"],
            keys=[key("not-the-authority")],
            version=3,
            issued_at=NOW - timedelta(hours=1),
            expires=NOW + timedelta(days=3),
        )
        keys, r = Keys("test"), redis(fleet.redis)
        try:
            for v, envelope in ((2, json.dumps(good).encode()), (3, forged_by_other)):
                await r.hset(keys.version("auth/hosts", v), mapping={"envelope": envelope})
                await r.set(keys.latest("auth/hosts"), v)
                await r.publish(keys.channel, json.dumps({"ref": "auth/hosts", "version": v}))

                def refused(v: int = v) -> bool:
                    return all(
                        any(e.version in (v, None) for e in s.of(FeedRejected)) for s in seen
                    )

                await until(refused, f"every node refuses the envelope of v{v}")
        finally:
            await r.aclose()
        reasons = {e.reason for s in seen for e in s.of(FeedRejected)}
        assert reasons <= {"signature", "malformed", "threshold"}, reasons
        for app in (a, b):
            assert version(app) == 1
            assert await blocked(app, "one.example") and not await blocked(app, "evil.example")


async def test_redis_down_nodes_keep_answering_and_converge_when_it_returns(
    fleet: Fleet,
) -> None:
    async with fleet.node("a") as a, fleet.node("b") as b:
        await until(lambda: version(a) == 1 and version(b) == 1, "both enforce v1")
        fleet.redis.stop()

        def down(app: App) -> bool:
            return bool(app.readiness().checks["fleet"]["redis"] == "down")

        await until(lambda: down(a) and down(b), "both see Redis down")
        for app in (a, b):
            r = app.readiness()
            assert r.ready and "Redis unreachable" in r.reason
            assert await blocked(app, "one.example")
            assert b"blockd_fleet_redis_up 0.0" in app.metrics.render()[0]
        fleet.publish(2, ["one.example", "two.example"])
        fleet.redis.start()  # empty: nothing was saved
        await until(lambda: not down(a) and not down(b), "both reach Redis again")
        await until(lambda: one_syncer(a, b), "one syncer again")
        await syncer(a, b).feeds.sync_all()
        await until(lambda: version(a) == 2 and version(b) == 2, "both enforce v2")
        assert await blocked(a, "two.example") and await blocked(b, "two.example")


async def test_when_the_syncer_stops_another_node_takes_over_and_syncs(fleet: Fleet) -> None:
    async with fleet.node("a") as a:
        await until(lambda: a.fleet_node is not None and a.fleet_node.syncer, "a is the syncer")
        async with fleet.node("b") as b:
            await until(lambda: version(b) == 1, "b enforces v1 from Redis")
            # v2 appears while a is the syncer: a syncs once a day, so whoever syncs next
            # (after a stops) fetches it
            fleet.publish(2, ["one.example", "two.example"])
            await a.stop()
            await until(lambda: b.fleet_node is not None and b.fleet_node.syncer, "b takes over")
            await until(lambda: version(b) == 2, "b syncs v2 from the authority itself")
            assert fetched(b) and await blocked(b, "two.example")
            keys, r = Keys("test"), redis(fleet.redis)
            try:
                await until(lambda: _latest(r, keys), "b published v2 to the fleet")
            finally:
                await r.aclose()


async def _latest(r: Redis, keys: Keys) -> bool:
    return await bus.latest(r, keys, ["auth/hosts"]) == {"auth/hosts": 2}


async def test_a_node_with_an_empty_state_directory_catches_up_from_redis(fleet: Fleet) -> None:
    async with fleet.node("a") as a:
        await until(lambda: version(a) == 1, "a syncs v1")
        fleet.publish(2, ["one.example", "two.example"])
        await a.feeds.sync_all()
        keys, r = Keys("test"), redis(fleet.redis)
        try:
            await until(lambda: _latest(r, keys), "a published v2 to the fleet")
        finally:
            await r.aclose()
        fleet.src.unlink()  # the authority is out of reach: only Redis has the list now
        async with fleet.node("fresh", start="fail-closed") as fresh:
            assert not fresh.readiness().ready or version(fresh) == 2
            await until(lambda: fresh.readiness().ready, "the new node is ready")
            assert version(fresh) == 2 and not fetched(fresh)
            assert await blocked(fresh, "two.example")


async def test_a_node_stopped_as_its_redis_connection_breaks_stops(fleet: Fleet) -> None:
    """A stop that meets a failing session ends the node (in Python 3.11 a TaskGroup reports
    a child's error instead of its parent's cancellation when both come at once)."""
    app = App(parse(fleet.config("a"), fleet.tmp))
    assert app.config.fleet is not None
    runner: asyncio.Task[None] | None = None

    class Breaking(PubSub):
        async def get_message(self, *args: object, **kwargs: object) -> None:
            assert runner is not None
            runner.cancel()  # the daemon stops...
            raise RedisConnectionError("connection reset")  # ...as the connection breaks

    def client(cfg: FleetConfig, password: str | None) -> Redis:
        r = connect.client(cfg, password)
        r.pubsub = lambda **kw: Breaking(r.connection_pool, **kw)  # type: ignore[method-assign]
        return r

    node = FleetNode(app.config.fleet, app.feeds, app.bus, make_client=client)
    runner = asyncio.create_task(node.run())
    done, _ = await asyncio.wait({runner}, timeout=WAIT)
    await tasks.cancel(runner)
    assert runner in done and runner.cancelled(), "the node kept running after it was stopped"


async def test_a_node_stops_whatever_it_is_doing_when_stopped(fleet: Fleet) -> None:
    """Stopping a node mid-command ends it: Python 3.11's wait_for, which redis-py uses for
    every write, drops a cancellation that comes as the write completes."""
    async with fleet.node("a") as a:  # the syncer: the other node only follows
        await until(lambda: version(a) == 1, "a syncs v1")
        app = App(parse(fleet.config("b"), fleet.tmp))
        app.feeds.holder.load()
        assert app.config.fleet is not None
        rng = random.Random(20)
        for _ in range(25):
            node = FleetNode(app.config.fleet, app.feeds, app.bus)
            runner = asyncio.create_task(node.run())
            await asyncio.sleep(rng.uniform(0, 0.03))  # connecting, catching up, beating...
            async with asyncio.timeout(WAIT):
                await tasks.cancel(runner)
            assert runner.cancelled()
