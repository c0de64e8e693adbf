"""The app's lifecycle: parts start in order, and whatever started is stopped, in reverse."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from blockd.app import App
from blockd.config import parse
from tests.daemon import demo_config

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream


def free_udp_and_tcp_port() -> int:
    """Return a port free for both UDP and TCP on 127.0.0.1 (DNS binds both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


async def test_a_part_that_cannot_start_stops_what_already_started(
    tmp_path: Path, upstream: Upstream
) -> None:
    dns_port = free_udp_and_tcp_port()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    http_port = taken.getsockname()[1]
    text = demo_config(
        tmp_path,
        upstream.addr,
        http={"listen": [f"127.0.0.1:{http_port}"]},
        listen=[f"127.0.0.1:{dns_port}"],
    )
    app = App(parse(text, tmp_path))
    try:
        with pytest.raises(OSError, match="address already in use"):
            await app.start()  # DNS binds, then HTTP fails: its port is taken
    finally:
        taken.close()
    # DNS was stopped again: its port is free for the next start.
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", dns_port))
    await app.stop()  # nothing left to stop: no error


async def test_stop_ends_every_task_and_listener(tmp_path: Path, upstream: Upstream) -> None:
    app = App(parse(demo_config(tmp_path, upstream.addr), tmp_path))
    before = asyncio.all_tasks()
    await app.start()
    assert app.listeners()
    await app.stop()
    await asyncio.sleep(0)
    assert {t for t in asyncio.all_tasks() - before if not t.done()} == set()
    for _, address, port in app.listeners():
        with socket.socket() as s:
            assert s.connect_ex((address, port)) != 0  # nothing listens any more
