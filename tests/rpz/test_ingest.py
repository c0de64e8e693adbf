"""RPZ in: an authority's list delivered as a zone from a real BIND primary, bound to its
signed manifest, enforced by a running blockd; every bad delivery refused, the last good kept.
"""

from __future__ import annotations

import base64
import re
import signal
import subprocess
from pathlib import Path

import dns.message
import dns.query
import pytest

from blockd.app import App
from blockd.cli import main as cli
from blockd.demo import AUTHORITY, demo_key
from blockd.events import FeedAccepted, FeedRejected
from blockd.feeds.keys import save_private
from tests.daemon import ask, running
from tests.rpz.common import SECRET, key_file, rpz_config
from tests.rpz.ingest import zone_text
from tests.rpz.interop import ensure_tools, free_port, program, started, wait_for

pytestmark = pytest.mark.slow

ZONE = "rpz.authority.example"


def primary_conf(tmp: Path, port: int, *, ixfr: bool = False) -> Path:
    """Write a BIND primary serving the authority's zone, transfers only with the TSIG key
    (with ixfr, it keeps the differences between the zone files it loads, to serve IXFR)."""
    zone_options = "ixfr-from-differences yes; " if ixfr else ""
    conf = tmp / "primary.conf"
    conf.write_text(
        f"""key "xfr-key" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
options {{
    directory "{tmp}";
    pid-file "{tmp}/primary.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    notify no;
    allow-transfer {{ key "xfr-key"; }};
}};
zone "{ZONE}" {{ type primary; file "{tmp}/zone.db"; {zone_options}}};
"""
    )
    return conf


def sign_manifest(tmp: Path, version: int, text: str) -> None:
    """Sign the manifest of a zone file with the demo authority's key, as the authority does."""
    zone = tmp / f"signed-{version}.db"
    zone.write_text(text)
    key = tmp / "authority.key"
    if not key.exists():
        save_private(demo_key("authority-1"), key)
    argv = ["sign-rpz-manifest", str(zone), "--zone", ZONE, "--key", str(key)]
    argv += ["--authority", AUTHORITY, "--list", "demo-hosts", "--version", str(version)]
    assert cli([*argv, "-o", str(tmp / f"manifest-{version}.dsse")]) == 0
    (tmp / "manifest.dsse").write_bytes((tmp / f"manifest-{version}.dsse").read_bytes())


def config(tmp: Path, port: int, primary: str = "127.0.0.1") -> str:
    """Demo config whose demo-hosts list arrives from the primary as a zone."""
    text = rpz_config(tmp, signed=False)  # the served zone is not what is tested here
    old = f'source = "file://{tmp}/feeds/demo-hosts.dsse"'
    assert old in text
    new = (
        f'source = "rpz://{primary}:{port}/{ZONE}"\n'
        f'manifest = "file://{tmp}/manifest.dsse"\n'
        f'tsig_key_file = "{tmp}/xfr.key"\n'
        "deadline = 10"
    )
    return text.replace(old, new)


def serve(tmp: Path, proc: subprocess.Popen[bytes], text: str, serial: int) -> None:
    """Put a new zone file in place and make the primary load it."""
    (tmp / "zone.db").write_text(text)
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _serial(tmp) == serial, 15, f"primary serving serial {serial}")


def _serial(tmp: Path) -> int | None:
    port = int((tmp / "primary.port").read_text())
    try:
        reply = dns.query.udp(
            dns.message.make_query(ZONE, "SOA"), "127.0.0.1", port=port, timeout=1
        )
    except Exception:
        return None
    return reply.answer[0][0].serial if reply.answer else None


async def blocked(app: App, name: str) -> bool:
    reply = await ask(app, name)
    return bool(reply.rr) and str(reply.rr[0].rdata) == "127.0.0.1"


async def test_a_zone_bound_to_its_manifest_is_enforced_and_every_bad_delivery_refused(
    tmp_path: Path,
) -> None:
    ensure_tools()
    port = free_port()
    (tmp_path / "primary.port").write_text(str(port))
    good1 = zone_text(ZONE, 1, ["bad1.demo.test"])
    (tmp_path / "zone.db").write_text(good1)
    key_file(tmp_path)
    sign_manifest(tmp_path, 1, good1)
    log = tmp_path / "primary.log"
    argv = [program("named"), "-g", "-c", str(primary_conf(tmp_path, port))]
    with started(argv, log) as proc:
        wait_for(lambda: _serial(tmp_path) == 1, 15, "BIND serving the zone", log)
        await _scenario(tmp_path, proc, port)


async def _scenario(tmp: Path, proc: subprocess.Popen[bytes], port: int) -> None:
    accepted: list[FeedAccepted] = []
    rejected: list[FeedRejected] = []
    async with running(config(tmp, port), tmp, sync=False) as app:
        app.bus.subscribe(FeedAccepted, accepted.append)
        app.bus.subscribe(FeedRejected, rejected.append)
        cfg = app.feeds.holder.list_config(f"{AUTHORITY}/demo-hosts")

        async def sync() -> str:
            return await app.feeds.sync_list(cfg)

        # accepted: transferred with TSIG, ZONEMD and manifest match; enforced in DNS
        assert await sync() == "accepted"
        assert accepted[-1].version == 1
        assert await blocked(app, "bad1.demo.test")
        assert await blocked(app, "www.bad1.demo.test")
        assert not await blocked(app, "bad2.demo.test")

        def refused(reason: str) -> None:
            assert rejected and rejected[-1].reason == reason, rejected[-1:]

        # tampered: the zone served was changed after its manifest was signed
        good2 = zone_text(ZONE, 2, ["bad1.demo.test", "bad2.demo.test"])
        sign_manifest(tmp, 2, good2)
        tampered = zone_text(ZONE, 2, ["bad1.demo.test", "bad2.demo.test", "clean.demo.test"])
        serve(tmp, proc, tampered, 2)
        assert await sync() == "rejected"
        refused("zone-mismatch")
        assert await blocked(app, "bad1.demo.test")
        assert not await blocked(app, "clean.demo.test")

        # a bad TSIG key: the primary refuses the transfer
        (tmp / "xfr.key").write_text(
            'key "xfr-key" {\n\talgorithm hmac-sha256;\n\tsecret "'
            + base64.b64encode(b"w" * 32).decode()
            + '";\n};\n'
        )
        serve(tmp, proc, good2, 2)
        assert await sync() == "rejected"
        refused("transfer")
        key_file(tmp)

        # the real version 2
        assert await sync() == "accepted"
        assert await blocked(app, "bad2.demo.test")

        # a missing manifest: TSIG alone does not make a zone a list
        good3 = zone_text(ZONE, 3, ["bad1.demo.test", "bad3.demo.test"])
        serve(tmp, proc, good3, 3)
        (tmp / "manifest.dsse").unlink()
        assert await sync() == "rejected"
        refused("fetch")
        assert not await blocked(app, "bad3.demo.test")

        # rolled back: an old manifest replayed, and a new one for an older serial
        (tmp / "manifest.dsse").write_bytes((tmp / "manifest-1.dsse").read_bytes())
        assert await sync() == "rejected"
        refused("rollback")
        good1 = zone_text(ZONE, 1, ["bad1.demo.test"])
        serve(tmp, proc, good1, 1)
        sign_manifest(tmp, 4, good1)
        assert await sync() == "rejected"
        refused("rollback")

        # after every refusal: the last good version is enforced and DNS answers
        assert app.feeds.store.state(AUTHORITY, "demo-hosts").active == 2
        assert await blocked(app, "bad1.demo.test") and await blocked(app, "bad2.demo.test")
        assert not await blocked(app, "bad3.demo.test")
        metrics, _ = app.metrics.render()
        for reason in ("zone-mismatch", "transfer", "fetch", "rollback"):
            assert f'reason="{reason}"'.encode() in metrics


async def test_a_new_version_comes_by_ixfr_and_a_bad_base_falls_back_to_axfr(
    tmp_path: Path,
) -> None:
    port = free_port()
    (tmp_path / "primary.port").write_text(str(port))
    names = [f"bad{i}.demo.test" for i in range(1, 40)]
    versions = {v: zone_text(ZONE, v, names[: 10 + v]) for v in (1, 2, 3)}
    (tmp_path / "zone.db").write_text(versions[1])
    key_file(tmp_path)
    sign_manifest(tmp_path, 1, versions[1])
    log = tmp_path / "primary.log"
    argv = [program("named"), "-g", "-c", str(primary_conf(tmp_path, port, ixfr=True))]
    with started(argv, log) as proc:
        wait_for(lambda: _serial(tmp_path) == 1, 15, "BIND serving the zone", log)
        # the primary named by its host name, resolved at each transfer
        text = config(tmp_path, port, primary="localhost")
        async with running(text, tmp_path, sync=False) as app:
            cfg = app.feeds.holder.list_config(f"{AUTHORITY}/demo-hosts")
            store = app.feeds.store

            def transfers() -> list[str]:
                return re.findall(r"transfer of '[^']+': (AXFR|IXFR) started", log.read_text())

            async def enforces(version: int) -> bool:
                # the daemon's own sync loop may have taken it first: then this is unchanged
                outcome = await app.feeds.sync_list(cfg)
                return outcome in ("accepted", "unchanged") and (
                    store.state(AUTHORITY, "demo-hosts").active == version
                )

            assert await enforces(1)
            assert transfers() == ["AXFR"]
            assert store.zone_path(AUTHORITY, "demo-hosts", 1).exists()  # the next base

            # version 2: only the differences travel, and the result is verified as a whole
            serve(tmp_path, proc, versions[2], 2)
            sign_manifest(tmp_path, 2, versions[2])
            assert await enforces(2)
            assert transfers() == ["AXFR", "IXFR"]
            assert await blocked(app, names[11])

            # the kept copy is damaged: the IXFR applied to it fails ZONEMD, so blockd asks
            # for the whole zone instead, and the version is accepted all the same
            kept = store.zone_path(AUTHORITY, "demo-hosts", 2)
            kept.write_text(kept.read_text().replace(names[0], "clean.demo.test"))
            serve(tmp_path, proc, versions[3], 3)
            sign_manifest(tmp_path, 3, versions[3])
            assert await enforces(3)
            assert transfers() == ["AXFR", "IXFR", "IXFR", "AXFR"]
            assert await blocked(app, names[12]) and await blocked(app, names[0])
            assert not await blocked(app, "clean.demo.test")
            kept_dir = kept.parent  # a kept zone goes with its version when that is pruned
            versions_kept = {p.stem for p in kept_dir.glob("*.dsse")}
            assert {p.stem for p in kept_dir.glob("*.zone")} <= versions_kept
