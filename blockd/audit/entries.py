"""What the audit log says of an event: the entries, and their compact form in transit.

An entry is an event's type, the fields its `Shape` keeps, the time and blockd's version.
The event loop does as little as it can per audited event: it queues the entry's type, the
time and the field values (`Queued`), one tuple, which crosses to the log's helper process
cheaply. The helper (or a worker thread) encodes them (`encode`), straight into the bytes
`canonical(entry)` would give, without making the entry. Events are facts: a producer never
changes what it published, so reading the fields later gives what they were when published.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from operator import attrgetter

from blockd import __version__
from blockd.audit.canonical import MAX_SAFE_INTEGER, canonical
from blockd.events import (
    Event,
    FeedAccepted,
    FeedRejected,
    FeedRevoked,
    FeedUnchanged,
    GuardIntervention,
    OperatorAction,
    PolicyActivated,
    SelfTestResult,
    TrustAccepted,
    TrustRejected,
)

Entry = dict[str, object]
Queued = tuple[str, float, tuple[object, ...]]  # entry type, Unix time, field values


def utc(ts: float) -> str:
    """Return a Unix time as ISO 8601 UTC to the second, truncated (never rounded up).

    `datetime.fromtimestamp` rounds to the microsecond, so 59.9999996 would become the next
    second; every time text in the log is the floor of the time, as `_Encoder.time` makes it.
    """
    return datetime.fromtimestamp(math.floor(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Shape:
    """How an event becomes an entry: the entry's type and the event fields it keeps."""

    type: str
    fields: tuple[str, ...]


SHAPES: dict[type[Event], Shape] = {
    FeedAccepted: Shape(
        "feed-accepted",
        (
            "authority",
            "list",
            "version",
            "envelope_sha256",
            "keyids",
            "entries",
            "rejected_entries",
            "payload_sha256",
        ),
    ),
    FeedRejected: Shape(
        "feed-rejected",
        ("authority", "list", "version", "envelope_sha256", "payload_sha256", "keyids", "reason"),
    ),
    FeedUnchanged: Shape("feed-unchanged", ("authority", "list", "version")),
    FeedRevoked: Shape(
        "feed-revoked",
        (
            "authority",
            "list",
            "version",
            "envelope_sha256",
            "payload_sha256",
            "trust_version",
            "reason",
            "detail",
            "entries",
        ),
    ),
    TrustAccepted: Shape(
        "trust-accepted", ("version", "envelope_sha256", "payload_sha256", "keyids")
    ),
    TrustRejected: Shape(
        "trust-rejected", ("version", "envelope_sha256", "payload_sha256", "reason")
    ),
    GuardIntervention: Shape(
        "guard-intervention", ("kind", "authority", "list", "version", "detail", "count")
    ),
    PolicyActivated: Shape("policy-activated", ("generation", "versions", "entries")),
    OperatorAction: Shape("operator-action", ("action", "detail", "config_sha256")),
    SelfTestResult: Shape("self-test", ("passed", "checks", "failures")),
}
BY_TYPE = {shape.type: shape for shape in SHAPES.values()}


def shape_of(kind: type[Event]) -> Shape | None:
    """Return the shape of an event class's entries (a subclass's is its base's), if audited."""
    return next((SHAPES[k] for k in kind.__mro__ if k in SHAPES), None)


def values_of(shape: Shape) -> Callable[[Event], tuple[object, ...]]:
    """Return a function giving the values of an event's fields that its entry keeps."""
    if len(shape.fields) == 1:
        get = attrgetter(shape.fields[0])
        return lambda event: (get(event),)
    return attrgetter(*shape.fields)  # C code: a tuple in one call


def entry(shape: Shape, values: Sequence[object], time: str) -> Entry:
    """Return the entry for an event of shape with these field values, at time."""
    return {"type": shape.type, **dict(zip(shape.fields, values, strict=True)), "time": time,
            "blockd": __version__}  # fmt: skip


def entry_of(event: Event, now: str) -> Entry | None:
    """Return the audit entry for an event, or None if it is not audited itself."""
    shape = shape_of(type(event))
    if shape is None:
        return None
    return entry(shape, values_of(shape)(event), now)


def entries_of(items: Sequence[Queued | Entry]) -> list[Entry]:
    """Return the log entries queued items stand for, in order."""
    return [
        item if isinstance(item, dict) else entry(BY_TYPE[item[0]], item[2], utc(item[1]))
        for item in items
    ]


class _Template:
    """The canonical JSON of one shape's entries, with a slot for each value that varies."""

    def __init__(self, shape: Shape) -> None:
        constant = {"type": shape.type, "blockd": __version__}
        pairs, self.slots = [], list[int]()  # slot: a field's index, or -1 for the time
        for key in sorted([*shape.fields, *constant, "time"]):  # ASCII keys: UTF-16 order
            name = encode_basestring(key)
            if key in constant:
                pairs.append(f"{name}:{encode_basestring(constant[key])}".replace("%", "%%"))
            else:
                pairs.append(f"{name}:%s")
                self.slots.append(-1 if key == "time" else shape.fields.index(key))
        self.format = "{" + ",".join(pairs) + "}"


_TEMPLATES = {shape.type: _Template(shape) for shape in SHAPES.values()}


def refused(kind: object, time: str, error: ValueError) -> Entry:
    """Return the entry logged in place of one canonical JSON cannot hold (a float, say)."""
    return {"type": "entry-refused", "entry_type": str(kind), "reason": str(error),
            "time": time, "blockd": __version__}  # fmt: skip


def encode(items: Sequence[Queued | Entry]) -> tuple[list[bytes], list[str]]:
    """Return the canonical JSON and the time of each entry queued items stand for.

    The bytes are canonical(entry) for each entry of entries_of(items), made without the
    entries: a template per shape, strings and integers encoded inline, anything else by
    canonical(). An entry canonical JSON cannot hold is logged as `refused`: one bad value
    must not hold up the batch, and the log says that something was not logged, and why.
    """
    datas: list[bytes] = []
    times: list[str] = []
    encoder = _Encoder()
    for item in items:
        if isinstance(item, dict):
            kind, text = item.get("type"), str(item["time"])
        else:
            kind, text = item[0], encoder.time(item[1])
        try:
            data = canonical(item) if isinstance(item, dict) else encoder.entry(item)
        except ValueError as e:
            data = canonical(refused(kind, text, e))
        datas.append(data)
        times.append(text)
    return datas, times


class _Encoder:
    """One batch's encoding: strings are encoded once per batch, the time once a second."""

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}  # names recur
        self.second, self.text, self.quoted = -1, "", ""

    def time(self, ts: float) -> str:
        """Return the time's text (and keep it quoted for the entry)."""
        second = math.floor(ts)
        if second != self.second:
            self.second = second
            self.text = utc(self.second)
            self.quoted = f'"{self.text}"'
        return self.text

    def entry(self, item: Queued) -> bytes:
        """Return canonical(entry) for a queued event whose time was just given to `time`."""
        # Hot path (every audit entry, in the log's helper).
        kind, _, values = item
        template = _TEMPLATES[kind]
        strings = self.strings
        args = []
        for i in template.slots:
            if i < 0:
                args.append(self.quoted)
                continue
            value = values[i]
            if type(value) is str:
                e = strings.get(value)
                if e is None:
                    e = strings[value] = encode_basestring(value)
            elif type(value) is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
                e = str(value)
            else:
                e = canonical(value).decode()
            args.append(e)
        try:
            return (template.format % tuple(args)).encode()
        except UnicodeEncodeError:  # a lone surrogate: canonical() says so, as ValueError
            return canonical(entry(BY_TYPE[kind], values, self.text))
