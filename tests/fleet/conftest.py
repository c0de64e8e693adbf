"""Fixtures of the fleet tests: real Redis servers and Sentinels, a fleet of blockd nodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fleet.nodes import Fleet
from tests.fleet.servers import RedisServer, install

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream


@pytest.fixture(scope="session")
def redis_binary() -> str:
    """Return redis-server's path, installing Debian's redis-server package if missing."""
    return install("redis-server", "redis-server")


@pytest.fixture(scope="session")
def sentinel_binary() -> str:
    """Return redis-sentinel's path, installing Debian's redis-sentinel package if missing."""
    return install("redis-sentinel", "redis-sentinel")


@pytest.fixture
def redis_server(redis_binary: str, tmp_path: Path) -> Iterator[RedisServer]:
    """Run a redis-server for one test; stop it after."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(redis_binary, directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer, upstream: Upstream) -> Fleet:
    """Return the authority's source and the nodes' configuration, on one redis-server."""
    return Fleet(tmp_path, redis_server, upstream)
