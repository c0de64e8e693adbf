"""An authority's list file, checked before it is signed, by the rules blockd accepts it by.

`blockd sign-list` reads a text file (one entry per line, `#` comments) and refuses what
blockd would reject on acceptance, so an authority learns of a bad entry when it signs, not
from an ISP's metrics. The entry rules are `blockd.policy.entries`' own and the freshness
bound is `blockd.feeds.verify`'s: nothing here decides on its own what is valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from blockd.feeds.model import TestEntry, rfc3339, validation_problems
from blockd.feeds.verify import DEFAULT_SKEW
from blockd.policy import entries as entry_rules

# What each reason slug of blockd.policy.entries means to the person signing.
_MEANING = {
    "empty": "an empty entry",
    "too-long": "longer than blockd accepts: 253 characters for a host, 4096 for a URL",
    "invalid-name": "not a valid host name, or one IDNA cannot encode",
    "invalid-url": "not a URL blockd can canonicalise",
    "public-suffix": "a public suffix or bare TLD: blockd never blocks every site under one",
    "invalid-hash": "not KIND:HEX (KIND host, url or route; HEX 64 lowercase hex digits)",
    "format": "this list's format cannot carry it: host probes go in hosts or sha256 lists, "
    "URL probes in urls or sha256 lists",
}
_SHOWN_CHARS = 80


class ListFileError(ValueError):
    """The file as a whole is not a list of entries (not UTF-8 text, NUL bytes)."""


@dataclass(frozen=True)
class Line:
    """One entry line of the file: its number (from 1) and its text, trimmed."""

    number: int
    text: str


@dataclass(frozen=True)
class Problem:
    """Something blockd would refuse: where it is, what it is, and why."""

    where: str  # "FILE:LINE", "--test-host", "--expires", "FILE"
    value: str | None  # the entry, probe or date; None for the file as a whole
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        """Return the one line that names it."""
        detail = self.detail or _MEANING.get(self.reason, "")
        value = "" if self.value is None else f" {shown(self.value)}:"
        return f"{self.where}:{value} {self.reason}" + (f" ({detail})" if detail else "")


def shown(value: str) -> str:
    """Return value quoted for a terminal: escapes visible, long values cut."""
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return f"{value[:_SHOWN_CHARS]!r}... ({len(value)} characters)"


def read_lines(data: bytes) -> list[Line]:
    """Return the entry lines of a list file: LF or CRLF, `#` comments and blanks skipped."""
    nul = data.find(b"\0")
    if nul >= 0:
        raise ListFileError(
            f"line {_line_of(data, nul)}: a NUL byte: not a text file "
            "(save it as UTF-8, not UTF-16)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ListFileError(f"line {_line_of(data, e.start)}: not UTF-8 (byte {e.start})") from None
    # Split on LF only: str.splitlines would also split on U+2028, form feeds and the like,
    # turning one bad line into two entries.
    lines = text.removeprefix("\ufeff").split("\n")
    out = [Line(n, ln.strip()) for n, ln in enumerate(lines, start=1)]
    return [ln for ln in out if ln.text and not ln.text.startswith("#")]


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def check_entries(fmt: entry_rules.Format, lines: Sequence[Line], file: str) -> list[Problem]:
    """Return the entries blockd would reject in a list of fmt, with their line numbers."""
    key_of = entry_rules.key_of(fmt)
    first: dict[object, int] = {}
    problems: list[Problem] = []
    for line in lines:
        where = f"{file}:{line.number}"
        try:
            key = key_of(line.text)
        except ValueError as e:
            problems.append(Problem(where, line.text, str(e)))
            continue
        if key in first:
            problems.append(
                Problem(where, line.text, "duplicate", f"the same entry as line {first[key]}")
            )
        else:
            first[key] = line.number
    if not lines:
        problems.append(
            Problem(file, None, "no-entries", "the file is empty or holds only comments")
        )
    return problems


def probes(hosts: Sequence[str], urls: Sequence[str]) -> list[TestEntry]:
    """Return the self-test probes named on the command line; raise ListFileError if bad."""
    try:
        return [TestEntry(host=h) for h in hosts] + [TestEntry(url=u) for u in urls]
    except ValidationError as e:
        raise ListFileError(f"self-test probe: {validation_problems(e)}") from None


def check_probes(fmt: entry_rules.Format, probes: Sequence[TestEntry]) -> list[Problem]:
    """Return the self-test probes blockd would reject in a list of fmt."""
    problems = []
    for probe in probes:
        try:
            entry_rules.probe_key(fmt, probe)
        except ValueError as e:
            where = "--test-host" if probe.host is not None else "--test-url"
            problems.append(Problem(where, probe.host or probe.url or "", str(e)))
    return problems


def check_dates(
    issued: datetime, expires: datetime, now: datetime, skew: timedelta = DEFAULT_SKEW
) -> list[Problem]:
    """Return what makes the validity period unusable now; raise ValueError if it is empty."""
    if expires <= issued:
        past = " (and it is already past)" if expires <= now else ""
        raise ValueError(
            f"--expires {rfc3339(expires)} is not after --issued-at {rfc3339(issued)}{past}"
        )
    problems = []
    if expires <= now:
        problems.append(
            Problem("--expires", rfc3339(expires), "expired", "already past: blockd refuses it")
        )
    if issued > now + skew:
        problems.append(
            Problem(
                "--issued-at",
                rfc3339(issued),
                "future",
                f"more than {int(skew.total_seconds())} s ahead: blockd refuses it until then",
            )
        )
    return problems
