"""Deployment artefacts: the systemd unit verified and its sandbox lived in; container files."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import dnslib
import pytest

from blockd.config import load as load_config
from tests.daemon import demo_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "blockd.service"
CONTAINER = DEPLOY / "container"
BLOCKD = Path(sys.executable).parent / "blockd"


def ensure(spec: str) -> None:
    """Install a Debian package a test needs (tools/ensure-deb); quietly carry on if we can't."""
    subprocess.run([ROOT / "tools" / "ensure-deb", spec], capture_output=True, check=False)


def unit_settings(path: Path = UNIT) -> dict[str, dict[str, list[str]]]:
    """Parse a unit file: section -> key -> every value, in order (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{path}:{number}: not KEY=value: {raw}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


# -- the systemd unit --------------------------------------------------------------------------

HARDENING = {
    "Type": "notify",
    "ExecStart": "/usr/bin/blockd run --config /etc/blockd/blockd.toml",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "WatchdogSec": "30",
    "Restart": "on-failure",
    "LimitNOFILE": "65536",
    "User": "blockd",
    "Group": "blockd",
    "StateDirectory": "blockd",
    "StateDirectoryMode": "0700",  # list content is blockd's alone (deploy/README's table)
    "ConfigurationDirectory": "blockd",
    "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
    "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
}


def test_unit_has_the_hardening() -> None:
    service = unit_settings()["Service"]
    got = {key: service.get(key, ["(missing)"])[-1] for key in HARDENING}
    assert got == HARDENING
    assert service["SystemCallFilter"][0] == "@system-service"
    assert "DynamicUser" not in service  # a fixed user: the operator CLI shares the state dir


def systemd_analyze() -> str:
    ensure("systemd-analyze:systemd")
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not available")
    return tool


def test_unit_verifies(tmp_path: Path) -> None:
    tool = systemd_analyze()
    # verify insists that ExecStart= exists: point it at this checkout's blockd.
    unit = tmp_path / "blockd.service"
    text = UNIT.read_text().replace("ExecStart=/usr/bin/blockd ", f"ExecStart={BLOCKD} ")
    unit.write_text(text)
    result = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    complaints = [line for line in result.stderr.splitlines() if "blockd.service" in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []


def test_unit_exposure_is_low(tmp_path: Path) -> None:
    tool = systemd_analyze()
    unit = tmp_path / "blockd.service"
    unit.write_text(UNIT.read_text())
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    if "--offline" in result.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    m = re.search(r"Overall exposure level for blockd\.service: (\d+\.\d+)", result.stdout)
    assert m is not None, result.stdout + result.stderr
    assert float(m[1]) <= 2.0, result.stdout  # systemd rates 0-10; below 2.0 is "OK"


# -- living in the unit's seccomp sandbox ------------------------------------------------------
# Without a service manager to run the unit, the system-call part of its sandbox is rebuilt
# with libseccomp, as systemd 252 builds it, and blockd is exec'd inside: SystemCallFilter=,
# MemoryDenyWriteExecute= and RestrictAddressFamilies=. Stricter than the unit in one way: a
# call outside the filter kills the process (the unit says EPERM), so nothing can fail quietly.

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_CMP_EQ, SCMP_CMP_GE, SCMP_CMP_MASKED_EQ = 4, 5, 7
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000


def scmp_errno(code: int) -> int:
    return 0x00050000 | code


class _ScmpArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


class Seccomp:
    """One libseccomp filter under construction."""

    def __init__(self, lib: Any, default: int) -> None:
        self.lib = lib
        self.ctx = lib.seccomp_init(default)
        assert self.ctx, "seccomp_init failed"

    def add(self, action: int, syscall: str, *cmps: tuple[int, int, int, int]) -> None:
        nr = self.lib.seccomp_syscall_resolve_name(syscall.encode())
        if nr == -1:
            return  # a name this libseccomp does not know
        args = (_ScmpArgCmp * max(1, len(cmps)))(*(_ScmpArgCmp(*c) for c in cmps))
        rc = self.lib.seccomp_rule_add_array(self.ctx, action, nr, len(cmps), args)
        if rc < 0 and nr >= 0:  # negative numbers: calls other architectures have
            raise OSError(-rc, f"seccomp rule for {syscall}: {os.strerror(-rc)}")

    def load(self) -> None:
        rc = self.lib.seccomp_load(self.ctx)
        self.lib.seccomp_release(self.ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def libseccomp() -> Any:
    name = ctypes.util.find_library("seccomp")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ScmpArgCmp),
    )
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    return lib


def sandbox_exec(spec: dict[str, Any], argv: list[str]) -> None:
    """Load the filters `spec` describes, then become `argv` (run in a child process)."""
    lib = libseccomp()
    first = Seccomp(lib, SCMP_ACT_ALLOW)
    if spec["mdwe"]:
        # systemd 252's MemoryDenyWriteExecute= filter (x86-64, arm64), made fatal.
        kill = SCMP_ACT_KILL_PROCESS
        wx = PROT_WRITE | PROT_EXEC
        first.add(kill, "mmap", (2, SCMP_CMP_MASKED_EQ, wx, wx))
        first.add(kill, "mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        first.add(kill, "pkey_mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        first.add(kill, "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
    refuse = scmp_errno(errno.EAFNOSUPPORT)
    for family in range(64):
        if family not in spec["families"]:
            first.add(refuse, "socket", (0, SCMP_CMP_EQ, family, 0))
    first.add(refuse, "socket", (0, SCMP_CMP_GE, 64, 0))
    first.load()
    allow_list = Seccomp(lib, SCMP_ACT_KILL_PROCESS)
    for name in spec["allow"]:
        allow_list.add(SCMP_ACT_ALLOW, name)
    allow_list.load()  # the last call the filter must permit is execve, in @default
    os.execv(argv[0], argv)


def syscall_groups(tool: str) -> dict[str, list[str]]:
    """Read systemd's named system call groups (`systemd-analyze syscall-filter`)."""
    out = subprocess.run(
        [tool, "syscall-filter", "--no-pager"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    members: list[str] = []
    for line in out.splitlines():
        if line.startswith("@"):
            members = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and not line.strip().startswith("#"):
            members.append(line.strip())
    return groups


def allowed_syscalls(tool: str, filters: list[str]) -> set[str]:
    """Resolve SystemCallFilter= lines as systemd does (an allow list starts from @default)."""
    groups = syscall_groups(tool)

    def expand(item: str) -> set[str]:
        return set().union(*(expand(i) for i in groups[item])) if item.startswith("@") else {item}

    assert not filters[0].startswith("~"), "the unit's SystemCallFilter= must be an allow list"
    allowed = expand("@default")
    for line in filters:
        names = set().union(*(expand(i) for i in line.lstrip("~").split()))
        allowed = allowed - names if line.startswith("~") else allowed | names
    return allowed


class Lines:
    """A child's stdout, read by a thread, so a silent child cannot hang the test."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen = ""
        assert proc.stdout is not None
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.queue.put(line)

    def until(self, pattern: str, limit: float = 20) -> re.Match[str]:
        deadline = time.monotonic() + limit
        while (m := re.search(pattern, self.seen)) is None:
            try:
                self.seen += self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"never saw {pattern!r} in:\n{self.seen}") from None
        return m


def test_blockd_serves_inside_the_units_seccomp_sandbox(tmp_path: Path) -> None:
    tool = systemd_analyze()
    if libseccomp() is None or platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("needs libseccomp on x86-64 or arm64")
    service = unit_settings()["Service"]
    families = {"AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6, "AF_UNIX": socket.AF_UNIX}
    allow = allowed_syscalls(tool, service["SystemCallFilter"])
    if os.geteuid() == 0:
        # SQLite (the audit log) fchown()s its -wal and -shm files when it runs as root
        # only; under the unit blockd is the blockd user and never does.
        allow.add("fchown")
    spec = {
        "mdwe": service["MemoryDenyWriteExecute"][-1] == "yes",
        "families": [families[f] for f in service["RestrictAddressFamilies"][-1].split()],
        "allow": sorted(allow),
    }
    conf = tmp_path / "blockd.toml"
    conf.write_text(demo_config(tmp_path, ("127.0.0.1", 1)))  # no upstream: nothing to reach
    launcher = "import json, sys; from tests.test_deploy import sandbox_exec as run; "
    launcher += "run(json.loads(sys.argv[1]), sys.argv[2:])"
    command = [str(BLOCKD), "run", "--config", str(conf), "--log-level", "warning"]
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, json.dumps(spec), *command],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = Lines(proc)
    try:
        banner = out.until(r"\n  (NOT READY|ready): .*\n")[0]
        port = int(out.until(r"dns\s+udp\s+127\.0\.0\.1:(\d+)")[1])
        admin = out.until(r"admin\s+http://(127\.0\.0\.1:\d+)/")[1]
        assert banner
        deadline = time.monotonic() + 10  # the lists sync (from file://) just after start
        while True:
            query = dnslib.DNSRecord.question("www.blocked.demo.test")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.sendto(query.pack(), ("127.0.0.1", port))
                reply = dnslib.DNSRecord.parse(s.recv(4096))
            if reply.rr or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{admin}/healthz", timeout=5) as health:
            assert json.load(health)["status"] == "alive"
        proc.send_signal(signal.SIGHUP)
        out.until(r"\nreloaded\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, out.seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != -signal.SIGSYS, f"a system call outside the filter:\n{out.seen}"


# -- the container image and the compose stack ------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) of a Containerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_containerfile_builds_small_and_runs_unprivileged() -> None:
    steps = instructions(CONTAINER / "Containerfile")
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: build, then a runtime image without build tools"
    args = " ".join(a for w, a in steps if w == "ARG")
    assert "python:3.11-slim" in args
    assert all(":latest" not in f for f in froms)
    runs = " ".join(a for w, a in steps if w == "RUN")
    assert "--constraint constraints.txt" in runs, "dependencies pinned by constraints.txt"
    users = [a for w, a in steps if w == "USER"]
    assert users, "USER is set"
    assert users[-1].split(":")[0] not in ("root", "0")
    last_from = max(i for i, (w, _) in enumerate(steps) if w == "FROM")
    assert any(w == "USER" for w, _ in steps[last_from:]), "the runtime stage drops root"
    (health,) = [a for w, a in steps if w == "HEALTHCHECK"]
    assert "http://127.0.0.1:9153/healthz" in health
    assert "ProxyHandler({})" in health
    exposed = " ".join(a for w, a in steps if w == "EXPOSE").split()
    assert set(exposed) == {"53/udp", "53/tcp", "80/tcp", "443/tcp"}  # not the admin port
    assert ("STOPSIGNAL", "SIGTERM") in steps
    assert any(w == "VOLUME" and "/var/lib/blockd" in a for w, a in steps)
    assert not any(w == "ADD" for w, _ in steps), "COPY only: nothing fetched at build time"
    entry = [json.loads(a) for w, a in steps if w in ("ENTRYPOINT", "CMD")]
    assert entry == [["blockd"], ["run", "--config", "/etc/blockd/blockd.toml"]]


def test_container_config_is_valid_and_reachable_for_prometheus() -> None:
    config = load_config(CONTAINER / "blockd.toml")
    assert config.admin.listen == ["0.0.0.0:9153"]  # in the container's own network namespace
    assert config.admin.public_metrics
    assert config.state.dir == Path("/var/lib/blockd")
    assert config.http.demo_origin is None
    assert "0.0.0.0/0" not in [str(n) for n in config.dns.allow]  # never an open resolver


def load_yaml(path: Path) -> Any:
    """Parse YAML with PyYAML from this venv or, failing that, Debian's python3-yaml."""
    try:
        import importlib

        return importlib.import_module("yaml").safe_load(path.read_text())
    except ImportError:
        pass
    ensure("python3-yaml")
    system = shutil.which("python3", path="/usr/bin")
    if system is None:
        pytest.skip("no YAML parser available")
    code = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
    result = subprocess.run([system, "-c", code, str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"no YAML parser available: {result.stderr.strip()}")
    return json.loads(result.stdout)


def test_compose_stack() -> None:
    compose = load_yaml(CONTAINER / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"blockd", "prometheus", "grafana"}
    blockd = services["blockd"]
    assert blockd["build"]["dockerfile"] == "deploy/container/Containerfile"
    assert (CONTAINER / blockd["build"]["context"] / blockd["build"]["dockerfile"]).is_file()
    assert blockd["read_only"] is True
    assert blockd["cap_drop"] == ["ALL"]
    assert not any("9153" in p for p in blockd["ports"]), "the admin port stays internal"
    for name, service in services.items():
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", [])), name
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (CONTAINER / source).exists(), f"{name}: {source} is missing"
    prometheus = load_yaml(CONTAINER / "prometheus.yml")
    assert prometheus["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert any("/etc/prometheus/rules/" in v for v in services["prometheus"]["volumes"])
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["blockd:9153"]
    sources = load_yaml(CONTAINER / "grafana-datasource.yaml")["datasources"]
    assert [(s["uid"], s["url"]) for s in sources] == [("prometheus", "http://prometheus:9090")]
    providers = load_yaml(CONTAINER / "grafana-dashboards.yaml")["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_is_provisionable() -> None:
    # Grafana resolves an exported dashboard's __inputs (${DS_PROMETHEUS}) only when a person
    # imports it; file provisioning (compose.yaml) needs a datasource variable of that name.
    dashboard = json.loads((DEPLOY / "grafana" / "blockd-dashboard.json").read_text())
    used = set(re.findall(r"\$\{(DS_\w+)\}", json.dumps(dashboard)))
    variables = {
        v["name"]
        for v in dashboard.get("templating", {}).get("list", [])
        if v.get("type") == "datasource"
    }
    assert used <= variables, (
        f"deploy/grafana/blockd-dashboard.json uses {sorted(used - variables)} without a "
        "templating variable of type datasource by that name; provisioned, its panels find "
        "no datasource (grafana/grafana#10786)"
    )


def test_deploy_readme_covers_operations() -> None:
    text = (DEPLOY / "README.md").read_text()
    topics = ("useradd", "systemctl", "MemoryDenyWriteExecute", "compose", "Upgrade", "journal")
    for topic in topics:
        assert topic in text, topic


def test_sysusers_creates_the_service_user(tmp_path: Path) -> None:
    systemd_analyze()  # the same package ships systemd-sysusers
    tool = shutil.which("systemd-sysusers")
    if tool is None:
        pytest.skip("systemd-sysusers is not available")
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [tool, f"--root={tmp_path}", str(DEPLOY / "systemd" / "blockd.sysusers")],
        capture_output=True,
        check=True,
    )
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").open()}
    assert users["blockd"][5:] == ["/var/lib/blockd", "/usr/sbin/nologin\n"]
    assert "blockd" in (tmp_path / "etc/group").read_text()


def test_install_step_1_installs_the_docs(tmp_path: Path) -> None:
    # The README's own lines, run with /usr/share/doc moved under tmp_path.
    text = (DEPLOY / "README.md").read_text()
    lines = [ln for ln in text.splitlines() if "/usr/share/doc/blockd" in ln]
    assert lines
    script = "\n".join(ln.replace("/usr/share/doc", str(tmp_path)) for ln in lines)
    done = subprocess.run(
        ["bash", "-e", "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    installed = sorted(p.name for p in (tmp_path / "blockd").iterdir())
    assert installed == ["README.md", "deploy.md"]
    assert (tmp_path / "blockd" / "deploy.md").read_text() == text


def test_one_admin_token_path_everywhere() -> None:
    # config, README, deploy (unit, container files, docs) and the package name one file.
    files = [ROOT / "README.md", *ROOT.glob("config/*"), *ROOT.glob("blockd/**/*")]
    files += [p for p in DEPLOY.rglob("*")]
    found: dict[str, set[str]] = {}
    for path in files:
        if not path.is_file() or path.suffix in {".pyc", ".dsse"}:
            continue
        text = path.read_text("utf-8", errors="replace")
        for m in re.finditer(r"[\w./-]*admin[-_.]token\b[\w.-]*", text):
            if m.group().startswith("/"):
                found.setdefault(m.group(), set()).add(str(path.relative_to(ROOT)))
    assert set(found) == {"/etc/blockd/admin.token"}, found
    assert {"config/blockd.toml", "deploy/README.md"} <= found["/etc/blockd/admin.token"]
