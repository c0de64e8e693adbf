"""Benchmark the audit log: DNS throughput while 10,000 events/s are logged, and verification.

    make bench-audit     (or: .venv/bin/python bench/audit_bench.py)

1. Under load: two blockd processes run, one with the audit log on and one with it off,
   each with a pump inside publishing audited events at --rate per second (list syncs
   that found nothing new, the commonest audited event: with the log on, each becomes an
   entry). dnsperf measures blocked answers per second of each in turn, --rounds pairs of
   --seconds, the order alternating, the blockd not measured stopped (SIGSTOP; its log
   helper is left to finish what it has, then has nothing to do). dnsperf
   has CPU 0, blockd's main process CPU 1, its log helper either: on this shared 2-core
   machine, leaving placement to the scheduler moved single rounds by ±25 %. The ratio is
   the median of the rounds' ratios with a bootstrap 90 % interval: what auditing costs
   the DNS path. Answers per CPU-second of blockd and its helper together are reported
   too: what the log costs in CPU, whether or not the machine had a core to spare. The
   entries the log really took per second are read from its commits during the runs.
   With --runs N the whole measurement is repeated with fresh processes, and the pairs of
   all runs are pooled too: whole runs differ more than their intervals say.
2. Verification: a log of --entries entries is built, exported and verified with
   `blockd audit verify`'s code path; the time to verify is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from dns_bench import UNBOUND, blockd_config, cpu_seconds, dnsperf, ensure_tools  # noqa: E402
from policy_bench import free_port, make_data, query, unbound_conf, write_feeds  # noqa: E402

CPUS = sorted(os.sched_getaffinity(0))  # before any pinning

CHILD = """
import asyncio, signal, sys, time
from pathlib import Path
from blockd.app import App
from blockd.config import load
from blockd.daemon import freeze_startup
from blockd.events import FeedUnchanged

async def main() -> None:
    app = App(load(Path(sys.argv[1])))
    await app.start()
    await app.feeds.sync_all()
    freeze_startup()  # as `blockd run` does once started
    rate = float(sys.argv[2])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    start, sent, last = time.monotonic(), 0, time.monotonic()
    while not stop.is_set():  # the pump: audited events at `rate` per second, catching up
        now = time.monotonic()
        if now - last > 0.5:  # the benchmark stopped this process (SIGSTOP): start afresh
            start, sent = now, 0
        due, last = int(rate * (now - start)), now
        for _ in range(due - sent):
            app.bus.publish(FeedUnchanged("bench", "hosts", 1))
        sent = due
        await asyncio.sleep(0.01)
    await app.stop()  # as blockd stops: the log helper ends, the log is closed

asyncio.run(main())
"""


def config(work: Path, port: int, up_port: int, audit: bool) -> Path:
    """Write a blockd config for the load run, with the audit log on or off."""
    mode = "audit" if audit else "plain"
    extra = (
        f"[audit]\nenabled = {'true' if audit else 'false'}\ncheckpoint_interval = 5\n"
        'origin = "bench.example/blockd"\n'
    )
    return blockd_config(work / f"blockd-{mode}.toml", work, f"state-{mode}", port, up_port, extra)


def under_load(a: argparse.Namespace, work: Path) -> dict[str, object]:
    """Blocked answers/s with and without the audit log, the pump running in both."""
    hosts, urls = make_data(a.hosts, 10)
    write_feeds(work, hosts, urls)
    names = work / "blocked.txt"
    sample = random.Random(3).sample(hosts, min(20000, len(hosts)))
    names.write_text("".join(f"{h} A\n" for h in sample))
    up_port = free_port()
    up = unbound_conf(work, "upstream", up_port, "")
    upstream = subprocess.Popen([UNBOUND, "-c", str(up)])
    runs: dict[str, list[float]] = {"audit": [], "plain": []}
    per_cpu: dict[str, list[float]] = {"audit": [], "plain": []}  # blockd and its helper
    appended: list[float] = []
    stalled = 0  # rounds in which the log committed fewer than twice
    children: dict[str, tuple[subprocess.Popen[str], int]] = {}
    os.sched_setaffinity(0, {CPUS[0]})  # this process and dnsperf, its child, on one core
    try:
        for mode in ("audit", "plain"):  # both start once; the one not measured is stopped
            port = free_port()
            cfg = config(work, port, up_port, mode == "audit")
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(cfg), str(a.rate)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,  # its own process group, with the log helper
            )
            children[mode] = child, port
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            while query(port, hosts[0], timeout=0.5) is None:
                time.sleep(0.1)
            os.kill(child.pid, signal.SIGSTOP)
        for i in range(a.rounds):  # pairs, in alternating order: the machine's drift cancels
            for mode in ("audit", "plain") if i % 2 == 0 else ("plain", "audit"):
                child, port = children[mode]
                os.kill(child.pid, signal.SIGCONT)
                pin(child.pid)
                time.sleep(1.0)  # the pump and the log settle
                before = tree_cpu_seconds(child.pid)
                if mode == "audit":
                    with _Commits(work / "state-audit") as commits:
                        qps = dnsperf(port, names, a.seconds)
                    rate = commits.rate()
                    if rate is None:
                        stalled += 1
                    else:
                        appended.append(rate)
                else:
                    qps = dnsperf(port, names, a.seconds)
                runs[mode].append(qps)
                per_cpu[mode].append(qps * a.seconds / (tree_cpu_seconds(child.pid) - before))
                os.kill(child.pid, signal.SIGSTOP)  # not its helper: a batch in hand ends
    finally:
        for child, _ in children.values():
            os.killpg(child.pid, signal.SIGCONT)
            child.terminate()
            child.wait(timeout=30)
        upstream.terminate()
        upstream.wait(timeout=30)
    return {
        "rate_requested": a.rate,
        "entries_per_s": statistics.median(appended),
        "entries_per_s_runs": appended,
        "stalled_rounds": stalled,
        "blocked_qps_audit": statistics.median(runs["audit"]),
        "blocked_qps_plain": statistics.median(runs["plain"]),
        "ratio": paired(runs),
        "ratio_90ci": interval(runs),
        "per_cpu_s_audit": statistics.median(per_cpu["audit"]),
        "per_cpu_s_plain": statistics.median(per_cpu["plain"]),
        "per_cpu_ratio": paired(per_cpu),
        "per_cpu_ratio_90ci": interval(per_cpu),
        "runs": runs,
        "per_cpu_runs": per_cpu,
    }


def ratios(by_mode: dict[str, list[float]]) -> list[float]:
    """Return each round's audit/plain ratio."""
    return [a / p for a, p in zip(by_mode["audit"], by_mode["plain"], strict=True)]


def paired(by_mode: dict[str, list[float]]) -> float:
    """Return the median of the rounds' audit/plain ratios."""
    return statistics.median(ratios(by_mode))


def interval(by_mode: dict[str, list[float]], level: float = 0.9) -> tuple[float, float]:
    """Return a bootstrap confidence interval for the median ratio (seeded: reproducible)."""
    values, rng = ratios(by_mode), random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(2000))
    tail = int(len(medians) * (1 - level) / 2)
    return medians[tail], medians[-1 - tail]


def tree(pid: int) -> list[int]:
    """Return a process and all its descendants (the log helper)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir()
                     for c in (t / "children").read_text().split()]  # fmt: skip
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile
        found.append(p)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """Return the CPU time used by a process and all its descendants."""
    total = 0.0
    for p in tree(pid):
        try:
            total += cpu_seconds(p)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def pin(pid: int) -> None:
    """Put blockd on CPU 1 (dnsperf has CPU 0); its helpers may run on either.

    Without pinning, where the scheduler puts dnsperf and blockd moves single rounds by ±25 %,
    which would hide a 5 % difference. The helper taking its CPU time from either is the
    cost being measured.
    """
    for p in tree(pid):
        os.sched_setaffinity(p, {CPUS[-1]} if p == pid else set(CPUS))


class _Commits:
    """Watch the log's size while the DNS benchmark runs; give the entries written per second.

    The log commits a batch about once a second, so the size is a staircase: the rate is
    measured from the first step to the last one seen, which a plain before-and-after
    difference would miss by up to a batch.
    """

    def __init__(self, state: Path) -> None:
        self._db = sqlite3.connect(state / "audit/log.db", timeout=30, check_same_thread=False)
        self._steps: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _size(self) -> int:
        return int(self._db.execute("SELECT MAX(first + count) FROM batches").fetchone()[0] or 0)

    def _watch(self) -> None:
        last = self._size()
        while not self._stop.wait(0.05):
            size = self._size()
            if size != last:
                self._steps.append((time.monotonic(), size))
                last = size

    def __enter__(self) -> _Commits:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def rate(self) -> float | None:
        """Return entries per second between the first and the last commit seen.

        None if fewer than two commits were seen: the log fell behind in this round.
        """
        self._db.close()
        if len(self._steps) < 2:
            return None
        (t0, n0), (t1, n1) = self._steps[0], self._steps[-1]
        return (n1 - n0) / (t1 - t0)


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


def pooled(loads: list[dict[str, object]]) -> dict[str, object]:
    """Pool the pairs of several runs: the median ratio and its interval over all of them."""
    runs: dict[str, list[float]] = {"audit": [], "plain": []}
    per_cpu: dict[str, list[float]] = {"audit": [], "plain": []}
    for load in loads:
        for mode in runs:
            runs[mode] += cast(dict[str, list[float]], load["runs"])[mode]
            per_cpu[mode] += cast(dict[str, list[float]], load["per_cpu_runs"])[mode]
    return {
        "pairs": len(runs["audit"]),
        "ratio": paired(runs),
        "ratio_90ci": interval(runs),
        "per_cpu_ratio": paired(per_cpu),
        "per_cpu_ratio_90ci": interval(per_cpu),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=10_000, help="audited events per second")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=24)
    ap.add_argument("--runs", type=int, default=1, help="whole runs, fresh processes each")
    ap.add_argument("--entries", type=int, default=1_000_000, help="log size to verify")
    a = ap.parse_args()
    if a.seconds < 2:
        ap.error("--seconds must be 2 or more: the log commits about once a second")
    ensure_tools()
    with tempfile.TemporaryDirectory() as tmp:
        loads = []
        for run in range(a.runs):
            work = Path(tmp) / f"run{run}"
            work.mkdir()
            loads.append(under_load(a, work))
        verify = verification(a.entries, Path(tmp))
    pool = pooled(loads)
    report = {"under_load": loads, "pooled": pool, "verification": verify}
    (ROOT / "bench/out").mkdir(exist_ok=True)
    (ROOT / "bench/out/audit.json").write_text(json.dumps(report, indent=1))

    def ci(load: dict[str, object], key: str, pairs: int) -> str:
        low, high = cast(tuple[float, float], load[key])
        return f"(90% interval {low:.3f}..{high:.3f}, {pairs} pairs)"

    for load in loads:
        print(
            f"audited events requested {a.rate:,.0f}/s; log took {load['entries_per_s']:,.0f}/s"
            f" (rounds with fewer than two commits: {load['stalled_rounds']})"
        )
        print(
            f"blocked answers/s  audit on {load['blocked_qps_audit']:,.0f}   off "
            f"{load['blocked_qps_plain']:,.0f}   ratio {load['ratio']:.3f} "
            f"{ci(load, 'ratio_90ci', a.rounds)}"
        )
        print(
            f"blocked answers per CPU-second of blockd and its helper  audit on "
            f"{load['per_cpu_s_audit']:,.0f}   off {load['per_cpu_s_plain']:,.0f}   "
            f"ratio {load['per_cpu_ratio']:.3f} {ci(load, 'per_cpu_ratio_90ci', a.rounds)}"
        )
    if a.runs > 1:
        pairs = cast(int, pool["pairs"])
        print(
            f"pooled: ratio {pool['ratio']:.3f} {ci(pool, 'ratio_90ci', pairs)}; per CPU-second "
            f"{pool['per_cpu_ratio']:.3f} {ci(pool, 'per_cpu_ratio_90ci', pairs)}"
        )
    print(
        f"verify {verify['entries']:,} entries: {verify['verify_s']:.1f} s "
        f"(export {verify['export_s']:.1f} s, bundle {verify['bundle_mb']:.0f} MB)"
    )


if __name__ == "__main__":
    main()
