"""Benchmark blockd's HTTP side (URL proxy and notice page) against nginx, in one run.

    .venv/bin/python bench/http_bench.py      (--connections 32 --seconds 10 --rounds 3)

Installs wrk and nginx when missing. Starts, on loopback:
- nginx (one process, no master) as the origin: a 10 KB file of random bytes, and blockd's notice
  page saved as a static file (the baseline for notice pages/s);
- blockd on the demo lists: partial.demo.test is routed (its origin fixed to nginx),
  blocked.demo.test wholly blocked.
wrk then measures, in interleaved rounds (medians reported), requests/s and latency
percentiles of: the 10 KB file direct from nginx, the same file proxied through blockd,
notice pages from blockd (451), and the saved notice page from nginx (200); the CPU time
blockd, nginx and wrk used in each run shows who was CPU-bound (they share the cores).
The latency blockd adds is measured request by request on one kept-alive connection,
alternating direct and proxied, since wrk's p99 at saturation is mostly queueing; wrk's
p99 is reported beside it. Resident memory of blockd is read from /proc after the runs.
-c 32 is the default: blockd is CPU-bound from -c 8 up, and at 64 queueing dominates latency.
Report ratios, not absolute figures: machines are noisy.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from dns_bench import cpu_seconds, pct  # noqa: E402
from policy_bench import free_port, rss_mb  # noqa: E402

NGINX = "/usr/sbin/nginx"
ROUTED = "partial.demo.test"  # carries URL-level entries: everything else is proxied
BLOCKED = "blocked.demo.test"  # wholly blocked: the notice page
LISTED = "/listed/page.html"  # the listed URL on the routed host
FILE_PATH = "/data10k.bin"
NOTICE_PATH = "/notice.html"
FILE_SIZE = 10 * 1024


def ensure_tools() -> None:
    """Install wrk and nginx with apt-get when they are missing."""
    subprocess.run([str(ROOT / "tools/ensure-deb"), "wrk:wrk", "nginx:nginx"], check=True)


def nginx_conf(work: Path, port: int) -> Path:
    """Write an nginx configuration serving work/www on port; return its path."""
    # One process (master_process off) with one worker's worth of work: fair against
    # single-threaded blockd on a 2-core machine. keepalive_requests is raised so neither
    # wrk nor blockd's origin connection is closed every 1000 requests (the default).
    temp = work / "nginx-temp"
    temp.mkdir()
    conf = work / "nginx.conf"
    conf.write_text(f"""daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  types {{ text/html html; application/octet-stream bin; }}
  default_type application/octet-stream;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {work}/www;
  }}
}}
""")
    return conf


def blockd_conf(work: Path, http_port: int, admin_port: int, origin: int) -> Path:
    """Write a blockd configuration on copies of the demo lists; return its path."""
    # Every listener on a free port (another blockd may be running); no self-test probes
    # in the middle of a measurement.
    feeds = work / "feeds"
    feeds.mkdir()
    for src in (ROOT / "feeds/demo").iterdir():  # envelopes and the bodies they sign
        if src.is_file():
            (feeds / src.name).write_bytes(src.read_bytes())
    actions = {  # as in config/blockd.toml
        "demo-hosts": 'action = "notice"',
        "demo-urls": 'https = "splice"',
        "demo-hashed": 'action = "nxdomain"',
    }
    lists = "".join(
        f'[[lists]]\nauthority = "demo-authority"\nlist = "{name}"\n'
        f'source = "file://{feeds}/{name}.dsse"\n{action}\n'
        for name, action in actions.items()
    )
    cfg = work / "blockd.toml"
    # demo = true: the demo notice texts and audit origin; the bench measures, it does not run
    cfg.write_text(f"""demo = true
[trust]
pinned = "{feeds}/trust.dsse"
[state]
dir = "{work}/state"
[dns]
listen = ["127.0.0.1:{free_port()}"]
upstreams = []
[http]
listen = ["127.0.0.1:{http_port}"]
tls_listen = ["127.0.0.1:{free_port()}"]
origins = {{ "{ROUTED}" = "127.0.0.1:{origin}" }}
[admin]
listen = ["127.0.0.1:{admin_port}"]
[selftest]
interval = 0
{lists}""")
    return cfg


def fetch(
    port: int, host: str, path: str, timeout: float = 5.0
) -> tuple[int, bytes] | tuple[None, None]:
    """GET path with Host: host on a fresh connection; return (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError:
        return None, None
    finally:
        conn.close()


def wait_status(port: int, host: str, path: str, status: int, limit: float) -> None:
    """Poll until GET path answers with status."""
    deadline = time.monotonic() + limit
    got: tuple[int, bytes] | tuple[None, None] = (None, None)
    while time.monotonic() < deadline:
        got = fetch(port, host, path, timeout=0.5)
        if got[0] == status:
            return
        time.sleep(0.1)
    said = got[1][:300].decode("utf-8", "replace") if got[1] else ""
    raise SystemExit(f"no {status} for http://{host}{path} on port {port} within {limit}s: {said}")


def expect(what: str, got: tuple[int, bytes] | tuple[None, None], status: int) -> bytes:
    """Return the body of a response that must have status; exit otherwise."""
    if got[0] != status or got[1] is None:
        raise SystemExit(f"{what}: expected {status}, got {got[0]}")
    return got[1]


@dataclass
class WrkRun:
    """One wrk run, and the CPU each process used during it (in cores: CPU-s per second)."""

    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    non_2xx_3xx: int
    socket_errors: int
    blockd_cpu: float
    nginx_cpu: float
    wrk_cpu: float


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> tuple[float, dict[int, float], int, int, int]:
    """Return (requests/s, latency percentiles in ms, requests, non-2xx/3xx, socket errors)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rps or not total:
        raise SystemExit(f"wrk said:\n{out}")
    latency = {
        int(p): float(v) * _UNITS[unit]
        for p, v, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = sum(int(n) for n in errors.groups()) if errors else 0
    return float(rps[1]), latency, int(total[1]), int(non2xx[1]) if non2xx else 0, failed


def children_cpu() -> float:
    """Return the CPU time used by finished child processes (here: wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(url: str, host: str, connections: int, seconds: int, pids: tuple[int, int]) -> WrkRun:
    """Run wrk on url with one thread; return its figures and each process's CPU use."""
    before = (cpu_seconds(pids[0]), cpu_seconds(pids[1]), children_cpu())
    t = time.monotonic()
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"Host: {host}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wall = time.monotonic() - t
    after = (cpu_seconds(pids[0]), cpu_seconds(pids[1]), children_cpu())
    rps, latency, requests, non2xx, errors = parse_wrk(out)
    blockd, nginx, load = ((a - b) / wall for a, b in zip(after, before, strict=True))
    return WrkRun(
        rps, latency[50], latency[90], latency[99], requests, non2xx, errors, blockd, nginx, load
    )


def added_latency(direct: int, via: int, n: int) -> tuple[list[float], list[float]]:
    """Time n GETs of the 10 KB file direct and via blockd, alternating; return ms lists."""
    # One kept-alive connection each, one request at a time: what one visitor's page load
    # sees, without the queueing a saturating load tool adds.
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for port in (direct, via)]
    times: tuple[list[float], list[float]] = ([], [])
    try:
        for i in range(n + 200):  # the first 200 warm up both paths
            for conn, out in zip(conns, times, strict=True):
                t = time.perf_counter()
                conn.request("GET", FILE_PATH, headers={"Host": ROUTED})
                resp = conn.getresponse()
                body = resp.read()
                elapsed = (time.perf_counter() - t) * 1000
                if resp.status != 200 or len(body) != FILE_SIZE:
                    raise SystemExit(f"sequential GET: {resp.status}, {len(body)} bytes")
                if i >= 200:
                    out.append(elapsed)
    finally:
        for conn in conns:
            conn.close()
    return times


def stop(servers: dict[str, subprocess.Popen[bytes]], grace: float = 30.0) -> None:
    """Terminate the servers; kill (and say so) any still running after grace seconds."""
    for p in servers.values():
        p.terminate()
    for name, p in servers.items():
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            print(f"{name} ignored SIGTERM for {grace:.0f} s: killed", file=sys.stderr)
            p.kill()
            p.wait()


RUNS = (  # label, server, host, path, expected status
    ("10 KB direct", "nginx", ROUTED, FILE_PATH, 200),
    ("10 KB via blockd", "blockd", ROUTED, FILE_PATH, 200),
    ("notice, blockd", "blockd", BLOCKED, "/", 451),
    ("notice, nginx file", "nginx", ROUTED, NOTICE_PATH, 200),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=32, help="wrk -c")
    ap.add_argument("--seconds", type=int, default=10, help="wrk -d, per run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    ap.add_argument("--requests", type=int, default=2000, help="sequential latency requests")
    a = ap.parse_args()
    ensure_tools()
    servers: dict[str, subprocess.Popen[bytes]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            www = work / "www"
            www.mkdir()
            data = random.Random(10).randbytes(FILE_SIZE)
            (www / FILE_PATH.lstrip("/")).write_bytes(data)
            ports = {"nginx": free_port(), "blockd": free_port(), "admin": free_port()}
            conf = nginx_conf(work, ports["nginx"])
            servers["nginx"] = subprocess.Popen(
                [NGINX, "-p", str(work), "-e", str(work / "nginx-error.log"), "-c", str(conf)]
            )
            cfg = blockd_conf(work, ports["blockd"], ports["admin"], ports["nginx"])
            args = ["run", "--config", str(cfg), "--log-level", "warning"]
            servers["blockd"] = subprocess.Popen(
                [sys.executable, "-m", "blockd.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL
            )
            pids = {name: p.pid for name, p in servers.items()}
            wait_status(ports["nginx"], ROUTED, FILE_PATH, 200, 30)
            wait_status(ports["admin"], "127.0.0.1", "/readyz", 200, 60)  # every list loaded
            # Check every path answers as the runs assume before loading it.
            notice = expect("notice", fetch(ports["blockd"], BLOCKED, "/"), 451)
            (www / NOTICE_PATH.lstrip("/")).write_bytes(notice)
            expect("listed URL", fetch(ports["blockd"], ROUTED, LISTED), 451)
            if expect("proxied", fetch(ports["blockd"], ROUTED, FILE_PATH), 200) != data:
                raise SystemExit("the proxied file differs from the origin's")
            expect("static notice", fetch(ports["nginx"], ROUTED, NOTICE_PATH), 200)
            # Interleaved rounds, median of each: a noisy neighbour then hurts every run alike.
            runs: dict[str, list[WrkRun]] = {label: [] for label, *_ in RUNS}
            for _ in range(a.rounds):
                for label, server, host, path, _status in RUNS:
                    url = f"http://127.0.0.1:{ports[server]}{path}"
                    runs[label].append(
                        wrk(url, host, a.connections, a.seconds, (pids["blockd"], pids["nginx"]))
                    )
            rss = {name: rss_mb(pid) for name, pid in pids.items()}
            direct, via = added_latency(ports["nginx"], ports["blockd"], a.requests)
        finally:
            stop(servers)
    results = {
        label: {key: statistics.median(getattr(r, key) for r in rs) for key in asdict(rs[0])}
        for label, rs in runs.items()
    }
    statuses_ok = {
        label: all(
            r.socket_errors == 0 and r.non_2xx_3xx == (r.requests if status == 451 else 0)
            for r in runs[label]
        )
        for label, _server, _host, _path, status in RUNS
    }
    added = {f"p{q}": pct(via, q) - pct(direct, q) for q in (50, 99)}
    seq = {
        "direct": {f"p{q}": pct(direct, q) for q in (50, 99)},
        "via": {f"p{q}": pct(via, q) for q in (50, 99)},
    }
    proxied, plain = results["10 KB via blockd"], results["10 KB direct"]
    wrk_added = proxied["p99_ms"] - plain["p99_ms"]
    ratios = {
        "proxied_rps": proxied["rps"] / plain["rps"],
        "notice_rps": results["notice, blockd"]["rps"] / results["notice, nginx file"]["rps"],
    }
    report = {
        "wrk": {"threads": 1, "connections": a.connections, "seconds": a.seconds},
        "rounds": a.rounds,
        "results": results,
        "runs": {label: [asdict(r) for r in rs] for label, rs in runs.items()},
        "statuses_ok": statuses_ok,
        "ratios": ratios,
        "added_latency_ms": {
            "sequential": added,
            "sequential_requests": a.requests,
            "sequential_ms": seq,
            "wrk_p99": wrk_added,
        },
        "rss_mb": rss,
        "notice_bytes": len(notice),
    }
    print(
        f"wrk -t1 -c{a.connections} -d{a.seconds}s, median of {a.rounds} interleaved rounds;"
        " wrk, nginx (1 process) and blockd share the cores (CPU in cores used)"
    )
    print(
        f"{'run':20} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'blockd':>7} {'nginx':>6} {'wrk':>5}  statuses"
    )
    for label, _server, _host, _path, status in RUNS:
        r = results[label]
        print(
            f"{label:20} {r['rps']:>8,.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}"
            f" {r['blockd_cpu']:>7.2f} {r['nginx_cpu']:>6.2f} {r['wrk_cpu']:>5.2f}"
            f"  {'all ' + str(status) if statuses_ok[label] else 'UNEXPECTED (see json)'}"
        )
    per_request = {
        label: results[label]["blockd_cpu"] / results[label]["rps"] * 1e6
        for label in ("10 KB via blockd", "notice, blockd")
    }
    report["blockd_cpu_us_per_request"] = per_request
    print(f"proxied / direct throughput:   {ratios['proxied_rps']:.2f}  (target >= 0.5)")
    print(f"notice pages / static file:    {ratios['notice_rps']:.2f}  ({len(notice):,} B page)")
    print(
        f"added latency, {a.requests} sequential kept-alive GETs: p50 {added['p50']:.3f} ms,"
        f" p99 {added['p99']:.3f} ms  (target p99 < 2 ms)"
    )
    print(
        f"  (direct p50 {seq['direct']['p50']:.3f} / p99 {seq['direct']['p99']:.3f} ms,"
        f" via blockd p50 {seq['via']['p50']:.3f} / p99 {seq['via']['p99']:.3f} ms)"
    )
    print(
        f"added latency, wrk p99 at -c{a.connections}:"
        f" {wrk_added:.2f} ms (mostly queueing at saturation)"
    )
    print(
        f"blockd CPU per request: proxied {per_request['10 KB via blockd']:.0f} us,"
        f" notice {per_request['notice, blockd']:.0f} us"
    )
    print(f"resident memory after runs: blockd {rss['blockd']:.0f} MB, nginx {rss['nginx']:.1f} MB")
    (ROOT / "bench/out").mkdir(exist_ok=True)
    (ROOT / "bench/out/http.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
