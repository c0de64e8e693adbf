"""A bounded cache of upstream answers, with TTLs counted down on the way out.

Only upstream answers are cached; blocked and routed answers are built fresh. A hit is
re-decided against the current policy by the pipeline (the name and every CNAME target),
so a policy change takes effect on the next query without flushing anything.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from blockd.dns import wire

MAX_TTL = 86400
SERVFAIL_TTL = 0  # upstream failures are not cached: the next query tries again

CacheKey = tuple[str, int, int, bool, bool]  # qname, qtype, qclass, DO, CD


@dataclass(slots=True)
class Entry:
    """One cached upstream answer, and its last counted-down form (after the ID)."""

    data: bytes
    ttl_offsets: tuple[int, ...]
    cnames: tuple[str, ...]
    stored: float
    expires: float
    shown_elapsed: int = 0
    shown: bytes = b""


class AnswerCache:
    """LRU-bounded map from question to answer, honouring TTLs (RFC 2308 for negatives)."""

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        """Hold at most capacity answers (0 disables the cache)."""
        self.capacity = capacity
        self._clock = clock
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        """Return the number of cached answers."""
        return len(self._entries)

    @staticmethod
    def key(q: wire.Query) -> CacheKey:
        """Return the cache key of a query."""
        edns = q.edns
        return (q.qname, q.qtype, q.qclass, bool(edns and edns.do), q.cd)

    def get(self, key: CacheKey, qid: int) -> tuple[bytes, tuple[str, ...]] | None:
        """Return (answer with qid and TTLs counted down, CNAME targets), or None."""
        found = self.get_tail(key)
        if found is None:
            return None
        return qid.to_bytes(2, "big") + found[0], found[1]

    def get_tail(self, key: CacheKey) -> tuple[bytes, tuple[str, ...]] | None:
        """Return (answer after its ID with TTLs counted down, CNAME targets), or None."""
        # Hot path: the counted-down answer is rebuilt at most once a second per entry.
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        now = self._clock()
        if now >= entry.expires:
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        elapsed = int(now - entry.stored)
        if elapsed != entry.shown_elapsed or not entry.shown:
            entry.shown = wire.ttl_shift(entry.data, entry.ttl_offsets, elapsed)[2:]
            entry.shown_elapsed = elapsed
        return entry.shown, entry.cnames

    def put(self, key: CacheKey, data: bytes, info: wire.ResponseInfo) -> None:
        """Store an upstream answer for as long as its TTLs allow."""
        if not self.capacity or info.truncated or info.min_ttl is None:
            return
        if info.rcode not in (wire.NOERROR, wire.NXDOMAIN):
            return
        ttl = min(info.min_ttl, MAX_TTL)
        if ttl <= 0:
            return
        now = self._clock()
        self._entries[key] = Entry(data, info.ttl_offsets, info.cnames, now, now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
