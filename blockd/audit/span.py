"""How every command and report names a range of log entries, so they can be compared."""

from __future__ import annotations


def entry_span(begin: int, end: int) -> str:
    """Name the entries [begin, end) by their first and last index: 'entries 0 to 8 (9 entries)'.

    Indices are written without separators: they are identifiers a regulator looks up.
    """
    count = end - begin
    if count <= 0:
        return "no entries"
    if count == 1:
        return f"entry {begin}"
    return f"entries {begin} to {end - 1} ({count} entries)"
