"""What each node says it enforces (its heartbeat), and which nodes diverge or went quiet.

A heartbeat is a hash per node: id, the version of each configured list it enforces, its
policy generation, the time, whether it is the syncer, its heartbeat interval, its latest
signed audit checkpoint and the verifier key (vkey) it is signed with (when its audit log
is on), and its blockd version. Nothing about a subscriber or a query is ever in it.
Heartbeats are read back as untrusted data: a version of the wrong type is dropped, and a
heartbeat with a field too long or not of its shape is skipped, with the reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from blockd.config.fleet import is_ident
from blockd.fleet import bus
from blockd.fleet.keys import Keys

STALE_AFTER = 3  # heartbeats missed before a node is shown stale
FORGET_AFTER = 7 * 86400  # seconds: a node silent this long leaves the fleet's list
MAX_CHECKPOINT = 4096  # bytes of checkpoint text a node publishes
MAX_NODES = 1000  # heartbeats read, the most recent first
MAX_LISTS = 1000  # lists in one heartbeat's versions
# The fields read back and the most bytes each may hold: a longer one is not a heartbeat.
FIELDS = {
    "time": 32,
    "versions": 64 * 1024,
    "generation": 20,
    "syncer": 1,
    "heartbeat": 32,
    "checkpoint": MAX_CHECKPOINT,
    "audit_key": 256,
    "blockd": 64,
}


class BadHeartbeat(ValueError):
    """A heartbeat read from Redis is not one this blockd can trust the shape of."""


@dataclass(frozen=True)
class Beat:
    """One node's latest heartbeat."""

    node: str
    time: float
    versions: Mapping[str, int | None]  # 'authority/list' -> version enforced (None: none)
    generation: int = 0
    syncer: bool = False
    heartbeat: float = 5.0
    checkpoint: str | None = None
    blockd: str = ""
    audit_key: str | None = None  # the vkey its checkpoints are signed with (a claim)

    def fields(self) -> dict[str, str]:
        """Return the hash fields to store."""
        checkpoint = self.checkpoint or ""
        if len(checkpoint.encode()) > MAX_CHECKPOINT:
            checkpoint = ""  # a cut note is no checkpoint: say none rather than a broken one
        return {
            "node": self.node,
            "time": f"{self.time:.3f}",
            "versions": json.dumps(dict(self.versions), sort_keys=True),
            "generation": str(self.generation),
            "syncer": "1" if self.syncer else "0",
            "heartbeat": f"{self.heartbeat:g}",
            "checkpoint": checkpoint,
            "audit_key": self.audit_key or "",
            "blockd": self.blockd,
        }

    @classmethod
    def parse(cls, node: str, raw: Mapping[bytes, bytes]) -> Beat:
        """Read a stored hash back; raise BadHeartbeat saying why it is not a heartbeat."""
        if not is_ident(node):
            raise BadHeartbeat("the node id is not an id")
        f: dict[str, str] = {}
        for key, value in raw.items():
            name = key.decode("utf-8", "replace")
            if name not in FIELDS:
                continue  # not ours to read
            if len(value) > FIELDS[name]:
                raise BadHeartbeat(f"{name}: longer than {FIELDS[name]} bytes")
            try:
                f[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadHeartbeat(f"{name}: not UTF-8") from None
        if "time" not in f:
            raise BadHeartbeat("no time")
        try:
            versions = json.loads(f.get("versions", "{}"))
            when = _finite(f["time"])
            generation = int(f.get("generation", "0"))
            every = _finite(f.get("heartbeat", "5"))
        except (ValueError, RecursionError) as e:
            raise BadHeartbeat(f"not a number or not JSON: {str(e)[:80]}") from None
        if not isinstance(versions, dict) or len(versions) > MAX_LISTS:
            raise BadHeartbeat(f"versions: not a map of at most {MAX_LISTS} lists")
        if every <= 0 or generation < 0:
            raise BadHeartbeat("heartbeat or generation out of range")
        checkpoint = f.get("checkpoint") or None
        if checkpoint is not None and any(ord(c) < 0x20 and c != "\n" for c in checkpoint):
            raise BadHeartbeat("checkpoint: a control character")
        vkey = f.get("audit_key") or None
        if vkey is not None and not vkey.isprintable():
            raise BadHeartbeat("audit_key: not printable")
        return cls(
            node=node,
            time=when,
            versions={
                str(k): v if isinstance(v, int) and not isinstance(v, bool) else None
                for k, v in versions.items()
            },
            generation=generation,
            syncer=f.get("syncer") == "1",
            heartbeat=every,
            checkpoint=checkpoint,
            blockd=f.get("blockd", ""),
            audit_key=vkey,
        )


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


@dataclass(frozen=True)
class NodeView:
    """A node as the fleet sees it: its heartbeat, age, and what is wrong."""

    beat: Beat
    age: float  # seconds since its heartbeat
    stale: bool  # silent for STALE_AFTER heartbeats
    behind: Mapping[str, tuple[int | None, int]] = field(
        default_factory=dict
    )  # ref -> (has, newest)

    @property
    def divergent(self) -> bool:
        """Say whether the node enforces other versions than the newest published."""
        return bool(self.behind)


@dataclass(frozen=True)
class Survey:
    """The whole fleet at one moment."""

    nodes: Sequence[NodeView]
    newest: Mapping[str, int]  # ref -> newest published version
    at: float = 0.0  # when it was judged (Unix time)
    skipped: Sequence[tuple[str, str]] = ()  # (node, why) for heartbeats that were junk

    @property
    def live(self) -> int:
        """Return how many nodes sent a heartbeat recently."""
        return sum(not n.stale for n in self.nodes)

    @property
    def divergent(self) -> int:
        """Return how many live nodes enforce other versions than the newest."""
        return sum(n.divergent and not n.stale for n in self.nodes)


def survey(
    beats: Sequence[Beat],
    newest: Mapping[str, int],
    now: float,
    skipped: Sequence[tuple[str, str]] = (),
) -> Survey:
    """Judge each heartbeat against the newest published versions."""
    views = []
    for b in sorted(beats, key=lambda b: b.node):
        age = max(0.0, now - b.time)
        behind = {
            ref: (have, newest[ref])
            for ref, have in sorted(b.versions.items())
            if ref in newest and have != newest[ref]
        }
        views.append(NodeView(b, age, age > STALE_AFTER * b.heartbeat, behind))
    return Survey(views, dict(newest), now, tuple(skipped))


def again(s: Survey, now: float) -> Survey:
    """Judge the heartbeats of an earlier survey again at now (ages move on)."""
    return survey([n.beat for n in s.nodes], s.newest, now, s.skipped)


def as_json(survey: Survey) -> dict[str, Any]:
    """Return the survey as JSON-ready values."""
    return {
        "read_at": iso(survey.at),
        "newest": dict(survey.newest),
        "live": survey.live,
        "divergent": survey.divergent,
        "nodes": [
            {
                "node": n.beat.node,
                "syncer": n.beat.syncer,
                "versions": dict(n.beat.versions),
                "policy_generation": n.beat.generation,
                "heartbeat": iso(n.beat.time),
                "heartbeat_age": round(n.age, 1),
                "stale": n.stale,
                "divergent": n.divergent,
                "behind": {ref: {"has": h, "newest": v} for ref, (h, v) in n.behind.items()},
                "blockd": n.beat.blockd,
                "audit_checkpoint": n.beat.checkpoint,
                "audit_key": n.beat.audit_key,
            }
            for n in survey.nodes
        ],
        "skipped": [{"node": node, "reason": why} for node, why in survey.skipped],
    }


def iso(ts: float) -> str:
    """Return a Unix time as ISO 8601 UTC to the second."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def beat(r: Redis, keys: Keys, b: Beat) -> None:
    """Record this node's heartbeat (and forget nodes silent for a week)."""
    async with r.pipeline(transaction=True) as p:
        p.hset(keys.node(b.node), mapping=b.fields())  # type: ignore[arg-type]
        p.expire(keys.node(b.node), FORGET_AFTER)
        p.zadd(keys.nodes, {b.node: b.time})
        p.zremrangebyscore(keys.nodes, "-inf", b.time - FORGET_AFTER)
        await p.execute()


async def read(r: Redis, keys: Keys, now: float) -> Survey:
    """Read every node's heartbeat and the newest versions; judge them.

    Heartbeats are untrusted: only the known fields are read, each only when its length is
    within bounds, and a heartbeat that is not one is skipped with the reason (a warning).
    """
    members = await r.zrevrange(keys.nodes, 0, MAX_NODES)
    ids = [i.decode("utf-8", "replace") for i in members if isinstance(i, bytes)]
    skipped: list[tuple[str, str]] = []
    if len(ids) > MAX_NODES:
        skipped.append((ids.pop()[:64], f"more than {MAX_NODES} nodes: the oldest not read"))
    skipped += [(i[:64], "the node id is not an id") for i in ids if not is_ident(i)]
    ids = [i for i in ids if is_ident(i)]
    names = list(FIELDS)
    async with r.pipeline(transaction=False) as p:
        for node in ids:
            for name in names:
                p.hstrlen(keys.node(node), name)
        lengths = await p.execute()
    sizes = [lengths[i * len(names) : (i + 1) * len(names)] for i in range(len(ids))]
    beats = []
    fit = []
    for node, size in zip(ids, sizes, strict=True):
        over = [n for n, length in zip(names, size, strict=True) if int(length) > FIELDS[n]]
        if over:
            skipped.append((node[:64], f"{over[0]}: longer than {FIELDS[over[0]]} bytes"))
        else:
            fit.append(node)
    async with r.pipeline(transaction=False) as p:
        for node in fit:
            p.hmget(keys.node(node), names)
        values = await p.execute()
    for node, got in zip(fit, values, strict=True):
        raw = {n.encode(): v for n, v in zip(names, got, strict=True) if isinstance(v, bytes)}
        try:
            beats.append(Beat.parse(node, raw))
        except BadHeartbeat as e:
            if raw:  # a node that expired between the two reads left nothing: not junk
                skipped.append((node[:64], str(e)))
    refs = sorted({ref for b in beats for ref in b.versions})
    return survey(beats, await bus.latest(r, keys, refs), now, skipped)
