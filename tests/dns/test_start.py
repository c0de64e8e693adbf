"""The DNS start strategy: fail-closed until every configured list is in force, or forward."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import dnslib

from blockd.config import parse
from blockd.dns import wire
from blockd.events import DnsProblem
from tests.daemon import ask, demo_config, ede, running
from tests.factories import Recorder

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream


def production(tmp: Path, upstream: Upstream, **dns: Any) -> str:
    """The demo config without `demo = true`: as a production config starts."""
    return demo_config(tmp, upstream.addr, demo=False, **dns)


async def test_a_production_start_refuses_until_every_list_is_in_force(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.add("example.com", "A", "192.0.2.80")
    upstream.add("blocked.demo.test", "A", "192.0.2.66")
    async with running(production(tmp_path, upstream), tmp_path, sync=False) as app:
        assert app.config.dns_start() == "fail-closed"
        problems = Recorder(app.bus)
        for name in ("example.com", "blocked.demo.test"):  # a listed name never resolves
            reply = await ask(app, name, edns=[])
            assert reply.header.rcode == dnslib.RCODE.REFUSED and not reply.rr
            assert [code for code, _ in ede(reply)] == [wire.EDE_NOT_READY]
        assert [(p.kind, p.reason) for p in problems.of(DnsProblem)] == [
            ("refused", "not-ready")
        ] * 2
        await app.feeds.sync_all()
        assert [str(rr.rdata) for rr in (await ask(app, "example.com")).rr] == ["192.0.2.80"]
        assert [str(rr.rdata) for rr in (await ask(app, "blocked.demo.test")).rr] == ["127.0.0.1"]


async def test_a_restart_with_stored_lists_answers_at_once(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.add("example.com", "A", "192.0.2.80")
    text = production(tmp_path, upstream)
    async with running(text, tmp_path):
        pass  # lists synced and stored
    async with running(text, tmp_path, sync=False) as app:
        assert not app.front.closed  # the stored, re-verified lists are whole
        assert [str(rr.rdata) for rr in (await ask(app, "example.com")).rr] == ["192.0.2.80"]


async def test_forward_and_the_demo_answer_from_the_first_query(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.add("example.com", "A", "192.0.2.80")
    demo, forward = tmp_path / "demo", tmp_path / "forward"
    demo.mkdir()
    forward.mkdir()
    for tmp, text in (
        (demo, demo_config(demo, upstream.addr)),
        (forward, production(forward, upstream, start="forward")),
    ):
        async with running(text, tmp, sync=False) as app:
            assert not app.front.closed
            reply = await ask(app, "example.com")
            assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.80"]


def test_the_strategy_follows_the_config(tmp_path: Path) -> None:
    base = demo_config(tmp_path, ("127.0.0.1", 53))
    assert parse(base, tmp_path).dns_start() == "forward"
    prod = demo_config(tmp_path / "prod", ("127.0.0.1", 53), demo=False)
    assert parse(prod, tmp_path).dns_start() == "fail-closed"
    assert parse(prod.replace("[dns]", '[dns]\nstart = "forward"'), tmp_path).dns_start() == (
        "forward"
    )
