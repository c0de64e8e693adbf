"""Compile accepted lists into a PolicySnapshot.

Each list is indexed once when it is accepted (`index_list`, the costly part); building a
snapshot from indexed lists only merges sorted arrays, so a change to one list does not
re-hash the others.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count

import numpy as np

from blockd.policy.entries import ListEntries
from blockd.policy.guards import NeverBlock
from blockd.policy.index import KeyColumn, KeySet
from blockd.policy.snapshot import ListInfo, PolicySnapshot

_generations = count(1)


@dataclass(frozen=True)
class IndexedList:
    """One accepted list, indexed and ready to merge; holds no plaintext entries."""

    info: ListInfo
    hosts: KeyColumn
    routes: KeyColumn
    urls: KeyColumn


def index_list(info: ListInfo, entries: ListEntries) -> IndexedList:
    """Index one list's validated entries."""
    routes = KeyColumn.from_plain(sorted(entries.routed_hosts()))
    if entries.route_hashes:
        routes = _join(routes, KeyColumn.from_sha256(entries.route_hashes))
    hosts = KeyColumn.from_plain(entries.hosts)
    if entries.host_hashes:
        hosts = _join(hosts, KeyColumn.from_sha256(entries.host_hashes))
    url_keys = KeyColumn.from_plain(entries.urls)
    if entries.url_hashes:
        url_keys = _join(url_keys, KeyColumn.from_sha256(entries.url_hashes))
    return IndexedList(info, hosts, routes, url_keys)


def _join(a: KeyColumn, b: KeyColumn) -> KeyColumn:
    return KeyColumn(np.concatenate([a.digests, b.digests]), a.pyhashes)


def compile_snapshot(
    lists: Sequence[IndexedList],
    *,
    ref_key: bytes | None = None,
    now: datetime | None = None,
    never_block: NeverBlock | None = None,
) -> PolicySnapshot:
    """Merge indexed lists, earlier lists taking precedence where they share a key.

    never_block says which names are protected; the snapshot applies it, and
    the public-suffix boundary, to every match at lookup.
    """
    infos = tuple(x.info for x in lists)
    return PolicySnapshot(
        generation=next(_generations),
        created_at=now or datetime.now(UTC),
        lists=infos,
        hosts=KeySet([x.hosts for x in lists]),
        routes=KeySet([x.routes for x in lists]),
        urls=KeySet([x.urls for x in lists]),
        ref_key=ref_key if ref_key is not None else os.urandom(32),
        never_block=never_block or NeverBlock(()),
        _probes=PolicySnapshot.probe_keys(infos),
    )


def empty_snapshot() -> PolicySnapshot:
    """Return a snapshot that blocks nothing (before any list is accepted)."""
    return compile_snapshot([])
