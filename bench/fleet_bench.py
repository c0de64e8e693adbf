"""Fleet propagation: from the syncer accepting a new list version to every node enforcing it.

    make bench-fleet   (or: .venv/bin/python bench/fleet_bench.py --nodes 10 --entries 100000)

Starts, on loopback, one redis-server (Debian's, installed when missing; nothing saved) and
N `blockd run` processes, each with its own configuration and state directory, `[daemon]
workers = 1`, a DNS listener on a port picked here and the same `[fleet]` Redis and prefix
(lease and heartbeat at their defaults unless given). The authority's list is a file://
source of E host entries (reserved names) signed with the bench's demo key. Each update:

1. signs version v: the entries of v-1 plus one new name, `update-<v>.fleet-bench.example`
   (a change of one entry: never quarantined);
2. asks the syncer (the node named in `<prefix>:lease`) to sync now: `blockd sync` over its
   control socket, as an operator would;
3. times, on this machine's clock:
   - accepted: the `timestamp` of the syncer's log line `accepted <list> v<v>` (written when
     its feed sync has verified, validated and indexed v: FeedAccepted, before it compiles);
   - published: the syncer's log line `fleet: published <list> v<v> to the fleet` (the Lua
     script ran: pointer moved, notification sent);
   - enforced by a node: when the first answer from that node's DNS listener that blocks a
     fresh name under the new entry (`q<n>.update-<v>.fleet-bench.example`, never cached)
     is received. Every node still waiting is asked every `--poll` seconds, so a node's
     time is late by at most that, plus the time to answer;
   - reported by a node: the `time` of the first heartbeat in Redis (`<prefix>:node:<id>`)
     that shows v (a node beats at once after activating a policy).
   The update is done when every node's DNS blocks the new name; the next one starts after
   `--pause` seconds.

Reported: p50 and p99 (nearest rank: with fewer than 100 updates, p99 is the slowest) of
accepted -> every node enforcing (the headline), its parts, and the Redis memory each
published version takes (MEMORY USAGE of its key, and the growth of INFO used_memory per
update: superseded versions are kept an hour). The machine's load is recorded beside the
figures: load averages, and how busy the CPUs were during the updates, by the fleet and by
everything else. Timings are printed, never asserted. Every process started here is stopped
on the way out (also on Ctrl-C, SIGTERM or a failure), and each is told by the kernel to
stop if this script dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from types import FrameType

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from dns_bench import NOTICE  # noqa: E402
from policy_bench import KEY, NOW, free_port, make_data  # noqa: E402

from blockd.feeds.authoring import list_payload, sign_list, sign_trust  # noqa: E402
from blockd.feeds.model import Authority, Regulator, TrustPolicy  # noqa: E402

AUTHORITY, LIST = "bench", "hosts"
REF = f"{AUTHORITY}/{LIST}"
PREFIX = "fleetbench"
PROBE = "update-{}.fleet-bench.example"
START_WITHIN = 600.0  # seconds for every node to enforce v1 after start
UPDATE_WITHIN = 120.0  # seconds for one update to reach every node
PR_SET_PDEATHSIG = 1


# -- processes ---------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGTERM if the bench dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Processes:
    """Every process the bench starts; stop() ends them all (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        """Start with none."""
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """Start cmd in its own session (Ctrl-C reaches the bench only), output to log."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                list(cmd),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # the bench starts no threads
            )
        self.started.append(proc)
        return proc

    def stop(self, within: float = 20.0) -> None:
        """Stop every process started, waiting at most `within` seconds before killing."""
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + within
        for proc in self.started:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.started.clear()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: the processes stop


def ensure_redis() -> str:
    """Return redis-server's path, installing Debian's package when missing."""
    subprocess.run([str(ROOT / "tools/ensure-deb"), "redis-server:redis-server"], check=True)
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if not found:
        raise SystemExit("redis-server not found after installing Debian's redis-server")
    return found


def start_redis(procs: Processes, binary: str, work: Path) -> int:
    """Start redis-server on a free loopback port (nothing saved); return the port.

    A port found free can be taken by another program before redis-server binds it: then
    redis-server exits, and another port is tried.
    """
    (work / "redis").mkdir()
    log = work / "redis.log"
    for _ in range(5):
        port = free_port()
        argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(work / "redis")]
        proc = procs.start(argv, log)
        deadline = time.monotonic() + 30
        r = redis.Redis(port=port)
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if r.ping():
                    return port
            except redis.ConnectionError:
                time.sleep(0.05)
        if proc.poll() is None:
            break  # running but not answering: not a lost port
    tail = log.read_text(errors="replace")[-2000:]
    raise SystemExit(f"redis-server did not answer on port {port}:\n{tail}")


# -- the authority -----------------------------------------------------------------------------


def write_trust(work: Path, entries: int) -> None:
    """Sign the trust policy that authorises the bench key for bench/hosts."""
    trust = TrustPolicy(
        version=1,
        issued_at=NOW - timedelta(days=1),
        expires=NOW + timedelta(days=30),
        regulator=Regulator(name="bench", keys=[KEY.public.b64], threshold=1),
        authorities=[
            Authority(
                id=AUTHORITY,
                name="bench",
                keys=[KEY.public.b64],
                threshold=1,
                lists=[LIST],
                formats=["hosts"],
                max_entries=max(1000, 2 * entries),
                max_bytes=1 << 30,
                max_age_seconds=86400,
            )
        ],
    )
    (work / "trust.dsse").write_bytes(sign_trust(trust, [KEY]))


def publish(feeds: Path, version: int, base: list[str]) -> None:
    """Sign version `version` (base plus one new name per version) at the source."""
    entries = [*base, *(PROBE.format(v) for v in range(1, version + 1))]
    payload, body = list_payload(
        AUTHORITY,
        LIST,
        version,
        "hosts",
        entries,
        issued_at=NOW - timedelta(hours=1),
        expires=NOW + timedelta(days=7),
        body_name=f"{LIST}-{version}.txt",
    )
    assert body is not None
    (feeds / f"{LIST}-{version}.txt").write_bytes(body)
    envelope = feeds / f"{LIST}.dsse.new"
    envelope.write_bytes(sign_list(payload, [KEY]))
    envelope.replace(feeds / f"{LIST}.dsse")  # the source changes in one step


# -- the nodes ---------------------------------------------------------------------------------


@dataclass
class Node:
    """One blockd process of the fleet."""

    name: str
    config: Path
    dns_port: int
    log: Path
    pid: int = 0


def node_config(work: Path, name: str, redis_port: int, a: argparse.Namespace) -> Node:
    """Write a node's configuration: its own state, DNS on a free port, the shared Redis."""
    port = free_port()
    directory = work / name
    directory.mkdir()
    config = directory / "blockd.toml"
    config.write_text(f"""[trust]
pinned = "{work}/trust.dsse"
[state]
dir = "{directory}/state"
[dns]
listen = ["127.0.0.1:{port}"]
upstreams = ["127.0.0.1:{a.closed_port}"]
operator = "bench"
attempt_timeout = 0.2
total_timeout = 0.4
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
workers = 1
[fleet]
redis = "redis://127.0.0.1:{redis_port}/0"
node = "{name}"
prefix = "{PREFIX}"
lease = {a.lease:g}
heartbeat = {a.heartbeat:g}
[[lists]]
authority = "{AUTHORITY}"
list = "{LIST}"
source = "file://{work}/feeds/{LIST}.dsse"
interval = 86400
""")
    return Node(name, config, port, directory / "blockd.log")


def blockd(*args: str) -> list[str]:
    """Return the command line of a blockd command run by this interpreter."""
    return [sys.executable, "-m", "blockd.cli", *args]


# -- asking the nodes --------------------------------------------------------------------------


def dns_query(qid: int, name: str) -> bytes:
    """Return a DNS query for name's A record."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    header = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    return header + labels + b"\x00\x00\x01\x00\x01"


def blocked(raw: bytes) -> bool:
    """Say whether an answer is blockd's block answer (NOERROR, A 127.0.0.1)."""
    return len(raw) > 12 and raw[3] & 0x0F == 0 and raw[7] > 0 and b"\x7f\x00\x00\x01" in raw


class Asker:
    """One UDP socket per node; asks every waiting node a fresh name under a probe."""

    def __init__(self, nodes: list[Node]) -> None:
        """Open the sockets."""
        self.nodes = nodes
        self.sel = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        for i, node in enumerate(nodes):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.connect(("127.0.0.1", node.dns_port))
            self.sel.register(s, selectors.EVENT_READ, i)
            self.socks.append(s)
        self.n = 0

    def close(self) -> None:
        """Close the sockets."""
        self.sel.close()
        for s in self.socks:
            s.close()

    def until_blocked(self, probe: str, poll: float, limit: float) -> dict[str, float]:
        """Return, for every node, the time its first answer blocking probe was received."""
        got: dict[str, float] = {}
        deadline = time.monotonic() + limit
        while len(got) < len(self.nodes):
            if time.monotonic() > deadline:
                missing = sorted({n.name for n in self.nodes} - set(got))
                raise SystemExit(f"{probe}: not blocked within {limit:g} s by {missing}")
            for i, node in enumerate(self.nodes):
                if node.name not in got:
                    self.n += 1
                    with contextlib.suppress(OSError):  # refused: not listening yet
                        self.socks[i].send(dns_query(self.n & 0xFFFF, f"q{self.n}.{probe}"))
            round_end = time.monotonic() + poll
            while (left := round_end - time.monotonic()) > 0:
                for key, _ in self.sel.select(left):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    with contextlib.suppress(OSError):
                        while True:
                            raw = sock.recv(4096)
                            name = self.nodes[int(key.data)].name
                            if name not in got and blocked(raw):
                                got[name] = time.time()
        return got


def log_times(log: Path, patterns: dict[str, str]) -> dict[str, float]:
    """Return the Unix time of the first JSON log line whose event matches each pattern."""
    compiled = {key: re.compile(p) for key, p in patterns.items()}
    found: dict[str, float] = {}
    with log.open("rb") as f:
        for line in f:
            try:
                entry = json.loads(line)
                event, stamp = entry["event"], entry["timestamp"]
            except (ValueError, KeyError, TypeError):
                continue
            for key, pattern in compiled.items():
                if key not in found and isinstance(event, str) and pattern.match(event):
                    found[key] = _unix(stamp)
    return found


def activated(v: int) -> str:
    """Return the pattern of a node's log line saying its policy with v is in force."""
    return rf"policy \d+ active: (.*, )?{re.escape(REF)} v{v}[;,]"


def _unix(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def first_beats(r: redis.Redis, nodes: list[Node], version: int, limit: float) -> dict[str, float]:
    """Return the time of each node's heartbeat showing version (the first one read)."""
    out: dict[str, float] = {}
    deadline = time.monotonic() + limit
    while len(out) < len(nodes) and time.monotonic() < deadline:
        for node in nodes:
            if node.name in out:
                continue
            raw = r.hmget(f"{PREFIX}:node:{node.name}", ["versions", "time"])
            versions, stamp = raw[0], raw[1]
            if (
                isinstance(versions, bytes)
                and isinstance(stamp, bytes)
                and json.loads(versions).get(REF) == version
            ):
                out[node.name] = float(stamp)
        time.sleep(0.02)
    return out


def syncer(r: redis.Redis, nodes: list[Node]) -> Node:
    """Return the node holding the lease now."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lease = r.get(f"{PREFIX}:lease")
        if isinstance(lease, bytes):
            holder = lease.decode().partition(" ")[2]
            for node in nodes:
                if node.name == holder:
                    return node
        time.sleep(0.1)
    raise SystemExit("no node took the syncer lease within 60 s")


# -- the machine -------------------------------------------------------------------------------


def cpu_ticks() -> tuple[int, int]:
    """Return (busy, total) jiffies of every CPU since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return total - idle, total


def process_ticks(pids: Sequence[int]) -> int:
    """Return the CPU jiffies (user + system, reaped children too) the processes used."""
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:15])
    return total


@dataclass
class Load:
    """How loaded the machine was while the updates ran."""

    cpus: int
    loadavg_start: tuple[float, float, float]
    loadavg_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    busy: float = 0.0  # of all CPUs, 0..1
    fleet: float = 0.0  # of all CPUs: the nodes, Redis and the bench itself
    _start: tuple[int, int, int] = field(default=(0, 0, 0), repr=False)

    @classmethod
    def begin(cls, pids: Sequence[int]) -> Load:
        """Start recording."""
        load = cls(os.cpu_count() or 1, os.getloadavg())
        busy, total = cpu_ticks()
        load._start = (busy, total, process_ticks([*pids, os.getpid()]))
        return load

    def end(self, pids: Sequence[int]) -> None:
        """Stop recording."""
        busy, total = cpu_ticks()
        ours = process_ticks([*pids, os.getpid()])
        span = max(1, total - self._start[1])
        self.busy = (busy - self._start[0]) / span
        self.fleet = min(self.busy, (ours - self._start[2]) / span)
        self.loadavg_end = os.getloadavg()


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Update:
    """The times of one update (Unix seconds)."""

    version: int
    asked: float  # `blockd sync` started
    accepted: float  # the syncer's policy with the version is in force (its log line)
    published: float  # the syncer published it to Redis (its log line)
    active: dict[str, float]  # node -> its policy with the version in force (its log line)
    enforced: dict[str, float]  # node -> first answer blocking the new name received
    reported: dict[str, float]  # node -> first heartbeat showing the version
    key_bytes: int  # MEMORY USAGE of the version's key
    used_memory_delta: int  # INFO used_memory after the update minus before

    @property
    def all_enforced(self) -> float:
        """Return seconds from accepted to the last node enforcing."""
        return max(self.enforced.values()) - self.accepted


def run(a: argparse.Namespace, work: Path, procs: Processes) -> tuple[list[Update], Load]:
    """Start Redis and the fleet, run the updates, return their times and the load."""
    binary = ensure_redis()
    redis_port = start_redis(procs, binary, work)
    r = redis.Redis(port=redis_port)
    a.closed_port = free_port()  # the nodes' upstream: nothing listens, nothing leaves
    feeds = work / "feeds"
    feeds.mkdir()
    write_trust(feeds, a.entries)
    (work / "trust.dsse").write_bytes((feeds / "trust.dsse").read_bytes())
    base, _ = make_data(a.entries, 0)
    publish(feeds, 1, base)
    nodes = [node_config(work, f"node{i:02d}", redis_port, a) for i in range(a.nodes)]
    t0 = time.monotonic()
    for node in nodes:
        cmd = blockd("run", "--config", str(node.config), "--log-format", "json")
        node.pid = procs.start(cmd, node.log).pid
    asker = Asker(nodes)
    try:
        asker.until_blocked(PROBE.format(1), 0.2, START_WITHIN)
        print(
            f"{a.nodes} nodes enforce v1 ({a.entries:,} entries) {time.monotonic() - t0:.1f} s"
            " after start",
            flush=True,
        )
        leader = syncer(r, nodes)
        print(f"syncer: {leader.name}", flush=True)
        time.sleep(a.pause)
        pids = [n.pid for n in nodes] + [procs.started[0].pid]
        load = Load.begin(pids)
        updates = [
            one_update(a, r, asker, nodes, leader, feeds, base, v) for v in range(2, a.updates + 2)
        ]
        load.end(pids)
    finally:
        asker.close()
        r.close()
    return updates, load


def one_update(
    a: argparse.Namespace,
    r: redis.Redis,
    asker: Asker,
    nodes: list[Node],
    leader: Node,
    feeds: Path,
    base: list[str],
    v: int,
) -> Update:
    """Publish v at the source, have the syncer sync, time every node enforcing it."""
    publish(feeds, v, base)
    time.sleep(a.pause)
    before = int(r.info("memory")["used_memory"])
    asked = time.time()
    sync = subprocess.Popen(
        blockd("sync", "--config", str(leader.config)),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    try:
        enforced = asker.until_blocked(PROBE.format(v), a.poll, UPDATE_WITHIN)
        out = sync.communicate(timeout=UPDATE_WITHIN)[0].decode(errors="replace")
    finally:
        if sync.poll() is None:
            sync.kill()
            sync.wait()
    if sync.returncode != 0:
        raise SystemExit(f"blockd sync exited {sync.returncode}:\n{out}")
    reported = first_beats(r, nodes, v, 3 * a.heartbeat)
    used = int(r.info("memory")["used_memory"]) - before
    usage = r.memory_usage(f"{PREFIX}:list:{REF}:{v}", samples=0)
    published = f"fleet: published {re.escape(REF)} v{v} to the fleet"
    times = log_times(leader.log, {"accepted": activated(v), "published": published})
    if len(times) != 2:
        raise SystemExit(f"{leader.log}: no line saying the syncer put v{v} in force or published")
    active = {}
    for node in nodes:
        found = log_times(node.log, {"active": activated(v)})
        if "active" not in found:
            raise SystemExit(f"{node.log}: no line saying v{v} is in force")
        active[node.name] = found["active"]
    u = Update(
        v,
        asked,
        times["accepted"],
        times["published"],
        active,
        enforced,
        reported,
        int(usage or 0),
        used,
    )
    slowest = max(enforced, key=lambda n: enforced[n])
    print(
        f"v{v}: in force on the syncer {u.accepted - asked:.2f} s after `blockd sync`;"
        f" then published {u.published - u.accepted:.3f} s, every node enforcing"
        f" {u.all_enforced:.3f} s (last: {slowest}); version key {u.key_bytes / 1e6:.2f} MB",
        flush=True,
    )
    return u


# -- the report --------------------------------------------------------------------------------


def nearest_rank(values: Sequence[float], q: float) -> float:
    """Return the q-quantile by nearest rank (no interpolation)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def report(a: argparse.Namespace, updates: list[Update], load: Load) -> str:
    """Return the markdown table of results."""

    def others(u: Update) -> list[str]:
        return [n for n in u.active if u.active[n] != u.accepted]

    rows: list[tuple[str, list[float]]] = [
        ("**syncer accepted -> every node enforcing (DNS)**", [u.all_enforced for u in updates]),
        ("syncer accepted -> published to Redis", [u.published - u.accepted for u in updates]),
        (
            "published -> every other node's policy in force (its log)",
            [max(u.active[n] for n in others(u)) - u.published for u in updates if others(u)],
        ),
        (
            "a node's policy in force (log) -> its DNS blocks the name (every node, update)",
            [u.enforced[n] - u.active[n] for u in updates for n in u.enforced],
        ),
        (
            "syncer accepted -> one node enforcing (every node, every update)",
            [t - u.accepted for u in updates for t in u.enforced.values()],
        ),
        (
            "syncer accepted -> every node's heartbeat shows it",
            [max(u.reported.values()) - u.accepted for u in updates if len(u.reported) == a.nodes],
        ),
        (
            "`blockd sync` started -> syncer accepted (CLI start, fetch, verify, compile)",
            [u.accepted - u.asked for u in updates],
        ),
    ]
    head = (
        f"| {a.nodes} nodes, {a.entries:,} entries, {len(updates)} updates | p50 | p99 | max |\n"
        "|---|---|---|---|\n"
    )
    lines = [
        f"| {name} | {nearest_rank(v, 0.5):.2f} s | {nearest_rank(v, 0.99):.2f} s"
        f" | {max(v):.2f} s |"
        for name, v in rows
        if v
    ]
    key = statistics.median(u.key_bytes for u in updates)
    grown = statistics.median(u.used_memory_delta for u in updates)
    lines.append(
        f"| Redis memory per version: MEMORY USAGE of its key (median) | {key / 1e6:.2f} MB | | |"
    )
    lines.append(f"| Redis used_memory growth per update (median) | {grown / 1e6:.2f} MB | | |")
    la, le = load.loadavg_start, load.loadavg_end
    machine = (
        f"\nMachine: {load.cpus} CPUs; load average (1, 5, 15 min) {la[0]:.2f} {la[1]:.2f}"
        f" {la[2]:.2f} before the updates, {le[0]:.2f} {le[1]:.2f} {le[2]:.2f} after; during"
        f" the updates the CPUs were {load.busy:.0%} busy, {load.fleet:.0%} of them by the"
        f" nodes, Redis and the bench, {load.busy - load.fleet:.0%} by other work.\n"
        f"DNS polled every {a.poll * 1000:g} ms; heartbeat {a.heartbeat:g} s, lease"
        f" {a.lease:g} s; p99 by nearest rank (the slowest of fewer than 100 updates)."
    )
    return head + "\n".join(lines) + "\n" + machine


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--updates", type=int, default=15)
    ap.add_argument("--heartbeat", type=float, default=5.0, help="[fleet] heartbeat, s")
    ap.add_argument("--lease", type=float, default=15.0, help="[fleet] lease, s")
    ap.add_argument("--poll", type=float, default=0.01, help="seconds between DNS probes")
    ap.add_argument("--pause", type=float, default=2.0, help="seconds between updates")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/fleet.json")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    try:
        updates, load = run(a, work, procs)
    finally:
        procs.stop()
        if a.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    table = report(a, updates, load)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps(
            {
                "args": {k: v for k, v in vars(a).items() if k not in ("out", "closed_port")},
                "updates": [asdict(u) for u in updates],
                "load": {k: v for k, v in asdict(load).items() if not k.startswith("_")},
            },
            indent=1,
        )
    )
    print()
    print(table)


if __name__ == "__main__":
    main()
