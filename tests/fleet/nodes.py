"""A fleet of real blockd nodes for tests: the authority's source, each node's configuration,
and waiting for the fleet to converge.

Each node is an App with its own state directory; the authority's list is a file:// source
the test signs new versions of. A node's DNS answers are what the tests check.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from blockd import tasks
from blockd.app import App
from tests.daemon import ask, running
from tests.factories import authority, signed_list, signed_trust, trust
from tests.fleet.servers import RedisServer

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

NOW = datetime.now(UTC).replace(microsecond=0)
WAIT = 20.0  # seconds any one convergence may take before the test fails
LEASE, HEARTBEAT = 2, 0.5
REF = "auth/hosts"
AUTHORITY = authority(max_entries=200_000, max_bytes=16 << 20)  # room for a large list


def sign(version: int, entries: list[str]) -> bytes:
    return signed_list(
        entries,
        version=version,
        issued_at=NOW - timedelta(hours=1),
        expires=NOW + timedelta(days=3),
    )


class Fleet:
    """The authority's source, the trust file, and how to start a node."""

    def __init__(self, tmp: Path, redis: RedisServer, upstream: Upstream) -> None:
        """Write the trust policy and v1 of auth/hosts."""
        self.tmp = tmp
        self.redis = redis
        self.upstream = upstream
        (tmp / "trust.dsse").write_bytes(
            signed_trust(trust([AUTHORITY], expires=NOW + timedelta(days=30)))
        )
        self.src = tmp / "hosts.dsse"
        self.signed: dict[int, bytes] = {}  # version -> the envelope the authority signed
        self.publish(1, ["one.example"])

    def publish(self, version: int, entries: list[str]) -> None:
        """Sign a new version at the authority's source."""
        self.signed[version] = sign(version, entries)
        new = self.src.with_suffix(".new")  # whole, as an authority serves it: a node
        new.write_bytes(self.signed[version])  # syncing meanwhile reads the old or the new
        new.replace(self.src)

    def config(
        self,
        node: str,
        *,
        start: str = "forward",
        server: str | None = None,
        interval: float = 86400,
    ) -> str:
        """Return a node's configuration: its own state directory, the shared Redis (or the
        server lines given: another URL, or sentinels and a service)."""
        host, port = self.upstream.addr
        state = self.tmp / node
        server = server or f'redis = "{self.redis.url}"'
        return f"""demo = true
[trust]
pinned = "{self.tmp / "trust.dsse"}"
[state]
dir = "{state}"
[dns]
listen = ["127.0.0.1:0"]
upstreams = ["{host}:{port}"]
attempt_timeout = 0.5
total_timeout = 1.5
start = "{start}"
[http]
listen = ["127.0.0.1:0"]
tls_listen = []
[admin]
listen = ["127.0.0.1:0"]
[selftest]
interval = 0
[fleet]
{server}
node = "{node}"
prefix = "test"
lease = {LEASE}
heartbeat = {HEARTBEAT}
[[lists]]
authority = "auth"
list = "hosts"
source = "file://{self.src}"
interval = {interval:g}
"""

    @contextlib.asynccontextmanager
    async def node(
        self, name: str, *, start: str = "forward", server: str | None = None
    ) -> AsyncIterator[App]:
        """Run one node (it syncs only as the fleet decides); stop it after."""
        (self.tmp / name).mkdir(exist_ok=True)
        text = self.config(name, start=start, server=server)
        (self.tmp / name / "blockd.toml").write_text(text)  # for reading after a failure
        async with running(text, self.tmp / name, sync=False) as app:
            yield app


async def until(
    check: Callable[[], Awaitable[bool] | bool], what: str, *, within: float = WAIT
) -> None:
    """Wait until check() is true (polling), or fail saying what did not happen."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {within} s: {what}")


async def blocked(app: App, name: str) -> bool:
    reply = await ask(app, name)
    return [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]


def version(app: App) -> int | None:
    return app.feeds.snapshot.versions.get(REF)


def fetched(app: App) -> bool:
    """Say whether this node ever fetched the list from the authority itself."""
    return app.feeds.store.state("auth", "hosts").last_attempt is not None


def is_syncer(app: App) -> bool:
    return app.fleet_node is not None and app.fleet_node.syncer


def syncer(*apps: App) -> App:
    [one] = [a for a in apps if is_syncer(a)]
    return one


def one_syncer(*apps: App) -> bool:
    return sum(is_syncer(a) for a in apps) == 1


def redis_down(app: App) -> bool:
    return bool(app.readiness().checks["fleet"]["redis"] == "down")


def redis(server: RedisServer) -> Redis:
    return Redis.from_url(server.url)


class Asking:
    """Ask every node for a blocked name over and over, in the background, and keep each
    answer that is not the block (no answer at all counts): a node must answer throughout."""

    def __init__(self, apps: list[App], name: str = "one.example") -> None:
        """Prepare to ask apps for name."""
        self.apps = apps
        self.name = name
        self.asked = 0
        self.wrong: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Asking:
        self._task = asyncio.get_running_loop().create_task(self._ask())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await tasks.cancel(self._task)

    async def _ask(self) -> None:
        while True:
            for app in self.apps:
                try:
                    ok = await blocked(app, self.name)
                except AssertionError:  # no answer within ask's wait
                    ok = False
                self.asked += 1
                if not ok:
                    self.wrong.append(
                        f"{app.config.fleet and app.config.fleet.node} v{version(app)}"
                    )
            await asyncio.sleep(0.1)
