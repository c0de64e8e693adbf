"""Servers, load and measurement helpers for bench/http_bench.py.

Configurations for the processes under test (nginx as origin and as proxy, Squid as an
accelerator, blockd), HTTP probes, wrk runs, CPU accounting from /proc and CPU pinning.
Every process listens on 127.0.0.1 only; every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import pwd
import random
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from dns_bench import blockd_cmd as blockd_cmd  # noqa: E402  (re-exported for the HTTP benches)

NGINX = "/usr/sbin/nginx"
SQUID = "/usr/sbin/squid"
ROUTED = "partial.demo.test"  # carries URL-level entries: everything else is proxied
BLOCKED = "blocked.demo.test"  # wholly blocked: the notice page
LISTED = "/listed/page.html"  # the listed URL on the routed host
FILE_PATH = "/data10k.bin"
NOTICE_PATH = "/notice.html"
FILE_SIZE = 10 * 1024


_GIVEN: set[int] = set()


def free_port() -> int:
    """Return a loopback port free for both TCP and UDP now, never the same one twice."""
    for _ in range(100):
        with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise SystemExit("no free loopback port found in 100 tries")


def ensure_tools() -> None:
    """Install wrk, nginx and squid with apt-get when they are missing."""
    subprocess.run(
        [str(ROOT / "tools/ensure-deb"), "wrk:wrk", "nginx:nginx", "squid:squid"], check=True
    )


# --- configurations ---------------------------------------------------------------------------


def nginx_conf(work: Path, name: str, port: int, origin: int | None = None) -> Path:
    """Write an nginx configuration; return its path.

    origin None: serve work/www (the origin). Otherwise proxy everything to 127.0.0.1:origin
    with proxy_buffering at its default (on) and kept-alive upstream connections (as blockd
    and Squid keep theirs)."""
    # One process (master_process off), so one core's worth of work and one PID to account.
    # keepalive_requests is raised so neither wrk nor a proxy's origin connection is closed
    # every 1000 requests (the default).
    temp = work / f"{name}-temp"
    temp.mkdir()
    if origin is None:
        serve = f"root {work}/www;"
        upstream = ""
    else:
        upstream = (
            f"upstream origin {{ server 127.0.0.1:{origin}; keepalive 64;"
            " keepalive_requests 10000000; }"
        )
        serve = (
            "location / { proxy_pass http://origin; proxy_http_version 1.1;"
            ' proxy_set_header Connection ""; proxy_set_header Host $host; }'
        )
    conf = work / f"{name}.conf"
    conf.write_text(f"""daemon off;
master_process off;
worker_processes 1;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
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
  {upstream}
  server {{
    listen 127.0.0.1:{port};
    {serve}
  }}
}}
""")
    return conf


def nginx_cmd(work: Path, name: str, conf: Path) -> list[str]:
    return [NGINX, "-p", str(work), "-e", str(work / f"{name}-error.log"), "-c", str(conf)]


def squid_dir(work: Path) -> Path:
    """Make a directory Squid can write after it drops root (to Debian's 'proxy' user)."""
    # The bench's temporary directory is private (0700): Squid gets a sibling of its own,
    # removed by the caller.
    d = work / "squid"
    d.mkdir()
    os.chmod(work, 0o711)  # traversable, not listable, by the proxy user
    if os.geteuid() == 0:
        user = pwd.getpwnam("proxy")
        os.chown(d, user.pw_uid, user.pw_gid)
    return d


def squid_conf(d: Path, port: int, origin: int, acl: Path | None = None) -> Path:
    """Write a Squid reverse-proxy (accelerator) configuration in d; return its path.

    No cache (cache deny all, no cache_dir, cache_mem 0), no access log, one process (run
    with -N), every request to the origin peer (never direct: no DNS lookups of test names).
    acl: a file of url_regex lines whose matches are refused (403)."""
    deny = ""
    if acl is not None:
        deny = f'acl blocklist url_regex "{acl}"\nhttp_access deny blocklist\n'
    conf = d / "squid.conf"
    conf.write_text(f"""http_port 127.0.0.1:{port} accel vhost defaultsite={ROUTED}
cache_peer 127.0.0.1 parent {origin} 0 no-query no-digest originserver name=origin
cache_peer_access origin allow all
never_direct allow all
{deny}http_access allow localhost
http_access deny all
cache deny all
cache_mem 0 MB
memory_cache_shared off
workers 1
access_log none
cache_store_log none
cache_log {d}/cache.log
debug_options ALL,1
logfile_rotate 0
pid_filename {d}/squid.pid
coredump_dir {d}
netdb_filename none
pinger_enable off
shutdown_lifetime 0 seconds
dns_nameservers 127.0.0.1
client_persistent_connections on
server_persistent_connections on
""")
    return conf


def squid_cmd(conf: Path) -> list[str]:
    # -N: no daemon, no kids: the process started is the one worker we account.
    return [SQUID, "-N", "-f", str(conf)]


def blockd_conf(
    work: Path,
    http_port: int,
    admin_port: int,
    origins: dict[str, int],
    lists: str,
    feeds: Path,
) -> Path:
    """Write a blockd configuration; return its path. lists: its [[lists]] tables."""
    # Every listener on a free port (another blockd may be running); no self-test probes
    # in the middle of a measurement.
    cfg = work / "blockd.toml"
    fixed = ", ".join(f'"{h}" = "127.0.0.1:{p}"' for h, p in origins.items())
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
origins = {{ {fixed} }}
[admin]
listen = ["127.0.0.1:{admin_port}"]
[selftest]
interval = 0
{lists}""")
    return cfg


def demo_lists(work: Path) -> tuple[str, Path]:
    """Copy the demo lists into work/feeds; return their [[lists]] tables and the directory."""
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
    return lists, feeds


# --- probes -----------------------------------------------------------------------------------

Response = tuple[int, bytes] | tuple[None, None]


def fetch(port: int, host: str, path: str, timeout: float = 5.0) -> Response:
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


def wait_status(
    port: int,
    host: str,
    path: str,
    status: int,
    limit: float,
    proc: subprocess.Popen[bytes] | None = None,
) -> float:
    """Poll until GET path answers with status; return the seconds waited."""
    t = time.monotonic()
    deadline = t + limit
    got: Response = (None, None)
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server on port {port} exited with {proc.returncode}")
        got = fetch(port, host, path, timeout=0.5)
        if got[0] == status:
            return time.monotonic() - t
        time.sleep(0.05)
    said = got[1][:300].decode("utf-8", "replace") if got[1] else ""
    raise SystemExit(f"no {status} for http://{host}{path} on port {port} within {limit}s: {said}")


def expect(what: str, got: Response, status: int) -> bytes:
    """Return the body of a response that must have status; exit otherwise."""
    if got[0] != status or got[1] is None:
        raise SystemExit(f"{what}: expected {status}, got {got[0]}")
    return got[1]


# --- processes: CPU, memory, pinning ----------------------------------------------------------


def tree(pid: int) -> list[int]:
    """Return pid and its descendants (blockd's audit writer, say), from /proc."""
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 1000:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo.extend(int(k) for k in kids)
    return out


def cpu_seconds(pid: int) -> float:
    """Return the user+system CPU time pid and its descendants have used (/proc/PID/stat)."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Return the resident set size of pid and its descendants in MB."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def pin(pid: int, cpus: set[int] | None) -> None:
    """Set the CPU affinity of every thread of pid and its descendants (taskset -a -p)."""
    if cpus is None:
        return
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), cpus)


def stop(servers: dict[str, subprocess.Popen[bytes]], grace: float = 30.0) -> None:
    """Terminate the servers; kill (and say so) any still running after grace seconds."""
    for p in servers.values():
        if p.poll() is None:
            p.terminate()
    for name, p in servers.items():
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            print(f"{name} ignored SIGTERM for {grace:.0f} s: killed", file=sys.stderr)
            p.kill()
            p.wait()


# --- wrk --------------------------------------------------------------------------------------


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
    wrk_cpu: float
    cpu: dict[str, float] = field(default_factory=dict)
    stopped: str | None = None  # why a guard stopped the run early


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


def wrk(
    url: str,
    host: str,
    connections: int,
    seconds: int,
    pids: dict[str, int],
    cpus: set[int] | None = None,
    timeout: int = 2,
    guard: Callable[[], str | None] | None = None,
) -> WrkRun:
    """Run wrk (one thread, pinned to cpus) on url; return its figures and each pid's CPU.

    guard, polled every 0.1 s, may stop the run early by returning why (wrk is then killed
    and the run reports what wrk had not yet printed as zero requests)."""
    taskset = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    load = children_cpu()
    t = time.monotonic()
    cmd = [*taskset, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout}s"]
    proc = subprocess.Popen(
        [*cmd, "--latency", "-H", f"Host: {host}", url], stdout=subprocess.PIPE, text=True
    )
    stopped = None
    try:
        for _ in range((seconds + 60) * 10):  # bounded: wrk ends after `seconds`
            if proc.poll() is not None:
                break
            if guard is not None and (stopped := guard()) is not None:
                break
            time.sleep(0.1)
        else:
            stopped = "wrk did not finish"
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
    wall = time.monotonic() - t
    cpu = {name: (cpu_seconds(pid) - before[name]) / wall for name, pid in pids.items()}
    if stopped is not None:
        return WrkRun(0.0, *(float("nan"),) * 3, 0, 0, 0, 0.0, cpu, stopped)
    if proc.returncode != 0:
        raise SystemExit(f"wrk exited with {proc.returncode}:\n{out}")
    rps, latency, requests, non2xx, errors = parse_wrk(out)
    return WrkRun(
        rps,
        latency.get(50, float("nan")),
        latency.get(90, float("nan")),
        latency.get(99, float("nan")),
        requests,
        non2xx,
        errors,
        (children_cpu() - load) / wall,
        cpu,
    )


def cpu_layout(enabled: bool) -> tuple[set[int], set[int]] | None:
    """Return (CPU for the server measured, CPU for wrk and the rest), or None: no pinning."""
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2:
        return None
    return {cpus[1]}, {cpus[0]}


def place(pids: dict[str, int], measured: str, layout: tuple[set[int], set[int]] | None) -> None:
    """Pin the server measured alone on its CPU and every other server beside wrk."""
    if layout is None:
        return
    for name, pid in pids.items():
        pin(pid, layout[0] if name == measured else layout[1])


def start_origin(work: Path, servers: dict[str, subprocess.Popen[bytes]]) -> tuple[int, bytes]:
    """Start the origin nginx serving the 10 KB file; return its port and the file."""
    www = work / "www"
    www.mkdir()
    data = random.Random(10).randbytes(FILE_SIZE)
    (www / FILE_PATH.lstrip("/")).write_bytes(data)
    port = free_port()
    servers["nginx"] = subprocess.Popen(nginx_cmd(work, "nginx", nginx_conf(work, "nginx", port)))
    wait_status(port, ROUTED, FILE_PATH, 200, 30, servers["nginx"])
    return port, data
