"""Benchmark blockd's HTTP side against Squid, nginx as a proxy and nginx direct, in one run.

    make bench-http            (or: .venv/bin/python bench/http_bench.py; --connections 32
                                --seconds 10 --rounds 3)
    .venv/bin/python bench/http_bench.py --squid-acl [N]   (the url_regex ACL mode; N 10,000)

Installs wrk, nginx and squid (Debian packages) when missing; never touches a system service:
every server is our own process, on a free 127.0.0.1 port, with its own temporary config,
pid file and directories, stopped when the run ends. Starts:
- nginx (one process, no master) as the origin: a 10 KB file of random bytes, and blockd's
  notice page saved as a static file (the baseline for notice pages/s);
- blockd on the demo lists: partial.demo.test is routed (its origin fixed to nginx),
  blocked.demo.test wholly blocked;
- Squid 5 as a reverse proxy (accelerator: `http_port ... accel`, `cache_peer` to the origin,
  `cache deny all`, no cache_dir, cache_mem 0, access_log none, one process: `squid -N`);
- a second nginx (one process) as a proxy: `proxy_pass` to the origin, proxy_buffering at
  its default (on), kept-alive upstream connections (as blockd and Squid keep theirs).
wrk (one thread) then measures, in interleaved rounds (medians reported), requests/s and
latency percentiles of: the 10 KB file direct from nginx, the same file through blockd,
Squid and the nginx proxy, notice pages from blockd (451), and the saved notice page from
nginx (200). The CPU each server used (utime+stime from /proc/PID/stat, descendants
included) over each run gives CPU microseconds per request, and the ratios blockd/Squid and
blockd/nginx-proxy of CPU per request, the figure to read on a shared machine.

Pinning (on by default when there are 2 or more CPUs; --no-pin turns it off): before each
run, the server being measured (the proxy, or nginx for the direct and static runs) is
pinned to CPU 1 alone, every thread of it (like `taskset -a -p -c 1`); wrk (`taskset -c 0`)
and every other server, the origin included, to CPU 0. So no proxy shares its core with wrk
or the origin; the origin and wrk share theirs, which can cap the fastest proxy's requests/s
(CPU per request is not capped). The latency a proxy adds is measured request by request on
one kept-alive connection, alternating direct and each proxy (unpinned: one request is in
flight at a time), since wrk's p99 at saturation is mostly queueing. Resident memory is
read from /proc after the runs (descendants included: blockd's audit writer).

--squid-acl [N] (bench/http_acl.py): Squid with N `url_regex` lines (10,000 by default;
reserved names) against blockd with the same N URLs as a signed list: start time, resident
memory, requests/s and CPU per request, each bounded (--limit-seconds, --limit-mb).
Report ratios, not absolute figures: machines are noisy.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from dns_bench import pct  # noqa: E402
from http_acl import acl_mode  # noqa: E402
from http_procs import (  # noqa: E402
    BLOCKED,
    FILE_PATH,
    FILE_SIZE,
    LISTED,
    NOTICE_PATH,
    ROUTED,
    WrkRun,
    blockd_cmd,
    blockd_conf,
    cpu_layout,
    demo_lists,
    ensure_tools,
    expect,
    fetch,
    free_port,
    nginx_cmd,
    nginx_conf,
    pin,
    place,
    rss_mb,
    squid_cmd,
    squid_conf,
    squid_dir,
    start_origin,
    stop,
    wait_status,
    wrk,
)

PROXIES = ("blockd", "squid", "nginx-proxy")
RUNS = (  # label, server measured, host, path, expected status
    ("10 KB direct", "nginx", ROUTED, FILE_PATH, 200),
    ("10 KB via blockd", "blockd", ROUTED, FILE_PATH, 200),
    ("10 KB via Squid", "squid", ROUTED, FILE_PATH, 200),
    ("10 KB via nginx proxy", "nginx-proxy", ROUTED, FILE_PATH, 200),
    ("notice, blockd", "blockd", BLOCKED, "/", 451),
    ("notice, nginx file", "nginx", ROUTED, NOTICE_PATH, 200),
)
VIA = {
    "blockd": "10 KB via blockd",
    "squid": "10 KB via Squid",
    "nginx-proxy": "10 KB via nginx proxy",
}


def added_latency(ports: dict[str, int], n: int) -> dict[str, list[float]]:
    """Time n GETs of the 10 KB file from each port, alternating; return ms lists by name."""
    # One kept-alive connection each, one request at a time: what one visitor's page load
    # sees, without the queueing a saturating load tool adds.
    conns = {
        name: http.client.HTTPConnection("127.0.0.1", p, timeout=5) for name, p in ports.items()
    }
    times: dict[str, list[float]] = {name: [] for name in ports}
    try:
        for i in range(n + 200):  # the first 200 warm up every path
            for name, conn in conns.items():
                t = time.perf_counter()
                conn.request("GET", FILE_PATH, headers={"Host": ROUTED})
                resp = conn.getresponse()
                body = resp.read()
                elapsed = (time.perf_counter() - t) * 1000
                if resp.status != 200 or len(body) != FILE_SIZE:
                    raise SystemExit(f"sequential GET via {name}: {resp.status}, {len(body)} B")
                if i >= 200:
                    times[name].append(elapsed)
    finally:
        for conn in conns.values():
            conn.close()
    return times


def compare(a: argparse.Namespace, layout: tuple[set[int], set[int]] | None) -> None:
    """The default mode: every run of RUNS, interleaved rounds, medians."""
    servers: dict[str, subprocess.Popen[bytes]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            ports = {"nginx": 0, "blockd": free_port(), "admin": free_port()}
            ports["nginx"], data = start_origin(work, servers)
            ports["squid"], ports["nginx-proxy"] = free_port(), free_port()
            conf = nginx_conf(work, "nginx-proxy", ports["nginx-proxy"], ports["nginx"])
            servers["nginx-proxy"] = subprocess.Popen(nginx_cmd(work, "nginx-proxy", conf))
            sq = squid_conf(squid_dir(work), ports["squid"], ports["nginx"])
            servers["squid"] = subprocess.Popen(squid_cmd(sq), stdout=subprocess.DEVNULL)
            lists, feeds = demo_lists(work)
            cfg = blockd_conf(
                work, ports["blockd"], ports["admin"], {ROUTED: ports["nginx"]}, lists, feeds
            )
            servers["blockd"] = subprocess.Popen(
                blockd_cmd(cfg), cwd=ROOT, stdout=subprocess.DEVNULL
            )
            wait_status(ports["admin"], "127.0.0.1", "/readyz", 200, 60, servers["blockd"])
            # Check every path answers as the runs assume before loading it.
            notice = expect("notice", fetch(ports["blockd"], BLOCKED, "/"), 451)
            (work / "www" / NOTICE_PATH.lstrip("/")).write_bytes(notice)
            expect("listed URL", fetch(ports["blockd"], ROUTED, LISTED), 451)
            for name in PROXIES:
                wait_status(ports[name], ROUTED, FILE_PATH, 200, 30, servers[name])
                if expect(f"via {name}", fetch(ports[name], ROUTED, FILE_PATH), 200) != data:
                    raise SystemExit(f"the file through {name} differs from the origin's")
            expect("static notice", fetch(ports["nginx"], ROUTED, NOTICE_PATH), 200)
            pids = {name: p.pid for name, p in servers.items()}
            # Interleaved rounds, median of each: a noisy neighbour then hurts every run alike.
            runs: dict[str, list[WrkRun]] = {label: [] for label, *_ in RUNS}
            for _ in range(a.rounds):
                for label, server, host, path, _status in RUNS:
                    place(pids, server, layout)
                    url = f"http://127.0.0.1:{ports[server]}{path}"
                    load = layout[1] if layout else None
                    runs[label].append(wrk(url, host, a.connections, a.seconds, pids, load))
            rss = {name: rss_mb(pid) for name, pid in pids.items()}
            if layout is not None:  # sequential requests, one at a time: every CPU for all
                for pid in pids.values():
                    pin(pid, layout[0] | layout[1])
            seq = added_latency({n: ports[n] for n in ("nginx", *PROXIES)}, a.requests)
        finally:
            stop(servers)
    report(a, layout, runs, rss, seq, len(notice))


def median_run(rs: list[WrkRun]) -> dict[str, float]:
    """Return the median of every figure of a run over rounds (CPU by server included)."""
    out = {
        key: statistics.median(getattr(r, key) for r in rs)
        for key in asdict(rs[0])
        if key not in ("cpu", "stopped")
    }
    for name in rs[0].cpu:
        out[f"cpu_{name}"] = statistics.median(r.cpu[name] for r in rs)
    # CPU per request: each round's own ratio, then the median (rounds move together)
    for name in rs[0].cpu:
        out[f"us_per_req_{name}"] = statistics.median(r.cpu[name] / r.rps * 1e6 for r in rs)
    return out


def report(
    a: argparse.Namespace,
    layout: tuple[set[int], set[int]] | None,
    runs: dict[str, list[WrkRun]],
    rss: dict[str, float],
    seq: dict[str, list[float]],
    notice_bytes: int,
) -> None:
    results = {label: median_run(rs) for label, rs in runs.items()}
    statuses_ok = {
        label: all(
            r.socket_errors == 0 and r.non_2xx_3xx == (r.requests if status == 451 else 0)
            for r in runs[label]
        )
        for label, _server, _host, _path, status in RUNS
    }
    direct = seq["nginx"]
    added = {
        name: {f"p{q}": pct(seq[name], q) - pct(direct, q) for q in (50, 99)} for name in PROXIES
    }
    plain = results["10 KB direct"]
    per_req = {name: results[VIA[name]][f"us_per_req_{name}"] for name in PROXIES}
    ratios = {
        "blockd_over_squid_cpu_per_request": per_req["blockd"] / per_req["squid"],
        "blockd_over_nginx_proxy_cpu_per_request": per_req["blockd"] / per_req["nginx-proxy"],
        **{f"{name}_rps_over_direct": results[VIA[name]]["rps"] / plain["rps"] for name in PROXIES},
        "notice_rps": results["notice, blockd"]["rps"] / results["notice, nginx file"]["rps"],
    }
    pinning = (
        f"measured server alone on CPU {min(layout[0])};"
        f" wrk and the other servers on CPU {min(layout[1])}"
        if layout
        else "none (every process on every CPU)"
    )
    out = {
        "wrk": {"threads": 1, "connections": a.connections, "seconds": a.seconds},
        "rounds": a.rounds,
        "pinning": pinning,
        "results": results,
        "runs": {label: [asdict(r) for r in rs] for label, rs in runs.items()},
        "statuses_ok": statuses_ok,
        "cpu_us_per_request": per_req,
        "ratios": ratios,
        "added_latency_ms": added,
        "sequential_requests": a.requests,
        "sequential_ms": {n: {f"p{q}": pct(v, q) for q in (50, 99)} for n, v in seq.items()},
        "rss_mb": rss,
        "notice_bytes": notice_bytes,
    }
    print(
        f"wrk -t1 -c{a.connections} -d{a.seconds}s, median of {a.rounds} interleaved rounds;"
        f" pinning: {pinning}"
    )
    print(
        f"{'run':22} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'server CPU':>10}"
        f" {'µs/req':>7} {'origin µs/req':>13}  statuses"
    )
    for label, server, _host, _path, status in RUNS:
        r = results[label]
        origin = f"{r['us_per_req_nginx']:>13.1f}" if label in VIA.values() else " " * 13
        print(
            f"{label:22} {r['rps']:>8,.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}"
            f" {r[f'cpu_{server}']:>10.2f} {r[f'us_per_req_{server}']:>7.1f} {origin}"
            f"  {'all ' + str(status) if statuses_ok[label] else 'UNEXPECTED (see json)'}"
        )
    squid_ratio = ratios["blockd_over_squid_cpu_per_request"]
    print(f"CPU per proxied request, blockd / Squid:        {squid_ratio:.2f}")
    print(
        "CPU per proxied request, blockd / nginx proxy:  "
        f"{ratios['blockd_over_nginx_proxy_cpu_per_request']:.2f}"
    )
    print(
        "proxied / direct req/s: "
        + ", ".join(f"{n} {ratios[f'{n}_rps_over_direct']:.2f}" for n in PROXIES)
    )
    print(f"notice pages / static file:  {ratios['notice_rps']:.2f}  ({notice_bytes:,} B page)")
    print(
        f"latency added, {a.requests} sequential kept-alive GETs each (direct p50"
        f" {pct(direct, 50):.3f} / p99 {pct(direct, 99):.3f} ms):"
    )
    for name in PROXIES:
        print(f"  {name:12} p50 {added[name]['p50']:.3f} ms, p99 {added[name]['p99']:.3f} ms")
    print("resident memory after runs: " + ", ".join(f"{n} {v:.1f} MB" for n, v in rss.items()))
    (ROOT / "bench/out").mkdir(exist_ok=True)
    (ROOT / "bench/out/http.json").write_text(json.dumps(out, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=32, help="wrk -c")
    ap.add_argument("--seconds", type=int, default=10, help="wrk -d, per run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    ap.add_argument("--requests", type=int, default=2000, help="sequential latency requests")
    ap.add_argument("--no-pin", action="store_true", help="no CPU pinning")
    ap.add_argument(
        "--squid-acl",
        type=int,
        nargs="?",
        const=10_000,
        metavar="N",
        help="the url_regex ACL mode with N URLs (10,000 when N is left out)",
    )
    ap.add_argument("--limit-seconds", type=float, default=60.0, help="ACL mode: start limit")
    ap.add_argument("--limit-mb", type=int, default=4096, help="ACL mode: resident memory limit")
    a = ap.parse_args()
    ensure_tools()
    layout = cpu_layout(not a.no_pin)
    if a.squid_acl is not None:
        acl_mode(a, layout)
    else:
        compare(a, layout)


if __name__ == "__main__":
    main()
