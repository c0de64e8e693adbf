"""The two-node lab fleet of deploy/container/compose.fleet.yaml, and its configuration run
for real: two `blockd run` processes on one redis-server, as the compose stack runs them
(the containers' paths and addresses swapped for the test's; no container engine here)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from blockd.config import load as load_config
from tests.daemon import ROOT
from tests.fleet.servers import RedisServer
from tests.test_deploy import CONTAINER, load_yaml
from tests.test_workers import Blockd, addresses, query, run, until

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

pytestmark = pytest.mark.slow
FLEET_TOML = CONTAINER / "fleet.toml"


def test_the_compose_fleet_is_two_nodes_on_one_redis_with_one_configuration() -> None:
    compose = load_yaml(CONTAINER / "compose.fleet.yaml")
    services = compose["services"]
    assert set(services) == {"redis", "blockd-a", "blockd-b"}
    assert "ports" not in services["redis"], "Redis stays on the compose network"
    nodes = [services["blockd-a"], services["blockd-b"]]
    assert [n["hostname"] for n in nodes] == ["blockd-a", "blockd-b"]  # the node ids
    for node in nodes:
        assert "./fleet.toml:/etc/blockd/blockd.toml:ro" in node["volumes"]
        assert node["read_only"] is True and node["cap_drop"] == ["ALL"]
        assert node["depends_on"] == ["redis"]
        assert all(p.startswith("127.0.0.1:") for p in node["ports"])
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
    config = load_config(FLEET_TOML)
    assert config.fleet is not None and config.fleet.redis == "redis://redis:6379/0"
    assert "node" not in re.findall(r"^(\w+) =", FLEET_TOML.read_text(), re.M)  # host name


def node_config(tmp: Path, node: str, redis: RedisServer, upstream: Upstream) -> Path:
    """Return fleet.toml as one node on this machine runs it: paths, addresses, its name."""
    text = FLEET_TOML.read_text()
    host, port = upstream.addr
    swaps = {
        "/etc/blockd/demo/": f"{ROOT / 'feeds' / 'demo'}/",
        '"/var/lib/blockd"': f'"{tmp / node}"',
        '"0.0.0.0:53"': '"127.0.0.1:0"',
        '"0.0.0.0:80"': '"127.0.0.1:0"',
        '"0.0.0.0:443"': '"127.0.0.1:0"',
        '"0.0.0.0:9153"': '"127.0.0.1:0"',
        "upstreams = []": f'upstreams = ["{host}:{port}"]',
        "redis://redis:6379/0": redis.url,
        "# node = ": f'node = "{node}"\n# ',
    }
    for old, new in swaps.items():
        assert old in text, f"fleet.toml no longer has {old}"
        text = text.replace(old, new)
    (tmp / node).mkdir()
    conf = tmp / f"{node}.toml"
    conf.write_text(text)
    return conf


async def test_the_fleet_configuration_runs_two_nodes(
    tmp_path: Path, redis_server: RedisServer, upstream: Upstream
) -> None:
    a_conf = node_config(tmp_path, "blockd-a", redis_server, upstream)
    b_conf = node_config(tmp_path, "blockd-b", redis_server, upstream)
    async with run(a_conf) as a, run(b_conf) as b:
        for node in (a, b):
            await until(functools.partial(_blocks_the_demo_name, node), 30)
            await until(functools.partial(_fleet_of_two, node), 30)
        syncers = [await n.metric("blockd_fleet_syncer") for n in (a, b)]
        assert syncers in ([0.0, 1.0], [1.0, 0.0]), syncers  # one fetches, the other follows


def _blocks_the_demo_name(node: Blockd) -> bool:
    return addresses(query(node.dns, "blocked.demo.test")) == ["127.0.0.1"]


async def _fleet_of_two(node: Blockd) -> bool:
    return (
        await node.metric("blockd_fleet_nodes") == 2
        and await node.metric("blockd_fleet_divergent_nodes") == 0
        and await node.metric("blockd_fleet_redis_up") == 1
    )
