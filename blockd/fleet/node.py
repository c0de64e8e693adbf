"""One node of the fleet: elect, sync or follow, apply what Redis carries, report.

Every node keeps a session with Redis: it subscribes to notifications, catches up by
reading each configured list's newest pointer (on start and after every reconnect), and
applies newer versions only through the policy holder's `apply`, which verifies them
against this node's own pinned trust policy and refuses rollbacks. The node holding the
lease is the syncer: only it runs the feed sync against the authorities, and each version
it accepts is published. The others never fetch lists from an authority.

With Sentinel, a session also ends when the Sentinels name another primary than the one
it is connected to, so that no node goes on with a replaced primary.

When Redis is unreachable the node keeps enforcing what it has, keeps answering, stops
fetching if it was the syncer (its lease may pass to another node), says so in readiness
and metrics, and reconnects with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from blockd import __version__, tasks
from blockd.config.fleet import FleetConfig
from blockd.events import EventBus, FeedAccepted, PolicyActivated
from blockd.feeds.sync import FeedSync
from blockd.fleet import bus, connect, status
from blockd.fleet.keys import Keys
from blockd.fleet.lease import Lease

log = logging.getLogger(__name__)
RETRY_FIRST, RETRY_MAX = 0.5, 30.0  # seconds of back-off between Redis sessions
LISTEN_WAIT = 1.0  # seconds a notification read waits before looking again
Checkpoint = Callable[[], Awaitable[str | None]]


async def _no_checkpoint() -> str | None:
    return None


class FleetNode:
    """This resolver as one node of a fleet."""

    def __init__(
        self,
        cfg: FleetConfig,
        feeds: FeedSync,
        events: EventBus,
        *,
        checkpoint: Checkpoint = _no_checkpoint,
        audit_key: str | None = None,
        make_client: Callable[[FleetConfig, str | None], Redis] = connect.client,
    ) -> None:
        """Prepare; the password file is read now (ConfigError if it may not be used).

        checkpoint returns the audit log's latest signed checkpoint and audit_key is the
        vkey it is signed with: both go in every heartbeat, for `blockd fleet audit`.
        """
        self.cfg = cfg
        self.feeds = feeds
        self.keys = Keys(cfg.prefix)
        self.lease = Lease(self.keys, cfg.node, cfg.lease)
        self.checkpoint = checkpoint
        self.audit_key = audit_key
        self._password = cfg.password()
        self._make_client = make_client
        self.redis_up = False
        self.problem: str | None = "not connected yet"
        self.down_since: float | None = time.time()
        self.fleet: status.Survey | None = None  # the latest survey of every node
        self._to_publish: set[str] = set()  # refs the syncer has a new version of
        self._refused: dict[str, tuple[int, str]] = {}  # ref -> (version, envelope sha256)
        self._wake = asyncio.Event()
        self._sync_task: asyncio.Task[None] | None = None
        events.subscribe(FeedAccepted, self._on_accepted)
        events.subscribe(PolicyActivated, lambda _: self._wake.set())

    @property
    def syncer(self) -> bool:
        """Say whether this node is the syncer now."""
        return self.lease.held

    def view(self) -> dict[str, Any]:
        """Return this node and the fleet as it last read it, JSON-ready (for the admin API).

        Heartbeat ages are judged now: when Redis is down, the other nodes age until it
        returns. Before the first read, `read_at` is None and `nodes` empty.
        """
        survey = self.fleet
        since = self.down_since
        fleet: dict[str, Any] = {"read_at": None, "newest": {}, "live": 0, "divergent": 0}
        fleet |= {"nodes": [], "skipped": []}
        if survey is not None:
            fleet = status.as_json(status.again(survey, time.time()))
            fleet["read_at"] = status.iso(survey.at)
        return {
            "node": self.cfg.node,
            "redis": "up" if self.redis_up else "down",
            "problem": self.problem,
            "down_since": status.iso(since) if since is not None else None,
            "syncer": self.syncer,
            **fleet,
        }

    def _on_accepted(self, event: FeedAccepted) -> None:
        # Publishing reads the version from the store once it is in force (see _publish).
        self._to_publish.add(f"{event.authority}/{event.list}")
        self._wake.set()

    # -- the session loop -------------------------------------------------------------

    async def run(self) -> None:
        """Be a node until cancelled: sessions with Redis, back-off between them."""
        delay = RETRY_FIRST
        while True:
            r = self._make_client(self.cfg, self._password)
            try:
                await r.ping()
                self._up()
                delay = RETRY_FIRST
                await self._session(r)
            except (RedisError, OSError) as e:
                self._down(e)
            finally:
                await self._end_session(r)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, RETRY_MAX)

    def _up(self) -> None:
        if not self.redis_up:
            log.info("fleet: connected to Redis (%s) as node %s", self.cfg.where(), self.cfg.node)
        self.redis_up, self.problem, self.down_since = True, None, None

    def _down(self, e: Exception) -> None:
        problem = f"{type(e).__name__}: {e}"[:300]
        if self.redis_up or self.problem != problem:
            log.warning(
                "fleet: Redis unreachable (%s); enforcing the last verified policy, retrying",
                problem,
            )
        if self.redis_up or self.down_since is None:
            self.down_since = time.time()
        self.redis_up, self.problem = False, problem

    async def _end_session(self, r: Redis) -> None:
        """Stop syncing, give the lease up if Redis still answers, close the client."""
        was = self.syncer
        await self._stop_syncing()
        if self.lease.token:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.lease.release(r)
            self.lease.lost()
        if was:
            log.warning("fleet: node %s is no longer the syncer", self.cfg.node)
        with contextlib.suppress(RedisError, OSError):
            await r.aclose()

    async def _session(self, r: Redis) -> None:
        pubsub = r.pubsub()
        try:
            await pubsub.subscribe(self.keys.channel)  # before catching up: nothing is missed
            await self.catch_up(r)
            # Not a TaskGroup: in Python 3.11 one reports a child's error instead of its
            # parent's cancellation when both come at once, and the node would never stop.
            loops = {
                asyncio.ensure_future(self._listen(r, pubsub)),
                asyncio.ensure_future(self._beat(r)),
            }
            if self.cfg.sentinels:
                loops.add(asyncio.ensure_future(self._follow_primary(r)))
            try:
                done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await tasks.cancel(*loops)
            for task in done:
                task.result()  # the session's end: a Redis error (the loops never return)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _listen(self, r: Redis, pubsub: object) -> None:
        from redis.asyncio.client import PubSub

        assert isinstance(pubsub, PubSub)
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=LISTEN_WAIT)
            if message is None:
                continue
            ref = bus.notified_ref(message.get("data"))
            refs = [c.ref for c in self.feeds.config.lists]
            await self.catch_up(r, [ref] if ref in refs else refs)

    async def _beat(self, r: Redis) -> None:
        while True:
            # Cleared before the round, not after: a wake that comes while it runs (a policy
            # activated as the heartbeat is written, a version accepted while the last one
            # publishes) brings another round at once instead of waiting a whole heartbeat.
            self._wake.clear()
            await self._elect(r)
            if self.syncer:
                await self._publish(r)
            await self._heartbeat(r)
            # asyncio.wait, not a timeout around the wait: in Python 3.11 a timeout expiring
            # as the task is cancelled can swallow the cancellation, and the session's task
            # group (and so App.stop) would wait for this loop forever.
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.cfg.heartbeat)
            finally:
                waiter.cancel()

    async def _follow_primary(self, r: Redis) -> None:
        """End the session once the Sentinels name another primary than this session's
        (a failover): the next session connects to the new one."""
        while True:
            await asyncio.sleep(self.cfg.heartbeat)
            if (where := await connect.moved(r)) is not None:
                raise RedisConnectionError(f"the Sentinels name another primary now: {where}")

    # -- election ---------------------------------------------------------------------

    async def _elect(self, r: Redis) -> None:
        was = self.syncer
        held = await self.lease.hold(r)
        if held and not was:
            log.info(
                "fleet: node %s is the syncer (lease token %d)", self.cfg.node, self.lease.token
            )
            self._to_publish.update(c.ref for c in self.feeds.config.lists)  # what it enforces
            self._sync_task = asyncio.get_running_loop().create_task(self._sync())
        elif not held and self._sync_task is not None:
            log.warning("fleet: node %s lost the syncer lease", self.cfg.node)
            await self._stop_syncing()

    async def _sync(self) -> None:
        """Run the ordinary feed sync (the syncer's job); a bug restarts it, never ends it."""
        while True:
            try:
                await self.feeds.run()
            except Exception:
                log.exception("fleet: feed sync failed; restarting it")
                await asyncio.sleep(self.cfg.heartbeat)

    async def _stop_syncing(self) -> None:
        task, self._sync_task = self._sync_task, None
        await tasks.cancel(task)

    # -- the syncer publishes ---------------------------------------------------------

    async def _publish(self, r: Redis) -> None:
        """Publish the version in force of each list accepted since the last time."""
        refs, self._to_publish = self._to_publish, set()
        for ref in sorted(refs):
            try:
                cfg = self.feeds.holder.list_config(ref)
            except KeyError:
                continue
            async with self.feeds.holder.lock:  # the version in force, not one mid-change
                active = self.feeds.store.state(cfg.authority, cfg.list).active
                if active is None:
                    continue
                try:
                    envelope, body = self.feeds.store.load_version(cfg.authority, cfg.list, active)
                except OSError as e:
                    log.error("fleet: %s v%d not published: %s", ref, active, e)
                    continue
            try:
                done = await bus.publish(
                    r, self.keys, self.lease.holder, ref, active, envelope, body
                )
            except BaseException:
                self._to_publish.add(ref)  # try again next session
                raise
            if done == "published":
                log.info("fleet: published %s v%d to the fleet", ref, active)
            elif done == "fenced":
                log.warning("fleet: %s v%d not published: the lease passed on", ref, active)
                self.lease.lost()
                return

    # -- every node follows -----------------------------------------------------------

    async def catch_up(self, r: Redis, refs: list[str] | None = None) -> None:
        """Apply the newest published version of each list (all configured by default)."""
        configured = {c.ref: c for c in self.feeds.config.lists}
        refs = [ref for ref in (refs or list(configured)) if ref in configured]
        newest = await bus.latest(r, self.keys, refs)
        if newest:
            await self.feeds.sync_trust()  # judge lists by the regulator's current keys
        for ref, version in newest.items():
            cfg = configured[ref]
            state = self.feeds.store.state(cfg.authority, cfg.list)
            if state.highest is not None and version <= state.highest:
                continue  # not newer than what this node holds: never a step back
            data = await bus.fetch(r, self.keys, ref, version)
            if data is None:
                log.warning("fleet: %s v%d is announced but not in Redis", ref, version)
                continue
            envelope, body = data
            digest = hashlib.sha256(envelope).hexdigest()
            if self._refused.get(ref) == (version, digest):
                continue  # refused already: the same bytes are not judged twice
            outcome = await self.feeds.holder.apply(ref, envelope, body)
            if outcome == "rejected":
                self._refused[ref] = (version, digest)
            else:
                log.info("fleet: %s v%d from Redis: %s", ref, version, outcome)

    async def _heartbeat(self, r: Redis) -> None:
        versions = {
            s.ref: s.version for s in self.feeds.status()
        }  # every configured list, None if not enforced
        checkpoint = await self.checkpoint()
        beat = status.Beat(
            node=self.cfg.node,
            time=time.time(),
            versions=versions,
            generation=self.feeds.snapshot.generation,
            syncer=self.syncer,
            heartbeat=self.cfg.heartbeat,
            checkpoint=checkpoint,
            blockd=__version__,
            audit_key=self.audit_key,
        )
        await status.beat(r, self.keys, beat)
        self.fleet = await status.read(r, self.keys, time.time())
