"""PowerDNS Recursor and Knot Resolver, from Debian's packages, enforce blockd's policy zone.

Both run on loopback with configs made from the examples in deploy/resolvers/ (the test's
addresses, ports and paths put in), forward clean names to a test upstream, answer a blocked
name as blocked and a clean one normally, then enforce a new list version:

- PowerDNS Recursor transfers the zone itself (rpzPrimary, TSIG) and takes the new serial by
  IXFR when it next polls (4.8 does not act on NOTIFY for an RPZ);
- Knot Resolver reads a zone file; deploy/resolvers/blockd-rpz-fetch writes it (AXFR, TSIG)
  and is run again, as a timer would, and kresd reloads the replaced file.

Each list action is tried: `notice` (local data, the notice address) and `nxdomain` (`CNAME .`).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dns.zone
import pytest

from blockd.app import App
from blockd.events import ZoneTransferred
from tests.daemon import eventually, running
from tests.rpz.common import SECRET, ZONE, key_file, publish_hosts, rpz_config
from tests.rpz.interop import (
    EXAMPLES,
    FETCH,
    NXDOMAIN,
    ROOT,
    answers,
    ask,
    ensure_peer_tools,
    free_port,
    kresd_conf,
    pdns_conf,
    program,
    rcode,
    started,
    wait_for,
)

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

pytest_plugins = ["tests.dnsupstream"]
pytestmark = pytest.mark.slow
WITHIN = 30.0  # seconds a resolver may take to start, transfer or reload (not a timing assertion)
ACTIONS = ["notice", "nxdomain"]
CLEAN = {"www.example.com": "192.0.2.1", "new.demo.test": "192.0.2.2"}  # upstream's answers
BLOCKED = "blocked.demo.test"  # in the demo list from the start; new.demo.test comes in v2


@pytest.fixture(scope="session")
def tools() -> None:
    ensure_peer_tools()


@pytest.fixture
def home() -> Iterator[Path]:
    """A short private directory for a resolver: its control socket path must fit in 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="rpz-") as path:
        yield Path(path)


def with_action(text: str, action: str) -> str:
    """Give the demo host list the action asked for."""
    head, sep, rest = text.partition('list = "demo-hosts"')
    assert sep, "the demo config has no demo-hosts list"
    old = 'action = "notice"'
    assert old in rest.split("[[lists]]")[0]
    return head + sep + rest.replace(old, f'action = "{action}"', 1)


def rpz_port(app: App) -> int:
    assert app.rpz is not None
    return next(p for t, _, p in app.rpz.bound if t == "tcp")


def is_blocked(port: int, name: str, action: str) -> bool:
    """Whether the resolver answers name as the list's action says."""
    reply = ask(port, name)
    if action == "nxdomain":
        return rcode(reply) == NXDOMAIN and not answers(reply)
    return answers(reply) == ["127.0.0.1"]  # the demo's notice address


async def enforce_and_follow(
    app: App,
    tmp: Path,
    resolver: int,
    log: Path,
    upstream: Upstream,
    action: str,
    follow: Callable[[], object] | None = None,
) -> list[ZoneTransferred]:
    """Check the resolver blocks and passes as blockd does, then enforces a new version
    (after follow(), run in a thread, when the resolver does not fetch it itself)."""
    assert app.rpz is not None
    zone = await app.rpz.settled()
    assert zone is not None
    transfers: list[ZoneTransferred] = []
    app.bus.subscribe(ZoneTransferred, transfers.append)

    def blocked() -> bool:
        return is_blocked(resolver, BLOCKED, action)

    await asyncio.to_thread(
        wait_for, blocked, WITHIN, f"the resolver did not {action} {BLOCKED}", log
    )
    assert await asyncio.to_thread(is_blocked, resolver, f"www.{BLOCKED}", action)
    for name, address in CLEAN.items():
        reply = await asyncio.to_thread(ask, resolver, name)
        assert answers(reply) == [address], f"{name}: {reply}"

    publish_hosts(tmp, 2, [BLOCKED, "new.demo.test"])
    await app.feeds.sync_all()
    after = await app.rpz.settled()
    assert after is not None and after.serial > zone.serial
    if follow is not None:
        await asyncio.to_thread(follow)

    def followed() -> bool:
        return is_blocked(resolver, "new.demo.test", action)

    await asyncio.to_thread(wait_for, followed, WITHIN, "the new version was not enforced", log)
    assert await asyncio.to_thread(is_blocked, resolver, BLOCKED, action)
    reply = await asyncio.to_thread(ask, resolver, "www.example.com")
    assert answers(reply) == ["192.0.2.1"], reply
    # clean names went upstream (kresd randomizes the case of the names it asks)
    assert any(q.qname.lower() == "www.example.com" for q in upstream.queries)
    await eventually(lambda: transfers)  # counted once the last message is written
    return transfers


def add_clean(upstream: Upstream) -> None:
    for name, address in CLEAN.items():
        upstream.add(name, "A", address)
    upstream.add(BLOCKED, "A", "192.0.2.3")  # what a resolver ignoring the zone would answer


@pytest.mark.parametrize("action", ACTIONS)
async def test_pdns_recursor_transfers_with_tsig_and_enforces_the_zone(
    tools: None, tmp_path: Path, home: Path, upstream: Upstream, action: str
) -> None:
    add_clean(upstream)
    port = free_port()
    text = with_action(rpz_config(tmp_path, upstream.addr), action)
    async with running(text, tmp_path) as app:
        conf = pdns_conf(home, port, ZONE, rpz_port(app), upstream.addr[1], "xfr-key", SECRET)
        log = tmp_path / "pdns_recursor.log"
        argv = [program("pdns_recursor"), f"--config-dir={conf}"]
        with started(argv, log):
            transfers = await enforce_and_follow(app, tmp_path, port, log, upstream, action)
        assert app.rpz is not None and app.rpz.zone is not None
        serial = app.rpz.zone.serial
    # One AXFR at the start, then the change as differences (IXFR); the polls in between
    # (answered with the SOA alone) are counted, not audited.
    kinds = [t.kind for t in transfers]
    assert kinds[0] == "AXFR" and set(kinds[1:]) == {"IXFR"}, kinds
    assert app.rpz.transfers["ixfr-current"] > 0
    text = log.read_text()
    assert "Using TSIG key for authentication" in text and "RPZ load completed" in text, text
    assert 'msg="RPZ mutations"' in text and f'newserial="{serial}"' in text, text
    assert (home / f"{ZONE}.zone").exists()  # dumpFile: the copy seedFile starts from


def fetch(key: Path, primary: int, out: Path) -> subprocess.CompletedProcess[str]:
    """Run deploy/resolvers/blockd-rpz-fetch as a timer would; fail with its output."""
    argv = [str(FETCH), str(key), "127.0.0.1", str(primary), ZONE, str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"blockd-rpz-fetch failed: {done.stderr}{done.stdout}"
    return done


@pytest.mark.parametrize("action", ACTIONS)
async def test_knot_resolver_enforces_the_zone_blockd_rpz_fetch_writes(
    tools: None, tmp_path: Path, home: Path, upstream: Upstream, action: str
) -> None:
    add_clean(upstream)
    port = free_port()
    text = with_action(rpz_config(tmp_path, upstream.addr), action)
    zone_file = home / f"{ZONE}.zone"
    async with running(text, tmp_path) as app:
        assert app.rpz is not None
        served = await app.rpz.settled()
        assert served is not None
        transfers: list[ZoneTransferred] = []
        app.bus.subscribe(ZoneTransferred, transfers.append)
        key, primary = key_file(tmp_path), rpz_port(app)
        await asyncio.to_thread(fetch, key, primary, zone_file)
        await eventually(lambda: transfers)
        copy = zone_file.read_text()
        parsed = dns.zone.from_text(copy, ZONE, relativize=False)
        soa = parsed.find_rdataset(ZONE + ".", "SOA")[0]
        assert soa.serial == served.serial
        assert "ZONEMD" not in copy  # kresd would serve it as the root's data
        await asyncio.to_thread(fetch, key, primary, zone_file)  # same serial: no transfer
        assert zone_file.read_text() == copy and len(transfers) == 1

        conf = kresd_conf(home, port, zone_file, upstream.addr[1])
        log = tmp_path / "kresd.log"
        run = home / "run"
        run.mkdir()
        with started([program("kresd"), "-n", "-c", str(conf), str(run)], log):
            await enforce_and_follow(
                app, tmp_path, port, log, upstream, action, lambda: fetch(key, primary, zone_file)
            )
        assert [t.kind for t in transfers] == ["AXFR", "AXFR"]  # one per new serial


def test_blockd_rpz_fetch_keeps_the_old_file_when_the_transfer_fails(
    tools: None, tmp_path: Path
) -> None:
    """No primary answering: the script fails and leaves the file kresd reads as it was."""
    out = tmp_path / "rpz.zone"
    out.write_text("the last good copy\n")
    argv = [str(FETCH), str(key_file(tmp_path)), "127.0.0.1", str(free_port()), ZONE, str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "no SOA" in done.stderr, done
    assert out.read_text() == "the last good copy\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("rpz.zone")] == ["rpz.zone"]


SOA = f"{ZONE}.\t60\tIN\tSOA\tlocalhost. hostmaster.{ZONE}. 9 300 60 1209600 60"
ENTRY = f"blocked.demo.test.{ZONE}. 60\tIN\tA\t127.0.0.1"
TSIG = "xfr-key.\t0\tANY\tTSIG\thmac-sha256. 1796606683 300 32 c2ln 20649 NOERROR 0"


@pytest.mark.parametrize(
    "axfr",
    [
        [SOA, ENTRY],  # the connection dropped before the closing SOA
        [SOA, ENTRY, "; Transfer failed."],
        [SOA, ENTRY, SOA.replace(" 9 ", " 10 ")],  # closing SOA of another serial
        ["; Transfer failed."],
    ],
    ids=["cut-short", "failed", "serials-differ", "refused"],
)
def test_blockd_rpz_fetch_replaces_the_file_only_with_a_complete_transfer(
    tmp_path: Path, axfr: list[str]
) -> None:
    """dig's output as it is when a transfer goes wrong (dig exits 0 for most of these)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "axfr.txt").write_text("\n".join([*axfr, TSIG]) + "\n")
    dig = bin_dir / "dig"
    rdata = SOA.split("\t")[-1]  # what `dig +short SOA` prints
    dig.write_text(
        f'#!/bin/sh\ncase " $* " in *" SOA "*) echo "{rdata}";;\n'
        f'  *) cat "{tmp_path / "axfr.txt"}";; esac\n'
    )
    dig.chmod(0o755)
    out = tmp_path / "rpz.zone"
    out.write_text("the last good copy\n")
    argv = [str(FETCH), str(key_file(tmp_path)), "127.0.0.1", "5301", ZONE, str(out)]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1 and "failed or was cut short" in done.stderr, done
    assert out.read_text() == "the last good copy\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["axfr.txt", "bin", "rpz.zone", "xfr.key"]

    # The same output with its closing SOA is taken, the SOA once and no TSIG record.
    if axfr[0] == SOA and len(axfr) == 2:
        (tmp_path / "axfr.txt").write_text("\n".join([*axfr, SOA, TSIG]) + "\n")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done
        assert out.read_text() == f"{SOA}\n{ENTRY}\n"


def test_the_readme_shows_the_tested_examples() -> None:
    """The README's snippets for these two resolvers are lines of the files the tests run
    (the cron line: of the comment in knot-resolver.conf giving the script's arguments)."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("**PowerDNS Recursor and Knot Resolver**")
    section = readme[start : readme.index("### ", start)]
    blocks = re.findall(r"```(?:lua)?\n(.*?)```", section, re.S)
    assert len(blocks) == 3, blocks

    def code(text: str) -> str:  # without comments and indentation, as one line
        lines = (line.split("--")[0].split("# ")[0].strip() for line in text.splitlines())
        return " ".join(line for line in lines if line)

    raw = "\n".join(p.read_text() for p in sorted(EXAMPLES.iterdir()))
    for block in blocks:
        assert code(block) in code(raw) or " ".join(block.split()) in " ".join(raw.split()), block
