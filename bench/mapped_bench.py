"""Measure what N worker processes cost when they share one mapped policy snapshot.

    make bench-mapped   (or: .venv/bin/python bench/mapped_bench.py --hosts 1000000 --workers 4)

Compiles N host entries and M URL entries (reserved names only), publishes the snapshot
file, then starts worker processes that each `open_mapped` it (which reads every page: the
checksum) and answer lookups, and reads their proportional set size (PSS, from
/proc/PID/smaps_rollup) while they wait. Three ways to run the workers:

- mapped: fresh interpreters that map the file (what issue 19's workers will do);
- copied: fresh interpreters that copy the arrays into their own memory (one policy copy per
  process, as N independent blockd processes would hold);
- forked: workers forked from one supervisor stand-in that imported blockd first (the
  interpreter's pages are shared too); totals include the supervisor stand-in.

The issue's goal: the total PSS of N mapped workers within 1.3x of one worker. Figures are
printed as JSON; read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from array import array
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blockd.policy import suffixes  # noqa: E402
from blockd.policy.index import KeySet  # noqa: E402
from blockd.policy.mapped import open_mapped  # noqa: E402
from blockd.policy.snapshot import PolicySnapshot  # noqa: E402


def pss_kb(pid: int) -> int:
    """Return the proportional set size of a process, in kB."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def mapping_pss_kb(pid: int, path: Path) -> int:
    """Return the PSS of a process's mappings of path, in kB."""
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(" ", 1)[0]
            if "-" in first and not first.endswith(":"):
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Pss:"):
                total += int(line.split()[1])
    return total


# -- the worker side -------------------------------------------------------------------


def copied(snap: PolicySnapshot) -> PolicySnapshot:
    """Return snap with its arrays copied into this process's memory (one copy each)."""

    def own(keys: KeySet) -> KeySet:
        p = keys.parts()
        return KeySet.from_parts(
            type(p)(
                array("Q", bytes(p.digests)),
                array("H", bytes(p.owners)),
                array("I", bytes(p.starts)),
                bytes(p.filter),
                p.mask,
                p.shift,
                p.needs_sha,
            )
        )

    hosts, routes, urls = own(snap.hosts), own(snap.routes), own(snap.urls)
    return PolicySnapshot(
        snap.generation,
        snap.created_at,
        snap.lists,
        hosts,
        routes,
        urls,
        snap.ref_key,
        snap.never_block,
        snap._probes,
    )


def serve(path: Path, queries: Path, copy: bool) -> None:
    """Open the snapshot, answer the queries, say ready, and wait for stdin to close."""
    snap = open_mapped(path)
    if copy:
        snap = copied(snap)
    work = json.loads(queries.read_text())
    hosts, urls = work["hosts"], work["urls"]
    start = time.perf_counter()
    blocked = sum(snap.host_verdict(h) is not None for h in hosts)
    matched = sum(snap.url_verdict(u) is not None for u in urls)
    took = time.perf_counter() - start
    fast = not snap.hosts.needs_sha
    report = {
        "blocked": blocked,
        "urls": matched,
        "lookups_per_s": round((len(hosts) + len(urls)) / took),
        "fast": fast,
    }
    del work, hosts, urls  # a worker keeps no queries: let them not count
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    print(json.dumps(report), flush=True)
    sys.stdin.read()


def pool(path: Path, queries: Path, workers: int) -> None:
    """Act as a supervisor stand-in: fork workers that serve, print their pids, wait."""
    # What a supervisor would load before forking, so the children share it: the public
    # suffix rules every lookup that matches consults.
    suffixes.fingerprint()
    suffixes.is_public_suffix("warm.example")
    gc.freeze()  # keep the imported modules' pages shared with the children
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                serve(path, queries, copy=False)
            finally:
                os._exit(0)
        pids.append(pid)
    print(json.dumps({"pids": pids}), flush=True)
    sys.stdin.read()
    for pid in pids:
        os.waitpid(pid, 0)


# -- the measuring side ----------------------------------------------------------------


def spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def measure(path: Path, queries: Path, workers: int, mode: str) -> dict[str, object]:
    """Start workers in mode, wait until all answered, and read their memory."""
    procs: list[subprocess.Popen[str]] = []
    pids: list[int] = []
    reports: list[dict[str, object]] = []
    if mode == "forked":
        supervisor = spawn(["--pool", str(workers), str(path), str(queries)])
        assert supervisor.stdout is not None
        procs.append(supervisor)
        # the supervisor's pid list and the children's reports share one pipe, in any order
        while not pids or len(reports) < len(pids):
            line = json.loads(supervisor.stdout.readline())
            if "pids" in line:
                pids = line["pids"]
            else:
                reports.append(line)
        measured = [supervisor.pid, *pids]
    else:
        for _ in range(workers):
            flag = ["--copy"] if mode == "copied" else []
            procs.append(spawn(["--serve", str(path), str(queries), *flag]))
        for p in procs:
            assert p.stdout is not None
            reports.append(json.loads(p.stdout.readline()))
        measured = [p.pid for p in procs]
    each = [pss_kb(pid) for pid in measured]
    total = sum(each)
    policy = sum(mapping_pss_kb(pid, path) for pid in measured)
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
        p.wait()
    return {
        "processes": len(measured),
        "pss_total_mb": round(total / 1024, 1),
        "pss_of_snapshot_file_mb": round(policy / 1024, 1),
        "pss_per_process_mb": [round(kb / 1024, 1) for kb in each],
        "lookups_per_s": [r["lookups_per_s"] for r in reports],
        "fast_filters": all(r["fast"] for r in reports),
        "blocked": reports[0]["blocked"],
    }


def make_data(hosts: int, url_count: int) -> tuple[list[str], list[str]]:
    """Return reserved-name host entries and URL entries (as bench/policy_bench.py does)."""
    rng = random.Random(7)

    def label(n: int) -> str:
        return "".join(rng.choices(string.ascii_lowercase + string.digits, k=n))

    tlds = ["example", "test", "invalid"]
    host_entries = [f"{label(8)}{i}.{label(6)}.{tlds[i % 3]}" for i in range(hosts)]
    url_hosts = [f"u{label(6)}{i}.example" for i in range(max(1, url_count // 5))]
    url_entries = [
        f"http://{url_hosts[i % len(url_hosts)]}/{label(5)}/{label(7)}/p{i}.html"
        for i in range(url_count)
    ]
    return host_entries, url_entries


def compile_and_publish(hosts: int, url_count: int, out: Path) -> tuple[Path, Path, float]:
    """Compile the bench lists, publish, write queries; return (file, queries, seconds)."""
    from blockd.policy import entries as entry_rules
    from blockd.policy.compile import compile_snapshot, index_list
    from blockd.policy.mapped import publish
    from blockd.policy.snapshot import ListInfo
    from blockd.policy.verdict import ListSource

    host_entries, url_entries = make_data(hosts, url_count)
    start = time.perf_counter()
    lists = []
    for name, fmt, lines in (("hosts", "hosts", host_entries), ("urls", "urls", url_entries)):
        entries = entry_rules.build(fmt, lines)  # type: ignore[arg-type]
        stamp = datetime.now(UTC)
        info = ListInfo(ListSource("bench", name, 1), stamp, stamp, entries.count)
        lists.append(index_list(info, entries))
    path = publish(compile_snapshot(lists), out / "policy")
    took = time.perf_counter() - start
    rng = random.Random(11)
    sample = rng.sample(host_entries, min(20_000, len(host_entries)))
    near = [h.split(".", 1)[1] for h in sample]  # the parent of an entry: not blocked
    url_sample = rng.sample(url_entries, min(5_000, len(url_entries)))
    queries = {
        "hosts": [*sample, *(f"www.{h}" for h in sample), *near],
        "urls": [*url_sample, *(u + "x" for u in url_sample)],
    }
    queries["hosts"] += [f"nothing{i}.invalid" for i in range(20_000)]
    qpath = out / "queries.json"
    qpath.write_text(json.dumps(queries))
    return path, qpath, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1_000_000)
    parser.add_argument("--urls", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--serve", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pool", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--copy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve[0], args.serve[1], copy=args.copy)
    if args.pool:
        return pool(Path(args.pool[1]), Path(args.pool[2]), int(args.pool[0]))
    if "PYTHONHASHSEED" not in os.environ:
        # Fresh worker interpreters keep the fast filters only with the publisher's seed.
        seed = str(random.randrange(1, 1 << 32))
        os.execve(
            sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": seed}
        )
    with tempfile.TemporaryDirectory(prefix="blockd-mapped-") as tmp:
        path, queries, took = compile_and_publish(args.hosts, args.urls, Path(tmp))
        gc.collect()
        result: dict[str, object] = {
            "hosts": args.hosts,
            "urls": args.urls,
            "compile_and_publish_s": round(took, 1),
            "file_mb": round(path.stat().st_size / 2**20, 1),
        }
        for mode in ("mapped", "copied", "forked"):
            one = measure(path, queries, 1, mode)
            many = measure(path, queries, args.workers, mode)
            ratio = float(many["pss_total_mb"]) / float(one["pss_total_mb"])  # type: ignore[arg-type]
            result[mode] = {"1": one, str(args.workers): many, "ratio": round(ratio, 2)}
            print(mode, json.dumps(result[mode]), file=sys.stderr, flush=True)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
