"""Unbound and BIND, from Debian's packages, take blockd's policy zone and enforce it.

Each resolver runs on loopback as a secondary of a running blockd (TSIG for BIND; Unbound
cannot sign transfers, so it is allowed by address), forwards clean names to a test
upstream, answers a blocked name as blocked and a clean one normally, then picks up a new
list version after blockd's NOTIFY, by IXFR.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from blockd.app import App
from blockd.events import ZoneTransferred
from tests.daemon import running
from tests.rpz.common import SECRET, ZONE, publish_hosts, rpz_config
from tests.rpz.interop import (
    NXDOMAIN,
    answers,
    ask,
    ensure_tools,
    free_port,
    named_conf,
    program,
    rcode,
    started,
    unbound_conf,
    wait_for,
)

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

pytest_plugins = ["tests.dnsupstream"]
pytestmark = pytest.mark.slow
WITHIN = 30.0  # seconds a resolver may take to start and transfer (not a timing assertion)


@pytest.fixture(scope="session")
def tools() -> None:
    ensure_tools()


def rpz_port(app: App) -> int:
    assert app.rpz is not None
    return next(p for t, _, p in app.rpz.bound if t == "tcp")


async def enforce_and_follow(
    app: App, tmp: Path, resolver: int, log: Path, upstream: Upstream
) -> None:
    """Check the resolver blocks and passes as blockd does, and follows a new version."""
    assert app.rpz is not None
    zone = await app.rpz.settled()
    assert zone is not None
    transfers: list[ZoneTransferred] = []
    app.bus.subscribe(ZoneTransferred, transfers.append)

    def blocked() -> bool:
        return answers(ask(resolver, "blocked.demo.test")) == ["127.0.0.1"]

    await asyncio.to_thread(wait_for, blocked, WITHIN, "the resolver blocked no name", log)
    assert answers(await asyncio.to_thread(ask, resolver, "www.blocked.demo.test")) == ["127.0.0.1"]
    assert answers(await asyncio.to_thread(ask, resolver, "www.example.com")) == ["192.0.2.1"]
    reply = await asyncio.to_thread(ask, resolver, "new.demo.test")
    assert rcode(reply) == NXDOMAIN  # the upstream's answer: not blocked yet

    publish_hosts(tmp, 2, ["blocked.demo.test", "new.demo.test"])
    await app.feeds.sync_all()
    after = await app.rpz.settled()
    assert after is not None and after.serial > zone.serial

    def followed() -> bool:
        return answers(ask(resolver, "new.demo.test")) == ["127.0.0.1"]

    await asyncio.to_thread(wait_for, followed, WITHIN, "the new version was not picked up", log)
    assert upstream.queries  # clean names did go upstream
    assert [t.kind for t in transfers][-1] == "IXFR"  # the change came as differences only


async def test_unbound_transfers_and_enforces_the_zone(
    tools: None, tmp_path: Path, upstream: Upstream
) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1")
    port = free_port()
    text = rpz_config(
        tmp_path,
        upstream.addr,
        unsigned_clients=["127.0.0.1"],  # Unbound cannot sign transfers (see README)
        notify=[f"127.0.0.1:{port}"],
    )
    async with running(text, tmp_path) as app:
        conf = unbound_conf(tmp_path, port, ZONE, rpz_port(app), upstream.addr[1])
        log = tmp_path / "unbound.log"
        with started([program("unbound"), "-d", "-c", str(conf)], log):
            await enforce_and_follow(app, tmp_path, port, log, upstream)


async def test_bind_transfers_with_tsig_and_enforces_the_zone(
    tools: None, tmp_path: Path, upstream: Upstream
) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1")
    port = free_port()
    text = rpz_config(tmp_path, upstream.addr, notify=[f"127.0.0.1:{port}"])
    async with running(text, tmp_path) as app:
        assert app.rpz is not None
        conf = named_conf(tmp_path, port, ZONE, rpz_port(app), upstream.addr[1], "xfr-key", SECRET)
        log = tmp_path / "named.log"
        with started([program("named"), "-g", "-c", str(conf)], log):
            await enforce_and_follow(app, tmp_path, port, log, upstream)
        assert "transferred serial" in log.read_text() and "TSIG 'xfr-key'" in log.read_text()
