"""Loopback ports for servers a test starts that cannot be told to bind port 0."""

from __future__ import annotations

import socket


def free_port(*, udp_too: bool = False) -> int:
    """Return a loopback TCP port nothing listens on just now (and free for UDP, if asked).

    Another program may take it before the server binds it: a caller that can, tries again.
    """
    while True:
        with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            if udp_too:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
