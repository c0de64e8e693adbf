"""Benchmark blockd's DNS over TLS and DNS over HTTPS against Unbound's, on the same list.

    make bench-encrypted   (or: .venv/bin/python bench/encrypted_bench.py --hosts 1000000)

Installs Unbound and dnsperf when missing (Debian's Unbound is built with libnghttp2, so it
serves DoH; Debian's dnsperf 2.10 speaks `-m dot` and `-m doh`). Starts, on loopback:
- an upstream Unbound that answers every name under bench.example and nothing else;
- Unbound under test: the list as an RPZ zone (host and *.host), DoT (`tls-port`) and DoH
  (`https-port`, `http-endpoint: "/dns-query"`) on interfaces of their own, forwarding to
  the upstream;
- blockd under test: the same list as a signed list, `[dns.encrypted] dot_listen` and
  `doh_listen`, forwarding to the same upstream.
Both present the same throwaway self-signed certificate (blockd.dns.tlsconf.demo_certificate,
in the bench's temporary directory) and get one process/thread. Pinning: each server is
pinned to CPU 1 (taskset -c 1), dnsperf and this script (the per-query client) to CPU 0, so
the load generator never takes the server's core.

dnsperf (`-c 4 -q 200`: four TLS connections, 200 queries in flight; DoH over HTTP/2, GET by
default) measures blocked answers/s and cache-hit answers/s over each transport, in
interleaved rounds (medians reported), answers per CPU-second of the server, and its average
latency under that load. Then the latency of one query at a time over one persistent
connection (dnspython: a TLS socket for DoT, an HTTP/2 client for DoH; plain UDP for
reference) is timed query by query, alternating the servers, so drift affects both alike:
p50 and p99, client time included (the same client for both servers).
Report ratios, not absolute figures: machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.message
import dns.query
import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from dns_bench import (  # noqa: E402
    UNBOUND,
    blockd_cmd,
    dnsperf_stats,
    ensure_tools,
    pct,
    wait_answer,
)
from policy_bench import (  # noqa: E402
    UPSTREAM_ZONE,
    free_port,
    make_data,
    query,
    unbound_conf,
    write_feeds,
    write_rpz,
)
from workers_bench import blockd_config as workers_config  # noqa: E402
from workers_bench import cpu_seconds, smaps, tree  # noqa: E402

from blockd.dns.tlsconf import demo_certificate  # noqa: E402

NAME = "dns.bench.example"  # the name in the throwaway certificate
PATH = "/dns-query"
SERVERS = ("blockd", "unbound")
MODES = ("dot", "doh")
KINDS = ("blocked", "cache_hit")


class Server:
    """One server under test: its process and its UDP, DoT and DoH ports."""

    def __init__(self, label: str, proc: subprocess.Popen[bytes], udp: int, dot: int, doh: int):
        self.label, self.proc, self.udp, self.dot, self.doh = label, proc, udp, dot, doh


def unbound_encrypted(work: Path, udp: int, dot: int, doh: int, zone: Path, up: int) -> Path:
    """Write the config of Unbound under test: RPZ, and DoT and DoH with the bench's cert."""
    cert, key = work / "tls/demo-cert.pem", work / "tls/demo-key.pem"
    return unbound_conf(
        work,
        "under-test",
        udp,
        f"  interface: 127.0.0.1@{dot}\n"
        f"  interface: 127.0.0.1@{doh}\n"
        f"  tls-port: {dot}\n"
        f"  https-port: {doh}\n"
        f'  tls-service-key: "{key}"\n'
        f'  tls-service-pem: "{cert}"\n'
        f'  http-endpoint: "{PATH}"\n'
        "  incoming-num-tcp: 64\n"
        '  module-config: "respip iterator"\n'
        f'rpz:\n  name: rpz.bench\n  zonefile: "{zone}"\n',
        forward=f"127.0.0.1@{up}",
    )


def blockd_encrypted(work: Path, udp: int, dot: int, doh: int, up: int) -> Path:
    """Write the config of blockd under test: the signed lists, one process, DoT and DoH
    with the bench certificate."""
    path = workers_config(work, udp, up, 1)
    path.write_text(
        path.read_text()
        + f"""[dns.encrypted]
dot_listen = ["127.0.0.1:{dot}"]
doh_listen = ["127.0.0.1:{doh}"]
doh_path = "{PATH}"
certificate = "{work}/tls/demo-cert.pem"
private_key = "{work}/tls/demo-key.pem"
name = "{NAME}"
"""
    )
    return path


def wait_ready(server: Server, probe: str, limit: float) -> None:
    """Wait until the server blocks the probe over UDP; fail at once if it exits."""
    deadline = time.monotonic() + limit
    while True:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.label} exited with {server.proc.returncode}")
        try:
            wait_answer(server.udp, probe, is_blocked, 1)
            return
        except SystemExit:
            if time.monotonic() > deadline:
                raise


def client_context(cafile: Path, alpn: list[str]) -> ssl.SSLContext:
    """Return a client context that trusts the bench certificate only."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.set_alpn_protocols(alpn)
    return context


def mode_args(mode: str, port: int, method: str) -> list[str]:
    """Return dnsperf's transport arguments."""
    if mode == "dot":
        return ["-m", "dot"]
    return [
        "-m",
        "doh",
        "-O",
        f"doh-uri=https://127.0.0.1:{port}{PATH}",
        "-O",
        f"doh-method={method}",
    ]


def measure(
    server: Server, mode: str, queries: Path, seconds: int, method: str
) -> dict[str, float]:
    """Run dnsperf over mode; return its figures and answers per CPU-second of the server."""
    port = server.dot if mode == "dot" else server.doh
    pids = tree(server.proc.pid)
    before = cpu_seconds(pids)
    stats = dnsperf_stats(port, queries, seconds, "0", 4, mode_args(mode, port, method))
    used = cpu_seconds(pids) - before
    stats["per_cpu_s"] = stats["completed"] / used if used else float("nan")
    return stats


@contextmanager
def clients(server: Server, cafile: Path) -> Iterator[dict[str, Callable[[str], bytes]]]:
    """Yield one-query functions per transport, each returning the raw answer: DoT over one
    persistent TLS connection, DoH over one HTTP/2 connection (GET), UDP a socket per query
    as a stub resolver does."""
    raw = socket.create_connection(("127.0.0.1", server.dot), timeout=5)
    tls = client_context(cafile, ["dot"]).wrap_socket(raw, server_hostname=NAME)
    http = httpx2.Client(http2=True, verify=client_context(cafile, ["h2"]), timeout=5)

    def udp(name: str) -> bytes:
        q = dns.message.make_query(name, "A")
        return dns.query.udp(q, "127.0.0.1", 5, server.udp).to_wire()

    def dot(name: str) -> bytes:
        q = dns.message.make_query(name, "A")
        return dns.query.tls(q, "127.0.0.1", 5, server.dot, sock=tls).to_wire()

    def doh(name: str) -> bytes:
        q = dns.message.make_query(name, "A")
        r = dns.query.https(q, "127.0.0.1", 5, server.doh, session=http, path=PATH, post=False)
        return r.to_wire()

    try:
        yield {"udp": udp, "dot": dot, "doh": doh}
    finally:
        tls.close()
        http.close()


def latencies(
    servers: list[Server], cafile: Path, names: dict[str, list[str]], n: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Time n queries of each kind over each transport, one at a time, alternating the
    servers query by query; return p50/p99 in ms per server, transport and kind."""
    samples: dict[tuple[str, str, str], list[float]] = {}
    for transport in ("udp", *MODES):
        with clients(servers[0], cafile) as first, clients(servers[1], cafile) as second:
            ask = {servers[0].label: first[transport], servers[1].label: second[transport]}
            for kind, pool in names.items():
                for i in range(n):
                    name = pool[i % len(pool)]
                    for label, send in ask.items():
                        t = time.perf_counter()
                        send(name)
                        samples.setdefault((label, transport, kind), []).append(
                            (time.perf_counter() - t) * 1000
                        )
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (label, transport, kind), values in samples.items():
        out.setdefault(label, {}).setdefault(transport, {})[f"{kind}_p50"] = pct(values, 50)
        out[label][transport][f"{kind}_p99"] = pct(values, 99)
    return out


def is_blocked(raw: bytes) -> bool:
    """Say whether a raw answer is NOERROR with 127.0.0.1 (both servers' blocked answer)."""
    return raw[3] & 0x0F == 0 and raw[6:8] != b"\x00\x00" and b"\x7f\x00\x00\x01" in raw


def check_encrypted(servers: list[Server], cafile: Path, probe: str) -> None:
    """Fail unless both servers answer the probe as blocked over DoT and DoH."""
    for server in servers:
        with clients(server, cafile) as send:
            for mode in MODES:
                if not is_blocked(send[mode](probe)):
                    raise SystemExit(f"{server.label} over {mode}: {probe} not blocked")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    ap.add_argument("--latency-queries", type=int, default=2000)
    ap.add_argument("--doh-method", choices=("GET", "POST"), default="GET")
    a = ap.parse_args()
    ensure_tools()
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {0})  # this script is a client too: keep it off CPU 1
    hosts, urls = make_data(a.hosts, 1000)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            write_feeds(work, hosts, urls)
            cafile, _ = demo_certificate(work / "tls", NAME)
            up = free_port()
            upstream = unbound_conf(
                work,
                "upstream",
                up,
                UPSTREAM_ZONE,
            )
            procs.append(subprocess.Popen([UNBOUND, "-c", str(upstream)]))
            zone = write_rpz(work / "rpz.zone", hosts, "A 127.0.0.1")
            servers: list[Server] = []
            for label in SERVERS:
                udp, dot, doh = free_port(), free_port(), free_port()
                if label == "blockd":
                    cmd = blockd_cmd(blockd_encrypted(work, udp, dot, doh, up))
                else:
                    cmd = [UNBOUND, "-c", str(unbound_encrypted(work, udp, dot, doh, zone, up))]
                proc = subprocess.Popen(
                    ["taskset", "-c", "1", *cmd], cwd=ROOT, stdout=subprocess.DEVNULL
                )
                procs.append(proc)
                servers.append(Server(label, proc, udp, dot, doh))
            probe = hosts[12345 % len(hosts)]
            for server in servers:
                wait_ready(server, probe, 300)
            check_encrypted(servers, cafile, probe)
            rng = random.Random(5)
            blocked_names = rng.sample(hosts, min(50_000, len(hosts)))
            cached_names = [f"c{i}.bench.example" for i in range(2000)]
            files = {"blocked": work / "blocked.txt", "cache_hit": work / "cached.txt"}
            files["blocked"].write_text("".join(f"{h} A\n" for h in blocked_names))
            files["cache_hit"].write_text("".join(f"{n} A\n" for n in cached_names))
            for server in servers:  # warm both caches
                for n in cached_names:
                    query(server.udp, n)
            time.sleep(2)  # let start-up work settle
            rounds: dict[str, dict[str, dict[str, list[dict[str, float]]]]] = {
                s: {m: {k: [] for k in KINDS} for m in MODES} for s in SERVERS
            }
            for r in range(a.rounds):
                for server in servers:
                    for mode in MODES:
                        for kind in KINDS:
                            stats = measure(server, mode, files[kind], a.seconds, a.doh_method)
                            rounds[server.label][mode][kind].append(stats)
                            print(
                                f"round {r + 1} {server.label} {mode} {kind}: "
                                + json.dumps({k: round(v, 3) for k, v in stats.items()}),
                                flush=True,
                            )
            pss = {s.label: sum(smaps(p, "Pss") for p in tree(s.proc.pid)) for s in servers}
            latency = latencies(
                servers,
                cafile,
                {"blocked": blocked_names, "cache_hit": cached_names},
                a.latency_queries,
            )
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)
    report(a, rounds, pss, latency)


def report(
    a: argparse.Namespace,
    rounds: dict[str, dict[str, dict[str, list[dict[str, float]]]]],
    pss: dict[str, float],
    latency: dict[str, dict[str, dict[str, float]]],
) -> None:
    """Write bench/out/encrypted.json and print the figures with blockd/Unbound ratios."""
    results = {
        s: {
            m: {
                k: {
                    key: statistics.median(run[key] for run in runs)
                    for key in ("qps", "per_cpu_s", "avg_latency_ms", "lost")
                }
                for k, runs in kinds.items()
            }
            for m, kinds in modes.items()
        }
        for s, modes in rounds.items()
    }
    b, u = results["blockd"], results["unbound"]
    ratios = {
        m: {
            k: {key: b[m][k][key] / u[m][k][key] for key in ("qps", "per_cpu_s", "avg_latency_ms")}
            for k in KINDS
        }
        for m in MODES
    }
    out = {
        "hosts": a.hosts,
        "seconds": a.seconds,
        "rounds": a.rounds,
        "doh_method": a.doh_method,
        "dnsperf": "-c 4 -q 200",
        "results": results,
        "ratios": ratios,
        "pss_mb": pss,
        "latency_one_query_ms": latency,
        "raw_rounds": rounds,
    }
    (ROOT / "bench/out").mkdir(exist_ok=True)
    (ROOT / "bench/out/encrypted.json").write_text(json.dumps(out, indent=1))
    print(
        f"\nlist: {a.hosts:,} hosts; one process/thread each, server on CPU 1, dnsperf on CPU 0;"
        f" dnsperf -c 4 -q 200, {a.seconds} s, DoH {a.doh_method} over HTTP/2;"
        f" median of {a.rounds} interleaved rounds"
    )
    for m in MODES:
        for k in KINDS:
            for key, name in (
                ("qps", "answers/s"),
                ("per_cpu_s", "answers per CPU-s"),
                ("avg_latency_ms", "avg latency, ms"),
            ):
                print(
                    f"{m} {k:9} {name:18} blockd {b[m][k][key]:>10,.3f}   unbound "
                    f"{u[m][k][key]:>10,.3f}   ratio {ratios[m][k][key]:.2f}"
                )
            if b[m][k]["lost"] or u[m][k]["lost"]:
                print(
                    f"{m} {k}: queries lost (no answer within 2 s), median per run: blockd "
                    f"{b[m][k]['lost']:.0f}, unbound {u[m][k]['lost']:.0f}"
                )
    print(f"PSS: blockd {pss['blockd']:,.0f} MB   unbound {pss['unbound']:,.0f} MB")
    print(f"one query at a time, {a.latency_queries} each, ms (p50 / p99):")
    for t in ("udp", *MODES):
        for k in KINDS:
            lb, lu = latency["blockd"][t], latency["unbound"][t]
            print(
                f"  {t:3} {k:9} blockd {lb[k + '_p50']:.3f} / {lb[k + '_p99']:.3f}   unbound "
                f"{lu[k + '_p50']:.3f} / {lu[k + '_p99']:.3f}   blockd - unbound p50 "
                f"{lb[k + '_p50'] - lu[k + '_p50']:+.3f}"
            )


if __name__ == "__main__":
    main()
