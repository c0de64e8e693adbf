"""Entries a valid log may hold but should not: duplicates and backdated entries.

The Merkle tree proves what was logged, not that it was logged once or on time. A batch
written twice (a retry) repeats entries byte for byte; an entry appended later with an old
time (an operator writing to the database) goes backwards in time. Both are reported by
index, for the verifier to warn about (or fail on, when strict) and the report to show.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

TOLERANCE = 5  # seconds an entry's time may precede an earlier entry's or checkpoint's


@dataclass(frozen=True)
class Anomaly:
    """One entry that repeats an earlier one or goes back in time."""

    index: int
    kind: str  # "duplicate" or "backdated"
    detail: str

    def __str__(self) -> str:
        return f"entry {self.index}: {self.detail}"


def _seconds(text: object) -> float | None:
    """Return an ISO 8601 UTC time as Unix seconds, or None if it is not one."""
    if not isinstance(text, str) or not text.endswith("Z"):
        return None
    try:
        return datetime.fromisoformat(text[:-1] + "+00:00").timestamp()
    except ValueError:
        return None


def checkpoint_time(extensions: Sequence[str]) -> str | None:
    """Return the time blockd wrote into a checkpoint (its `time …` line), if any."""
    return next((line[5:] for line in extensions if line.startswith("time ")), None)


def find(
    begin: int,
    datas: Sequence[bytes],
    times: Sequence[object],
    checkpoints: Sequence[tuple[int, str | None]] = (),
) -> list[Anomaly]:
    """Return the anomalies among entries [begin, begin + len(datas)), in index order.

    times holds each entry's `time`; checkpoints holds (size, time) of each signed
    checkpoint: an entry at index >= size was appended after that checkpoint was signed.
    """
    found: list[Anomaly] = []
    seen: dict[bytes, int] = {}
    latest: tuple[float, int, str] | None = None  # the latest time so far: seconds, index, text
    signed = [
        (size, text, s)
        for size, text in checkpoints
        if text is not None and (s := _seconds(text)) is not None
    ]
    signed.sort()
    after: tuple[int, str, float] | None = None  # the last checkpoint signed before the entry
    next_cp = 0
    for i, (data, time) in enumerate(zip(datas, times, strict=True)):
        index = begin + i
        digest = hashlib.sha256(data).digest()
        if digest in seen:
            found.append(Anomaly(index, "duplicate", f"repeats entry {seen[digest]} byte for byte"))
        else:
            seen[digest] = index
        while next_cp < len(signed) and signed[next_cp][0] <= index:
            after, next_cp = signed[next_cp], next_cp + 1
        t = _seconds(time)
        if t is None:
            continue
        if latest is not None and t < latest[0] - TOLERANCE:
            detail = f"time {time} is before entry {latest[1]}'s {latest[2]}"
            found.append(Anomaly(index, "backdated", detail))
        elif after is not None and t < after[2] - TOLERANCE:
            detail = f"time {time} is before {after[1]}, when checkpoint {after[0]} was signed"
            found.append(Anomaly(index, "backdated", detail))
        if latest is None or t > latest[0]:
            latest = (t, index, str(time))
    return found
