"""Public suffixes (the Public Suffix List, as shipped by the maintained `publicsuffixlist`).

A list entry that is a public suffix or a bare TLD would block a whole registry's worth of
legal sites, so such entries are rejected. The check runs once per entry at compile time and
is written as set lookups for speed.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

import idna


def _list_text() -> str:
    return resources.files("publicsuffixlist").joinpath("public_suffix_list.dat").read_text("utf-8")


@cache
def fingerprint() -> str:
    """Return the SHA-256 of the suffix list in use (processes sharing a policy must agree)."""
    return hashlib.sha256(_list_text().encode()).hexdigest()


@cache
def _rules() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """Return (exact, wildcard parents, exceptions), all in ASCII (punycode)."""
    exact: set[str] = set()
    wild: set[str] = set()
    exceptions: set[str] = set()
    for line in _list_text().splitlines():
        rule = line.strip().split(" ", 1)[0]
        if not rule or rule.startswith("//"):
            continue
        bucket = exact
        if rule.startswith("!"):
            bucket, rule = exceptions, rule[1:]
        elif rule.startswith("*."):
            bucket, rule = wild, rule[2:]
        try:
            ascii_rule = rule if rule.isascii() else idna.encode(rule, uts46=True).decode()
        except idna.IDNAError:
            continue
        bucket.add(ascii_rule.lower())
    return frozenset(exact), frozenset(wild), frozenset(exceptions)


def public_suffix_rules() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """Return (exact, wildcard parents, exceptions): is_public_suffix's data, for hot loops."""
    return _rules()


def is_public_suffix(name: str) -> bool:
    """Say whether a canonical host name is a public suffix or a bare TLD."""
    if "." not in name:
        return True
    exact, wild, exceptions = _rules()
    if name in exact:
        return True
    parent = name.partition(".")[2]
    return parent in wild and name not in exceptions


def crosses_suffix(host: str, entry: str) -> bool:
    """Say whether an entry on `entry` would reach `host` across a public suffix.

    entry is host or one of its parents. An entry blocks a site and its subdomains, never
    the independent sites beneath a public suffix inside it: `amazonaws.com` does not
    reach `bucket.s3.amazonaws.com` (s3.amazonaws.com is a public suffix), and an entry
    that is itself a public suffix (a hashed `co.uk`, whose name a compile-time check
    cannot see) reaches nothing. Run only when a lookup matched, so it costs the rare hits.
    """
    name = host
    while True:
        if is_public_suffix(name):
            return True
        if len(name) <= len(entry):
            return False
        name = name.partition(".")[2]
