"""A real Prometheus scrapes blockd's metrics over loopback; promtool checks the alert rules.

Prometheus and promtool come from Debian's `prometheus` package, installed when missing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from blockd.metrics import Metrics
from tests.ports import free_port
from tests.test_dashboard import expressions, load, runnable
from tests.test_metrics import populated

ROOT = Path(__file__).parent.parent
RULES = ROOT / "deploy" / "prometheus" / "blockd-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "blockd-alerts.test.yml"
READY_WITHIN = 15.0  # seconds for Prometheus to start, scrape and evaluate the rules


def tool(name: str) -> str:
    """Return the path of a command from the prometheus package, installing it if missing."""
    subprocess.run([str(ROOT / "tools" / "ensure-deb"), "prometheus:prometheus"], check=True)
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
    assert found, f"{name} not found after installing Debian's prometheus package"
    return found


class Exporter:
    """Serve Metrics.render() at /metrics from an aiohttp server on its own loop and thread."""

    def __init__(self, metrics: Metrics) -> None:
        """Serve metrics once started."""
        self.metrics = metrics
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        port: int = self.runner.addresses[0][1]
        return port

    def __enter__(self) -> Exporter:
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Prometheus:
    """A Prometheus server scraping one target every second, with blockd's alert rules."""

    def __init__(self, binary: str, directory: Path, target_port: int) -> None:
        """Write the configuration; nothing runs until started."""
        self.port = free_port()
        self.config = directory / "prometheus.yml"
        self.config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "blockd",
                            "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                        }
                    ],
                }
            )
        )
        self.args = [
            binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        self.log = (self.directory / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            self.args, cwd=self.directory, stdout=self.log, stderr=subprocess.STDOUT
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def api(self, path: str, **params: str) -> Any:
        """GET an API path; return its data (raise on an error status)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                doc = json.load(response)
        except urllib.error.HTTPError as e:  # 400 and 422 carry the reason
            doc = json.load(e)
        assert doc["status"] == "success", (params, doc)
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Return the result of an instant query."""
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def wait_for(self, expr: str) -> list[dict[str, Any]]:
        """Poll until a query returns something (Prometheus started and scraped)."""
        deadline = time.monotonic() + READY_WITHIN
        while True:
            assert self.process is not None and self.process.poll() is None, self.logged()
            try:
                result = self.query(expr)
            except OSError:
                result = []
            if result:
                return result
            assert time.monotonic() < deadline, f"no {expr} within {READY_WITHIN}s"
            time.sleep(0.2)

    def logged(self) -> str:
        """Return what Prometheus logged."""
        return (self.directory / "prometheus.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Start an exporter of populated metrics and a Prometheus scraping it."""
    binary = tool("prometheus")
    with (
        Exporter(populated(now=time.time())) as exporter,
        Prometheus(binary, tmp_path_factory.mktemp("prometheus"), exporter.port) as server,
    ):
        server.wait_for("blockd_build_info")
        yield server


def test_promtool_accepts_the_alert_rules() -> None:
    done = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 14 rules found" in done.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    done = subprocess.run(
        [tool("promtool"), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_prometheus_scrapes_blockd(prometheus: Prometheus) -> None:
    [build] = prometheus.query("blockd_build_info")
    assert build["metric"]["version"] == "1.2.3" and build["metric"]["job"] == "blockd"
    [up] = prometheus.query('up{job="blockd"}')
    assert up["value"][1] == "1"
    [blocked] = prometheus.query(
        'blockd_dns_blocked_total{authority="iwf", list="hosts", action="notice"}'
    )
    assert blocked["value"][1] == "3" and blocked["metric"]["transport"] == "udp"
    [total] = prometheus.query("sum(blockd_dns_queries_total)")
    assert total["value"][1] == "25"  # every query once: 4+2 policy, 5+8 upstream or cache, 6
    [version] = prometheus.query('blockd_list_version{list="hosts"}')
    assert version["value"][1] == "42"
    [p99] = prometheus.query(
        "histogram_quantile(0.99, sum by (le) (blockd_upstream_query_duration_seconds_bucket))"
    )
    assert 0.25 < float(p99["value"][1]) <= 0.5


def test_alert_rules_evaluate_against_real_metrics(prometheus: Prometheus) -> None:
    expected = {
        ("BlockdSelfTestFailed", ""): "firing",
        ("BlockdFeedVerificationFailed", "urls"): "firing",  # its last sync: bad signature
        ("BlockdQuarantinePending", "urls"): "pending",  # for 5m
    }
    deadline = time.monotonic() + READY_WITHIN
    while True:
        [group] = prometheus.api("rules")["groups"]
        alerts = {
            (a["labels"]["alertname"], a["labels"].get("list", "")): a["state"]
            for a in prometheus.api("alerts")["alerts"]
        }
        if alerts == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert alerts == expected  # and nothing else: ready, lists fresh, upstreams healthy...
    assert len(group["rules"]) == 14
    assert all(r["health"] == "ok" for r in group["rules"]), group["rules"]


def test_every_dashboard_query_runs_and_finds_data(prometheus: Prometheus) -> None:
    prometheus.wait_for("rate(blockd_build_info[1m])")  # two scrapes: every rate has a value
    empty = [e for e in expressions(load()) if not prometheus.query(runnable(e))]
    assert all(e.startswith("changes(blockd_policy_generation") for e in empty), empty
