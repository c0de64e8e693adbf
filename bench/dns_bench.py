"""Benchmark blockd's DNS path against Unbound on the same list, machine and run.

    make bench-dns      (or: .venv/bin/python bench/dns_bench.py --hosts 1000000)

Installs Unbound and dnsperf when missing. Starts, on loopback:
- an upstream Unbound that answers every name under bench.example (local-zone redirect)
  and nothing else (no packet ever leaves this machine);
- Unbound under test: the list as an RPZ zone (host and *.host), forwarding to the upstream;
- blockd under test: the same list as a signed list, forwarding to the same upstream.
Both get one thread/process. dnsperf then measures blocked answers/s and cache-hit answers/s
against each, in interleaved rounds (medians reported), and answers per CPU-second each server
used (dnsperf shares the cores, so it can cap answers/s); resident memory is read from /proc;
the latency blockd adds to a forwarded cache miss is measured query by query against asking
the upstream directly.
Report ratios, not absolute figures: machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from policy_bench import (  # noqa: E402
    UPSTREAM_ZONE,
    free_port,
    make_data,
    query,
    rss_mb,
    unbound_conf,
    write_feeds,
    write_rpz,
)

UNBOUND = "/usr/sbin/unbound"


def ensure_tools() -> None:
    """Install unbound and dnsperf with apt-get when they are missing."""
    subprocess.run(
        [str(ROOT / "tools/ensure-deb"), "unbound:unbound", "dnsperf:dnsperf"], check=True
    )


def wait_answer(port: int, name: str, check: object, limit: float) -> None:
    """Poll until the answer for name satisfies check(raw)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        raw = query(port, name, timeout=0.5)
        if raw is not None and check(raw):  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise SystemExit(f"no suitable answer for {name} on port {port} within {limit}s")


def blockd_cmd(cfg: Path) -> list[str]:
    """Return the command that runs blockd on a configuration, logging warnings only."""
    return [
        sys.executable,
        "-m",
        "blockd.cli",
        "run",
        "--config",
        str(cfg),
        "--log-level",
        "warning",
    ]


def cpu_seconds(pid: int) -> float:
    """Return the user+system CPU time a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, port: int, queries: Path, seconds: int) -> tuple[float, float]:
    """Run dnsperf; return (answers per second, answers per CPU-second of the server)."""
    before = cpu_seconds(pid)
    qps = dnsperf(port, queries, seconds)
    used = cpu_seconds(pid) - before
    return qps, qps * seconds / used if used else float("nan")


# What a production configuration must name (the notice page's operator and help routes).
NOTICE = """[http.notice]
operator_name = "bench"
operator_url = "https://isp.example/"
operator_contact = "abuse@isp.example"
helpline_name = "bench"
helpline_number = "1"
hotline_name = "bench"
hotline_url = "https://report.example/"
"""


def blockd_config(
    path: Path, work: Path, state: str, port: int, up_port: int, extra: str = ""
) -> Path:
    """Write a config for blockd under test: the bench hosts list, DNS listeners only.

    A production configuration (no demo), naming a bench operator; extra may hold an
    [audit] table, else the audit log is on with a bench origin.
    """
    audit = "" if "[audit]" in extra else '[audit]\norigin = "bench.example/blockd"\n'
    path.write_text(f"""[trust]
pinned = "{work}/trust.dsse"
[state]
dir = "{work}/{state}"
[dns]
listen = ["127.0.0.1:{port}"]
upstreams = ["127.0.0.1:{up_port}"]
operator = "bench"
[http]
listen = []
tls_listen = []
{NOTICE}{audit}[admin]
listen = []
[selftest]
interval = 0
{extra}[[lists]]
authority = "bench"
list = "hosts"
source = "file://{work}/hosts.dsse"
""")
    return path


def dnsperf(
    port: int,
    queries: Path,
    seconds: int,
    cpu: str | None = None,
    clients: int = 4,
    extra: Sequence[str] = (),
) -> float:
    """Run dnsperf at full speed from `clients` sockets (on CPU cpu, if given); return
    queries per second."""
    return dnsperf_stats(port, queries, seconds, cpu, clients, extra)["qps"]


def dnsperf_stats(
    port: int,
    queries: Path,
    seconds: int,
    cpu: str | None = None,
    clients: int = 4,
    extra: Sequence[str] = (),
) -> dict[str, float]:
    """Run dnsperf as `dnsperf` does, with extra arguments (e.g. `-m dot`); return its
    figures: qps, completed and lost queries, average latency in ms."""
    out = subprocess.run(
        [
            *(["taskset", "-c", cpu] if cpu is not None else []),
            "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            str(port),
            "-d",
            str(queries),
            "-l",
            str(seconds),
            "-c",
            str(clients),
            "-q",
            "200",
            "-t",
            "2",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    completed = re.search(r"Queries completed:\s+(\d+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    latency = re.search(r"Average Latency \(s\):\s+([\d.]+)", out)
    if not (qps and completed and lost and latency):
        raise SystemExit(f"dnsperf said:\n{out}")
    return {
        "qps": float(qps[1]),
        "completed": float(completed[1]),
        "lost": float(lost[1]),
        "avg_latency_ms": float(latency[1]) * 1000,
    }


def latencies(via_port: int, direct_port: int, n: int) -> tuple[list[float], list[float]]:
    """Time n cache misses through blockd and n asked directly, alternating query by query
    (so drift on a shared machine affects both alike); milliseconds."""
    via: list[float] = []
    direct: list[float] = []
    for i in range(n):
        for port, name, out in ((via_port, f"m{i}", via), (direct_port, f"d{i}", direct)):
            t = time.perf_counter()
            if query(port, f"{name}.bench.example") is not None:
                out.append((time.perf_counter() - t) * 1000)
    return via, direct


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--latency-queries", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    a = ap.parse_args()
    ensure_tools()
    hosts, urls = make_data(a.hosts, 1000)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            write_feeds(work, hosts, urls)
            up_port, ub_port, bd_port = free_port(), free_port(), free_port()
            up = unbound_conf(
                work,
                "upstream",
                up_port,
                UPSTREAM_ZONE,
            )
            procs.append(subprocess.Popen([UNBOUND, "-c", str(up)]))
            zone = write_rpz(work / "rpz.zone", hosts, "A 127.0.0.1")
            ub = unbound_conf(
                work,
                "under-test",
                ub_port,
                '  module-config: "respip iterator"\n'
                f'rpz:\n  name: rpz.bench\n  zonefile: "{zone}"\n',
                forward=f"127.0.0.1@{up_port}",
            )
            t0 = time.monotonic()
            procs.append(subprocess.Popen([UNBOUND, "-c", str(ub)]))
            cfg = blockd_config(work / "blockd.toml", work, "state", bd_port, up_port)
            procs.append(
                subprocess.Popen(
                    blockd_cmd(cfg),
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                )
            )
            probe = hosts[12345 % len(hosts)]

            def blocked(raw: bytes) -> bool:
                return raw[3] & 0x0F == 0 and raw[6:8] != b"\x00\x00" and b"\x7f\x00\x00\x01" in raw

            wait_answer(bd_port, probe, blocked, 120)
            blockd_ready = time.monotonic() - t0
            wait_answer(ub_port, probe, blocked, 300)
            unbound_ready = time.monotonic() - t0
            rng = random.Random(5)
            blocked_file = work / "blocked.txt"
            blocked_file.write_text(
                "".join(f"{h} A\n" for h in rng.sample(hosts, min(50_000, len(hosts))))
            )
            cached_file = work / "cached.txt"
            cached_names = [f"c{i}.bench.example" for i in range(2000)]
            cached_file.write_text("".join(f"{n} A\n" for n in cached_names))
            for port in (bd_port, ub_port):  # warm both caches
                for n in cached_names:
                    query(port, n)
            # Interleaved rounds, median of each: a noisy neighbour then hurts both alike.
            # The load generator shares this machine's cores, so answers/s can be capped by
            # dnsperf itself; answers per CPU-second of the server is the fairer comparison.
            keys = ("blocked_qps", "cache_hit_qps", "blocked_per_cpu_s", "cache_hit_per_cpu_s")
            rounds: dict[str, dict[str, list[float]]] = {
                label: {key: [] for key in keys} for label in ("blockd", "unbound")
            }
            servers = (("blockd", bd_port, procs[2].pid), ("unbound", ub_port, procs[1].pid))
            for _ in range(a.rounds):
                for label, port, pid in servers:
                    for kind, file in (("blocked", blocked_file), ("cache_hit", cached_file)):
                        qps, per_cpu = measured(pid, port, file, a.seconds)
                        rounds[label][f"{kind}_qps"].append(qps)
                        rounds[label][f"{kind}_per_cpu_s"].append(per_cpu)
            results: dict[str, dict[str, float]] = {
                label: {key: statistics.median(v) for key, v in runs.items()}
                for label, runs in rounds.items()
            }
            results["blockd"]["rss_mb"] = rss_mb(procs[2].pid)
            results["unbound"]["rss_mb"] = rss_mb(procs[1].pid)
            n = a.latency_queries
            via, direct = latencies(bd_port, up_port, n)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)
    added = {f"p{q}": pct(via, q) - pct(direct, q) for q in (50, 99)}
    report = {
        "hosts": a.hosts,
        "results": results,
        "rounds": rounds,
        "ready_s": {"blockd": blockd_ready, "unbound": unbound_ready},
        "added_latency_ms": added,
        "ratios": {
            "blocked_qps": results["blockd"]["blocked_qps"] / results["unbound"]["blocked_qps"],
            "cache_hit_qps": results["blockd"]["cache_hit_qps"]
            / results["unbound"]["cache_hit_qps"],
            "blocked_per_cpu_s": results["blockd"]["blocked_per_cpu_s"]
            / results["unbound"]["blocked_per_cpu_s"],
            "cache_hit_per_cpu_s": results["blockd"]["cache_hit_per_cpu_s"]
            / results["unbound"]["cache_hit_per_cpu_s"],
            "rss": results["blockd"]["rss_mb"] / results["unbound"]["rss_mb"],
        },
    }
    (ROOT / "bench/out").mkdir(exist_ok=True)
    (ROOT / "bench/out/dns.json").write_text(json.dumps(report, indent=1))
    r, q = report["ratios"], results
    print(
        f"list: {a.hosts} hosts; one process/thread each; dnsperf -c 4 -q 200, {a.seconds}s;"
        f" median of {a.rounds} interleaved rounds"
    )
    print(f"ready after start:   blockd {blockd_ready:.1f} s   unbound {unbound_ready:.1f} s")
    for key, name in (
        ("blocked_qps", "blocked answers/s"),
        ("cache_hit_qps", "cache hits/s"),
        ("blocked_per_cpu_s", "blocked per CPU-s"),
        ("cache_hit_per_cpu_s", "cache hits per CPU-s"),
    ):
        print(
            f"{name:20} blockd {q['blockd'][key]:>9,.0f}   unbound {q['unbound'][key]:>9,.0f}"
            f"   ratio {r[key]:.2f}"
        )
    print(
        f"{'resident memory':20} blockd {q['blockd']['rss_mb']:>7,.0f} MB   unbound "
        f"{q['unbound']['rss_mb']:>7,.0f} MB   ratio {r['rss']:.2f}"
    )
    print(f"added latency, forwarded miss: p50 {added['p50']:.3f} ms, p99 {added['p99']:.3f} ms")


if __name__ == "__main__":
    main()
