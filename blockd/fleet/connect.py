"""A Redis client for the fleet: one server or the primary Sentinels name, bounded waits."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

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


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)
