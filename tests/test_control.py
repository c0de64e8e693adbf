"""The control channel: operator commands act on the running daemon, or say there is none.

Each command runs as the CLI (in a thread, as a separate process would) against a real
daemon on loopback, and the test checks the daemon's own DNS answers and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from blockd import control
from blockd.app import App
from blockd.cli import main
from blockd.events import OperatorAction, PolicyActivated
from tests.daemon import ask, running
from tests.factories import Recorder, authority, signed_list, signed_trust, trust

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

NOW = datetime.now(UTC).replace(microsecond=0)
BASE = ["one.example", "a.example", "b.example", "c.example"]


def publish(src: Path, version: int, entries: list[str]) -> None:
    src.write_bytes(
        signed_list(
            entries,
            version=version,
            issued_at=NOW - timedelta(hours=1),
            expires=NOW + timedelta(days=3),
        )
    )


def setup(tmp: Path, upstream: Upstream, *, guards: str = "") -> tuple[str, Path]:
    """Write trust and v1 of auth/hosts; return the config text and the list's source."""
    (tmp / "trust.dsse").write_bytes(
        signed_trust(trust([authority()], expires=NOW + timedelta(days=30)))
    )
    src = tmp / "hosts.dsse"
    publish(src, 1, BASE)
    host, port = upstream.addr
    text = f"""demo = true
[trust]
pinned = "{tmp / "trust.dsse"}"
[state]
dir = "{tmp / "state"}"
[guards]
max_change_fraction = 0.5
min_change_entries = 1
{guards}
[dns]
listen = ["127.0.0.1:0"]
upstreams = ["{host}:{port}"]
attempt_timeout = 0.5
total_timeout = 1.5
[http]
listen = ["127.0.0.1:0"]
tls_listen = []
[admin]
listen = ["127.0.0.1:0"]
[selftest]
interval = 0
control = "clean.example"
timeout = 2.0
[[lists]]
authority = "auth"
list = "hosts"
source = "file://{src}"
interval = 86400
"""
    return text, src


@contextlib.asynccontextmanager
async def daemon(text: str, tmp: Path) -> AsyncIterator[App]:
    """Run blockd once its own first sync (at start) is over, so only the test syncs."""
    async with running(text, tmp, sync=False, write=True) as app:
        loaded = asyncio.Event()

        def on_policy(event: PolicyActivated) -> None:
            if event.versions:
                loaded.set()

        app.bus.subscribe(PolicyActivated, on_policy)
        if not app.feeds.snapshot.versions:
            await asyncio.wait_for(loaded.wait(), 10)
        async with app.feeds.holder.lock:  # the first sync has finished
            pass
        yield app


def cli(*argv: object) -> asyncio.Future[int]:
    """Run the CLI in a thread, so the daemon's event loop keeps serving it."""
    return asyncio.ensure_future(asyncio.to_thread(main, [str(a) for a in argv]))


async def blocked(app: App, name: str) -> bool:
    reply = await ask(app, name)
    return [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]


async def metric(app: App, name: str) -> str:
    host, port = app.admin.bound[0]
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://{host}:{port}/metrics") as r,
    ):
        text = await r.text()
    return "\n".join(ln for ln in text.splitlines() if ln.startswith(name))


async def test_every_operator_command_acts_on_the_running_daemon(
    tmp_path: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("two.example", "three.example", "clean.example"):
        upstream.add(name, "A", "192.0.2.7")
    text, src = setup(tmp_path, upstream)
    conf = tmp_path / "blockd.toml"
    async with daemon(text, tmp_path) as app:
        actions = Recorder(app.bus)
        assert not await blocked(app, "two.example")

        # sync: a new version is enforced at once, and the answer says so.
        publish(src, 2, [*BASE, "two.example"])
        assert await cli("sync", "-c", conf) == 0
        out = capsys.readouterr().out
        assert "accepted     auth/hosts v2: 5 entries" in out
        assert "daemon       enforces auth/hosts v2" in out
        assert await blocked(app, "two.example")
        assert 'blockd_list_version{authority="auth",list="hosts"} 2.0' in await metric(
            app, "blockd_list_version"
        )

        # status: what the daemon enforces, not what a file says.
        assert await cli("status", "-c", conf) == 0
        out = capsys.readouterr().out
        assert "auth/hosts" in out and " 2 " in out and "daemon       enforces" in out

        # rollback: the previous version is enforced at once.
        assert await cli("rollback", "-c", conf, "auth/hosts") == 0
        out = capsys.readouterr().out
        assert "rolled back  auth/hosts to v1" in out and "enforces auth/hosts v1" in out
        assert not await blocked(app, "two.example")
        assert 'list="hosts"} 1.0' in await metric(app, "blockd_list_version")

        # approve: a quarantined update is enforced at once.
        publish(src, 3, ["one.example", "three.example", "x.example", "y.example", "z.example"])
        assert await cli("sync", "-c", conf, "auth/hosts") == 0
        out = capsys.readouterr().out
        assert "guard        quarantine auth/hosts v3" in out
        assert not await blocked(app, "three.example")
        assert await cli("approve", "-c", conf, "auth/hosts", 3) == 0
        assert "enforces auth/hosts v3" in capsys.readouterr().out
        assert await blocked(app, "three.example")
        assert await cli("sync", "-c", conf) == 0  # nothing new: said so, per list
        assert "unchanged    auth/hosts v3\ndaemon       enforces" in capsys.readouterr().out

        # reload: a changed configuration is in force at once.
        conf.write_text(text.replace("min_change_entries = 1", 'never_block = ["three.example"]'))
        assert await cli("reload", "-c", conf) == 0
        assert capsys.readouterr().out.startswith("reloaded\n")
        assert not await blocked(app, "three.example")
        assert await blocked(app, "x.example")

        # selftest: the daemon runs it, and its metrics show it (these lists have no probes).
        assert await cli("selftest", "-c", conf) == 1
        assert "FAILED  no self-test probes" in capsys.readouterr().out
        assert "blockd_selftest_passed 0.0" in await metric(app, "blockd_selftest_passed")

        # check: the daemon's verdict.
        assert await cli("check", "-c", conf, "www.x.example", "three.example") == 0
        out = capsys.readouterr().out
        assert "www.x.example: notice (auth/hosts v3" in out
        assert "three.example: not blocked" in out

        done = [e.action for e in actions.of(OperatorAction)]
        assert done == [
            "sync",
            "rollback",
            "sync",
            "approve",
            "sync",
            "reload",
            "selftest",
            "check",
        ]
        details = [e.detail for e in actions.of(OperatorAction) if e.action != "reload"]
        assert all(f"control socket, uid {os.getuid()}" in d for d in details), details

    # No daemon: the commands act on the state directory and say so.
    assert not (tmp_path / "state" / "control.sock").exists()
    publish(src, 4, ["one.example", "three.example", "x.example", "y.example", "four.example"])
    assert await cli("sync", "-c", conf) == 0
    captured = capsys.readouterr()
    assert (
        "no daemon is running" in captured.err and "acting on the state directory" in captured.err
    )
    assert (
        "accepted     auth/hosts v4" in captured.out
        and "state        auth/hosts v4" in captured.out
    )
    assert await cli("reload", "-c", conf) == 1
    assert "nothing to reload" in capsys.readouterr().err


async def test_refusals_from_the_daemon_are_errors_not_local_actions(
    tmp_path: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    text, _ = setup(tmp_path, upstream)
    conf = tmp_path / "blockd.toml"
    async with daemon(text, tmp_path) as app:
        assert await cli("approve", "-c", conf, "auth/hosts", 9) == 2
        assert "not quarantined" in capsys.readouterr().err
        assert await cli("sync", "-c", conf, "auth/nope") == 2
        assert "no configured list auth/nope" in capsys.readouterr().err
        for bad in ("auth", "auth/hosts/x", "/hosts", "auth/"):
            assert await cli("rollback", "-c", conf, bad) == 2
            assert "is not AUTHORITY/LIST" in capsys.readouterr().err
        # A file the CLI cannot read names the problem; the daemon is not touched.
        conf.write_text(text + "\n[dns]\nbogus = 1\n")
        assert await cli("reload", "-c", conf) == 2
        assert "not valid TOML" in capsys.readouterr().err
        # A file only the daemon can judge: refused by it, the running one kept.
        conf.write_text(text.replace("/trust.dsse", "/no-such-trust.dsse"))
        assert await cli("reload", "-c", conf) == 1
        assert "reload refused" in capsys.readouterr().out
        assert app.config.trust.pinned == tmp_path / "trust.dsse"
        assert app.feeds.snapshot.versions == {"auth/hosts": 1}


async def test_the_control_socket_is_the_owners_alone(tmp_path: Path, upstream: Upstream) -> None:
    text, _ = setup(tmp_path, upstream)
    async with daemon(text, tmp_path) as app:
        path = tmp_path / "state" / "control.sock"
        mode = path.lstat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        # The API needs no token over the socket, and gives what is enforced.
        answer = await asyncio.to_thread(
            control.Client(socket_path=path).call, "GET", "/api/v1/status"
        )
        assert answer["enforcing"] == {"auth/hosts": 1} and answer["ready"] is True
        # ...but the TCP listener still does.
        host, port = app.admin.bound[0]
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://{host}:{port}/api/v1/status") as r,
        ):
            assert r.status in (401, 403)
        # A second daemon on the same state directory is refused, the first keeps its socket.
        with pytest.raises(OSError, match="another blockd is running"):
            control.Listener(path)
        assert stat.S_ISSOCK(path.lstat().st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
async def test_another_user_is_refused_and_nothing_happens_locally(upstream: Upstream) -> None:
    # Everything but the socket is readable to the other user, so only the socket refuses.
    tmp = Path(tempfile.mkdtemp(prefix="blockd-control-"))
    try:
        os.chmod(tmp, 0o755)
        text, src = setup(tmp, upstream)
        conf = tmp / "blockd.toml"
        async with daemon(text, tmp) as app:
            os.chmod(tmp / "state", 0o755)
            publish(src, 2, [*BASE, "two.example"])
            nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            run = await asyncio.to_thread(
                subprocess.run,
                [*nobody, sys.executable, "-m", "blockd.cli", "sync", "-c", str(conf)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert run.returncode == 2, run.stderr
            assert "control socket" in run.stderr and "permission denied" in run.stderr
            assert "acting on" not in run.stderr
            assert app.feeds.snapshot.versions == {"auth/hosts": 1}
            assert app.feeds.status()[0].version == 1  # nor in the state directory
    finally:
        shutil.rmtree(tmp)


def test_a_socket_left_by_a_dead_daemon_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays; nobody listens
    listener = control.Listener(path)
    try:
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        with pytest.raises(control.ControlError):  # it answers, but not HTTP
            control.Client(socket_path=path, timeout=0.5).call("GET", "/api/v1/status")
    finally:
        listener.close()
    assert not path.exists()
    with pytest.raises(control.NoDaemon, match="no daemon is running"):
        control.Client(socket_path=path).call("GET", "/api/v1/status")


def test_what_is_not_a_socket_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("precious")
    with pytest.raises(OSError, match="exists and is not a socket"):
        control.Listener(path)
    assert path.read_text() == "precious"
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError, match="not a socket"):
        control.Listener(path)
    long = tmp_path / ("x" * 120) / "control.sock"
    with pytest.raises(OSError, match="too long for a Unix socket"):
        control.Listener(long)


def test_a_replaced_socket_is_left_to_its_new_owner(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    first = control.Listener(path)
    path.unlink()
    second = control.Listener(path)
    first.close()  # must not remove the second daemon's socket
    assert stat.S_ISSOCK(path.lstat().st_mode)
    second.close()
    assert not path.exists()


def test_admin_urls_must_be_http(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/", "127.0.0.1:9153"):
        code = main(["sync", "--admin", url, "--token-file", str(tmp_path / "token")])
        assert code == 2 and "must be an http:// or https:// URL" in capsys.readouterr().err
    assert main(["sync", "--admin", "http://127.0.0.1:1"]) == 2
    assert "--admin needs --token-file" in capsys.readouterr().err
    assert (
        main(["status", "--admin", "http://127.0.0.1:1", "--token-file", str(tmp_path / "token")])
        == 2
    )
    assert "cannot reach the daemon" in capsys.readouterr().err
