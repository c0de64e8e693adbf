"""Batched UDP I/O (recvmmsg/sendmmsg) on real loopback sockets, and the portable fallback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dnslib
import pytest

from blockd.dns import mmsg
from tests.daemon import ask, demo_config, running

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="recvmmsg is Linux-only")


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    family = request.param
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    srv, cli = socket.socket(family, socket.SOCK_DGRAM), socket.socket(family, socket.SOCK_DGRAM)
    srv.bind((host, 0))
    srv.setblocking(False)
    cli.bind((host, 0))
    cli.settimeout(2)
    cli.connect(srv.getsockname()[:2])
    yield srv, cli
    srv.close()
    cli.close()


def test_a_batch_reads_many_and_answers_each_sender(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    srv, cli = pair
    batch = mmsg.Batch(srv, size=8)
    assert batch.receive() == 0  # nothing waiting: no error, no block
    for i in range(11):
        cli.send(b"query-%d" % i)
    got: list[bytes] = []
    while len(got) < 11:
        n = batch.receive()
        assert 0 < n <= 8
        for i in range(n):
            data = batch.datagram(i)
            assert data is not None
            got.append(data)
            assert batch.client(i) == cli.getsockname()[0]
            assert batch.address(i)[:2] == cli.getsockname()[:2]
            assert batch.reply(i, b"answer-to-" + data)
        assert batch.flush() == 0
    assert got == [b"query-%d" % i for i in range(11)]
    assert [cli.recv(100) for _ in range(11)] == [b"answer-to-query-%d" % i for i in range(11)]


def test_an_oversized_datagram_is_flagged_not_mistaken(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    srv, cli = pair
    batch = mmsg.Batch(srv, size=4)
    cli.send(b"x" * (mmsg.SLOT + 1))
    cli.send(b"small")
    assert batch.receive() == 2
    assert batch.datagram(0) is None
    assert batch.datagram(1) == b"small"
    client = cli.getsockname()[0]
    assert batch.received(2) == [(None, client), (b"small", client)]
    assert not batch.reply(1, b"y" * (mmsg.SLOT + 1))  # too big for a slot: caller sends it
    assert batch.flush() == 0


def test_a_vanished_client_does_not_stop_the_batch(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    srv, cli = pair
    gone = socket.socket(srv.family, socket.SOCK_DGRAM)
    gone.bind((cli.getsockname()[0], 0))
    gone.sendto(b"from-gone", srv.getsockname()[:2])
    gone.close()  # its port is closed: the answer draws an ICMP error
    cli.send(b"from-cli")
    batch = mmsg.Batch(srv, size=4)
    assert batch.receive() == 2
    for i in range(2):
        data = batch.datagram(i)
        assert data is not None
        batch.reply(i, data)
    assert batch.flush() == 0
    assert cli.recv(100) == b"from-cli"
    cli.send(b"again")  # the queued ICMP error must not end reading
    for _ in range(3):
        if batch.receive():
            break
    assert batch.datagram(0) == b"again"


async def test_the_portable_path_answers_the_same(
    tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mmsg, "available", lambda: False)
    upstream.add("clean.example.com", "A", "192.0.2.7")
    async with running(demo_config(tmp_path, upstream.addr), tmp_path) as app:
        blocked = await ask(app, "www.blocked.demo.test")
        assert [str(rr.rdata) for rr in blocked.rr] == ["127.0.0.1"]
        clean = await ask(app, "clean.example.com")
        assert clean.header.rcode == dnslib.RCODE.NOERROR
        assert [str(rr.rdata) for rr in clean.rr] == ["192.0.2.7"]
