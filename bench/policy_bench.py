"""Benchmark the policy snapshot against Unbound's RPZ on the same list, in one run.

    make bench-compile          (or: .venv/bin/python bench/policy_bench.py --hosts 1000000)

Measures, for N host entries and M URL entries (reserved names only):
- blockd: time from signed envelopes on disk to an active PolicySnapshot (verify, parse,
  validate, index, merge), resident memory the snapshot keeps, host lookups/s and URL
  checks/s on one core;
- Unbound: time to load the same hosts as an RPZ zone (host and *.host) until it answers,
  and its resident memory.
Machines are noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import random
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from blockd.feeds.authoring import list_payload, sign_list, sign_trust  # noqa: E402
from blockd.feeds.keys import SigningKey  # noqa: E402
from blockd.feeds.model import Authority, Format, Regulator, TrustPolicy  # noqa: E402

NOW = datetime.now(UTC).replace(microsecond=0)
KEY = SigningKey.from_seed(b"blockd BENCH KEY, NOT SECRET....")


def rss_mb(pid: int | None = None) -> float:
    """Return the resident set size of a process in MB."""
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def trim_heap() -> None:
    """Hand freed heap back to the OS (glibc), so RSS shows what is still alive."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def label(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=n))


def make_data(hosts: int, url_count: int, seed: int = 7) -> tuple[list[str], list[str]]:
    """Return reserved-name host entries and URL entries."""
    rng = random.Random(seed)
    tlds = ["example", "test", "invalid"]
    host_entries = [f"{label(rng, 8)}{i}.{label(rng, 6)}.{tlds[i % 3]}" for i in range(hosts)]
    url_hosts = [f"u{label(rng, 6)}{i}.example" for i in range(max(1, url_count // 5))]
    url_entries = [
        f"http://{url_hosts[i % len(url_hosts)]}/{label(rng, 5)}/{label(rng, 7)}/p{i}.html"
        for i in range(url_count)
    ]
    return host_entries, url_entries


def write_feeds(out: Path, hosts: list[str], urls: list[str]) -> None:
    """Sign the bench lists and a trust policy into out."""
    trust = TrustPolicy(
        version=1,
        issued_at=NOW - timedelta(days=1),
        expires=NOW + timedelta(days=30),
        regulator=Regulator(name="bench", keys=[KEY.public.b64], threshold=1),
        authorities=[
            Authority(
                id="bench",
                name="bench",
                keys=[KEY.public.b64],
                threshold=1,
                lists=["hosts", "urls"],
                formats=["hosts", "urls"],
                max_entries=50_000_000,
                max_bytes=4 * 1024**3 - 1,
                max_age_seconds=86400,
            )
        ],
    )
    (out / "trust.dsse").write_bytes(sign_trust(trust, [KEY]))
    lists: list[tuple[str, Format, list[str]]] = [("hosts", "hosts", hosts), ("urls", "urls", urls)]
    for list_id, fmt, entries in lists:
        p, body = list_payload(
            "bench",
            list_id,
            1,
            fmt,
            entries,
            issued_at=NOW - timedelta(hours=1),
            expires=NOW + timedelta(days=7),
            body_name=f"{list_id}-1.txt",
        )
        assert body is not None
        (out / f"{list_id}-1.txt").write_bytes(body)
        (out / f"{list_id}.dsse").write_bytes(sign_list(p, [KEY]))


def child_blockd(feeds: Path, queries: int) -> dict[str, float]:
    """Run in a fresh process: compile from disk, then measure lookups."""
    from blockd.feeds.verify import check_body, verify_list, verify_trust
    from blockd.policy import entries as entry_rules
    from blockd.policy.compile import compile_snapshot, index_list
    from blockd.policy.snapshot import ListInfo
    from blockd.policy.verdict import ListSource

    gc.collect()
    base = rss_mb()
    t0 = time.perf_counter()
    trust = verify_trust((feeds / "trust.dsse").read_bytes(), None, NOW).policy
    indexed = []
    for list_id in ("hosts", "urls"):
        v = verify_list(
            (feeds / f"{list_id}.dsse").read_bytes(), trust, NOW, expect=("bench", list_id)
        )
        assert v is not None and v.payload.body is not None
        body = (feeds / v.payload.body.name).read_bytes()
        check_body(v, body)
        lines = entry_rules.split_body(body, v.payload.entry_count)
        del body
        entries = entry_rules.build(v.payload.format, lines, v.payload.test_entries)
        del lines
        p = v.payload
        info = ListInfo(
            ListSource(p.authority, p.list, p.version), p.issued_at, p.expires, entries.count
        )
        indexed.append(index_list(info, entries))
        del entries, v
    snap = compile_snapshot(indexed)
    compile_s = time.perf_counter() - t0
    peak = rss_mb()
    del indexed
    gc.collect()
    trim_heap()
    steady = rss_mb() - base

    rng = random.Random(3)
    hosts, urls = make_data(int(os.environ["BENCH_HOSTS"]), int(os.environ["BENCH_URLS"]))
    blocked = [f"www.{h}" if i % 2 else h for i, h in enumerate(rng.choices(hosts, k=10_000))]
    clean = [f"{label(rng, 3)}.{label(rng, 9)}.example" for _ in range(90_000)]
    names = (blocked + clean) * max(1, queries // 100_000)
    rng.shuffle(names)
    del hosts
    gc.collect()
    verdict = snap.host_verdict
    host_rate = best_rate(names, verdict)
    clean_rate = best_rate(clean, verdict)
    assert sum(1 for n in names if verdict(n) is not None) >= len(names) // 10

    listed = rng.sample(urls, min(5_000, len(urls)))
    same_host_other = [u.rsplit("/", 1)[0] + "/other.html" for u in rng.choices(urls, k=20_000)]
    unrouted = [f"http://{label(rng, 10)}.example/{label(rng, 4)}/x.html" for _ in range(25_000)]
    checks = (listed + same_host_other + unrouted) * max(1, queries // 50_000)
    rng.shuffle(checks)
    url_rate = best_rate(checks, snap.url_verdict)
    # Every listed URL must be found; a same-host URL must not be (its path is not listed).
    assert sum(1 for u in checks if snap.url_verdict(u) is not None) == len(listed) * (
        len(checks) // (len(listed) + len(same_host_other) + len(unrouted))
    )
    return {
        "compile_s": compile_s,
        "snapshot_rss_mb": steady,
        "peak_rss_mb": peak - base,
        "snapshot_nbytes_mb": (snap.hosts.nbytes() + snap.urls.nbytes() + snap.routes.nbytes())
        / 1e6,
        "host_lookups_per_s": host_rate,
        "clean_host_lookups_per_s": clean_rate,
        "url_checks_per_s": url_rate,
    }


def best_rate(items: list[str], fn: Callable[[str], object], repeat: int = 3) -> float:
    """Return the best of `repeat` runs, in calls per second (the machine is shared)."""
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        for item in items:
            fn(item)
        best = max(best, len(items) / (time.perf_counter() - t))
    return best


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def query(port: int, name: str, qtype: int = 1, timeout: float = 2.0) -> bytes | None:
    """Send one query over UDP to 127.0.0.1:port; return the raw answer or None."""
    qid = random.randrange(65536)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    packet = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    packet += labels + b"\x00" + qtype.to_bytes(2, "big") + b"\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, ("127.0.0.1", port))
        try:
            return s.recv(4096)
        except TimeoutError:
            return None


def dns_answers(port: int, name: str) -> bool:
    """Say whether the server enforces on name: NXDOMAIN, or at least one record."""
    raw = query(port, name, timeout=0.2)
    return raw is not None and (raw[3] & 0x0F == 3 or raw[6:8] != b"\x00\x00")


UPSTREAM_ZONE = (
    '  local-zone: "bench.example." redirect\n'
    '  local-data: "bench.example. 3600 IN A 192.0.2.1"\n'
)  # the benches' upstream answers every name under bench.example, and nothing else


def write_rpz(path: Path, hosts: list[str], rdata: str) -> Path:
    """Write hosts as an RPZ zone: each host and its subdomains (*.host) get rdata."""
    with path.open("w") as f:
        f.write("$TTL 60\n@ SOA localhost. root.localhost. 1 3600 600 86400 60\n@ NS localhost.\n")
        for h in hosts:
            f.write(f"{h} {rdata}\n*.{h} {rdata}\n")
    return path


def unbound_conf(work: Path, name: str, port: int, body: str, forward: str = "127.0.0.1@1") -> Path:
    """Write a one-thread Unbound config on 127.0.0.1:port with extra lines in body.

    Everything Unbound cannot answer itself is forwarded to `forward`, on loopback (by
    default a closed port): a benchmark must never send a packet off this machine.
    """
    conf = work / f"{name}.conf"
    conf.write_text(f"""server:
  interface: 127.0.0.1
  port: {port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{work}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  num-threads: 1
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  so-rcvbuf: 4m
  msg-cache-size: 64m
  rrset-cache-size: 64m
{body}
forward-zone:
  name: "."
  forward-addr: {forward}
""")
    return conf


def unbound_rpz(work: Path, hosts: list[str]) -> dict[str, float] | None:
    """Load the hosts into Unbound as an RPZ zone; return load time and RSS."""
    exe = shutil.which("unbound") or "/usr/sbin/unbound"
    if not Path(exe).exists():
        subprocess.run([str(ROOT / "tools/ensure-deb"), "unbound:unbound"], check=False)
    if not Path(exe).exists():
        print("unbound not available: skipping the comparison", file=sys.stderr)
        return None
    zone = write_rpz(work / "rpz.zone", hosts, "CNAME .")
    port = free_port()
    conf = unbound_conf(
        work,
        "rpz",
        port,
        f'  module-config: "respip iterator"\nrpz:\n  name: rpz.bench\n  zonefile: "{zone}"\n',
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while not dns_answers(port, hosts[0]):
            if time.perf_counter() - t0 > 900:
                print("unbound did not answer within 900 s", file=sys.stderr)
                return None
            if proc.poll() is not None:
                print("unbound exited", file=sys.stderr)
                return None
            time.sleep(0.05)
        load = time.perf_counter() - t0
        return {"load_s": load, "rss_mb": rss_mb(proc.pid)}
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1_000_000)
    ap.add_argument("--urls", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1_000_000)
    ap.add_argument("--no-unbound", action="store_true")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child_blockd(a.child, a.queries)))
        return
    hosts, urls = make_data(a.hosts, a.urls)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_feeds(work, hosts, urls)
        env = {**os.environ, "BENCH_HOSTS": str(a.hosts), "BENCH_URLS": str(a.urls)}
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(work), "--queries", str(a.queries)],
            capture_output=True,
            text=True,
            env=env,
        )
        if out.returncode:
            sys.exit(f"blockd benchmark failed:\n{out.stderr}")
        blockd = json.loads(out.stdout)
        unbound = None if a.no_unbound else unbound_rpz(work, hosts)
    result = {"hosts": a.hosts, "urls": a.urls, "blockd": blockd, "unbound_rpz": unbound}
    (ROOT / "bench/out").mkdir(exist_ok=True)
    (ROOT / "bench/out/policy.json").write_text(json.dumps(result, indent=1))
    print(f"lists: {a.hosts} hosts + {a.urls} URLs (reserved names)")
    print(f"blockd compile (verify+parse+validate+index): {blockd['compile_s']:.2f} s")
    print(f"blockd snapshot data structures:              {blockd['snapshot_nbytes_mb']:.0f} MB")
    print(
        f"blockd snapshot resident memory:              {blockd['snapshot_rss_mb']:.0f} MB "
        f"(peak while compiling {blockd['peak_rss_mb']:.0f} MB)"
    )
    print(
        f"blockd host lookups, one core:                {blockd['host_lookups_per_s']:,.0f}/s "
        f"(10 % blocked; clean names only {blockd['clean_host_lookups_per_s']:,.0f}/s)"
    )
    print(f"blockd URL checks, one core:                  {blockd['url_checks_per_s']:,.0f}/s")
    if unbound:
        print(f"unbound RPZ load until answering:             {unbound['load_s']:.2f} s")
        print(f"unbound resident memory:                      {unbound['rss_mb']:.0f} MB")
        print(
            f"ratio load time blockd/unbound:               "
            f"{blockd['compile_s'] / unbound['load_s']:.2f}"
        )
        print(
            f"ratio memory blockd/unbound:                  "
            f"{blockd['snapshot_rss_mb'] / unbound['rss_mb']:.2f}"
        )


if __name__ == "__main__":
    main()
