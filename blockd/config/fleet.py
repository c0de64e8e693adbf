"""The fleet: many resolvers sharing verified list versions over Redis ([fleet])."""

from __future__ import annotations

import re
import socket
import stat
from pathlib import Path
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from blockd.config.base import ConfigError, Text, _Section

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}")


def _redis_url(value: str) -> str:
    try:
        url = urlsplit(value)
        port = url.port  # raises on a port out of range
    except ValueError:
        raise ValueError("must be redis://HOST:PORT/DB or rediss://HOST:PORT/DB") from None
    if url.scheme not in ("redis", "rediss") or not url.hostname:
        raise ValueError("must be redis://HOST:PORT/DB or rediss://HOST:PORT/DB (rediss: TLS)")
    if url.password is not None or url.username is not None:
        raise ValueError("must carry no user or password: use fleet.username and password_file")
    if url.query or url.fragment:
        raise ValueError("must carry no ?query or #fragment: the settings are fleet's own keys")
    db = url.path.lstrip("/")
    if db and not (db.isascii() and db.isdigit() and int(db) < 16):
        raise ValueError("the database must be a number from 0 to 15")
    if port == 0:
        raise ValueError("the port must be from 1 to 65535")
    return value


def _sentinel(value: str) -> str:
    if not _HOSTPORT.fullmatch(value) or not 0 < int(value.rpartition(":")[2]) < 65536:
        raise ValueError("must be HOST:PORT (a name or an address; [v6]:PORT)")
    return value


def is_ident(value: str) -> bool:
    """Say whether value may be a node id or prefix: 1-63 of A-Z a-z 0-9 . _ -."""
    return _ID.fullmatch(value) is not None


def _ident(value: str) -> str:
    if not is_ident(value):
        raise ValueError("must be 1-63 of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
    return value


RedisUrl = Annotated[str, AfterValidator(_redis_url)]
Sentinel = Annotated[str, AfterValidator(_sentinel)]
Ident = Annotated[str, AfterValidator(_ident)]


def _hostname() -> str:
    name = socket.gethostname().split(".")[0]
    return name if _ID.fullmatch(name) else "blockd"


class FleetConfig(_Section):
    """Many resolvers, one syncer: verified list versions shared over Redis."""

    redis: RedisUrl | None = Field(
        default=None,
        description="The Redis server: redis://HOST:PORT/DB, or rediss://… for TLS. Either "
        "this or sentinels.",
    )
    sentinels: list[Sentinel] = Field(
        default_factory=list,
        description="Redis Sentinels (HOST:PORT each) that name the current Redis primary "
        "of `service`; instead of redis.",
    )
    service: Text | None = Field(
        default=None, description="The Sentinel service (master) name; only with sentinels."
    )
    username: Text | None = Field(
        default=None, description="The Redis ACL user (default: Redis's default user)."
    )
    password_file: Path | None = Field(
        default=None,
        description="File holding the Redis password, read at start, never logged; it must "
        "not be readable by every user (chmod 0600 or 0640).",
    )
    node: Ident = Field(
        default_factory=_hostname,
        description="This node's id in the fleet, unique per resolver (default: the host name).",
    )
    prefix: Ident = Field(
        default="blockd",
        description="The namespace of every Redis key and channel blockd uses (one per fleet).",
    )
    lease: float = Field(
        default=15,
        ge=2,
        le=3600,
        description="Seconds the syncer's lease lasts unrenewed: when the syncer dies, "
        "another node takes over within this time.",
    )
    heartbeat: float = Field(
        default=5,
        ge=0.2,
        le=600,
        description="Seconds between heartbeats (and lease renewals); at most a third of "
        "lease. A node whose heartbeat is older than three of these is shown stale.",
    )

    @model_validator(mode="after")
    def _one_server(self) -> Self:
        if (self.redis is None) == (not self.sentinels):
            raise ValueError('set either redis = "redis://…" or sentinels = ["HOST:PORT", …]')
        if self.sentinels and self.service is None:
            raise ValueError("sentinels need service, the name Sentinel knows the primary by")
        if not self.sentinels and self.service is not None:
            raise ValueError("service is only for sentinels")
        if self.heartbeat * 3 > self.lease:
            raise ValueError(
                f"heartbeat ({self.heartbeat:g} s) must be at most a third of lease "
                f"({self.lease:g} s): the syncer renews its lease on each heartbeat"
            )
        return self

    def password(self) -> str | None:
        """Read the password file (ConfigError if unreadable or readable by every user)."""
        path = self.password_file
        if path is None:
            return None
        try:
            mode = path.stat().st_mode
            secret = path.read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise ConfigError(f"fleet.password_file: cannot read {path}: {reason}") from None
        if mode & stat.S_IROTH:
            raise ConfigError(
                f"fleet.password_file: {path} is readable by every user; chmod o-r it"
            )
        if not secret:
            raise ConfigError(f"fleet.password_file: {path} is empty")
        return secret

    def where(self) -> str:
        """Say which Redis this is, for logs (never a credential)."""
        if self.redis is not None:
            return self.redis
        return f"sentinel service {self.service} via {', '.join(self.sentinels)}"
