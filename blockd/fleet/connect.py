"""A Redis client for the fleet: one server or the primary Sentinels name, bounded waits."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from blockd.config.fleet import FleetConfig


def client(cfg: FleetConfig, password: str | None) -> Redis:
    """Return a client for cfg's Redis; it connects on first use.

    Each command waits at most a heartbeat (at least a second) and is not retried here:
    the fleet loop retries the whole session with back-off, so a dead Redis is noticed
    within one heartbeat rather than after the client's own retries.
    """
    timeout = max(1.0, cfg.heartbeat)
    if cfg.redis is not None:
        return Redis.from_url(
            cfg.redis,
            username=cfg.username,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            client_name=f"blockd-{cfg.node}",
        )
    assert cfg.service is not None  # the configuration pairs sentinels with a service
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [_hostport(s) for s in cfg.sentinels],
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        username=cfg.username,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    primary: Redis = sentinel.master_for(
        cfg.service,
        redis_class=_Primary,
        retry=Retry(NoBackoff(), 0),
        client_name=f"blockd-{cfg.node}",
    )
    return primary


class _Primary(Redis):
    """The primary the Sentinels name: closing it closes the connections to them too.

    redis-py leaves those to the Sentinel object, and the fleet makes a client for every
    session: without this, each reconnection left a connection open to a Sentinel.
    """

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the client, its pool and the Sentinel clients that found the primary."""
        try:
            await super().aclose(close_connection_pool)
        finally:
            pool = self.connection_pool
            if isinstance(pool, SentinelConnectionPool):
                await pool.sentinel_manager.aclose()


async def moved(r: Redis) -> str | None:
    """Return where the primary is now if the Sentinels name another than the one r uses.

    redis-py asks the Sentinels only when it opens a connection, and a node's session keeps
    its connections: without asking, it would go on writing to a primary the Sentinels have
    replaced (whose writes are lost when it is demoted, or never, if the Sentinels cannot
    reach it to demote it). None with a single Redis, before r has connected, while the
    Sentinels name r's primary, and when none of them answers (the session goes on).
    """
    pool = r.connection_pool
    if not isinstance(pool, SentinelConnectionPool) or pool.master_address is None:
        return None
    try:
        host, port = await pool.sentinel_manager.discover_master(pool.service_name)
    except (RedisError, OSError):  # no Sentinel answers, or none names a primary up
        return None
    if (host, port) == tuple(pool.master_address):
        return None
    return f"{host}:{port}"


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)
