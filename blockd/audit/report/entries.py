"""Read audit log entries: typed access to their fields, and their times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class Malformed(Exception):
    """An entry of a known type lacks a field, or has one of the wrong kind."""


class Fields:
    """Typed access to one entry's fields; raises Malformed naming the bad field."""

    def __init__(self, entry: dict[str, object]) -> None:
        self.entry = entry

    def _get(self, name: str, kinds: type | tuple[type, ...], what: str) -> object:
        value = self.entry.get(name)
        if not isinstance(value, kinds) or isinstance(value, bool) != (kinds is bool):
            raise Malformed(f"field {name!r} is not {what}")
        return value

    def _list(self, name: str, kind: type, what: str) -> list[Any]:
        value = self._get(name, list, what)
        assert isinstance(value, list)
        if not all(isinstance(v, kind) for v in value):
            raise Malformed(f"field {name!r} is not {what}")
        return value

    def text(self, name: str) -> str:
        return str(self._get(name, str, "text"))

    def opt_text(self, name: str) -> str | None:
        return None if self.entry.get(name) is None else self.text(name)

    def number(self, name: str) -> int:
        value = self._get(name, int, "an integer")
        assert isinstance(value, int)
        return value

    def opt_number(self, name: str) -> int | None:
        return None if self.entry.get(name) is None else self.number(name)

    def flag(self, name: str) -> bool:
        return bool(self._get(name, bool, "true or false"))

    def opt_flag(self, name: str) -> bool | None:
        return None if self.entry.get(name) is None else self.flag(name)

    def texts(self, name: str) -> tuple[str, ...]:
        return tuple(str(v) for v in self._list(name, str, "a list of text"))

    def tally(self, name: str) -> dict[str, int]:
        value = self.entry.get(name, {})
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in value.items()
        ):
            raise Malformed(f"field {name!r} is not a map of integers")
        return {str(k): int(v) for k, v in sorted(value.items())}

    def rows(self, name: str) -> list[Fields]:
        return [Fields(v) for v in self._list(name, dict, "a list of objects")]


def parse_time(time: str) -> datetime:
    """Return an ISO 8601 UTC time in seconds (as entries carry it) as a datetime."""
    return datetime.strptime(time, TIME_FORMAT).replace(tzinfo=UTC)


def format_time(time: datetime) -> str:
    """Return a datetime as ISO 8601 UTC seconds."""
    return time.astimezone(UTC).strftime(TIME_FORMAT)


def is_time(time: str) -> bool:
    """Return whether time is ISO 8601 UTC seconds."""
    try:
        parse_time(time)
    except ValueError:
        return False
    return True


def normalize_time(value: str, what: str) -> str:
    """Return a date or date-time as ISO 8601 UTC seconds; raise ValueError naming `what`."""
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{what}: {value!r} is not a date or time (accepted: 2024-05-01, "
            "2024-05-01T06:00:00Z, 2024-05-01T08:00:00+02:00)"
        ) from None
    return format_time(t if t.tzinfo else t.replace(tzinfo=UTC))
