"""RPZ speed: Unbound taking a 1,000,000-name policy zone from blockd, and a 1,000-name change
by IXFR, against the same zone served by BIND, in the same run.

    make bench-rpz            # or: .venv/bin/python bench/rpz_bench.py --names 1000000

Each figure is wall time from the moment the primary has the zone (Unbound started, or the
NOTIFY of a change sent) until Unbound answers a name only that version holds as blocked.
Unbound and BIND come from Debian's packages (installed when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.daemon import running  # noqa: E402
from tests.rpz.common import ZONE, publish_hosts, rpz_config  # noqa: E402
from tests.rpz.interop import (  # noqa: E402
    answers,
    ask,
    ensure_tools,
    free_port,
    program,
    started,
    unbound_conf,
)

POLL = 0.05


def names(n: int, start: int = 0) -> list[str]:
    """Return n distinct listed host names."""
    return [f"h{i}.bench{i % 997}.example" for i in range(start, start + n)]


def until_blocked(port: int, name: str, limit: float) -> float:
    """Return seconds until the resolver answers name as blocked (127.0.0.1)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        if answers(ask(port, name)) == ["127.0.0.1"]:
            return time.perf_counter() - t0
        time.sleep(POLL)
    raise SystemExit(f"{name} not blocked within {limit} s")


def named_primary(tmp: Path, port: int, notify_port: int) -> Path:
    """Write a BIND config serving the zone file as a primary, IXFR from differences."""
    conf = tmp / "named.conf"
    conf.write_text(
        f"""options {{
    directory "{tmp}";
    pid-file "{tmp}/named.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-transfer {{ 127.0.0.1; }};
    notify explicit;
    also-notify {{ 127.0.0.1 port {notify_port}; }};
    ixfr-from-differences yes;
    max-journal-size unlimited;
}};
zone "{ZONE}" {{ type primary; file "{tmp}/rpz.zone"; }};
"""
    )
    return conf


def zone_file(path: Path, serial: int, hosts: list[str]) -> None:
    """Write the zone blockd would serve for hosts (action notice: A and AAAA)."""
    with path.open("w") as f:
        f.write(f"$ORIGIN {ZONE}.\n$TTL 60\n")
        f.write(
            f"@ SOA localhost. hostmaster.{ZONE}. {serial} 300 60 1209600 60\n@ NS localhost.\n"
        )
        for h in sorted(hosts):
            f.write(f"{h} A 127.0.0.1\n{h} AAAA ::1\n*.{h} A 127.0.0.1\n*.{h} AAAA ::1\n")


async def from_blockd(tmp: Path, n: int, change: int) -> tuple[float, float]:
    """Time Unbound taking the zone, and a change, from blockd."""
    base = names(n)
    port = free_port()
    text = rpz_config(
        tmp, None, unsigned_clients=["127.0.0.1"], notify=[f"127.0.0.1:{port}"], history=5
    )
    async with running(text, tmp) as app:
        publish_hosts(tmp, 2, base)
        t0 = time.perf_counter()
        await app.feeds.sync_all()  # held: 2 demo names become n
        await app.feeds.approve("demo-authority/demo-hosts", 2)
        assert app.rpz is not None
        zone = await app.rpz.settled()
        assert zone is not None
        print(f"  blockd: verify, compile and build the zone: {time.perf_counter() - t0:.1f} s")
        rpz_port = next(p for t, _, p in app.rpz.bound if t == "tcp")
        conf = unbound_conf(tmp, port, ZONE, rpz_port, free_port())
        with started([program("unbound"), "-d", "-c", str(conf)], tmp / "unbound.log"):
            full = await asyncio.to_thread(until_blocked, port, base[-1], 600)
            changed = base[change // 2 :] + names(change // 2, n)
            publish_hosts(tmp, 3, changed)
            await app.feeds.sync_all()
            await app.rpz.settled()  # NOTIFY sent now
            step = await asyncio.to_thread(until_blocked, port, changed[-1], 600)
    return full, step


def from_bind(tmp: Path, n: int, change: int) -> tuple[float, float]:
    """Time Unbound taking the same zone, and the same change, from BIND."""
    base = names(n)
    bind_port, port = free_port(), free_port()
    zone_file(tmp / "rpz.zone", 1, base)
    conf = named_primary(tmp, bind_port, port)
    with started([program("named"), "-g", "-c", str(conf)], tmp / "named.log") as named:
        ub = unbound_conf(tmp, port, ZONE, bind_port, free_port())
        deadline = time.monotonic() + 600
        while "all zones loaded" not in (tmp / "named.log").read_text(errors="replace"):
            assert time.monotonic() < deadline, "BIND did not load the zone"
            time.sleep(POLL)
        with started([program("unbound"), "-d", "-c", str(ub)], tmp / "unbound.log"):
            full = until_blocked(port, base[-1], 600)
            changed = base[change // 2 :] + names(change // 2, n)
            zone_file(tmp / "rpz.zone", 2, changed)
            os.kill(named.pid, signal.SIGHUP)  # reload: BIND diffs, journals, notifies
            step = until_blocked(port, changed[-1], 600)
    return full, step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", type=int, default=1_000_000)
    p.add_argument("--change", type=int, default=1000)
    a = p.parse_args()
    ensure_tools()
    print(f"RPZ bench: {a.names:,} names, a change of {a.change:,} (half out, half in)")
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
        b_full, b_step = asyncio.run(from_blockd(Path(d1), a.names, a.change))
        n_full, n_step = from_bind(Path(d2), a.names, a.change)
    print(f"  {'primary':8} {'AXFR + apply':>14} {'IXFR + apply':>14}")
    print(f"  {'blockd':8} {b_full:13.2f}s {b_step:13.2f}s")
    print(f"  {'BIND':8} {n_full:13.2f}s {n_step:13.2f}s")
    print(f"  ratio blockd/BIND: full {b_full / n_full:.2f}x, change {b_step / n_step:.2f}x")


if __name__ == "__main__":
    main()
