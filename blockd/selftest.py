"""Self-tests: prove, through blockd's own listeners, that enforcement works right now.

Authorities mark some entries as test probes (as the IWF asks its licensees to test their
blocking). A run sends real DNS queries for every probe host and real HTTP requests for
every probe URL to blockd's listeners, expects each to be blocked (EDE 16 in DNS, 451 over
HTTP), and expects a known-clean control name not to be. The result is a SelfTestResult
event: metrics and the audit log record it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct
from dataclasses import dataclass

import dnslib

from blockd import urls
from blockd.events import SelfTestResult

EDE = 15  # EDNS option: Extended DNS Error (RFC 8914)
CENSORED = 16


@dataclass(frozen=True)
class Targets:
    """Where blockd listens (its own DNS and HTTP listeners)."""

    dns: tuple[str, int]
    http: tuple[str, int] | None


def reachable(address: tuple[str, int]) -> tuple[str, int]:
    """Return where to reach a listener bound to address (a wildcard means loopback)."""
    host, port = address
    if ipaddress.ip_address(host).is_unspecified:
        return ("::1" if ":" in host else "127.0.0.1"), port
    return host, port


async def dns_query(server: tuple[str, int], name: str, seconds: float) -> dnslib.DNSRecord:
    """Ask server for name's A record over UDP, with EDNS; raise TimeoutError or ValueError."""
    q = dnslib.DNSRecord.question(name, "A")
    q.header.id = random.randrange(65536)
    q.add_ar(dnslib.EDNS0(udp_len=1232))
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, server)
        await loop.sock_sendall(sock, q.pack())
        async with asyncio.timeout(seconds):
            while True:
                reply = dnslib.DNSRecord.parse(await loop.sock_recv(sock, 4096))
                if reply.header.id == q.header.id:
                    return reply


def censored(reply: dnslib.DNSRecord) -> bool:
    """Say whether an answer carries Extended DNS Error 16 (Censored)."""
    for rr in reply.ar:
        if rr.rtype == dnslib.QTYPE.OPT:
            for opt in rr.rdata:
                data = bytes(opt.data)
                if (
                    opt.code == EDE
                    and len(data) >= 2
                    and struct.unpack("!H", data[:2])[0] == CENSORED
                ):
                    return True
    return False


async def http_status(server: tuple[str, int], url: str, seconds: float) -> int:
    """GET url through blockd's HTTP listener (absolute-form); return the status code."""
    host = urls.split(url).host
    async with asyncio.timeout(seconds):
        reader, writer = await asyncio.open_connection(*server)
        try:
            writer.write(
                f"GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                "User-Agent: blockd-selftest\r\n\r\n".encode()
            )
            line = await reader.readline()
        finally:
            writer.close()
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {line[:40]!r}")
    return int(parts[1])


async def run(
    probes: list[str], targets: Targets, control: str | None, seconds: float = 3.0
) -> SelfTestResult:
    """Check every probe and the control name; return the result (never raises)."""
    failures: list[str] = []
    checks = 0
    for probe in probes:
        checks += 1
        try:
            if "://" in probe:
                if targets.http is None:
                    failures.append(f"{probe}: no HTTP listener to test through")
                    continue
                status = await http_status(targets.http, probe, seconds)
                if status != 451:
                    failures.append(f"{probe}: HTTP {status}, expected 451")
            else:
                reply = await dns_query(targets.dns, probe, seconds)
                if not censored(reply):
                    failures.append(f"{probe}: DNS answer not blocked")
        except (OSError, TimeoutError, ValueError, dnslib.DNSError) as e:
            failures.append(f"{probe}: {type(e).__name__}: {e}")
    if control:
        checks += 1
        try:
            # A clean name waits on the upstreams: allow for their whole budget.
            if censored(await dns_query(targets.dns, control, seconds * 2)):
                failures.append(f"{control}: control name was blocked")
        except (OSError, TimeoutError, ValueError, dnslib.DNSError) as e:
            failures.append(f"{control}: {type(e).__name__}: {e}")
    if not probes:
        failures.append("no self-test probes in the enforced lists")
    return SelfTestResult(not failures, checks, tuple(failures))
