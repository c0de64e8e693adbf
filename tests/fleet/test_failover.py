"""The fleet when parts of it fail, with real processes on loopback: a Redis primary killed
under Sentinel, or replaced while it lives on; one node or the syncer cut off from Redis;
the syncer (a real `blockd run`) killed as it publishes.

Throughout, every node must keep answering DNS from a verified policy; afterwards, every
node must enforce the newest version.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import Redis

from blockd import tasks
from blockd.config.fleet import FleetConfig
from blockd.fleet import bus, connect
from blockd.fleet.keys import Keys
from tests.fleet.nodes import (
    LEASE,
    REF,
    WAIT,
    Asking,
    Fleet,
    blocked,
    is_syncer,
    one_syncer,
    redis,
    redis_down,
    syncer,
    until,
    version,
)
from tests.fleet.relay import Relay
from tests.fleet.servers import RedisServer, Sentinel
from tests.test_workers import Blockd, addresses, query, run

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

pytestmark = pytest.mark.slow
SERVICE = "blockd"
KEYS = Keys("test")
RECONNECT = 2 * WAIT  # a node cut off long enough backs off for up to 30 s between tries


@contextlib.asynccontextmanager
async def relay(target: int) -> AsyncIterator[Relay]:
    r = Relay(target)
    await r.start()
    try:
        yield r
    finally:
        await r.close()


async def latest(r: Redis) -> int | None:
    return (await bus.latest(r, KEYS, [REF])).get(REF)


# -- Sentinel: the primary fails, a replica takes its place ----------------------------------


class SentinelSet:
    """A primary, a replica that replicates through a relay (so the test can make it fall
    behind), and three Sentinels (quorum two) naming the primary of service "blockd"."""

    def __init__(self, redis_binary: str, sentinel_binary: str, directory: Path) -> None:
        """Prepare the processes; start() starts them."""
        self.directory = directory
        self.primary = RedisServer(redis_binary, directory)
        self.redis_binary = redis_binary
        self.sentinel_binary = sentinel_binary
        self.replica: RedisServer | None = None
        self.sentinels: list[Sentinel] = []

    async def start(self, link: Relay) -> None:
        """Start the primary, the replica through link, then the Sentinels; wait until the
        Sentinels know one another and the replica."""
        self.primary.start()
        self.replica = RedisServer(self.redis_binary, self.directory, replica_of=link.port)
        self.replica.start()
        r = Redis(port=self.replica.port)
        try:
            await until(lambda: _link_up(r), "the replica replicates the primary")
        finally:
            await r.aclose()
        self.sentinels = [
            Sentinel(
                self.sentinel_binary,
                self.directory,
                service=SERVICE,
                primary=self.primary.port,
                quorum=2,
            )
            for _ in range(3)
        ]
        for s in self.sentinels:
            s.start()
        for s in self.sentinels:
            c = Redis(port=s.port)
            try:
                await until(functools.partial(_watching, c), f"Sentinel {s.port} sees its peers")
            finally:
                await c.aclose()

    @property
    def server(self) -> str:
        """Return a node's [fleet] lines naming the Sentinels and the service."""
        listed = ", ".join(f'"{s.address}"' for s in self.sentinels)
        return f'sentinels = [{listed}]\nservice = "{SERVICE}"'

    async def primary_port(self) -> int | None:
        """Return the primary's port as every Sentinel names it; None while they differ."""
        ports = set()
        for s in self.sentinels:
            c = Redis(port=s.port)
            try:
                found: Any = await c.sentinel_get_master_addr_by_name(SERVICE)
            finally:
                await c.aclose()
            ports.add(int(found[1]))
        return ports.pop() if len(ports) == 1 else None

    def stop(self) -> None:
        """Stop every process."""
        for p in [*self.sentinels, self.replica, self.primary]:
            if p is not None:
                p.stop()


async def _link_up(r: Redis) -> bool:
    info = await r.info("replication")
    return bool(info.get("master_link_status") == "up")


async def _watching(c: Redis) -> bool:
    state: Any = await c.sentinel_master(SERVICE)
    return bool(state["num-other-sentinels"] == 2 and state["num-slaves"] == 1)


@pytest.fixture
def sentinel_set(redis_binary: str, sentinel_binary: str, tmp_path: Path) -> Iterator[SentinelSet]:
    directory = tmp_path / "redis"
    directory.mkdir()
    s = SentinelSet(redis_binary, sentinel_binary, directory)
    try:
        yield s
    finally:
        s.stop()


async def test_a_client_through_sentinel_closes_its_connections_to_the_sentinels(
    sentinel_set: SentinelSet,
) -> None:
    """A node makes a client for every session: closing it must close its connections to
    the Sentinels too (redis-py leaves them to the Sentinel object, open until collected)."""
    s = Sentinel(
        sentinel_set.sentinel_binary,
        sentinel_set.directory,
        service=SERVICE,
        primary=sentinel_set.primary.port,
        quorum=1,
    )
    sentinel_set.sentinels.append(s)
    sentinel_set.primary.start()
    s.start()
    cfg = FleetConfig(sentinels=[s.address], service=SERVICE, node="a")
    for _ in range(3):
        r = connect.client(cfg, None)
        await r.set("k", "v")  # found the primary through the Sentinel
        await r.aclose()
    watcher = Redis(port=s.port)
    try:
        clients = await watcher.client_list()
    finally:
        await watcher.aclose()
    assert len(clients) == 1, clients  # only the watcher's own


async def test_sentinel_fails_over_and_the_nodes_follow_the_new_primary(
    tmp_path: Path, sentinel_set: SentinelSet, upstream: Upstream
) -> None:
    """Kill the primary: the Sentinels promote the replica, every node finds it through them,
    the syncer republishes the version the replica never received, and the next reaches all."""
    s = sentinel_set
    async with relay(s.primary.port) as link:
        await s.start(link)
        assert s.replica is not None
        new_primary = s.replica.port
        fleet = Fleet(tmp_path, s.primary, upstream)
        async with (
            fleet.node("a", server=s.server) as a,
            fleet.node("b", server=s.server) as b,
            contextlib.AsyncExitStack() as stack,
        ):
            await until(lambda: one_syncer(a, b), "one syncer")
            await until(lambda: version(a) == 1 == version(b), "both enforce v1")
            replica = Redis(port=new_primary)
            stack.push_async_callback(replica.aclose)
            async with Asking([a, b]) as asking:
                # The replica falls behind: v2 reaches the primary and both nodes, not it.
                link.cut()
                await until(lambda: _not(_link_up(replica)), "the replica lost its primary")
                fleet.publish(2, ["one.example", "two.example"])
                await syncer(a, b).feeds.sync_all()
                await until(lambda: version(a) == 2 == version(b), "both enforce v2")
                assert await latest(replica) == 1  # the write the failover is to lose
                s.primary.kill()

                async def promoted() -> bool:
                    return await s.primary_port() == new_primary

                await until(promoted, "the Sentinels promote the replica", within=RECONNECT)
                await until(
                    lambda: not redis_down(a) and not redis_down(b) and one_syncer(a, b),
                    "both nodes reach the new primary, one of them the syncer",
                    within=RECONNECT,
                )
                # Nothing stepped back, and the syncer republished what it enforces.
                assert version(a) == 2 == version(b)
                await until(lambda: _is(latest(replica), 2), "v2 republished to the new primary")
                fleet.publish(3, ["one.example", "three.example"])
                await syncer(a, b).feeds.sync_all()
                await until(lambda: version(a) == 3 == version(b), "both enforce v3")
                assert await latest(replica) == 3
            assert asking.asked > 0 and not asking.wrong, asking.wrong
            assert await blocked(a, "three.example") and await blocked(b, "three.example")


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


async def _latest_is(r: Redis, wanted: int) -> bool:
    return await latest(r) == wanted


async def _is(value: Awaitable[object], wanted: object) -> bool:
    return await value == wanted


# -- partitions: one node, or the syncer, cut off from Redis ---------------------------------

V2 = ["one.example", "two.example"]
V3 = ["one.example", "two.example", "three.example"]


async def test_a_node_cut_off_from_redis_keeps_its_policy_and_catches_up(fleet: Fleet) -> None:
    async with relay(fleet.redis.port) as link, fleet.node("a") as a:
        await until(lambda: is_syncer(a), "a is the syncer")
        async with fleet.node("b", server=f'redis = "{link.url}"') as b:
            await until(lambda: version(a) == 1 == version(b), "both enforce v1")
            r = redis(fleet.redis)
            try:
                async with Asking([a, b]) as asking:
                    link.cut()
                    await until(lambda: redis_down(b), "b sees Redis down")
                    for v, entries in ((2, V2), (3, V3)):
                        fleet.publish(v, entries)
                        await a.feeds.sync_all()
                        assert version(a) == v
                    await until(lambda: _is(latest(r), 3), "a published v3")
                    # b is behind, says so, and keeps answering from the policy it has
                    assert version(b) == 1 and redis_down(b)
                    ready = b.readiness()
                    assert ready.ready and "Redis unreachable" in ready.reason
                    assert await blocked(b, "one.example")
                    assert not await blocked(b, "three.example")
                    link.restore()
                    await until(lambda: version(b) == 3, "b catches up to v3", within=RECONNECT)
                    assert not redis_down(b)
                assert asking.asked > 0 and not asking.wrong, asking.wrong
            finally:
                await r.aclose()
            assert await blocked(b, "three.example")
            assert is_syncer(a) and not is_syncer(b)


async def test_a_syncer_cut_off_loses_the_lease_and_cannot_publish_with_it(fleet: Fleet) -> None:
    async with (
        relay(fleet.redis.port) as link,
        fleet.node("a", server=f'redis = "{link.url}"') as a,
    ):
        await until(lambda: is_syncer(a), "a is the syncer")
        async with fleet.node("b") as b:
            await until(lambda: version(a) == 1 == version(b), "both enforce v1")
            assert a.fleet_node is not None
            stale = a.fleet_node.lease.holder  # what a's publications carried: '<token> a'
            attempted = a.feeds.store.state("auth", "hosts").last_attempt
            r = redis(fleet.redis)
            try:
                async with Asking([a, b]) as asking:
                    link.cut()
                    await until(lambda: is_syncer(b), "b takes over", within=LEASE + WAIT)
                    assert not is_syncer(a)
                    fleet.publish(2, V2)
                    await b.feeds.sync_all()
                    await until(lambda: _is(latest(r), 2), "b published v2")
                    published = await r.hgetall(KEYS.version(REF, 2))
                    assert published[b"node"] == b"b"
                    assert int(published[b"token"]) > int(stale.split()[0])
                    # A publication of the old syncer's (delayed in the network, or sent
                    # after a stall) carries its old token: the script refuses it.
                    fleet.publish(3, V3)
                    envelope = fleet.signed[3]
                    assert await bus.publish(r, KEYS, stale, REF, 3, envelope, None) == "fenced"
                    assert await latest(r) == 2
                    assert version(a) == 1  # cut off: it kept its policy and fetched nothing
                    assert a.feeds.store.state("auth", "hosts").last_attempt == attempted
                    link.restore()
                    await b.feeds.sync_all()
                    await until(
                        lambda: version(a) == 3 == version(b), "both enforce v3", within=RECONNECT
                    )
                    assert not redis_down(a) and is_syncer(b) and not is_syncer(a)
                    assert await latest(r) == 3
                assert asking.asked > 0 and not asking.wrong, asking.wrong
            finally:
                await r.aclose()


# -- the syncer, a real `blockd run`, killed as it publishes ---------------------------------

BIG = [f"host{i}.example" for i in range(50_000)]
NEW = [f"new{i}.example" for i in range(1000)]  # few enough for the guards (see GuardsConfig)


@contextlib.asynccontextmanager
async def blockd_run(fleet: Fleet, node: str, server: str) -> AsyncIterator[Blockd]:
    """Run `blockd run` as node (syncing every second while it is the syncer)."""
    (fleet.tmp / node).mkdir(exist_ok=True)
    conf = fleet.tmp / node / "blockd.toml"
    conf.write_text(fleet.config(node, interval=1, server=server))
    async with run(conf) as process:
        yield process


class Watch:
    """Read Redis over and over, in the background: every time, the newest pointer must
    lead to a whole version, byte for byte the envelope the authority signed."""

    def __init__(self, fleet: Fleet) -> None:
        """Prepare to watch fleet's Redis."""
        self.fleet = fleet
        self.reads = 0
        self.seen: set[int] = set()
        self.wrong: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watch:
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await tasks.cancel(self._task)

    async def _watch(self) -> None:
        r = redis(self.fleet.redis)
        try:
            while True:
                async with r.pipeline(transaction=True) as p:  # one moment's view
                    p.get(KEYS.latest(REF))
                    p.hgetall(KEYS.version(REF, 2))
                    pointer, v2 = await p.execute()
                newest = int(pointer) if pointer is not None else None
                if newest is not None:
                    self.seen.add(newest)
                    data = await r.hgetall(KEYS.version(REF, newest)) if newest != 2 else v2
                    if data.get(b"envelope") != self.fleet.signed.get(newest):
                        self.wrong.append(f"latest -> v{newest}, not the signed envelope")
                self.reads += 1
                await asyncio.sleep(0.01)
        finally:
            await r.aclose()


@pytest.mark.parametrize("moment", ["stored", "mid-publish"])
async def test_the_syncer_killed_as_it_publishes_leaves_no_partial_version(
    fleet: Fleet, moment: str
) -> None:
    """SIGKILL the syncer (a real `blockd run`) as soon as it has stored a large new version,
    or once Redis has received part of its publication of it (its connection goes through a
    relay that holds the rest). Redis only ever points to a whole version, the other node
    only ever enforces v1 or the whole v2, it takes over within the lease, and everything
    converges on v2, the killed node too once it runs again."""
    fleet.publish(1, ["one.example", *BIG])
    r = redis(fleet.redis)
    async with relay(fleet.redis.port) as link, contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(r.aclose)
        server = f'redis = "{link.url}"'
        a = await stack.enter_async_context(blockd_run(fleet, "a", server))
        await until(lambda: _is(r.get(KEYS.lease), b"1 a"), "a is the syncer")
        await until(lambda: _is(latest(r), 1), "a published v1")
        b = await stack.enter_async_context(fleet.node("b"))
        await until(lambda: version(b) == 1, "b enforces v1 from Redis")
        seen: set[int | None] = set()

        async def keep() -> None:
            while True:
                seen.add(version(b))
                await asyncio.sleep(0.01)

        async with Watch(fleet) as watch, Asking([b]) as asking:
            keeper = asyncio.get_running_loop().create_task(keep())
            stack.push_async_callback(tasks.cancel, keeper)
            if moment == "mid-publish":
                link.stall(after=100_000)  # of a publication of some 1.3 MB
            fleet.publish(2, ["one.example", *BIG, *NEW])
            if moment == "stored":
                stored = fleet.tmp / "a" / "lists" / "auth" / "hosts" / "2.dsse"
                await until(stored.exists, "a stores v2", within=RECONNECT)
            else:
                await until(link.stalled.is_set, "a is publishing v2", within=RECONNECT)
            a.proc.kill()
            await a.proc.wait()
            link.cut()  # its connections close with it
            if moment == "mid-publish":  # Redis dropped the half-received script: v2 is
                # not there, or b published it (a slow test: a timed out and lost the lease)
                published = await r.hgetall(KEYS.version(REF, 2))
                assert published.get(b"node", b"b") == b"b", published.get(b"node")
            await until(lambda: is_syncer(b), "b takes over", within=LEASE + WAIT)
            await until(lambda: version(b) == 2, "b enforces v2")
            await until(lambda: _is(latest(r), 2), "v2 is published")
            assert await blocked(b, "new999.example")
            published = await r.hgetall(KEYS.version(REF, 2))
            assert published[b"node"] in (b"a", b"b")  # a, before it died, or b after
            await tasks.cancel(keeper)
        assert seen <= {1, 2}, seen
        assert watch.reads > 0 and not watch.wrong, watch.wrong
        assert watch.seen <= {1, 2}, watch.seen
        assert asking.asked > 0 and not asking.wrong, asking.wrong
        # The killed node starts again on what it left on disk, and converges.
        link.restore()
        async with blockd_run(fleet, "a", server) as again:

            async def enforces_v2() -> bool:
                reply = await asyncio.to_thread(query, again.dns, "new999.example")
                return addresses(reply) == ["127.0.0.1"]

            await until(enforces_v2, "a, started again, enforces v2")
            assert is_syncer(b) and version(b) == 2


async def test_the_nodes_leave_a_replaced_primary_the_sentinels_cannot_demote(
    tmp_path: Path, sentinel_set: SentinelSet, upstream: Upstream
) -> None:
    """A failover while the old primary lives on and the Sentinels cannot demote it (here it
    refuses REPLICAOF; in life, a partition between it and them): the nodes must not keep
    their sessions with it, or the fleet's versions would go where no new node reads them."""
    s = sentinel_set
    s.primary.extra = ["--rename-command", "REPLICAOF", "", "--rename-command", "SLAVEOF", ""]
    async with relay(s.primary.port) as link:
        await s.start(link)
        assert s.replica is not None
        old, new = s.primary.port, s.replica.port
        fleet = Fleet(tmp_path, s.primary, upstream)
        async with (
            fleet.node("a", server=s.server) as a,
            fleet.node("b", server=s.server) as b,
        ):
            await until(lambda: one_syncer(a, b), "one syncer")
            await until(lambda: version(a) == 1 == version(b), "both enforce v1")
            async with Asking([a, b]) as asking:
                c = Redis(port=s.sentinels[0].port)
                try:
                    assert await c.sentinel_failover(SERVICE)
                finally:
                    await c.aclose()

                async def swapped() -> bool:
                    return await s.primary_port() == new

                await until(swapped, "the Sentinels name the replica primary", within=RECONNECT)
                r = Redis(port=new)
                try:
                    await until(
                        functools.partial(_clients, r, {"blockd-a", "blockd-b"}),
                        "both nodes on the new primary",
                        within=RECONNECT,
                    )
                    await until(lambda: one_syncer(a, b), "one syncer", within=RECONNECT)
                    fleet.publish(2, ["one.example", "two.example"])
                    await syncer(a, b).feeds.sync_all()
                    await until(lambda: version(a) == 2 == version(b), "both enforce v2")
                    assert await latest(r) == 2
                finally:
                    await r.aclose()
            assert asking.asked > 0 and not asking.wrong, asking.wrong
            stale = Redis(port=old)
            try:
                assert (await stale.role())[0] == b"master"  # still: nothing demoted it
                assert await latest(stale) == 1  # and nothing more went to it
            finally:
                await stale.aclose()


async def _clients(r: Redis, names: set[str]) -> bool:
    return names <= {c["name"] for c in await r.client_list()}
