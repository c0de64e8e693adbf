"""The metadata section of a snapshot file: everything but the key arrays, as JSON.

Read strictly: every field present with its type, nothing else assumed; any deviation is a
MetaError naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import orjson

from blockd.policy import suffixes
from blockd.policy.snapshot import ListInfo, PolicySnapshot
from blockd.policy.verdict import ListSource

NEVER_BLOCK_RULE = "never-block/1"  # an entry on a name, or a parent of it, in `patterns`
QUESTION_NAMES = ("host", "route", "url")
_CANARIES = ("blockd filter check 1", "blockd filter check 2", "blockd filter check 3")
T = TypeVar("T")


class MetaError(ValueError):
    """The metadata is not what this blockd writes."""


@dataclass(frozen=True)
class SetNumbers:
    """The numbers of one key set that the arrays do not say."""

    size: int
    mask: int
    shift: int
    needs_sha: bool

    def fields(self, fast: bool) -> tuple[int, int, bool]:
        """Return (mask, shift, needs_sha); without fast filters, every lookup uses SHA-256."""
        return self.mask, self.shift, self.needs_sha or not fast


@dataclass(frozen=True)
class Meta:
    """What a snapshot file says besides its arrays."""

    generation: int
    created_at: datetime
    lists: tuple[ListInfo, ...]
    ref_key: bytes
    never_block: tuple[str, ...]
    suffixes: str
    hash_check: tuple[int, ...]
    probe_keys: frozenset[tuple[str, int, int]]
    sets: Mapping[str, SetNumbers]


def hash_check() -> tuple[int, ...]:
    """Return this process's string hashes of fixed strings (equal means equal filters)."""
    return tuple(hash(c) for c in _CANARIES)


def meta_to_json(snapshot: PolicySnapshot, sets: Mapping[str, SetNumbers]) -> bytes:
    """Return the metadata of snapshot as JSON."""
    return orjson.dumps(
        {
            "generation": snapshot.generation,
            "created_at": snapshot.created_at.isoformat(),
            "lists": [
                {
                    "authority": i.source.authority,
                    "list": i.source.list,
                    "version": i.source.version,
                    "action": i.source.action,
                    "issued_at": i.issued_at.isoformat(),
                    "expires": i.expires.isoformat(),
                    "entries": i.entries,
                    "probes": list(i.probes),
                }
                for i in snapshot.lists
            ],
            "ref_key": snapshot.ref_key.hex(),
            "never_block": {"rule": NEVER_BLOCK_RULE, "patterns": snapshot.never_block.patterns()},
            "suffixes": suffixes.fingerprint(),
            "hash_check": [str(h) for h in hash_check()],
            "probe_keys": sorted([q, c, f"{d:016x}"] for q, c, d in snapshot._probes),
            "sets": {
                name: {"size": n.size, "mask": n.mask, "shift": n.shift, "needs_sha": n.needs_sha}
                for name, n in sets.items()
            },
        }
    )


def _get(obj: object, key: str, kind: type[T]) -> T:
    if not isinstance(obj, dict) or key not in obj:
        raise MetaError(f"{key!r} is missing")
    value = obj[key]
    # bool is an int to Python; not to this format
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MetaError(f"{key!r} is not of type {kind.__name__}")
    return value


def _natural(obj: object, key: str, limit: int = 1 << 63) -> int:
    value = _get(obj, key, int)
    if not 0 <= value < limit:
        raise MetaError(f"{key!r} = {value} is out of range")
    return value


def _time(obj: object, key: str) -> datetime:
    try:
        value = datetime.fromisoformat(_get(obj, key, str))
    except ValueError:
        raise MetaError(f"{key!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise MetaError(f"{key!r} has no time zone")
    return value


def _list_info(obj: object) -> ListInfo:
    action = _get(obj, "action", str)
    if action not in ("notice", "nxdomain"):
        raise MetaError(f"'action' {action!r} is not notice or nxdomain")
    probes = _get(obj, "probes", list)
    if not all(isinstance(p, str) for p in probes):
        raise MetaError("'probes' holds a non-string")
    source = ListSource(
        _get(obj, "authority", str),
        _get(obj, "list", str),
        _natural(obj, "version"),
        action,  # type: ignore[arg-type]  # checked above
    )
    return ListInfo(
        source,
        _time(obj, "issued_at"),
        _time(obj, "expires"),
        _natural(obj, "entries"),
        tuple(probes),
    )


def _probe_key(item: object, lists: int) -> tuple[str, int, int]:
    if not isinstance(item, list) or len(item) != 3:
        raise MetaError("a probe key is not [question, column, digest]")
    question, column, digest = item
    if question not in QUESTION_NAMES:
        raise MetaError(f"probe key question {question!r} unknown")
    if not isinstance(column, int) or isinstance(column, bool) or not 0 <= column < lists:
        raise MetaError(f"probe key column {column!r} is not one of the {lists} lists")
    if not isinstance(digest, str) or len(digest) != 16:
        raise MetaError("a probe key digest is not 16 hex digits")
    try:
        return question, column, int(digest, 16)
    except ValueError:
        raise MetaError("a probe key digest is not 16 hex digits") from None


def meta_from_json(data: memoryview) -> Meta:
    """Parse and check the metadata section."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise MetaError(f"not JSON: {e}") from None
    lists = tuple(_list_info(i) for i in _get(doc, "lists", list))
    ref_hex = _get(doc, "ref_key", str)
    try:
        ref_key = bytes.fromhex(ref_hex)
    except ValueError:
        raise MetaError("'ref_key' is not hex") from None
    guard = _get(doc, "never_block", dict)
    if _get(guard, "rule", str) != NEVER_BLOCK_RULE:
        raise MetaError(
            f"never-block rule {guard['rule']!r}; this blockd applies {NEVER_BLOCK_RULE}"
        )
    patterns = _get(guard, "patterns", list)
    if not all(isinstance(p, str) for p in patterns):
        raise MetaError("'patterns' holds a non-string")
    checks = _get(doc, "hash_check", list)
    if not all(isinstance(c, str) and c.lstrip("-").isdigit() for c in checks):
        raise MetaError("'hash_check' holds a non-integer")
    sets_doc = _get(doc, "sets", dict)
    sets = {
        name: SetNumbers(
            _natural(n, "size"),
            _natural(n, "mask", 1 << 40),
            _natural(n, "shift", 64),
            _get(n, "needs_sha", bool),
        )
        for name in ("hosts", "routes", "urls")
        for n in [_get(sets_doc, name, dict)]
    }
    return Meta(
        generation=_natural(doc, "generation"),
        created_at=_time(doc, "created_at"),
        lists=lists,
        ref_key=ref_key,
        never_block=tuple(patterns),
        suffixes=_get(doc, "suffixes", str),
        hash_check=tuple(int(c) for c in checks),
        probe_keys=frozenset(_probe_key(k, len(lists)) for k in _get(doc, "probe_keys", list)),
        sets=sets,
    )
