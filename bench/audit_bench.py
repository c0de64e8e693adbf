"""Benchmark the audit log: DNS throughput while 10,000 events/s are logged, and verification.

    make bench-audit     (or: .venv/bin/python bench/audit_bench.py)

1. Under load: blockd runs (in a child process, one core's worth) with the audit log on,
   and a pump inside it publishes audited events at --rate per second (list syncs that found
   nothing new, the commonest audited event: each becomes a log entry) while dnsperf
   measures blocked answers per second. The same run is repeated with the audit log off
   (the pump still publishing), interleaved, medians reported: the ratio is what auditing
   costs the DNS path. The entries the log really took per second are read back from it.
2. Verification: a log of --entries entries is built, exported and verified with
   `blockd audit verify`'s code path; the time to verify is reported.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from dns_bench import UNBOUND, blockd_config, dnsperf, ensure_tools  # noqa: E402
from policy_bench import free_port, make_data, query, unbound_conf, write_feeds  # noqa: E402

CHILD = """
import asyncio, sys, time
from pathlib import Path
from blockd.app import App
from blockd.config import load
from blockd.events import FeedUnchanged

async def main() -> None:
    app = App(load(Path(sys.argv[1])))
    await app.start()
    await app.feeds.sync_all()
    rate = float(sys.argv[2])
    print("ready", flush=True)
    start, sent = time.monotonic(), 0
    while True:  # the pump: audited events at `rate` per second, catching up when late
        due = int(rate * (time.monotonic() - start))
        for _ in range(due - sent):
            app.bus.publish(FeedUnchanged("bench", "hosts", 1))
        sent = due
        await asyncio.sleep(0.01)

asyncio.run(main())
"""


def config(work: Path, port: int, up_port: int, audit: bool) -> Path:
    """Write a blockd config for the load run, with the audit log on or off."""
    mode = "audit" if audit else "plain"
    extra = f"[audit]\nenabled = {'true' if audit else 'false'}\ncheckpoint_interval = 5\n"
    return blockd_config(work / f"blockd-{mode}.toml", work, f"state-{mode}", port, up_port, extra)


def under_load(a: argparse.Namespace, work: Path) -> dict[str, object]:
    """Blocked answers/s with and without the audit log, the pump running in both."""
    hosts, urls = make_data(a.hosts, 10)
    write_feeds(work, hosts, urls)
    up_port = free_port()
    up = unbound_conf(work, "upstream", up_port, "")
    upstream = subprocess.Popen([UNBOUND, "-c", str(up)])
    names = work / "blocked.txt"
    names.write_text("".join(f"{h} A\n" for h in random.Random(3).sample(hosts, 20000)))
    runs: dict[str, list[float]] = {"audit": [], "plain": []}
    appended: list[float] = []
    try:
        for _ in range(a.rounds):
            for mode in ("audit", "plain"):
                port = free_port()
                cfg = config(work, port, up_port, mode == "audit")
                child = subprocess.Popen(
                    [sys.executable, "-c", CHILD, str(cfg), str(a.rate)],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                try:
                    assert child.stdout is not None
                    assert child.stdout.readline().strip() == "ready"
                    while query(port, hosts[0], timeout=0.5) is None:
                        time.sleep(0.1)
                    size0 = _log_size(work / "state-audit") if mode == "audit" else 0
                    t0 = time.monotonic()
                    runs[mode].append(dnsperf(port, names, a.seconds))
                    if mode == "audit":
                        took = _log_size(work / "state-audit") - size0
                        appended.append(took / (time.monotonic() - t0))
                finally:
                    child.terminate()
                    child.wait(timeout=30)
    finally:
        upstream.terminate()
        upstream.wait(timeout=30)
    audit, plain = statistics.median(runs["audit"]), statistics.median(runs["plain"])
    return {
        "rate_requested": a.rate,
        "entries_per_s": statistics.median(appended),
        "blocked_qps_audit": audit,
        "blocked_qps_plain": plain,
        "ratio": audit / plain,
        "runs": runs,
    }


def _log_size(state: Path) -> int:
    db = sqlite3.connect(state / "audit/log.db", timeout=30)
    try:
        return int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
    finally:
        db.close()


def verification(entries: int, work: Path) -> dict[str, float]:
    """Build a log of `entries` entries; time export and verification."""
    from blockd.audit import bundle
    from blockd.audit.log import open_log

    log = open_log(work / "big", "bench.example/log", "bench")
    t = time.monotonic()
    batch = 10_000
    for start in range(0, entries, batch):
        log.append(
            [
                {"time": "2026-11-23T00:00:00Z", "type": "block-counts", "n": i, "list": "hosts"}
                for i in range(start, min(entries, start + batch))
            ]
        )
        if start % 200_000 == 0:
            log.sign_checkpoint("2026-11-23T00:00:00Z")
    log.sign_checkpoint("2026-11-23T00:00:01Z")
    build = time.monotonic() - t
    t = time.monotonic()
    data = bundle.dumps(bundle.export(log, 0, entries))
    export = time.monotonic() - t
    t = time.monotonic()
    verdict = bundle.verify(json.loads(data), log.signer.verifier)
    verify = time.monotonic() - t
    assert verdict.ok, verdict.message
    return {"entries": entries, "build_s": build, "export_s": export, "verify_s": verify,
            "bundle_mb": len(data) / 1e6}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=10_000, help="audited events per second")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--entries", type=int, default=1_000_000, help="log size to verify")
    a = ap.parse_args()
    ensure_tools()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        load = under_load(a, work)
        verify = verification(a.entries, work)
    report = {"under_load": load, "verification": verify}
    (ROOT / "bench/out").mkdir(exist_ok=True)
    (ROOT / "bench/out/audit.json").write_text(json.dumps(report, indent=1))
    print(f"audited events requested {a.rate:,.0f}/s; log took {load['entries_per_s']:,.0f}/s")
    print(
        f"blocked answers/s  audit on {load['blocked_qps_audit']:,.0f}   off "
        f"{load['blocked_qps_plain']:,.0f}   ratio {load['ratio']:.3f}"
    )
    print(
        f"verify {verify['entries']:,} entries: {verify['verify_s']:.1f} s "
        f"(export {verify['export_s']:.1f} s, bundle {verify['bundle_mb']:.0f} MB)"
    )


if __name__ == "__main__":
    main()
