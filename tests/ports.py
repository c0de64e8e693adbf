"""Loopback ports for servers a test starts that cannot be told to bind port 0."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000


def _ephemeral_start() -> int:
    """Return the first port the kernel hands out for port 0 (32768 by default)."""
    try:
        return int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(*, udp_too: bool = False) -> int:
    """Return a loopback TCP port nothing listens on just now (and free for UDP, if asked).

    Chosen below the kernel's ephemeral range, so that the sockets blockd and the other
    servers of a test bind to port 0 are never given it before the server it is for binds
    it (an RPZ test once asked blockd's own listener instead of the resolver it started).
    """
    top = _ephemeral_start()
    candidates = range(_LOWEST, top) if top - _LOWEST >= 1000 else range(0)
    for _ in range(200):
        port = random.choice(candidates) if candidates else 0
        with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
            try:
                tcp.bind(("127.0.0.1", port))
                if udp_too:
                    udp.bind(("127.0.0.1", tcp.getsockname()[1]))
            except OSError:
                continue
            found: int = tcp.getsockname()[1]
            return found
    raise AssertionError("no free loopback port found")
