"""Structured logs: JSON lines, stdlib loggers through the same pipe, runtime levels, privacy."""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog

from blockd import logs


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    logs.unconfigure()
    logging.getLogger().setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_have_the_fields() -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    logs.get_logger("blockd.feeds").info("list accepted", list="demo/hosts", version=3)
    (line,) = lines(out)
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    assert line["level"] == "info"
    assert line["logger"] == "blockd.feeds"
    assert line["event"] == "list accepted"
    assert (line["list"], line["version"]) == ("demo/hosts", 3)
    assert line["timestamp"].endswith("Z")
    at = datetime.fromisoformat(line["timestamp"])
    assert at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - at) < timedelta(seconds=30)


def test_stdlib_loggers_come_out_as_json() -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    log = logging.getLogger("blockd.feeds.sync")
    log.warning("%s: stored version %s unusable: %s", "demo/hosts", 7, "bad signature")
    log.info("synced", extra={"list": "demo/hosts", "entries": 12})
    first, second = lines(out)
    assert first["event"] == "demo/hosts: stored version 7 unusable: bad signature"
    assert (first["level"], first["logger"]) == ("warning", "blockd.feeds.sync")
    assert "timestamp" in first
    assert (second["event"], second["list"], second["entries"]) == ("synced", "demo/hosts", 12)


def test_exceptions_are_one_json_line_with_the_traceback() -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    try:
        raise RuntimeError("upstream pool empty")
    except RuntimeError:
        logging.getLogger("blockd.dns.server").exception("udp query failed")
    (line,) = lines(out)
    assert line["level"] == "error"
    assert "Traceback" in line["exception"]
    assert "RuntimeError: upstream pool empty" in line["exception"]


def test_level_changes_at_runtime() -> None:
    out = io.StringIO()
    logs.configure("warning", "json", stream=out)
    stdlib, structured = logging.getLogger("blockd.dns"), logs.get_logger("blockd.http")
    stdlib.info("quiet")
    structured.info("quiet")
    assert out.getvalue() == ""
    assert logs.set_level("DEBUG") == "warning"
    assert logs.current_level() == "debug"
    stdlib.debug("loud")
    structured.debug("loud", n=1)
    assert logs.set_level("error") == "debug"
    stdlib.warning("quiet again")
    structured.warning("quiet again")
    got = [(line["logger"], line["event"]) for line in lines(out)]
    assert got == [
        ("blockd", "log level debug (was warning)"),
        ("blockd.dns", "loud"),
        ("blockd.http", "loud"),
        ("blockd", "log level error (was debug)"),
    ]


def test_bad_level_or_format_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="'verbose' is not one of debug, info, warning"):
        logs.set_level("verbose")
    with pytest.raises(ValueError, match="'xml' is not one of auto, json, console"):
        logs.configure("info", "xml", stream=io.StringIO())  # type: ignore[arg-type]


def test_subscriber_keys_are_dropped_from_both_kinds_of_logger() -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    logs.get_logger("blockd.dns").info(
        "blocked", client_ip="192.0.2.7", qname="blocked.demo.test", list="demo/hosts"
    )
    logging.getLogger("blockd.http").info(
        "refused", extra={"peer": ("2001:db8::5", 443), "SNI": "x.test", "reason": "listed"}
    )
    structlog.contextvars.bind_contextvars(remote_addr="198.51.100.1")
    try:
        logs.get_logger("blockd.dns").info("with context")
    finally:
        structlog.contextvars.clear_contextvars()
    text = out.getvalue()
    for secret in ("192.0.2.7", "blocked.demo.test", "2001:db8::5", "x.test", "198.51.100.1"):
        assert secret not in text
    first, second, third = lines(out)
    assert first["list"] == "demo/hosts"
    assert first["redacted"] == ["client_ip", "qname"]
    assert second["reason"] == "listed"
    assert second["redacted"] == ["SNI", "peer"]
    assert third["redacted"] == ["remote_addr"]


def test_the_privacy_filter_on_its_own() -> None:
    ed = logs.drop_subscriber_data(
        None,
        "info",
        {"event": "x", "Client-Subnet": "192.0.2.0/24", "url": "http://a/b", "upstream": "9.9.9.9"},
    )
    assert ed == {"event": "x", "upstream": "9.9.9.9", "redacted": ["Client-Subnet", "url"]}
    assert logs.drop_subscriber_data(None, "info", {"event": "x"}) == {"event": "x"}


def test_console_format_is_for_people() -> None:
    out = io.StringIO()
    logs.configure("info", "console", stream=out)
    logging.getLogger("blockd").info("policy %d active", 4, extra={"lists": 3})
    text = out.getvalue()
    assert "policy 4 active" in text
    assert "lists=3" in text
    assert "\x1b[" not in text  # no colours when the stream is not a terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_auto_is_json_unless_on_a_terminal() -> None:
    out = io.StringIO()
    logs.configure("info", "auto", stream=out)
    logging.getLogger("blockd").info("started")
    assert lines(out)[0]["event"] == "started"
    leader, follower = os.openpty()
    with open(follower, "w", encoding="utf-8") as tty, open(leader, "rb", buffering=0) as rd:
        logs.configure("info", "auto", stream=tty)
        logging.getLogger("blockd").info("started")
        tty.flush()
        shown = rd.read(4096).decode()
    assert "started" in shown
    assert not shown.lstrip().startswith("{")


def test_configuring_twice_does_not_duplicate_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure("info", "json", stream=first)
    logs.configure("info", "json", stream=second)
    logging.getLogger("blockd").info("once")
    assert first.getvalue() == ""
    assert [line["event"] for line in lines(second)] == ["once"]


def test_warnings_are_logged_too() -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated option", DeprecationWarning, stacklevel=1)
    (line,) = lines(out)
    assert line["logger"] == "py.warnings"
    assert "deprecated option" in line["event"]
