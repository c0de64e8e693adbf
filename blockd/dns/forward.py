"""Forward DNS queries to upstream resolvers over UDP, retrying over TCP when truncated.

Every attempt uses a fresh socket (so a random source port) and a fresh random ID, and accepts
only a response from the upstream's address with that ID, QR set and the query's own question;
anything else is ignored while the attempt lasts (RFC 5452 defences against off-path spoofing).
Upstreams are tried healthy-first by smoothed RTT; one that fails is set aside and probed again
after a back-off, so a recovered upstream comes back. After `DOWN_AFTER` failed attempts in a
row an upstream counts as down (one lost datagram does not make an outage), and its next
answer brings it back; `on_change` hears each of these transitions once. Stdlib only and no
parsing beyond the header and question: this is the path of every query not answered from the
policy or the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

ForwardFailure = Literal["timeout", "network", "truncated", "mismatch"]
FORWARD_FAILURES: tuple[ForwardFailure, ...] = get_args(ForwardFailure)

DNS_PORT = 53
HEADER_SIZE = 12
MAX_MESSAGE = 65535
_MAX_NAME = 255  # octets of a wire-format name, root label included (RFC 1035 section 2.3.4)
_QR = 0x80  # in header byte 2
_TC = 0x02  # in header byte 2
_ONE_QUESTION = b"\x00\x01"
_SRTT_GAIN = 0.125  # weight of a new RTT sample, as TCP's alpha (RFC 6298)
_RESOLV_CONF_LIMIT = 64 * 1024
DOWN_AFTER = 3  # failed attempts in a row before an upstream counts as down

_SockAddr = tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]  # from getaddrinfo


class ForwardError(Exception):
    """No upstream gave a usable answer; `reason` is one of `FORWARD_FAILURES`.

    timeout: the total budget ran out; network: unreachable, refused, none configured, or the
    forwarder is closed; truncated: a UDP answer had TC=1 and TCP could not fetch it whole;
    mismatch: a TCP connection gave only answers to something else.
    """

    def __init__(self, reason: ForwardFailure, message: str) -> None:
        super().__init__(message)
        self.reason: ForwardFailure = reason


@dataclass
class UpstreamState:
    """What the forwarder knows of one upstream resolver."""

    address: tuple[str, int]
    healthy: bool = True
    srtt: float | None = None  # seconds, smoothed over UDP answers; None before the first
    failures: int = 0  # consecutive failed attempts
    last_failure: float | None = None  # wall-clock time (time.time()) of the latest failure
    retry_at: float = 0.0  # event-loop time from which an unhealthy upstream is probed again
    down: bool = False  # DOWN_AFTER failed attempts in a row, and no answer since
    down_since: float | None = None  # wall-clock time it went down
    last_reason: ForwardFailure | None = None  # the latest failure's reason

    @property
    def name(self) -> str:
        """Return "address:port" ("[address]:port" for IPv6), as configured."""
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _AttemptFailed(Exception):
    """One attempt at one upstream failed."""

    def __init__(self, reason: ForwardFailure) -> None:
        super().__init__(reason)
        self.reason: ForwardFailure = reason


@dataclass(frozen=True)
class _Question:
    """The question of the query being forwarded, as wire bytes."""

    name: bytes  # lower-cased labels, root label included
    type_class: bytes  # QTYPE and QCLASS

    def answered_by(self, response: bytes, txid: bytes) -> bool:
        """Say whether response answers this question under txid."""
        end = HEADER_SIZE + len(self.name)
        return (
            len(response) >= end + 4
            and response[:2] == txid
            and bool(response[2] & _QR)
            and response[4:6] == _ONE_QUESTION
            and response[HEADER_SIZE:end].lower() == self.name
            and response[end : end + 4] == self.type_class
        )


class Forwarder:
    """Send queries to a set of upstream resolvers and return their answers."""

    def __init__(
        self,
        upstreams: Sequence[tuple[str, int]],
        *,
        attempt_timeout: float = 1.0,
        total_timeout: float = 3.0,
        rng: random.Random | None = None,
        retry_after: float = 5.0,
        on_change: Callable[[UpstreamState], None] | None = None,
    ) -> None:
        """Forward to upstreams (IP address, port); probe a failed one again after retry_after s.

        With no upstreams every query fails at once with ForwardError("network"). on_change
        is called with a copy of an upstream's state when it goes down or comes back.
        """
        if attempt_timeout <= 0 or total_timeout <= 0 or retry_after < 0:
            raise ValueError("timeouts must be positive and retry_after not negative")
        self._targets = [_sockaddr(host, port) for host, port in upstreams]
        self._states = [UpstreamState((host, port)) for host, port in upstreams]
        self._attempt_timeout = attempt_timeout
        self._total_timeout = total_timeout
        self._retry_after = retry_after
        self._rng = rng if rng is not None else random.SystemRandom()
        self.on_change = on_change
        self._inflight = 0
        self._closed = False
        self._drained: asyncio.Event | None = None

    def states(self) -> list[UpstreamState]:
        """Return a copy of each upstream's state, in configuration order."""
        return [replace(state) for state in self._states]

    async def close(self) -> None:
        """Refuse new queries; wait for those in flight, which end within total_timeout."""
        self._closed = True
        if self._inflight:
            if self._drained is None:
                self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._total_timeout + 1.0):
                    await self._drained.wait()

    async def query(self, packet: bytes) -> bytes:
        """Send packet upstream; return the response with packet's own ID.

        Raise ValueError if packet is not a query with one plain question, ForwardError if no
        upstream answers usably within total_timeout.
        """
        if self._closed:
            raise ForwardError("network", "the forwarder is closed")
        question = _question(packet)
        if not self._states:
            raise ForwardError("network", "no upstream resolver is configured")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_timeout
        self._inflight += 1
        try:
            return packet[:2] + await self._forward(loop, packet, question, deadline)
        finally:
            self._inflight -= 1
            if self._inflight == 0 and self._drained is not None:
                self._drained.set()

    async def _forward(
        self,
        loop: asyncio.AbstractEventLoop,
        packet: bytes,
        question: _Question,
        deadline: float,
    ) -> bytes:
        """Try the upstreams in order, pass after pass, until one answers; return it sans ID."""
        while True:
            reason: ForwardFailure = "network"
            timed_out = False
            for index in self._plan(loop.time()):
                now = loop.time()
                if now >= deadline:
                    break
                try:
                    return await self._attempt(loop, index, packet, question, deadline)
                except _AttemptFailed as failure:
                    self._failed(index, loop.time(), failure.reason)
                    reason = failure.reason
                    timed_out = timed_out or reason == "timeout"
            if loop.time() >= deadline:
                raise ForwardError("timeout", "no upstream resolver answered in time")
            if not timed_out:  # every upstream failed fast: another pass would fail the same way
                raise ForwardError(reason, f"every upstream resolver failed ({reason})")

    def _plan(self, now: float) -> list[int]:
        """Return upstream indexes in the order to try them now.

        Unhealthy upstreams whose back-off is over come first, one query probing each per
        back-off; then healthy ones by smoothed RTT (never measured counts as 0, so each gets
        tried); then the other unhealthy ones, as a last resort, soonest retry first.
        """
        probes: list[int] = []
        healthy: list[int] = []
        waiting: list[int] = []
        for index, state in enumerate(self._states):
            if state.healthy:
                healthy.append(index)
            elif state.retry_at <= now:
                state.retry_at = now + self._retry_after
                probes.append(index)
            else:
                waiting.append(index)
        healthy.sort(key=lambda i: self._states[i].srtt or 0.0)
        waiting.sort(key=lambda i: self._states[i].retry_at)
        return probes + healthy + waiting

    async def _attempt(
        self,
        loop: asyncio.AbstractEventLoop,
        index: int,
        packet: bytes,
        question: _Question,
        deadline: float,
    ) -> bytes:
        """Ask upstream index over UDP, then TCP if truncated; return the answer sans ID.

        Each exchange gets attempt_timeout, within the overall deadline.
        """
        family, address = self._targets[index]
        txid = self._fresh_id(packet)
        started = loop.time()
        response = await _exchange_udp(
            loop,
            family,
            address,
            txid + packet[2:],
            question,
            min(started + self._attempt_timeout, deadline),
        )
        rtt: float | None = loop.time() - started
        if response[2] & _TC:
            rtt = None  # a TCP exchange is no sample of the UDP round trip
            txid = self._fresh_id(packet)
            response = await _exchange_tcp(
                loop,
                family,
                address,
                txid + packet[2:],
                question,
                min(loop.time() + self._attempt_timeout, deadline),
            )
        self._succeeded(index, rtt)
        return response[2:]

    def _fresh_id(self, packet: bytes) -> bytes:
        """Return a random ID, different from packet's own."""
        while True:
            txid = self._rng.getrandbits(16).to_bytes(2, "big")
            if txid != packet[:2]:
                return txid

    def _succeeded(self, index: int, rtt: float | None) -> None:
        """Record an answer from upstream index, with its UDP round-trip time if measured."""
        state = self._states[index]
        if rtt is not None:
            if state.srtt is None or not state.healthy:
                state.srtt = rtt
            else:
                state.srtt += _SRTT_GAIN * (rtt - state.srtt)
        state.healthy = True
        state.failures = 0
        if state.down:
            state.down = False
            self._changed(state)
            state.down_since = None

    def _failed(self, index: int, now: float, reason: ForwardFailure) -> None:
        """Set upstream index aside until the back-off is over; down after DOWN_AFTER."""
        state = self._states[index]
        state.healthy = False
        state.failures += 1
        state.last_failure = time.time()
        state.last_reason = reason
        state.retry_at = now + self._retry_after
        if not state.down and state.failures >= DOWN_AFTER:
            state.down = True
            state.down_since = state.last_failure
            self._changed(state)

    def _changed(self, state: UpstreamState) -> None:
        """Tell on_change (which must not raise into the query path) of a transition."""
        if self.on_change is not None:
            self.on_change(replace(state))


def _fresh_socket(family: socket.AddressFamily, kind: socket.SocketKind) -> socket.socket:
    """Open a non-blocking socket for one exchange (a new one each time: a random port)."""
    try:
        sock = socket.socket(family, kind)
    except OSError:
        raise _AttemptFailed("network") from None
    sock.setblocking(False)
    return sock


async def _exchange_udp(
    loop: asyncio.AbstractEventLoop,
    family: socket.AddressFamily,
    address: _SockAddr,
    query: bytes,
    question: _Question,
    deadline: float,
) -> bytes:
    """Send query from a fresh UDP socket; return the first matching datagram."""
    sock = _fresh_socket(family, socket.SOCK_DGRAM)
    try:
        async with asyncio.timeout_at(deadline):
            # Connected: the kernel drops datagrams from any other address or port.
            sock.connect(address)
            await loop.sock_sendall(sock, query)
            while True:
                response = await loop.sock_recv(sock, MAX_MESSAGE)
                if question.answered_by(response, query[:2]):
                    return response
    except TimeoutError:  # before OSError: TimeoutError is one
        raise _AttemptFailed("timeout") from None
    except OSError:  # ICMP port or host unreachable arrives as ConnectionRefusedError & co.
        raise _AttemptFailed("network") from None
    finally:
        sock.close()


async def _exchange_tcp(
    loop: asyncio.AbstractEventLoop,
    family: socket.AddressFamily,
    address: _SockAddr,
    query: bytes,
    question: _Question,
    deadline: float,
) -> bytes:
    """Send query over a fresh TCP connection; return the first matching message."""
    sock = _fresh_socket(family, socket.SOCK_STREAM)
    mismatched = False
    try:
        async with asyncio.timeout_at(deadline):
            await loop.sock_connect(sock, address)
            await loop.sock_sendall(sock, len(query).to_bytes(2, "big") + query)
            while True:
                size = int.from_bytes(await _recv_exactly(loop, sock, 2), "big")
                response = await _recv_exactly(loop, sock, size)
                if question.answered_by(response, query[:2]):
                    return response
                mismatched = True
    except TimeoutError:
        raise _AttemptFailed("timeout") from None
    except (OSError, EOFError):
        raise _AttemptFailed("mismatch" if mismatched else "truncated") from None
    finally:
        sock.close()


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    """Read exactly size bytes from sock; raise EOFError if it closes first."""
    chunks: list[bytes] = []
    missing = size
    while missing:
        chunk = await loop.sock_recv(sock, missing)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def _question(packet: bytes) -> _Question:
    """Return the single question of query packet; raise ValueError unless it is plain labels."""
    if len(packet) < HEADER_SIZE or len(packet) > MAX_MESSAGE:
        raise ValueError("a query must be 12 to 65535 bytes long")
    if packet[2] & _QR or packet[4:6] != _ONE_QUESTION:
        raise ValueError("a query must have QR clear and exactly one question")
    end = HEADER_SIZE
    while True:
        if end >= len(packet) or end - HEADER_SIZE >= _MAX_NAME:
            raise ValueError("the query name is truncated or longer than 255 octets")
        length = packet[end]
        if length > 63:
            raise ValueError("the query name must be plain labels, without compression")
        end += 1 + length
        if length == 0:
            break
    if end - HEADER_SIZE > _MAX_NAME or end + 4 > len(packet):
        raise ValueError("the query name or question is truncated or too long")
    return _Question(packet[HEADER_SIZE:end].lower(), packet[end : end + 4])


def _sockaddr(host: str, port: int) -> tuple[socket.AddressFamily, _SockAddr]:
    """Return the socket family and address for a numeric host; raise ValueError otherwise."""
    if not 0 < port < 65536:
        raise ValueError(f"upstream port {port} is not in 1-65535")
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        )
    except (OSError, UnicodeError):
        raise ValueError(f"upstream {host!r} is not a usable IP address") from None
    family, _type, _proto, _name, address = infos[0]
    return family, address


def resolv_conf_upstreams(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """Return the nameservers of a resolv.conf file, port 53; empty if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read(_RESOLV_CONF_LIMIT)
    except OSError:
        return []
    found: list[tuple[str, int]] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            address = str(ipaddress.ip_address(words[1]))
        except ValueError:
            continue
        if (address, DNS_PORT) not in found:
            found.append((address, DNS_PORT))
    return found
