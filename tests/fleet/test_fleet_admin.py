"""The fleet in the admin API and on the status page: real nodes, real Redis, real HTTP."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from blockd.app import App
from blockd.fleet import status
from blockd.fleet.keys import Keys
from tests.daemon import running
from tests.fleet.nodes import Fleet, redis, until, version

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream
    from tests.fleet.servers import RedisServer

pytestmark = pytest.mark.slow
TOKEN = "fleet-admin-token-for-tests"


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer, upstream: Upstream) -> Fleet:
    (tmp_path / "token").write_text(TOKEN + "\n")
    return Fleet(tmp_path, redis_server, upstream)


@contextlib.asynccontextmanager
async def node(fleet: Fleet, name: str) -> AsyncIterator[App]:
    """Run a node whose operator API takes TOKEN."""
    (fleet.tmp / name).mkdir(exist_ok=True)
    text = fleet.config(name).replace(
        "[admin]\n", f'[admin]\ntoken_file = "{fleet.tmp / "token"}"\n'
    )
    async with running(text, fleet.tmp / name, sync=False) as app:
        yield app


async def get(app: App, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
    host, port = app.admin.bound[0]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://{host}:{port}{path}", headers=headers) as r,
    ):
        body = await (r.json(content_type=None) if path.startswith("/api") else r.text())
        return r.status, body


async def test_the_fleet_endpoint_and_status_page_show_every_node_and_flag_the_odd_ones(
    fleet: Fleet,
) -> None:
    async with node(fleet, "a") as a, node(fleet, "b") as b:
        await until(lambda: version(a) == 1 and version(b) == 1, "both enforce v1")
        keys, r = Keys("test"), redis(fleet.redis)
        try:  # one node enforces nothing yet; one has been silent ten minutes
            await status.beat(r, keys, status.Beat("laggard", time.time(), {"auth/hosts": None}))
            old = status.Beat("silent", time.time() - 600, {"auth/hosts": 1}, heartbeat=0.5)
            await status.beat(r, keys, old)
        finally:
            await r.aclose()

        async def seen() -> bool:  # each node reads Redis on its own heartbeat
            for one in (a, b):
                code, body = await get(one, "/api/v1/fleet")
                if code != 200 or len(body["nodes"]) != 4:
                    return False
            return True

        await until(seen, "both nodes' views of the fleet have all four nodes")
        assert (await get(a, "/api/v1/fleet", token=None))[0] == 401
        code, view = await get(a, "/api/v1/fleet")
        assert code == 200
        assert (view["node"], view["redis"], view["problem"]) == ("a", "up", None)
        assert view["read_at"].endswith("Z") and view["newest"] == {"auth/hosts": 1}
        nodes = {n["node"]: n for n in view["nodes"]}
        assert [nodes[n]["syncer"] for n in ("a", "b")].count(True) == 1
        assert view["syncer"] == nodes["a"]["syncer"]
        for name in ("a", "b"):
            assert nodes[name]["versions"] == {"auth/hosts": 1}
            assert not nodes[name]["stale"] and not nodes[name]["divergent"]
            assert nodes[name]["audit_key"] is not None
        assert nodes["laggard"]["divergent"] and not nodes["laggard"]["stale"]
        assert nodes["laggard"]["behind"] == {"auth/hosts": {"has": None, "newest": 1}}
        assert nodes["silent"]["stale"] and nodes["silent"]["heartbeat_age"] >= 600
        assert (view["live"], view["divergent"]) == (3, 1)

        code, page = await get(b, "/status")
        assert code == 200 and "<h2>Fleet</h2>" in page
        assert "This node: <strong>b</strong>" in page
        assert '<tr class="bad"><td>laggard</td>' in page and "DIVERGENT" in page
        assert '<tr class="bad"><td>silent</td>' in page and "STALE" in page
        assert "<td>a</td>" in page and "<td>b</td>" in page
