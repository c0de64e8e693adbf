"""Where the fleet keeps things in Redis: every key and channel under one prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """The Redis key layout of one fleet (fleet.prefix)."""

    prefix: str

    @property
    def lease(self) -> str:
        """Return the syncer lease: '<token> <node>', expiring unless renewed."""
        return f"{self.prefix}:lease"

    @property
    def epoch(self) -> str:
        """Return the fencing counter: each new lease takes the next token."""
        return f"{self.prefix}:epoch"

    @property
    def channel(self) -> str:
        """Return the channel a notification goes to after each published version."""
        return f"{self.prefix}:notify"

    @property
    def nodes(self) -> str:
        """Return the sorted set of node ids by their latest heartbeat (Unix time)."""
        return f"{self.prefix}:nodes"

    def node(self, node: str) -> str:
        """Return the heartbeat hash of one node."""
        return f"{self.prefix}:node:{node}"

    def latest(self, ref: str) -> str:
        """Return the pointer to the newest published version of list ref."""
        return f"{self.prefix}:latest:{ref}"

    def versions(self, ref: str) -> str:
        """Return the prefix of ref's version keys (append the version)."""
        return f"{self.prefix}:list:{ref}:"

    def version(self, ref: str, version: int) -> str:
        """Return the hash holding one published version: envelope, body, publisher."""
        return f"{self.versions(ref)}{version}"
