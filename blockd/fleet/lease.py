"""Syncer election: a lease in Redis with a fencing token.

A node holds the lease while its key reads '<token> <node>' and it renews the key before
it expires. Taking a free lease takes the next token (INCR of the epoch), so a node that
lost its lease and comes back holds an older token than the node that took over, and the
publish script (blockd.fleet.bus), which checks the exact '<token> <node>' atomically
with the write, refuses it.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from blockd.fleet.keys import Keys

# KEYS: lease, epoch. ARGV: node, ttl (ms), the token this node holds (0: none).
# Returns the token held after the call; 0 when another node holds the lease.
HOLD = """
local held = redis.call('GET', KEYS[1])
if held then
  if held == ARGV[3] .. ' ' .. ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(ARGV[3])
  end
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
return token
"""
# KEYS: lease. ARGV: '<token> <node>'. Deletes the lease only if it is still that.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    """This node's claim on the syncer lease."""

    def __init__(self, keys: Keys, node: str, ttl: float) -> None:
        """Claim as node, for ttl seconds per renewal."""
        self.keys = keys
        self.node = node
        self.ttl = ttl
        self.token = 0  # the fencing token held; 0: none
        self._valid_until = 0.0  # monotonic time the lease surely lasts until

    @property
    def held(self) -> bool:
        """Say whether this node holds the lease now, by its own clock (conservatively)."""
        return self.token > 0 and time.monotonic() < self._valid_until

    @property
    def holder(self) -> str:
        """Return the lease's value while this node holds it: '<token> <node>'."""
        return f"{self.token} {self.node}"

    async def hold(self, r: Redis) -> bool:
        """Take the lease if it is free, renew it if this node holds it; say whether held."""
        started = time.monotonic()  # the lease runs from before the call, not after
        token = await r.eval(
            HOLD, 2, self.keys.lease, self.keys.epoch, self.node, int(self.ttl * 1000), self.token
        )
        self.token = int(token)
        self._valid_until = started + self.ttl if self.token else 0.0
        return self.token > 0

    def lost(self) -> None:
        """Forget the lease (Redis unreachable: it may have expired and passed on)."""
        self.token = 0
        self._valid_until = 0.0

    async def release(self, r: Redis) -> None:
        """Give the lease up, if still held, so another node takes over at once."""
        if self.token:
            await r.eval(RELEASE, 1, self.keys.lease, self.holder)
        self.lost()
