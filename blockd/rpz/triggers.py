"""Which trigger names the zone holds, and their actions, from the served lists: pure.

The zone must answer as blockd does. blockd decides a name by its most specific listed
suffix; RPZ prefers an exact owner over a wildcard and a longer wildcard over a shorter
one, so the same entries give the same answers, with one exception this resolves: a block
on a name wins over a route on any of its subdomains, so such routes are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from blockd.rpz.zone import PASSTHRU, ROUTE, WILD


@dataclass(frozen=True)
class ServedList:
    """One served list version's plaintext host-level entries."""

    ref: str
    version: int
    action: int  # NXDOMAIN or NOTICE
    hosts: Sequence[str]  # wholly blocked, with subdomains
    routed: Iterable[str]  # hosts that carry URL-level entries


def _parents(name: str) -> Iterable[str]:
    while "." in name:
        name = name.partition(".")[2]
        yield name


def triggers(lists: Sequence[ServedList], never_block: Iterable[str]) -> dict[str, int]:
    """Return {trigger name: action code}, sorted by name; earlier lists win a name."""
    blocked: dict[str, int] = {}
    for served in lists:
        code = served.action | WILD
        for host in served.hosts:
            blocked.setdefault(host, code)
    out = dict(blocked)
    for served in lists:
        for host in served.routed:
            if host in blocked or any(p in blocked for p in _parents(host)):
                continue  # blockd blocks it: a route must not undo the wildcard above
            out.setdefault(host, ROUTE | WILD)
    for pattern in never_block:
        if pattern.startswith("*."):
            out[pattern[2:]] = PASSTHRU | WILD
        else:
            out[pattern] = PASSTHRU
    return dict(sorted(out.items()))
