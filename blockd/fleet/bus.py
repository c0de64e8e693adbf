"""Lists over Redis: the syncer publishes whole signed versions, every node reads them.

A published version is a hash (envelope, body if the list has one, the publisher and its
fencing token) written by one Lua script that first checks the publisher still holds the
lease with its token, then writes the data, then moves the list's `latest` pointer (only
ever up), then notifies. Redis runs a script whole, and the pointer moves only after the
data is written, so no reader ever finds a pointer to a partial list. Nothing read here
is trusted: envelopes are verified by the node that applies them.
"""

from __future__ import annotations

import json
from typing import Literal

from redis.asyncio import Redis

from blockd.fleet.keys import Keys

SUPERSEDED_KEEP_MS = 3_600_000  # a version replaced stays readable an hour (nodes mid-read)
MAX_NOTIFICATION = 512  # bytes; anything longer is not ours

# KEYS: lease, version hash, latest pointer. ARGV: '<token> <node>', version, envelope,
# body, has body (1/0), channel, notification, this list's version-key prefix, keep (ms).
# Returns 1 published, 0 not newer than the pointer, -1 fenced (the lease is not ours).
# The superseded version's key is built from ARGV: fine on a single Redis or a Sentinel
# set, not on Redis Cluster (not supported).
PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local version = tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[3]) or '0')
if version <= current then return 0 end
redis.call('DEL', KEYS[2])
local token, node = string.match(ARGV[1], '^(%d+) (.+)$')
redis.call('HSET', KEYS[2], 'envelope', ARGV[3], 'token', token, 'node', node)
if ARGV[5] == '1' then redis.call('HSET', KEYS[2], 'body', ARGV[4]) end
redis.call('SET', KEYS[3], ARGV[2])
if current > 0 then redis.call('PEXPIRE', ARGV[8] .. current, ARGV[9]) end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
"""

Published = Literal["published", "not-newer", "fenced"]


async def publish(
    r: Redis,
    keys: Keys,
    holder: str,
    ref: str,
    version: int,
    envelope: bytes,
    body: bytes | None,
) -> Published:
    """Publish one accepted version of ref as holder ('<token> <node>'), atomically."""
    note = json.dumps({"ref": ref, "version": version}, separators=(",", ":"))
    done = await r.eval(
        PUBLISH,
        3,
        keys.lease,
        keys.version(ref, version),
        keys.latest(ref),
        holder,
        version,
        envelope,
        body or b"",
        1 if body is not None else 0,
        keys.channel,
        note,
        keys.versions(ref),
        SUPERSEDED_KEEP_MS,
    )
    result: Published = "published" if done == 1 else "not-newer" if done == 0 else "fenced"
    return result


async def latest(r: Redis, keys: Keys, refs: list[str]) -> dict[str, int]:
    """Return the newest published version of each ref that has one."""
    if not refs:
        return {}
    values = await r.mget([keys.latest(ref) for ref in refs])
    out = {}
    for ref, value in zip(refs, values, strict=True):
        version = _int(value)
        if version is not None:
            out[ref] = version
    return out


async def fetch(r: Redis, keys: Keys, ref: str, version: int) -> tuple[bytes, bytes | None] | None:
    """Return the envelope and body of a published version; None if it is gone."""
    envelope, body = await r.hmget(keys.version(ref, version), ["envelope", "body"])
    if not isinstance(envelope, bytes):
        return None
    return envelope, body if isinstance(body, bytes) else None


def notified_ref(message: object) -> str | None:
    """Return the list a notification names, if it is one (untrusted: only a hint)."""
    if not isinstance(message, bytes) or len(message) > MAX_NOTIFICATION:
        return None
    try:
        note = json.loads(message)
    except ValueError:
        return None
    ref = note.get("ref") if isinstance(note, dict) else None
    return ref if isinstance(ref, str) else None


def _int(value: object) -> int | None:
    """Return a pointer's value as a version, if it is one."""
    if not isinstance(value, bytes) or not value.isdigit() or len(value) > 18:
        return None
    return int(value)
