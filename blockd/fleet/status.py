"""What each node says it enforces (its heartbeat), and which nodes diverge or went quiet.

A heartbeat is a hash per node: id, the version of each configured list it enforces, its
policy generation, the time, whether it is the syncer, its heartbeat interval, its latest
signed audit checkpoint (when its audit log is on) and its blockd version. Nothing about
a subscriber or a query is ever in it. Heartbeats are read back as untrusted data: a field
that is not the expected shape is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from blockd.fleet import bus
from blockd.fleet.keys import Keys

STALE_AFTER = 3  # heartbeats missed before a node is shown stale
FORGET_AFTER = 7 * 86400  # seconds: a node silent this long leaves the fleet's list
MAX_CHECKPOINT = 4096  # bytes of checkpoint text a node publishes


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

    def fields(self) -> dict[str, str]:
        """Return the hash fields to store."""
        return {
            "node": self.node,
            "time": f"{self.time:.3f}",
            "versions": json.dumps(dict(self.versions), sort_keys=True),
            "generation": str(self.generation),
            "syncer": "1" if self.syncer else "0",
            "heartbeat": f"{self.heartbeat:g}",
            "checkpoint": (self.checkpoint or "")[:MAX_CHECKPOINT],
            "blockd": self.blockd,
        }

    @classmethod
    def parse(cls, node: str, raw: Mapping[bytes, bytes]) -> Beat | None:
        """Read a stored hash back; None when it is not a heartbeat."""
        f = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in raw.items()}
        try:
            versions = json.loads(f.get("versions", "{}"))
            beat = cls(
                node=node,
                time=float(f["time"]),
                versions={
                    str(k): v if isinstance(v, int) and not isinstance(v, bool) else None
                    for k, v in (versions.items() if isinstance(versions, dict) else ())
                },
                generation=int(f.get("generation", "0")),
                syncer=f.get("syncer") == "1",
                heartbeat=float(f.get("heartbeat", "5")),
                checkpoint=f.get("checkpoint") or None,
                blockd=f.get("blockd", ""),
            )
        except (KeyError, ValueError):
            return None
        return beat


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

    @property
    def live(self) -> int:
        """Return how many nodes sent a heartbeat recently."""
        return sum(not n.stale for n in self.nodes)

    @property
    def divergent(self) -> int:
        """Return how many live nodes enforce other versions than the newest."""
        return sum(n.divergent and not n.stale for n in self.nodes)


def survey(beats: Sequence[Beat], newest: Mapping[str, int], now: float) -> Survey:
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
    return Survey(views, dict(newest))


async def beat(r: Redis, keys: Keys, b: Beat) -> None:
    """Record this node's heartbeat (and forget nodes silent for a week)."""
    async with r.pipeline(transaction=True) as p:
        p.hset(keys.node(b.node), mapping=b.fields())  # type: ignore[arg-type]
        p.expire(keys.node(b.node), FORGET_AFTER)
        p.zadd(keys.nodes, {b.node: b.time})
        p.zremrangebyscore(keys.nodes, "-inf", b.time - FORGET_AFTER)
        await p.execute()


async def read(r: Redis, keys: Keys, now: float) -> Survey:
    """Read every node's heartbeat and the newest versions; judge them."""
    ids = [
        i.decode("utf-8", "replace")
        for i in await r.zrange(keys.nodes, 0, -1)
        if isinstance(i, bytes)
    ]
    async with r.pipeline(transaction=False) as p:
        for node in ids:
            p.hgetall(keys.node(node))
        raws = await p.execute()
    beats = [b for node, raw in zip(ids, raws, strict=True) if (b := Beat.parse(node, raw))]
    refs = sorted({ref for b in beats for ref in b.versions})
    return survey(beats, await bus.latest(r, keys, refs), now)
