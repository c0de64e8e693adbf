"""Where a proxied request really goes: origin addresses from the upstream resolvers.

blockd's own DNS answers send routed hosts to the proxy, so the proxy must never ask
blockd: it asks the configured upstream resolvers directly (through the DNS Forwarder),
or a static override (`http.origins`). Where it may connect:
- never to one of its own listeners (a loop), whatever the source of the address;
- an address from DNS only if it is public (globally routable unicast): the owner of a
  listed site controls its DNS, and could otherwise point it at 127.0.0.1, a private or
  link-local address and reach the ISP's internal ports through blockd. Only an operator's
  fixed origin may be local.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from collections.abc import Callable, Iterable, Mapping

import dnslib

from blockd.dns.forward import Forwarder, ForwardError

MAX_TTL = 300
NEGATIVE_TTL = 30
CACHE_ENTRIES = 10_000


class OriginError(Exception):
    """No usable origin address; `reason` is a slug for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        """Record a reason slug and a message."""
        super().__init__(message)
        self.reason = reason


def public(address: str) -> bool:
    """Say whether an address is public unicast (IPv4-mapped IPv6 judged as its IPv4)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class OriginResolver:
    """Resolve origin host names through the upstream resolvers, with a small TTL cache."""

    def __init__(
        self,
        forwarder: Forwarder,
        overrides: Mapping[str, str],
        own: Iterable[tuple[str, int]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Use forwarder; overrides map host -> 'ADDRESS[:PORT]'; own are our listeners."""
        self.forwarder = forwarder
        self.overrides = overrides
        self._own = {(ipaddress.ip_address(h), p) for h, p in own}
        self._wildcard_ports = {p for a, p in self._own if a.is_unspecified}
        self._clock = clock
        self._cache: dict[str, tuple[float, list[str]]] = {}

    @property
    def overrides(self) -> dict[str, tuple[str, int | None]]:
        """Return the fixed origins: host -> (address, HTTP port or None)."""
        return self._overrides

    @overrides.setter
    def overrides(self, value: Mapping[str, str]) -> None:
        fixed: dict[str, tuple[str, int | None]] = {}
        for host, target in value.items():
            try:
                fixed[host] = (str(ipaddress.ip_address(target.strip("[]"))), None)
            except ValueError:
                address, _, port = target.rpartition(":")
                fixed[host] = (address.strip("[]"), int(port))
        self._overrides = fixed

    def http_port(self, host: str) -> int | None:
        """Return the fixed HTTP port of host's origin, if one is configured."""
        fixed = self._overrides.get(host)
        return fixed[1] if fixed else None

    def add_own(self, address: str, port: int) -> None:
        """Remember a listener of ours (bound after construction)."""
        ip = ipaddress.ip_address(address)
        self._own.add((ip, port))
        if ip.is_unspecified:
            self._wildcard_ports.add(port)

    def is_own(self, address: str, port: int) -> bool:
        """Say whether address:port is one of our own listeners."""
        ip = ipaddress.ip_address(address)
        if (ip, port) in self._own:
            return True
        return port in self._wildcard_ports and (ip.is_loopback or ip.is_unspecified)

    async def connect(
        self,
        host: str,
        port: int,
        connect_timeout: float,
        limit: int = 65536,
        protocol: Callable[[asyncio.StreamReader], asyncio.StreamReaderProtocol] | None = None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a connection to host's origin on port; raise OriginError (slug: reason).

        protocol(reader) makes the connection's protocol (default: a StreamReaderProtocol).
        """
        addresses = await self.addresses(host)
        if any(self.is_own(a, port) for a in addresses):
            raise OriginError("loop", f"{host} points at one of our own listeners")
        if host not in self._overrides:
            addresses = [a for a in addresses if public(a)]
            if not addresses:
                raise OriginError("forbidden-address", f"{host} has no public address")
        for address in addresses:
            try:
                async with asyncio.timeout(connect_timeout):
                    return await _open(address, port, limit, protocol or _streams)
            except (OSError, TimeoutError):
                continue
        raise OriginError("connect-failed", f"cannot connect to {host}")

    async def addresses(self, host: str) -> list[str]:
        """Return the origin's addresses (IPv4 first); raise OriginError."""
        fixed = self._overrides.get(host)
        if fixed is not None:
            return [fixed[0]]
        try:
            return [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            pass
        now = self._clock()
        hit = self._cache.get(host)
        if hit is not None and hit[0] > now:
            if not hit[1]:
                raise OriginError("no-address", f"{host} has no address")
            return hit[1]
        found, ttl = await self._lookup(host)
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        self._cache[host] = (now + (ttl if found else NEGATIVE_TTL), found)
        if not found:
            raise OriginError("no-address", f"{host} has no address")
        return found

    async def _lookup(self, host: str) -> tuple[list[str], int]:
        answers = await asyncio.gather(
            self._ask(host, "A"), self._ask(host, "AAAA"), return_exceptions=True
        )
        found: list[str] = []
        ttl = MAX_TTL
        errors = []
        for result in answers:
            if isinstance(result, BaseException):
                errors.append(result)
                continue
            addresses, t = result
            found += addresses
            ttl = min(ttl, t)
        if not found and len(errors) == len(answers):
            raise OriginError("resolve-failed", f"cannot resolve {host}: {errors[0]}")
        return found, ttl

    async def _ask(self, host: str, qtype: str) -> tuple[list[str], int]:
        """Ask the upstreams for one record type; return addresses and the smallest TTL."""
        q = dnslib.DNSRecord.question(host, qtype)
        q.header.id = random.randrange(65536)
        q.header.rd = 1
        try:
            raw = await self.forwarder.query(bytes(q.pack()))
            reply = dnslib.DNSRecord.parse(raw)
        except ForwardError as e:
            raise OriginError("resolve-failed", f"{host}: upstream {e.reason}") from None
        except Exception:  # dnslib raises many kinds on a garbled packet
            raise OriginError("resolve-failed", f"{host}: unreadable upstream answer") from None
        want = getattr(dnslib.QTYPE, qtype)
        out = [str(rr.rdata) for rr in reply.rr if rr.rtype == want]
        ttl = min((rr.ttl for rr in reply.rr if rr.rtype == want), default=MAX_TTL)
        return out, max(0, min(ttl, MAX_TTL))


def _streams(reader: asyncio.StreamReader) -> asyncio.StreamReaderProtocol:
    return asyncio.StreamReaderProtocol(reader)


async def _open(
    address: str,
    port: int,
    limit: int,
    protocol: Callable[[asyncio.StreamReader], asyncio.StreamReaderProtocol],
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection as asyncio.open_connection does, with protocol(reader)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    transport, proto = await loop.create_connection(lambda: protocol(reader), address, port)
    return reader, asyncio.StreamWriter(transport, proto, reader, loop)
