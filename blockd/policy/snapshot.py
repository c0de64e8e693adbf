"""The immutable, versioned policy every enforcement point reads.

A snapshot answers three questions: is this host wholly blocked, does this host carry
URL-level entries (so DNS must route it to the URL proxy), and is this URL blocked. It is
built once by `blockd.policy.compile` and replaced whole by an atomic reference swap; it
is never mutated, so readers need no lock.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from blockd import urls
from blockd.policy.index import KeySet, digest64
from blockd.policy.verdict import ListSource, Verdict


@dataclass(frozen=True)
class ListInfo:
    """What the snapshot records about one enforced list, for status and audit."""

    source: ListSource
    issued_at: datetime
    expires: datetime
    entries: int
    probes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class PolicySnapshot:
    """Compiled lists and the three fast questions."""

    generation: int
    created_at: datetime
    lists: tuple[ListInfo, ...]
    hosts: KeySet  # wholly blocked hosts
    routes: KeySet  # hosts carrying URL-level entries
    urls: KeySet  # Safe Browsing expressions
    ref_key: bytes = field(repr=False)
    _refs: dict[tuple[str, int, int], str] = field(default_factory=dict, repr=False)

    @property
    def versions(self) -> Mapping[str, int]:
        """Return {'authority/list': version} of every enforced list."""
        return {info.source.ref: info.source.version for info in self.lists}

    def _verdict(self, owner: tuple[int, int], question: str) -> Verdict:
        column, digest = owner
        src = self.lists[column].source
        key = (question, column, digest)
        ref = self._refs.get(key)
        if ref is None:
            msg = f"{src.ref}/{src.version}/{question}/{digest:016x}".encode()
            ref = hmac.new(self.ref_key, msg, hashlib.sha256).hexdigest()[:20]
            self._refs[key] = ref
        action = src.action if question == "host" else "route" if question == "route" else "notice"
        return Verdict(action, src.authority, src.list, src.version, ref)

    def host_verdict(self, name: str) -> Verdict | None:
        """Decide a canonical host name: wholly blocked, routed to the proxy, or None.

        A block on the name or any parent wins over a route; a route applies when the name
        or any parent carries URL-level entries.
        """
        # Hot path (every DNS query): walk the suffixes without splitting into a list.
        hosts, routes = self.hosts, self.routes
        route = None
        while True:
            owner = hosts.owner(name)
            if owner is not None:
                return self._verdict(owner, "host")
            if route is None and routes.size:
                route = routes.owner(name)
            dot = name.find(".")
            if dot < 0:
                break
            name = name[dot + 1 :]
            if "." not in name:  # a bare TLD is never an entry
                break
        return None if route is None else self._verdict(route, "route")

    def blocked_host(self, name: str) -> Verdict | None:
        """Return the verdict if the host or a parent is wholly blocked."""
        verdict = self.host_verdict(name)
        return verdict if verdict is not None and verdict.action != "route" else None

    def url_verdict(self, url: str) -> Verdict | None:
        """Decide a URL: blocked by a host entry or a URL entry, else None.

        Raises blockd.urls.InvalidURL for a URL that cannot be parsed.
        """
        parts = urls.split(url)
        verdict = self.blocked_host(parts.host)
        if verdict is not None or not self.urls.size:
            return verdict
        hosts = urls.host_suffixes(parts.host)
        paths: Sequence[str] = ()
        table = self.urls
        for host in hosts:
            # Plaintext lists say which hosts carry entries; skip the rest cheaply.
            if not table.needs_sha and self.routes.owner(host) is None:
                continue
            paths = paths or urls.path_prefixes(parts.path, parts.query)
            for path in paths:
                owner = table.owner(host + path)
                if owner is not None:
                    return self._verdict(owner, "url")
        return None

    def probes(self) -> list[str]:
        """Return every self-test probe (hosts and URLs) the lists carry."""
        return [p for info in self.lists for p in info.probes]

    def entry_ref(self, source: ListSource, question: str, key: str) -> str:
        """Return the opaque reference a key would get (for an operator handling appeals)."""
        column = next(i for i, info in enumerate(self.lists) if info.source == source)
        return self._verdict((column, digest64(key)), question).entry_ref
