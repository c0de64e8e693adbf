"""Real resolvers from Debian's packages as RPZ secondaries of a running blockd, on loopback.

Shared by the interop tests and bench/rpz_bench.py: config text for Unbound and BIND that
transfers the policy zone from blockd (or any primary), started as child processes; and, for
PowerDNS Recursor and Knot Resolver, the examples in deploy/resolvers/ with the test's
addresses and paths put in, so that what the README offers is what the tests run.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from tests import ports

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "resolvers"
FETCH = EXAMPLES / "blockd-rpz-fetch"


def ensure_tools() -> None:
    """Install Unbound, BIND and dig from Debian when missing."""
    subprocess.run(
        [str(ROOT / "tools" / "ensure-deb"), "unbound:unbound", "named:bind9", "dig:dnsutils"],
        check=True,
    )


def ensure_peer_tools() -> None:
    """Install PowerDNS Recursor, Knot Resolver (with lua-cqueues, for watch) and dig."""
    subprocess.run(
        [
            str(ROOT / "tools" / "ensure-deb"),
            "pdns_recursor:pdns-recursor",
            "kresd:knot-resolver",
            "lua-cqueues",
            "dig:dnsutils",
        ],
        check=True,
    )


def program(name: str) -> str:
    """Return the path of an installed program (Debian puts daemons in /usr/sbin)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    assert found, f"{name} not found"
    return found


def free_port() -> int:
    """Return a loopback port free for both UDP and TCP just now."""
    return ports.free_port(udp_too=True)


def unbound_conf(
    tmp: Path, port: int, zone: str, primary: int, upstream: int, zonefile: bool = False
) -> Path:
    """Write an Unbound config: the RPZ transferred from 127.0.0.1@primary (no TSIG)."""
    conf = tmp / "unbound.conf"
    conf.write_text(
        f"""server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    username: ""
    chroot: ""
    directory: "{tmp}"
    pidfile: "{tmp}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    do-daemonize: no
    access-control: 127.0.0.0/8 allow
    module-config: "respip iterator"
    do-not-query-localhost: no
    auto-trust-anchor-file: ""
    qname-minimisation: no
    cache-max-ttl: 0
    cache-max-negative-ttl: 0
    # the demo's names are under .test, which Unbound answers itself (RFC 6761) by default
    local-zone: "test." nodefault
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{upstream}
rpz:
    name: "{zone}"
    primary: 127.0.0.1@{primary}
    {'zonefile: "' + str(tmp / "unbound-rpz.db") + '"' if zonefile else ""}
remote-control:
    control-enable: no
"""
    )
    return conf


def named_conf(
    tmp: Path, port: int, zone: str, primary: int, upstream: int, key_name: str, secret: str
) -> Path:
    """Write a BIND config: a secondary policy zone transferred with TSIG, forwarding the rest."""
    conf = tmp / "named.conf"
    conf.write_text(
        f"""key "{key_name}" {{ algorithm hmac-sha256; secret "{secret}"; }};
options {{
    directory "{tmp}";
    pid-file "{tmp}/named.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ 127.0.0.0/8; }};
    forwarders {{ 127.0.0.1 port {upstream}; }};
    forward only;
    dnssec-validation no;
    notify no;
    max-cache-ttl 0;
    max-ncache-ttl 0;
    response-policy {{ zone "{zone}" min-update-interval 0; }} qname-wait-recurse no;
}};
zone "{zone}" {{
    type secondary;
    primaries port {primary} {{ 127.0.0.1 key "{key_name}"; }};
    file "{tmp}/rpz.db";
    allow-notify {{ 127.0.0.1; }};
}};
"""
    )
    return conf


def example(name: str, replace: dict[str, str]) -> str:
    """Return deploy/resolvers/<name> with each placeholder replaced, all of them required."""
    text = (EXAMPLES / name).read_text()
    for old, new in replace.items():
        assert old in text, f"deploy/resolvers/{name} no longer has {old!r}"
        text = text.replace(old, new)
    return text


def pdns_conf(
    home: Path, port: int, zone: str, primary: int, upstream: int, key_name: str, secret: str
) -> Path:
    """Write a PowerDNS Recursor config dir: the example's rpzPrimary, forwarding the rest.

    The examples' refresh and packetcache-ttl (60 s) become 1 s: 4.8 takes a new serial when
    it polls, not on NOTIFY, and its packet cache answers without the policy. Returns the
    directory, for --config-dir.
    """
    lua = home / "blockd-rpz.lua"
    lua.write_text(
        example(
            "pdns-recursor.lua",
            {
                "192.0.2.53:5301": f"127.0.0.1:{primary}",
                "rpz.blockd": zone,
                '"blockd-rpz"': f'"{key_name}"',
                "<the secret of blockd's rpz.key>": secret,
                "refresh = 60": "refresh = 1",
                "/var/lib/powerdns": str(home),
            },
        )
    )
    conf = example(
        "pdns-recursor.conf",
        {"/etc/powerdns/blockd-rpz.lua": str(lua), "packetcache-ttl=60": "packetcache-ttl=1"},
    )
    (home / "recursor.conf").write_text(
        conf
        + f"""local-address=127.0.0.1
local-port={port}
socket-dir={home}
daemon=no
disable-syslog=yes
loglevel=6
threads=1
security-poll-suffix=
dnssec=off
forward-zones-recurse=.=127.0.0.1:{upstream}
"""
    )
    return home


def kresd_conf(home: Path, port: int, zone_file: Path, upstream: int) -> Path:
    """Write a Knot Resolver config: the example's policy.rpz, the rest sent to upstream."""
    conf = home / "kresd.conf"
    rpz = example("knot-resolver.conf", {"/var/lib/knot-resolver/rpz.blockd.zone": str(zone_file)})
    conf.write_text(
        f"""net.listen('127.0.0.1', {port}, {{ kind = 'dns' }})
net.ipv6 = false
cache.size = 10 * MB
-- the test's upstream signs nothing: no root trust anchor to keep fresh
trust_anchors.remove('.')
{rpz}
-- after the policy zone: everything else goes to the test's upstream, without validation
policy.add(policy.all(policy.STUB({{'127.0.0.1@{upstream}'}})))
"""
    )
    return conf


@contextlib.contextmanager
def started(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server until the block ends; its output goes to log."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ask(port: int, name: str, qtype: str = "A") -> dns.message.Message | None:
    """Ask a resolver on loopback; None when it does not answer in time."""
    try:
        return dns.query.udp(dns.message.make_query(name, qtype), "127.0.0.1", port=port, timeout=2)
    except (dns.exception.Timeout, OSError):
        return None


def answers(reply: dns.message.Message | None) -> list[str]:
    """Return the answer's rdata as text."""
    return [rd.to_text() for rrset in (reply.answer if reply else []) for rd in rrset]


def wait_for(check: object, within: float, what: str, log: Path | None = None) -> None:
    """Poll check() until it is true; fail naming what, with the server log, after within s."""
    assert callable(check)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} within {within} s\n{tail}")


def rcode(reply: dns.message.Message | None) -> int | None:
    """Return the reply's rcode, None for no reply."""
    return None if reply is None else reply.rcode()


NXDOMAIN = dns.rcode.NXDOMAIN
