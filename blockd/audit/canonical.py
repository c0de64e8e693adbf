"""Canonical JSON for audit log entries, in the style of RFC 8785 (JCS).

Objects have their keys sorted by UTF-16 code units and no whitespace; strings carry only the
escapes JCS requires (the two-character ones for \\b \\t \\n \\f \\r " and \\, lowercase \\u00xx
for other control characters) and everything else, non-ASCII included, as UTF-8.

Log entries never need fractions, so this is JCS restricted to integers: floats, NaN and the
infinities are refused, and so are integers outside the I-JSON safe range ±(2**53 - 1), where
JCS (which serialises numbers as IEEE doubles) and Python would disagree. Refusals raise
ValueError, for values that cannot be encoded and for bytes that are not exactly canonical.
"""

from __future__ import annotations

import json
from typing import TypeAlias

import orjson

MAX_SAFE_INTEGER = 2**53 - 1

JSONValue: TypeAlias = (
    "bool | int | str | list[JSONValue] | tuple[JSONValue, ...] | dict[str, JSONValue] | None"
)


def _utf16_key(key: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly as the code unit sequences do.
    return key.encode("utf-16-be", "surrogatepass")


def _encode(value: object, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is outside ±(2**53 - 1)")
        out.append(str(int(value)))
    elif isinstance(value, str):
        # ensure_ascii=False escapes exactly the JCS set, with lowercase hex.
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"object keys must be strings, got {type(key).__name__}")
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16_key)):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, float):
        raise ValueError(f"floats are not allowed in canonical JSON, got {value!r}")
    else:
        raise ValueError(f"cannot encode {type(value).__name__} as canonical JSON")


def _plain(value: object, depth: int = 0) -> bool:
    """Say whether value holds only what the fast encoder may see.

    True for what log entries hold: strings, integers, booleans, null, and lists, tuples and
    string-keyed objects of those. Floats (orjson would write them, NaN as null) and other
    types go to the reference encoder, which refuses them; so do deep structures.
    """
    # Hot path (every audit entry): plain loops, scalars checked inline.
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if depth > 32:
        return False
    if kind is dict:
        items = value.values()  # type: ignore[attr-defined]
    elif kind is list or kind is tuple:
        items = value
    else:
        return False
    for v in items:
        t = type(v)
        if t is str or t is int or t is bool or v is None:
            continue
        if not _plain(v, depth + 1):
            return False
    return True


def _ascii_keys(value: object) -> bool:
    """Say whether every object key in value is ASCII (code point order is then UTF-16 order)."""
    if isinstance(value, dict):
        return all(k.isascii() and _ascii_keys(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_ascii_keys(v) for v in value)
    return True


# Sorted keys, integers within ±(2**53 - 1), compact, UTF-8, JCS escapes (lowercase \u00xx).
_FAST = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def canonical(obj: object) -> bytes:
    """Return the canonical JSON encoding of obj as UTF-8 bytes."""
    if _plain(obj):  # hot path: orjson, ten times faster than the reference encoder
        try:
            data = orjson.dumps(obj, option=_FAST)
        except orjson.JSONEncodeError:
            pass  # a key not a string, an integer out of range, a lone surrogate: see below
        else:
            # orjson sorts keys by code point; that is UTF-16 order for ASCII keys.
            if data.isascii() or _ascii_keys(obj):
                return data
    out: list[str] = []
    _encode(obj, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("strings must be valid Unicode (no lone surrogates)") from None


def _refuse_float(text: str) -> float:
    raise ValueError(f"floats are not allowed in canonical JSON, got {text}")


def _refuse_duplicates(pairs: list[tuple[str, JSONValue]]) -> dict[str, JSONValue]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate object key")
    return obj


def parse_canonical(data: bytes) -> JSONValue:
    """Parse canonical JSON; refuse any input that is not exactly canonical(value)."""
    try:
        text = data.decode("utf-8")
        value: JSONValue = json.loads(
            text,
            parse_float=_refuse_float,
            parse_constant=_refuse_float,
            object_pairs_hook=_refuse_duplicates,
        )
        if canonical(value) != data:
            raise ValueError("JSON is not in canonical form")
    except UnicodeDecodeError:
        raise ValueError("canonical JSON must be UTF-8") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return value
