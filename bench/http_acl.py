"""The --squid-acl mode of bench/http_bench.py: Squid with N url_regex lines against blockd.

N URL entries (reserved names: *.example hosts) become N `url_regex` lines denied in Squid's
config, and the same N URLs a signed blockd URL list. Each server runs alone (Squid with no
ACL first, as a baseline): seconds from start to its first proxied answer, resident memory
then and after the load, requests/s of the 10 KB pass-through (a URL on a listed host, not
itself listed) and CPU per request; a listed URL must be refused (403 by Squid, 451 by
blockd). A server that takes more than --limit-seconds to answer, or grows past --limit-mb
resident (at start or under load), is stopped and reported so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from http_procs import (  # noqa: E402
    FILE_PATH,
    blockd_cmd,
    blockd_conf,
    expect,
    fetch,
    free_port,
    place,
    rss_mb,
    squid_cmd,
    squid_conf,
    squid_dir,
    start_origin,
    stop,
    wrk,
)
from policy_bench import make_data, write_feeds  # noqa: E402


def squid_regex(url: str) -> str:
    """Return a url_regex line matching exactly url (entries hold [a-z0-9:/.] only)."""
    return "^" + url.replace(".", r"\.") + "$"


def watched_start(
    proc: subprocess.Popen[bytes], ready: list[tuple[int, str, str, int]], a: argparse.Namespace
) -> dict[str, object]:
    """Wait until every (port, host, path, status) in ready answers so, within the limits.

    Return the seconds from start, resident memory, and why it was stopped, if it was."""
    t = time.monotonic()
    peak, todo = 0.0, list(ready)
    for _ in range(int(a.limit_seconds / 0.05) + 1):  # bounded: one probe per 50 ms
        if proc.poll() is not None:
            return {"stopped": f"exited with {proc.returncode}", "seconds": time.monotonic() - t}
        peak = max(peak, rss_mb(proc.pid))
        if peak > a.limit_mb:
            return {"stopped": f"resident memory past {a.limit_mb} MB", "rss_mb": peak}
        while todo and fetch(*todo[0][:3], timeout=0.5)[0] == todo[0][3]:
            todo.pop(0)
        if not todo:
            return {"seconds": time.monotonic() - t, "rss_mb": rss_mb(proc.pid), "stopped": None}
        if time.monotonic() - t > a.limit_seconds:
            break
        time.sleep(0.05)
    return {"stopped": f"not answering after {a.limit_seconds} s", "rss_mb": peak}


def acl_mode(a: argparse.Namespace, layout: tuple[set[int], set[int]] | None) -> None:
    """Squid with N url_regex lines against blockd with the same N URLs as a signed list."""
    hosts, urls = make_data(1, a.squid_acl)
    host = urls[0].split("/")[2]  # routed in blockd, and in the Squid ACL
    listed = "/" + urls[0].split("/", 3)[3]
    rows: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        servers: dict[str, subprocess.Popen[bytes]] = {}
        try:
            origin, _data = start_origin(work, servers)
            sq = squid_dir(work)
            acl = sq / "blocklist.regex"
            acl.write_text("".join(squid_regex(u) + "\n" for u in urls))
            feeds = work / "feeds"
            feeds.mkdir()
            write_feeds(feeds, hosts, urls)
            lists = f'[[lists]]\nauthority = "bench"\nlist = "urls"\nsource = "file://{feeds}/urls.dsse"\n'
            runs = (
                ("squid, no ACL", None),
                (f"squid, {a.squid_acl:,} url_regex", acl),
                (f"blockd, {a.squid_acl:,} URLs", None),
            )
            for label, acl_file in runs:
                port = free_port()
                ready = [(port, host, FILE_PATH, 200)]
                if label.startswith("blockd"):
                    admin = free_port()
                    cfg = blockd_conf(work, port, admin, {host: origin}, lists, feeds)
                    cmd, name, refused = blockd_cmd(cfg), "blockd", 451
                    ready.insert(0, (admin, "127.0.0.1", "/readyz", 200))
                else:
                    conf = squid_conf(sq, port, origin, acl_file)
                    cmd, name, refused = squid_cmd(conf), "squid", 403
                t0 = time.monotonic()
                servers[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
                row = watched_start(servers[name], ready, a)
                row["wall_s"] = time.monotonic() - t0
                if row["stopped"] is None:
                    if acl_file is not None or name == "blockd":
                        expect(f"listed URL via {label}", fetch(port, host, listed, 30), refused)
                    pids = {name: servers[name].pid, "nginx": servers["nginx"].pid}
                    place(pids, name, layout)

                    def guard(pid: int = pids[name]) -> str | None:
                        over = rss_mb(pid) > a.limit_mb
                        return f"resident memory past {a.limit_mb} MB" if over else None

                    r = wrk(
                        f"http://127.0.0.1:{port}{FILE_PATH}",
                        host,
                        a.connections,
                        a.seconds,
                        pids,
                        layout[1] if layout else None,
                        timeout=a.seconds,
                        guard=guard,
                    )
                    row.update(asdict(r))
                    row["us_per_req"] = r.cpu[name] / r.rps * 1e6 if r.rps else None
                    row["rss_after_mb"] = rss_mb(pids[name])
                    row["stopped"] = r.stopped
                rows[label] = row
                stop({name: servers.pop(name)})
        finally:
            stop(servers)
    print(
        f"{a.squid_acl:,} URL entries (reserved names); wrk -t1 -c{a.connections}"
        f" -d{a.seconds}s on a URL not listed; limits {a.limit_seconds:g} s, {a.limit_mb:,} MB"
    )
    print(
        f"{'server':28} {'start s':>8} {'RSS MB':>9} {'after run':>9}"
        f" {'req/s':>9} {'µs/req':>7}  note"
    )
    for label, row in rows.items():
        print(f"{label:28} {acl_row(row)}")
    (ROOT / "bench/out").mkdir(exist_ok=True)
    (ROOT / "bench/out/http-acl.json").write_text(
        json.dumps({"entries": a.squid_acl, "rows": rows}, indent=1)
    )


def acl_row(row: dict[str, object]) -> str:
    """Format one row of the ACL mode's table."""

    def num(key: str, fmt: str) -> str:
        v = row.get(key)
        return format(v, fmt) if isinstance(v, int | float) else format(float("nan"), fmt)

    note = str(row["stopped"] or "")
    if row.get("socket_errors"):
        note += f" socket errors {row['socket_errors']}"
    return (
        f"{num('seconds', '>8.2f')} {num('rss_mb', '>9.1f')} {num('rss_after_mb', '>9.1f')}"
        f" {num('rps', '>9,.1f')}"
        f" {num('us_per_req', '>7.1f')}  {note}"
    )
