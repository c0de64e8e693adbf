"""Benchmark blockd with 1 and 2 workers against Unbound with 1 and 2 threads, and memory.

    make bench-workers   (or: .venv/bin/python bench/workers_bench.py --hosts 1000000)

Same list (1M hosts as a signed list for blockd, as an RPZ zone for Unbound; 100k URLs
for blockd too), same machine, one run. Each server is started alone, measured, stopped:
- blocked answers/s and cache-hit answers/s (dnsperf -q 200; -c 4 for one worker/thread,
  -c 16 for two, so the kernel spreads the flows), and answers per CPU-second of
  the server's whole process tree (supervisor, zygote and workers for blockd);
- proportional set size (PSS, /proc/PID/smaps_rollup) of the whole tree, and for blockd
  with 2 workers: the workers' PSS together against one worker's resident size (what one
  worker alone would hold: the goal is N workers within 1.3x of one).

Pinning: with one worker/thread the server is pinned to CPU 1 and dnsperf to CPU 0, so
the load generator never takes the server's core. With two, the server gets both cores and
dnsperf shares them: answers/s is then capped by the machine, and answers per CPU-second
is the comparison to read. Ratios, not absolute figures: machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from dns_bench import NOTICE, UNBOUND, blockd_cmd, dnsperf, ensure_tools, wait_answer  # noqa: E402
from policy_bench import (  # noqa: E402
    UPSTREAM_ZONE,
    free_port,
    make_data,
    query,
    unbound_conf,
    write_feeds,
    write_rpz,
)


def tree(pid: int) -> list[int]:
    """Return pid and every descendant."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
    return sorted(set(out))


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def smaps(pid: int, field: str) -> float:
    """Return a field of /proc/PID/smaps_rollup (Pss, Rss) in MB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(
    root: int, port: int, queries: Path, seconds: int, pin: str | None, clients: int
) -> tuple[float, float]:
    """Run dnsperf; return (answers/s, answers per CPU-second of root's process tree)."""
    pids = tree(root)
    before = cpu_seconds(pids)
    qps = dnsperf(port, queries, seconds, pin, clients)
    used = cpu_seconds(pids) - before
    return qps, qps * seconds / used if used else float("nan")


def blockd_config(work: Path, port: int, up_port: int, workers: int) -> Path:
    path = work / f"blockd-{workers}.toml"
    path.write_text(f"""[trust]
pinned = "{work}/trust.dsse"
[state]
dir = "{work}/state-{workers}"
[dns]
listen = ["127.0.0.1:{port}"]
upstreams = ["127.0.0.1:{up_port}"]
operator = "bench"
[http]
listen = []
tls_listen = []
{NOTICE}[audit]
enabled = false
[admin]
listen = []
[selftest]
interval = 0
[daemon]
workers = {workers}
[[lists]]
authority = "bench"
list = "hosts"
source = "file://{work}/hosts.dsse"
[[lists]]
authority = "bench"
list = "urls"
source = "file://{work}/urls.dsse"
""")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1_000_000)
    ap.add_argument("--urls", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=8)
    a = ap.parse_args()
    ensure_tools()
    hosts, urls = make_data(a.hosts, a.urls)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_feeds(work, hosts, urls)
        zone = write_rpz(work / "rpz.zone", hosts, "A 127.0.0.1")
        up_port = free_port()
        upstream = subprocess.Popen(
            [
                UNBOUND,
                "-c",
                str(
                    unbound_conf(
                        work,
                        "upstream",
                        up_port,
                        UPSTREAM_ZONE,
                    )
                ),
            ]
        )
        rng = random.Random(5)
        blocked_file = work / "blocked.txt"
        blocked_file.write_text("".join(f"{h} A\n" for h in rng.sample(hosts, 50_000)))
        cached_names = [f"c{i}.bench.example" for i in range(2000)]
        cached_file = work / "cached.txt"
        cached_file.write_text("".join(f"{n} A\n" for n in cached_names))
        probe = hosts[12345]

        def blocked(raw: bytes) -> bool:
            return raw[3] & 0x0F == 0 and b"\x7f\x00\x00\x01" in raw

        servers: list[tuple[str, int, Callable[[int], list[str]]]] = [
            ("blockd-1", 1, lambda p: blockd_cmd(blockd_config(work, p, up_port, 1))),
            (
                "unbound-1",
                1,
                lambda p: [
                    UNBOUND,
                    "-c",
                    str(
                        unbound_conf(
                            work,
                            "ub1",
                            p,
                            '  module-config: "respip iterator"\n'
                            f'rpz:\n  name: rpz.bench\n  zonefile: "{zone}"\n',
                            forward=f"127.0.0.1@{up_port}",
                        )
                    ),
                ],
            ),
            ("blockd-2", 2, lambda p: blockd_cmd(blockd_config(work, p, up_port, 2))),
            (
                "unbound-2",
                2,
                lambda p: [
                    UNBOUND,
                    "-c",
                    str(
                        two_threads(
                            unbound_conf(
                                work,
                                "ub2",
                                p,
                                '  module-config: "respip iterator"\n'
                                f'rpz:\n  name: rpz.bench\n  zonefile: "{zone}"\n',
                                forward=f"127.0.0.1@{up_port}",
                            )
                        )
                    ),
                ],
            ),
        ]
        try:
            for label, cores, cmd in servers:
                port = free_port()
                pin = ["taskset", "-c", "1"] if cores == 1 else []
                proc = subprocess.Popen([*pin, *cmd(port)], cwd=ROOT, stdout=subprocess.DEVNULL)
                try:
                    wait_answer(port, probe, blocked, 600)
                    for n in cached_names:
                        query(port, n)
                    time.sleep(2)  # let start-up work (compile, publish, gc) settle
                    gen = "0" if cores == 1 else None
                    # Two servers' sockets: more client flows, so SO_REUSEPORT spreads them.
                    clients = 4 if cores == 1 else 16
                    r: dict[str, float] = {}
                    r["blocked_qps"], r["blocked_per_cpu_s"] = measure(
                        proc.pid, port, blocked_file, a.seconds, gen, clients
                    )
                    r["cache_hit_qps"], r["cache_hit_per_cpu_s"] = measure(
                        proc.pid, port, cached_file, a.seconds, gen, clients
                    )
                    pids = tree(proc.pid)
                    r["pss_mb"] = sum(smaps(p, "Pss") for p in pids)
                    r["processes"] = len(pids)
                    if label == "blockd-2":
                        workers = pids[-2:]  # forked last: the zygote's children
                        r["workers_pss_mb"] = sum(smaps(p, "Pss") for p in workers)
                        r["one_worker_rss_mb"] = max(smaps(p, "Rss") for p in workers)
                    results[label] = r
                    print(label, json.dumps({k: round(v, 1) for k, v in r.items()}), flush=True)
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
        finally:
            upstream.terminate()
            upstream.wait(timeout=30)
    report(a, results)


def two_threads(conf: Path) -> Path:
    conf.write_text(
        conf.read_text().replace("num-threads: 1", "num-threads: 2\n  so-reuseport: yes")
    )
    return conf


def report(a: argparse.Namespace, r: dict[str, dict[str, float]]) -> None:
    (ROOT / "bench/out").mkdir(exist_ok=True)
    (ROOT / "bench/out/workers.json").write_text(json.dumps(r, indent=1))
    print(
        f"\nlist: {a.hosts:,} hosts + {a.urls:,} URLs; dnsperf -q 200 -c 4 (one core) or 16"
        f" (two), {a.seconds} s each"
    )
    for cores in (1, 2):
        b, u = r[f"blockd-{cores}"], r[f"unbound-{cores}"]
        print(f"-- {cores} worker(s) / thread(s)")
        for key, name in (
            ("blocked_qps", "blocked answers/s"),
            ("cache_hit_qps", "cache hits/s"),
            ("blocked_per_cpu_s", "blocked per CPU-s"),
            ("cache_hit_per_cpu_s", "cache hits per CPU-s"),
            ("pss_mb", "PSS, MB"),
        ):
            print(
                f"{name:22} blockd {b[key]:>10,.0f}   unbound {u[key]:>10,.0f}"
                f"   ratio {b[key] / u[key]:.2f}"
            )
    b2 = r["blockd-2"]
    print(
        f"blockd, 2 workers: workers' PSS together {b2['workers_pss_mb']:,.0f} MB; one worker's "
        f"resident size {b2['one_worker_rss_mb']:,.0f} MB; ratio "
        f"{b2['workers_pss_mb'] / b2['one_worker_rss_mb']:.2f} (goal <= 1.3)"
    )
    print(
        f"blockd whole tree: 1 worker {r['blockd-1']['pss_mb']:,.0f} MB, 2 workers "
        f"{b2['pss_mb']:,.0f} MB (ratio {b2['pss_mb'] / r['blockd-1']['pss_mb']:.2f})"
    )


if __name__ == "__main__":
    main()
