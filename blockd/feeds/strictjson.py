"""Parse untrusted JSON with one meaning: bounded, no duplicate keys, no lax numbers.

Every signed document blockd reads arrives from a server it does not control, and parts
of it are parsed before any signature is checked. `loads` is json.loads with the limits
that make that safe and unambiguous: nesting depth, integer length, no NaN or Infinity,
and no object with a key twice (a co-signer whose parser keeps the first duplicate would
see other content than one that keeps the last). Every failure is a `JSONError`.
"""

from __future__ import annotations

import json
import math
import re

MAX_DEPTH = 16  # the deepest blockd document is 4
MAX_INT_DIGITS = 20  # every integer blockd reads fits in 64 bits
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # an escaped UTF-16 surrogate


class JSONError(ValueError):
    """A document is not JSON, or is JSON blockd refuses to read."""


def _int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise JSONError(f"integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _constant(name: str) -> float:
    raise JSONError(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONError(f"number {text[:20]} is out of range")
    return value


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    doc: dict[str, object] = {}
    for key, value in pairs:
        if key in doc:
            raise JSONError(f"key {key!r} appears more than once in an object")
        doc[key] = value
    return doc


def _strings(doc: object) -> list[str]:
    """Return every string in doc, keys included."""
    out: list[str] = []
    todo = [doc]
    while todo:
        node = todo.pop()
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            out.extend(node)
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return out


def _too_deep(doc: object, limit: int) -> bool:
    """Say whether doc nests arrays and objects deeper than limit (iterative walk)."""
    todo: list[tuple[object, int]] = [(doc, 1)]
    while todo:
        node, level = todo.pop()
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        for child in children:
            if isinstance(child, dict | list):
                if level >= limit:
                    return True
                todo.append((child, level + 1))
    return False


def loads(raw: bytes, max_depth: int = MAX_DEPTH) -> object:
    """Parse raw as strict, bounded JSON, or raise JSONError with the reason.

    The C parser stops at the interpreter's recursion limit (RecursionError, caught
    here); what it returns is then held to max_depth.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JSONError(f"not UTF-8 (byte {e.start})") from None
    try:
        doc = json.loads(
            text,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except RecursionError:
        raise JSONError(f"nested deeper than {max_depth} levels") from None
    except JSONError:
        raise
    except ValueError as e:  # JSONDecodeError and the interpreter's own number limits
        raise JSONError(str(e)) from None
    if _too_deep(doc, max_depth):
        raise JSONError(f"nested deeper than {max_depth} levels")
    if _SURROGATE.search(raw):  # rare: pay for the exact check only when one is escaped
        for value in _strings(doc):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise JSONError("string holds a lone UTF-16 surrogate") from None
    return doc
