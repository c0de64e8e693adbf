"""The immutable, versioned policy every enforcement point reads.

A snapshot answers three questions: is this host wholly blocked, does this host carry
URL-level entries (so DNS must route it to the URL proxy), and is this URL blocked. It is
built once by `blockd.policy.compile` and replaced whole by an atomic reference swap; it
is never mutated, so readers need no lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from blockd import urls
from blockd.policy.guards import NeverBlock
from blockd.policy.index import KeySet, digest64
from blockd.policy.suffixes import crosses_suffix
from blockd.policy.verdict import ListSource, Verdict

VERDICT_CACHE = 65536  # matched keys whose verdicts are kept ready
ROUTE_CACHE = 4096  # routed hosts whose walk is kept ready (the URL proxy's few hosts)


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
    # never-block (and blockd's own feed hosts): the names no entry may act on, as data, so
    # a snapshot file can carry them
    never_block: NeverBlock = field(default_factory=lambda: NeverBlock(()), repr=False)
    # (question, column, digest) of every key a self-test probe entry put in the lists
    _probes: frozenset[tuple[str, int, int]] = field(default=frozenset(), repr=False)
    _verdicts: dict[tuple[str, int, int], Verdict] = field(default_factory=dict, repr=False)
    _routes: dict[str, tuple[Verdict, tuple[str, ...]]] = field(default_factory=dict, repr=False)

    @property
    def versions(self) -> Mapping[str, int]:
        """Return {'authority/list': version} of every enforced list."""
        return {info.source.ref: info.source.version for info in self.lists}

    def _verdict(self, owner: tuple[int, int], question: str) -> Verdict:
        """Return the (cached) verdict for a matched key; its reference is a keyed MAC."""
        column, digest = owner
        key = (question, column, digest)
        verdict = self._verdicts.get(key)
        if verdict is None:
            src = self.lists[column].source
            msg = f"{src.ref}/{src.version}/{question}/{digest:016x}".encode()
            ref = hashlib.blake2b(msg, key=self.ref_key, digest_size=10).hexdigest()
            action = {"host": src.action, "route": "route"}.get(question, "notice")
            probe = key in self._probes
            verdict = Verdict(action, src.authority, src.list, src.version, ref, probe)  # type: ignore[arg-type]
            if len(self._verdicts) >= VERDICT_CACHE:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        return verdict

    def _allows(self, host: str, entry: str) -> bool:
        """Say whether an entry on `entry` (host or a parent) may act on host.

        The boundaries hold at lookup, for every entry: pre-hashed entries hide their names
        from the checks at compile time. An entry never reaches across a public suffix, and
        never acts on a name never-block protects.
        """
        return not crosses_suffix(host, entry) and not self.never_block.vetoes(entry)

    def host_verdict(self, name: str) -> Verdict | None:
        """Decide a canonical host name: wholly blocked, routed to the proxy, or None.

        A block on the name or any parent wins over a route; a route applies when the name
        or any parent carries URL-level entries.
        """
        return self.host_route(name)[0]

    def host_route(self, name: str) -> tuple[Verdict | None, tuple[str, ...]]:
        """Return host_verdict(name) and the suffixes of name that carry URL-level entries.

        Pass both to url_verdict (as `walked`) to check URLs on name without walking again.
        """
        # Hot path (every proxied request): the proxy sees few hosts, those DNS routes to it,
        # each many times, and with pre-hashed lists a walk is a SHA-256 per label; routed
        # hosts' walks are kept (the snapshot never changes).
        hit = self._routes.get(name)
        if hit is not None:
            return hit
        block, route, routed = self._walk(name)
        if block is not None:
            return self._verdict(block, "host"), ()
        if route is None:
            return None, ()
        found = self._verdict(route, "route"), tuple(routed)
        if len(self._routes) >= ROUTE_CACHE:
            self._routes.clear()
        self._routes[name] = found
        return found

    def _walk(self, name: str) -> tuple[tuple[int, int] | None, tuple[int, int] | None, list[str]]:
        """Check every suffix of name: (block owner, first route owner, routed suffixes)."""
        hosts, routes = self.hosts, self.routes
        if hosts.needs_sha or routes.needs_sha:
            return self._walk_sha(name)
        # Hot path (every DNS query, every proxied request): one string hash per suffix
        # serves both filters; only filter hits pay for SHA-256. A bare TLD is never an
        # entry, so the walk stops at the last dot.
        hf, hm, rf, rm = hosts.filter, hosts.mask, routes.filter, routes.mask
        route = None
        routed: list[str] = []
        host = name
        dot = name.find(".")
        while dot >= 0:
            h = hash(name)
            i, bit = (h >> 3), h & 7
            if (
                (hf[i & hm] >> bit) & 1
                and (owner := hosts.confirm(name)) is not None
                and self._allows(host, name)
            ):
                return owner, None, routed
            if (
                (rf[i & rm] >> bit) & 1
                and (r := routes.confirm(name)) is not None
                and self._allows(host, name)
            ):
                route = route or r
                routed.append(name)
            name = name[dot + 1 :]
            dot = name.find(".")
        return None, route, routed

    def _walk_sha(
        self, name: str
    ) -> tuple[tuple[int, int] | None, tuple[int, int] | None, list[str]]:
        """Walk for snapshots holding pre-hashed entries: SHA-256 every suffix."""
        route = None
        routed: list[str] = []
        host = name
        dot = name.find(".")
        while dot >= 0:
            owner = self.hosts.owner(name)
            if owner is not None and self._allows(host, name):
                return owner, None, routed
            r = self.routes.owner(name) if self.routes.size else None
            if r is not None and self._allows(host, name):
                route = route or r
                routed.append(name)
            name = name[dot + 1 :]
            dot = name.find(".")
        return None, route, routed

    def blocked_host(self, name: str) -> Verdict | None:
        """Return the verdict if the host or a parent is wholly blocked."""
        block, _, _ = self._walk(name)
        return None if block is None else self._verdict(block, "host")

    def url_verdict(
        self, url: str, walked: tuple[str, tuple[str, ...]] | None = None
    ) -> Verdict | None:
        """Decide a URL: blocked by a host entry or a URL entry, else None.

        `walked` is (host, routed suffixes) from host_route on a host that is not wholly
        blocked: a URL on that host is then not walked again. Raises
        blockd.urls.InvalidURL for a URL that cannot be parsed.
        """
        parts = urls.split(url)
        if walked is not None and walked[0] == parts.host:
            routed: Sequence[str] = walked[1]
        else:
            block, _, routed = self._walk(parts.host)
            if block is not None:
                return self._verdict(block, "host")
        table = self.urls
        if not table.size or not routed:
            return None
        # Hot path (every proxied request). Safe Browsing matches URL entries on at most 5
        # host candidates: every suffix of a host of up to 6 labels, a subset for deeper
        # ones. Only the routed ones can carry entries: plaintext lists route every host
        # of their URL entries, and pre-hashed lists must give a `route:` hash for each
        # (FORMAT.md), so a hashed lookup hashes the expressions of routed hosts only.
        if parts.host.count(".") <= 5:
            candidates = routed
        else:
            sb = urls.host_suffixes(parts.host)
            candidates = [c for c in routed if c in sb]
        paths = urls.path_prefixes(parts.path, parts.query)
        if table.needs_sha:
            for host in candidates:  # routed suffixes passed _allows in the walk
                for path in paths:
                    if (owner := table.owner_of_digest(digest64(host + path))) is not None:
                        return self._verdict(owner, "url")
            return None
        uf, um = table.filter, table.mask
        for host in candidates:
            for path in paths:
                expression = host + path
                h = hash(expression)
                if (
                    (uf[(h >> 3) & um] >> (h & 7)) & 1
                    and (owner := table.confirm(expression)) is not None
                    and self._allows(parts.host, host)
                ):
                    return self._verdict(owner, "url")
        return None

    @staticmethod
    def probe_keys(lists: tuple[ListInfo, ...]) -> frozenset[tuple[str, int, int]]:
        """Return the (question, column, digest) of the keys the lists' probe entries made.

        A host probe is a host key; a URL probe is a URL key, and routes its host (a host
        that other URL entries of the list route too counts as the probe's).
        """
        keys = set()
        for column, info in enumerate(lists):
            for probe in info.probes:
                if "/" not in probe:
                    keys.add(("host", column, digest64(probe)))
                    continue
                expression = urls.split(probe).expression
                keys.add(("url", column, digest64(expression)))
                keys.add(("route", column, digest64(expression.partition("/")[0])))
        return frozenset(keys)

    def probes(self) -> list[str]:
        """Return every self-test probe (hosts and URLs) the lists carry."""
        return [p for info in self.lists for p in info.probes]

    def entry_ref(self, source: ListSource, question: str, key: str) -> str:
        """Return the opaque reference a key would get (for an operator handling appeals)."""
        column = next(i for i, info in enumerate(self.lists) if info.source == source)
        return self._verdict((column, digest64(key)), question).entry_ref
