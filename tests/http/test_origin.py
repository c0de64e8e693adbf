"""Which origin addresses blockd may connect to when they come from DNS."""

from __future__ import annotations

import pytest

from blockd.http.origin import public


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",  # loopback
        "127.255.255.254",
        "0.0.0.0",  # "this host"
        "10.1.2.3",  # RFC 1918
        "172.16.0.1",
        "172.31.255.255",
        "192.168.0.1",
        "100.64.0.1",  # CGNAT shared space (RFC 6598): the ISP's own subscribers
        "169.254.169.254",  # link-local: cloud metadata services
        "192.0.0.1",  # IETF protocol assignments
        "192.0.2.1",  # documentation
        "198.18.0.1",  # benchmarking
        "224.0.0.1",  # multicast
        "239.255.255.250",
        "240.0.0.1",  # reserved
        "255.255.255.255",  # broadcast
        "::1",
        "::",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "fe80::1",  # link-local
        "fc00::1",  # unique local
        "fd12:3456::1",
        "ff02::1",  # multicast
        "2001:db8::1",  # documentation
        "100::1",  # discard-only
    ],
)
def test_local_private_and_special_addresses_are_not_public(address: str) -> None:
    assert not public(address)


@pytest.mark.parametrize(
    "address", ["1.1.1.1", "8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_unicast_addresses_are_public(address: str) -> None:
    assert public(address)
