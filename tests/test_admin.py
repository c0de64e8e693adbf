"""The admin listener and self-tests, over real HTTP and DNS on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from blockd.app import App
from blockd.audit import bundle, note
from blockd.cli import main
from blockd.events import OperatorAction, SelfTestResult
from tests.daemon import demo_config, running
from tests.factories import Recorder
from tests.ports import free_port

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

TOKEN = "s3cret-admin-token-for-tests"


def config(tmp: Path, upstream: Upstream, *, token: bool = True, **extra: Any) -> str:
    admin = {}
    if token:
        (tmp / "token").write_text(TOKEN + "\n")
        admin["token_file"] = str(tmp / "token")
    text = demo_config(tmp, upstream.addr, admin=admin)
    lines = ["[selftest]", "interval = 0", "timeout = 2.0"]
    for section, values in extra.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return text + "\n" + "\n".join(lines) + "\n"


@pytest.fixture
async def daemon(tmp_path: Path, upstream: Upstream) -> AsyncIterator[App]:
    upstream.add("example.com", "A", "192.0.2.80")
    async with running(config(tmp_path, upstream), tmp_path) as app:
        yield app


def base(app: App) -> str:
    host, port = app.admin.bound[0]
    return f"http://{host}:{port}"


async def call(
    app: App, method: str, path: str, *, token: str | None = TOKEN, body: object = None
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, base(app) + path, headers=headers, json=body) as r,
    ):
        text = await r.text()
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError:
            data = text
        return r.status, data, dict(r.headers)


async def test_health_readiness_and_status_page_are_open(daemon: App) -> None:
    assert (await call(daemon, "GET", "/healthz", token=None))[0] == 200
    status, body, _ = await call(daemon, "GET", "/readyz", token=None)
    assert status == 200 and body["ready"] is True
    status, page, headers = await call(daemon, "GET", "/status", token=None)
    assert status == 200 and "demo-authority/demo-hosts" in page
    assert "<script" not in page and "default-src 'none'" in headers["Content-Security-Policy"]
    assert "checkpoint" in page.lower()


async def test_not_ready_says_why(tmp_path: Path, upstream: Upstream) -> None:
    async with running(config(tmp_path, upstream), tmp_path, sync=False) as app:
        status, body, _ = await call(app, "GET", "/readyz", token=None)  # nothing verified yet
        assert status == 503
        assert "no verified list" in body["reason"]


async def test_the_api_needs_the_bearer_token(daemon: App) -> None:
    status, _, headers = await call(daemon, "GET", "/api/v1/lists", token=None)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert (await call(daemon, "GET", "/api/v1/lists", token="wrong"))[0] == 401
    assert (await call(daemon, "GET", "/api/v1/lists", token=TOKEN + "x"))[0] == 401
    status, body, _ = await call(daemon, "GET", "/api/v1/lists")
    assert status == 200
    assert {item["list"] for item in body["lists"]} == {
        "demo-authority/demo-hosts",
        "demo-authority/demo-urls",
        "demo-authority/demo-hashed",
    }
    assert all(item["version"] == 1 and item["fresh"] for item in body["lists"])


async def test_guessing_is_counted_and_the_right_token_still_works(daemon: App) -> None:
    for i in range(12):
        assert (await call(daemon, "GET", "/api/v1/lists", token=f"guess{i}"))[0] == 401
    assert len(daemon.admin._failures) == 12  # over the limit: attempts are now slowed
    assert (await call(daemon, "GET", "/api/v1/lists"))[0] == 200


async def test_without_a_token_file_the_api_is_off(tmp_path: Path, upstream: Upstream) -> None:
    async with running(config(tmp_path, upstream, token=False), tmp_path, sync=False) as app:
        assert (await call(app, "GET", "/api/v1/lists"))[0] == 403
        assert (await call(app, "GET", "/healthz", token=None))[0] == 200


async def test_checks_are_an_audited_oracle(daemon: App) -> None:
    events = Recorder(daemon.bus)
    status, body, _ = await call(
        daemon,
        "POST",
        "/api/v1/check",
        body={
            "targets": [
                "www.blocked.demo.test",
                "example.com",
                "partial.demo.test/listed/page.html",
            ]
        },
    )
    assert status == 200
    blocked, clean, url = body["results"]
    assert blocked["verdict"]["list"] == "demo-hosts" and clean["verdict"] is None
    assert url["verdict"]["list"] == "demo-urls"
    assert [e.action for e in events.of(OperatorAction)] == ["check"]
    assert (await call(daemon, "POST", "/api/v1/check", body={"targets": "x"}))[0] == 400


async def test_rollback_without_history_is_refused_and_audited(daemon: App) -> None:
    events = Recorder(daemon.bus)
    status, _, _ = await call(daemon, "POST", "/api/v1/lists/demo-authority/demo-hosts/rollback")
    assert status == 409
    assert [e.action for e in events.of(OperatorAction)] == ["rollback"]
    status, _, _ = await call(
        daemon, "POST", "/api/v1/lists/demo-authority/demo-hosts/approve", body={"version": 9}
    )
    assert status == 409
    bad = await call(daemon, "POST", "/api/v1/lists/demo-authority/demo-hosts/approve", body=[])
    assert bad[0] == 400


async def test_the_checkpoint_is_signed_by_the_log_key(daemon: App) -> None:
    assert daemon.audit is not None
    await daemon.audit.flush(checkpoint=True)
    status, text, _ = await call(daemon, "GET", "/api/v1/checkpoint")
    assert status == 200
    body, names = note.open_note(text, [daemon.audit.log.signer.verifier])
    assert names == (daemon.audit.log.signer.name,)
    assert note.Checkpoint.parse(body).size > 0


async def test_sync_through_the_api(daemon: App) -> None:
    status, body, _ = await call(daemon, "POST", "/api/v1/sync")
    assert status == 200 and len(body["lists"]) == 3


async def test_the_openapi_document_lists_every_route(daemon: App) -> None:
    status, doc, _ = await call(daemon, "GET", "/api/v1/openapi.json", token=None)
    assert status == 200 and doc["openapi"].startswith("3.")
    routes = {
        r.resource.canonical
        for r in daemon.admin.web_app.router.routes()
        if r.resource is not None and r.resource.canonical != "/"
    }
    assert routes == set(doc["paths"])


async def test_selftest_passes_through_our_own_listeners(daemon: App) -> None:
    events = Recorder(daemon.bus)
    status, body, _ = await call(daemon, "POST", "/api/v1/selftest")
    assert status == 200 and body["passed"] is True, body
    assert body["checks"] >= 2  # the probe host, and the control name
    (result,) = events.of(SelfTestResult)
    assert result.passed


async def test_selftest_fails_when_a_probe_is_not_blocked(
    tmp_path: Path, upstream: Upstream
) -> None:
    text = config(tmp_path, upstream).replace(
        "[dns]", '[guards]\nnever_block = ["selftest.demo.test"]\n[dns]'
    )
    async with running(text, tmp_path) as app:
        result = await app.run_selftest()
        assert not result.passed
        assert any("selftest.demo.test" in f for f in result.failures)


async def test_the_selftest_command_checks_a_running_daemon(
    tmp_path: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream.add("example.com", "A", "192.0.2.80")
    dns, web = free_port(), free_port()
    text = config(tmp_path, upstream).replace(
        'listen = ["127.0.0.1:0"]\n', f'listen = ["127.0.0.1:{dns}"]\n', 1
    )
    text = text.replace('[http]\nlisten = ["127.0.0.1:0"]', f'[http]\nlisten = ["127.0.0.1:{web}"]')
    async with running(text, tmp_path, write=True) as app:
        assert ("udp", "127.0.0.1", dns) in app.listeners()
        code = await asyncio.to_thread(main, ["selftest", "-c", str(tmp_path / "blockd.toml")])
        assert code == 0, capsys.readouterr().out
        assert "self-test passed" in capsys.readouterr().out


async def test_an_exported_bundle_verifies_with_the_key_alone(daemon: App) -> None:
    assert daemon.audit is not None
    await daemon.audit.flush()
    status, data, _ = await call(daemon, "GET", "/api/v1/audit/export")
    assert status == 200
    verdict = bundle.verify(data, note.Verifier.from_vkey(daemon.audit.log.signer.verifier.vkey))
    assert verdict.ok, verdict.message
    assert verdict.entries[0]["type"] == "daemon-start"
    assert (await call(daemon, "GET", "/api/v1/audit/export", token=None))[0] == 401


async def test_check_asks_a_running_daemon(
    daemon: App, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = Recorder(daemon.bus)
    argv = [
        "check",
        "--admin",
        base(daemon),
        "--token-file",
        str(tmp_path / "token"),
        "www.blocked.demo.test",
        "example.com",
    ]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    assert "www.blocked.demo.test: notice (demo-authority/demo-hosts v1" in out
    assert "example.com: not blocked" in out
    assert [e.action for e in events.of(OperatorAction)] == ["check"]
    bad = [*argv[:3], "--token-file", str(tmp_path / "nope"), "x.example"]
    assert await asyncio.to_thread(main, bad) == 2


CHECK_TARGETS = [
    "blocked.demo.test:8080",  # the CLI once gave a URL verdict here, the API "invalid"
    "www.blocked.demo.test",
    "partial.demo.test",
    "partial.demo.test:8080",
    "partial.demo.test/listed/page.html",
    "http://partial.demo.test/other",
    "example.com",
    "bad..name",
    "ftp://blocked.demo.test/",
]


async def test_the_cli_and_the_api_check_by_one_rule(
    tmp_path: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(config(tmp_path, upstream), tmp_path, write=True) as app:
        status, body, _ = await call(app, "POST", "/api/v1/check", body={"targets": CHECK_TARGETS})
        assert status == 200
        outcomes = [r["outcome"] for r in body["results"]]
        assert outcomes == [
            "notice",
            "notice",
            "pass",
            "pass",
            "notice",
            "pass",
            "misdirected",
            "bad-request",
            "bad-request",
        ]
        remote = ["check", "--admin", base(app), "--token-file", str(tmp_path / "token")]
        assert await asyncio.to_thread(main, [*remote, *CHECK_TARGETS]) == 0
        via_api = capsys.readouterr().out
        conf = ["check", "--config", str(tmp_path / "blockd.toml")]
        assert await asyncio.to_thread(main, [*conf, *CHECK_TARGETS]) == 0  # control socket
        assert capsys.readouterr().out == via_api
        assert await asyncio.to_thread(main, [*conf, "--offline", *CHECK_TARGETS]) == 0
        assert capsys.readouterr().out == via_api
    assert via_api.splitlines()[0].startswith("blocked.demo.test: notice (demo-authority/")


async def test_guessing_is_slowed_for_the_window_then_forgiven(tmp_path: Path) -> None:
    # Sans-IO: the middleware alone, with a fake clock and a sleep that only records.
    from aiohttp.test_utils import make_mocked_request

    from blockd.admin import FAILURE_LIMIT, FAILURE_WINDOW, PENALTY, Admin
    from blockd.config import AdminConfig

    (tmp_path / "token").write_text(TOKEN)
    now = [1000.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    admin = Admin(
        None,  # type: ignore[arg-type]  # the middleware never reaches the daemon
        AdminConfig(token_file=tmp_path / "token"),
        clock=lambda: now[0],
        sleep=sleep,
    )

    async def ok(request: Any) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="ok")

    def attempt(token: str) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        return admin._auth(make_mocked_request("GET", "/api/v1/lists", headers=headers), ok)

    for _ in range(FAILURE_LIMIT):
        assert (await attempt("guess")).status == 401
    assert slept == []
    assert (await attempt(TOKEN)).status == 200  # the right token still works...
    assert slept == [PENALTY]  # ...but waits, as everyone does while guessing lasts
    now[0] += FAILURE_WINDOW + 1
    assert (await attempt(TOKEN)).status == 200
    assert slept == [PENALTY]  # the window passed: no wait


async def test_the_fleet_endpoint_says_this_blockd_runs_alone(daemon: App) -> None:
    status, body, headers = await call(daemon, "GET", "/api/v1/fleet")
    assert status == 404 and headers["Content-Type"].startswith("application/problem+json")
    assert body == {"status": 404, "detail": "not in a fleet: this blockd has no [fleet] section"}
    assert (await call(daemon, "GET", "/api/v1/fleet", token=None))[0] == 401
