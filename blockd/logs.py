"""Structured logs: JSON lines for the journal and log shippers, a readable console for people.

Both structlog loggers and every `logging.getLogger(...)` in blockd and its libraries go
through one handler on the root logger (structlog's ProcessorFormatter), so a line looks the
same whoever wrote it:

    {"timestamp": "2026-01-01T12:00:00.123456Z", "level": "info", "logger": "blockd",
     "event": "policy 4 active: demo-authority/demo-hosts v3; ready", ...extra keys}

blockd keeps no record of subscribers, and its logs are no exception: `drop_subscriber_data`
removes keys that name a client or what a client asked for (see SUBSCRIBER_KEYS) from every
line and lists the dropped key names under "redacted". It works on keys only: the message
text itself is not rewritten (it must show listener and upstream addresses), so a client
address or a queried name must never be formatted into a message.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor

Format = Literal["auto", "json", "console"]
LEVELS = ("debug", "info", "warning", "error", "critical")

# Keys (lower case, "-" read as "_") that would put a subscriber in the log: who asked, and
# what they asked for. Log listener and upstream addresses as `listen` and `upstream`.
SUBSCRIBER_KEYS = frozenset(
    {
        "addr",
        "address",
        "ecs",
        "ip",
        "ip_address",
        "sockaddr",
        "src",
        "src_ip",
        "src_addr",
        "source_ip",
        "source_addr",
        "user",
        "qname",
        "query",
        "question",
        "domain",
        "host",
        "hostname",
        "sni",
        "server_name",
        "url",
        "uri",
        "request_path",
        "request_target",
        "referer",
        "referrer",
        "user_agent",
        "cookie",
        "headers",
    }
)
# Any key starting with one of these is dropped too: client_ip, peername, remote_port, ...
SUBSCRIBER_PREFIXES = ("client", "peer", "remote", "subscriber")

_FIRST = ("timestamp", "level", "logger", "event")


def drop_subscriber_data(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Remove keys that would carry subscriber data; name them under "redacted"."""
    dropped = []
    for key in list(event_dict):
        norm = key.lower().replace("-", "_")
        if norm in SUBSCRIBER_KEYS or norm.startswith(SUBSCRIBER_PREFIXES):
            del event_dict[key]
            dropped.append(key)
    if dropped:
        event_dict["redacted"] = sorted(dropped)
    return event_dict


def _first_keys(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Put timestamp, level, logger and event first, so a line reads left to right."""
    head = {k: event_dict.pop(k) for k in _FIRST if k in event_dict}
    head.update(event_dict)
    return head


class _Handler(logging.StreamHandler[TextIO]):
    """The one root handler configure() installs (found again by its type)."""


def configure(level: str = "info", fmt: Format = "auto", *, stream: TextIO | None = None) -> None:
    """Send all logging to `stream` (stderr) as JSON lines, or for a terminal as a console."""
    stream = stream if stream is not None else sys.stderr
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"log format {fmt!r} is not one of auto, json, console")
    numeric = _level(level)
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    renderer: list[Processor] = (
        [structlog.dev.ConsoleRenderer(colors=stream.isatty())]
        if console
        else [
            structlog.processors.format_exc_info,
            _first_keys,
            structlog.processors.JSONRenderer(),
        ]
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # Records from logging.getLogger(...): "%s" arguments are merged into the event
        # text, extra={...} becomes keys.
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        # The privacy filter runs last before rendering, on lines from both sides.
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            drop_subscriber_data,
            *renderer,
        ],
    )
    handler = _Handler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            # The level lives on the stdlib root logger, so set_level() applies to both.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def unconfigure() -> None:
    """Remove what configure() installed (for tests and embedding)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.setLevel(logging.WARNING)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def set_level(level: str) -> str:
    """Change the level of every logger at runtime; return the previous level."""
    numeric = _level(level)
    root = logging.getLogger()
    previous = current_level()
    # Say so under whichever of the two levels is more verbose, so the change is on record.
    root.setLevel(min(numeric, root.getEffectiveLevel()))
    logging.getLogger("blockd").info("log level %s (was %s)", level.lower(), previous)
    root.setLevel(numeric)
    return previous


def current_level() -> str:
    """Return the root logger's level name, lower case."""
    return logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()


def get_logger(name: str, **context: Any) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger named `name` (use keys for data, not message text)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **context)
    return logger


def _level(level: str) -> int:
    if level.lower() not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    numeric: int = getattr(logging, level.upper())
    return numeric
