"""Read the server name from a TLS ClientHello without terminating TLS.

Pure and incremental: the HTTPS front feeds a `HelloReader` each piece it receives (starting
at the connection's first byte) until it returns a `ClientHello` or raises, then splices the
same bytes (`reader.data`) to the origin untouched or answers with `alert(...)`.
`parse_client_hello` is the same on everything received so far.

Stdlib only and hardened: every length is checked before it is used, each byte is examined
once however the hello is split,
and no input makes `parse_client_hello` raise anything but `TlsParseError` (its subclass
`NotTls` when the peer is not speaking TLS at all). The rules, strict where the RFCs are:

- Records (RFC 8446 §5.1): content type handshake (22), version 0x0301-0x0304, length
  1..2^14. The ClientHello may be fragmented over several records, which must all be handshake
  records and must end exactly where the ClientHello ends; bytes after its last record (a
  middlebox-compatibility ChangeCipherSpec, early data) are ignored.
- `limit` caps the bytes the ClientHello's records may span, headers included; a peer that
  announces or sends more gets "too-large", so the caller never buffers more than `limit`.
- The message: legacy_version 0x0301-0x0304, session id <= 32 bytes, cipher suites an even
  count of bytes >= 2, at least one compression method, and no extensions or an extensions
  block that exactly fills the rest; no extension over-reads, no type twice (RFC 8446 §4.2).
- server_name (RFC 6066 §3): exactly one entry, of name_type host_name, as OpenSSL and
  BoringSSL accept; anything else is ambiguous between us and the origin, so it fails closed.
  The name is lowercased, one trailing dot dropped, and must be dot-separated labels of 1-63
  letters, digits, '-' or '_', at most 253 bytes. An IP literal is not allowed in SNI: a name
  whose last label is a number (decimal, or 0x hex, as the WHATWG URL parser reads IPv4) is
  "bad-sni", as is an IPv6 literal (':' is not a label character).
- ALPN (RFC 7301) is validated and decoded for logging only: bytes other than printable ASCII
  (and the backslash) are written as \\xNN.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final, Literal, get_args

__all__ = [
    "ALERT_ACCESS_DENIED",
    "ALERT_DECODE_ERROR",
    "ALERT_HANDSHAKE_FAILURE",
    "ALERT_INTERNAL_ERROR",
    "ALERT_UNRECOGNIZED_NAME",
    "DEFAULT_LIMIT",
    "REASONS",
    "ClientHello",
    "HelloReader",
    "NotTls",
    "Reason",
    "TlsParseError",
    "alert",
    "parse_client_hello",
]

Reason = Literal[
    "not-tls",  # the first bytes are not a TLS record (a plain-text protocol, say)
    "sslv2",  # an SSLv2-compatible hello, which cannot carry SNI
    "not-handshake",  # a TLS record that is not a handshake record
    "bad-version",  # a record or legacy_version outside TLS 1.0-1.3
    "record-too-long",  # a record longer than 2^14 bytes
    "too-large",  # the ClientHello would span more than `limit` bytes
    "not-client-hello",  # a handshake message other than ClientHello
    "bad-length",  # a length field that disagrees with the bytes around it
    "bad-extension",  # an extension that over-reads, is repeated or is malformed
    "bad-sni",  # a server_name extension or host name that is not valid
]
REASONS: Final[tuple[Reason, ...]] = get_args(Reason)

DEFAULT_LIMIT: Final = 64 * 1024  # post-quantum key shares alone are over 1 KiB; be generous

# Alert descriptions (RFC 8446 §6) a front may send.
ALERT_HANDSHAKE_FAILURE: Final = 40
ALERT_ACCESS_DENIED: Final = 49
ALERT_DECODE_ERROR: Final = 50
ALERT_INTERNAL_ERROR: Final = 80
ALERT_UNRECOGNIZED_NAME: Final = 112

_ALERT = 21
_HANDSHAKE = 22
_CONTENT_TYPES = frozenset({20, 21, 22, 23, 24})  # change_cipher_spec .. heartbeat
_CLIENT_HELLO = 1
_MIN_VERSION = 0x0301
_MAX_VERSION = 0x0304
_MAX_RECORD = 1 << 14  # RFC 8446 §5.1: TLSPlaintext.length
_HEADER = 5  # record header: type, version, length
_SERVER_NAME = 0x0000
_ALPN = 0x0010
_ECH = 0xFE0D
_HOST_NAME = 0
_MAX_NAME = 253

_Bytes = bytes | bytearray | memoryview  # a receive buffer need not be copied first

_RECORD = struct.Struct("!BHH")
_ALERT_RECORD = struct.Struct("!BHHBB")
_NAME = re.compile(rb"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")
_NUMBER = re.compile(rb"[0-9]+|0x[0-9a-f]*")
_PRINTABLE = tuple(chr(b) if 0x20 < b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in range(256))


class TlsParseError(ValueError):
    """The bytes can never become a valid ClientHello; `reason` is a stable metric label."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        """Record the metric label and a short human detail."""
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: Reason = reason


class NotTls(TlsParseError):
    """The peer is not speaking TLS: a plain-text protocol or an SSLv2-compatible hello."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What the front needs from a ClientHello: the name to route on and a few facts to log."""

    server_name: str | None  # lowercased ASCII, no trailing dot; None without server_name
    ech: bool  # encrypted_client_hello offered: server_name is then the outer, public name
    alpn: tuple[str, ...]  # for logging and metrics only
    legacy_version: int


def parse_client_hello(data: _Bytes, *, limit: int = DEFAULT_LIMIT) -> ClientHello | None:
    """Return the ClientHello when `data` (everything received so far) holds it all.

    Return None when more bytes are needed; raise TlsParseError when `data` can never start
    with a valid ClientHello. A caller receiving piece by piece should use HelloReader,
    which examines each byte once however the hello is split.
    """
    return HelloReader(limit).feed(data)


class HelloReader:
    """Reassemble a ClientHello from the pieces a connection delivers, incrementally.

    Each complete record is checked and kept once; a partial one costs O(1) per piece. A
    hello trickled in 1-byte records and 1-byte reads is therefore O(total), not O(n^2).
    """

    __slots__ = ("_fragments", "_gathered", "_head", "_limit", "_pos", "_total", "data")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        """Accept a ClientHello whose records span at most `limit` bytes."""
        self.data = bytearray()  # every byte received, to be spliced on unchanged
        self._limit = limit
        self._pos = 0  # where the first record not yet complete starts
        self._fragments: list[bytes] = []  # handshake bytes of the complete records
        self._gathered = 0  # their length
        self._head = b""  # the first (up to 4) handshake bytes: type and length
        self._total: int | None = None  # bytes in the ClientHello, header included

    def feed(self, piece: _Bytes) -> ClientHello | None:
        """Add received bytes; return the ClientHello once whole (see parse_client_hello)."""
        self.data += piece
        message = self._reassemble()
        return None if message is None else _parse_message(message)

    def _reassemble(self) -> bytes | None:
        """Return the whole handshake message (header included), or None when more is needed."""
        data, size = self.data, len(self.data)
        while self._pos < size:
            pos = self._pos
            _check_record_start(data, pos, size)
            if pos + _HEADER > size:
                return None
            _, _, length = _RECORD.unpack_from(data, pos)
            if length == 0:
                raise TlsParseError("bad-length", "empty handshake record")
            if length > _MAX_RECORD:
                raise TlsParseError("record-too-long", f"record of {length} bytes")
            start, end = pos + _HEADER, pos + _HEADER + length
            if end > self._limit:
                raise TlsParseError(
                    "too-large", f"ClientHello records run past {self._limit} bytes"
                )
            have = min(end, size) - start  # short while the record is still arriving
            if self._gathered == 0 and have and data[start] != _CLIENT_HELLO:
                raise TlsParseError("not-client-hello", f"handshake type {data[start]}")
            if self._total is None and self._gathered + have >= 4:
                head = self._head + bytes(data[start : start + 4 - len(self._head)])
                self._total = 4 + int.from_bytes(head[1:4], "big")
                records = -(-self._total // _MAX_RECORD)
                if self._total + _HEADER * records > self._limit:
                    raise TlsParseError("too-large", f"ClientHello of {self._total} bytes")
            if self._total is not None and self._gathered + length > self._total:
                raise TlsParseError("bad-length", "record runs past the end of the ClientHello")
            if end > size:
                return None
            fragment = bytes(data[start:end])
            self._fragments.append(fragment)
            self._head += fragment[: 4 - len(self._head)]
            self._gathered += length
            self._pos = end
            if self._gathered == self._total:
                return b"".join(self._fragments)
        return None


def alert(description: int, *, version: int = 0x0303) -> bytes:
    """Return a fatal TLS alert record with `description` (e.g. ALERT_UNRECOGNIZED_NAME)."""
    if not 0 <= description <= 0xFF or not 0 <= version <= 0xFFFF:
        raise ValueError(f"alert description {description} or version {version} out of range")
    return _ALERT_RECORD.pack(_ALERT, version, 2, 2, description)


def _check_record_start(data: _Bytes, pos: int, size: int) -> None:
    """Raise unless the (possibly partial) record header at `pos` can start a handshake record."""
    kind = data[pos]
    if kind != _HANDSHAKE:
        if pos == 0 and kind & 0x80:
            raise NotTls("sslv2", "SSLv2-compatible hello")
        if pos == 0 and kind not in _CONTENT_TYPES:
            raise NotTls("not-tls", f"first byte {kind:#04x}")
        raise TlsParseError("not-handshake", f"record type {kind}")
    if pos + 1 < size and data[pos + 1] != 3:
        if pos == 0:
            raise NotTls("not-tls", f"record version major {data[1]}")
        raise TlsParseError("bad-version", f"record version major {data[pos + 1]}")
    if pos + 2 < size and not _MIN_VERSION <= (0x0300 | data[pos + 2]) <= _MAX_VERSION:
        raise TlsParseError("bad-version", f"record version 3.{data[pos + 2]}")


class _Reader:
    """Read length-prefixed fields of a bytes value, raising `reason` on any over-read."""

    __slots__ = ("_data", "_pos", "_reason")

    def __init__(self, data: bytes, reason: Reason) -> None:
        self._data = data
        self._pos = 0
        self._reason: Reason = reason

    def done(self) -> bool:
        """Return whether every byte has been read."""
        return self._pos == len(self._data)

    def take(self, count: int) -> bytes:
        """Return the next `count` bytes."""
        end = self._pos + count
        if end > len(self._data):
            raise TlsParseError(self._reason, f"{count} bytes wanted, {len(self._data)} held")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        """Return the next byte."""
        return self.take(1)[0]

    def u16(self) -> int:
        """Return the next big-endian 16-bit integer."""
        return int.from_bytes(self.take(2), "big")

    def vec8(self) -> bytes:
        """Return a vector with a one-byte length."""
        return self.take(self.u8())

    def vec16(self) -> bytes:
        """Return a vector with a two-byte length."""
        return self.take(self.u16())

    def finish(self, what: str) -> None:
        """Raise unless every byte has been read."""
        if not self.done():
            raise TlsParseError(self._reason, f"bytes left after {what}")


def _parse_message(message: bytes) -> ClientHello:
    """Return the ClientHello in a whole handshake message (RFC 8446 §4.1.2)."""
    body = _Reader(message, "bad-length")
    body.take(4)  # msg_type and length, checked while reassembling
    legacy_version = body.u16()
    if not _MIN_VERSION <= legacy_version <= _MAX_VERSION:
        raise TlsParseError("bad-version", f"legacy_version {legacy_version:#06x}")
    body.take(32)  # random
    if len(body.vec8()) > 32:
        raise TlsParseError("bad-length", "session id over 32 bytes")
    suites = body.vec16()
    if len(suites) < 2 or len(suites) % 2:
        raise TlsParseError("bad-length", f"cipher suites of {len(suites)} bytes")
    if not body.vec8():
        raise TlsParseError("bad-length", "no compression methods")
    if body.done():  # TLS 1.2 allows a ClientHello without extensions
        return ClientHello(None, False, (), legacy_version)
    extensions = _Reader(body.vec16(), "bad-extension")
    body.finish("the extensions")
    seen: set[int] = set()
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    while not extensions.done():
        kind = extensions.u16()
        value = extensions.vec16()
        if kind in seen:
            raise TlsParseError("bad-extension", f"extension {kind:#06x} twice")
        seen.add(kind)
        if kind == _SERVER_NAME:
            server_name = _server_name(value)
        elif kind == _ALPN:
            alpn = _alpn(value)
    return ClientHello(server_name, _ECH in seen, alpn, legacy_version)


def _server_name(value: bytes) -> str:
    """Return the host name of a server_name extension (RFC 6066 §3)."""
    extension = _Reader(value, "bad-sni")
    names = _Reader(extension.vec16(), "bad-sni")
    extension.finish("the server name list")
    if names.u8() != _HOST_NAME:
        raise TlsParseError("bad-sni", "name type is not host_name")
    name = names.vec16().lower()
    names.finish("the first server name")
    if name.endswith(b"."):
        name = name[:-1]
    if len(name) > _MAX_NAME or not _NAME.fullmatch(name):
        raise TlsParseError("bad-sni", "host name is not a DNS name")
    if _NUMBER.fullmatch(name.rpartition(b".")[2]):
        raise TlsParseError("bad-sni", "host name is an IP literal")
    return name.decode("ascii")


def _alpn(value: bytes) -> tuple[str, ...]:
    """Return the protocol names of an ALPN extension (RFC 7301 §3.1)."""
    extension = _Reader(value, "bad-extension")
    protocols = _Reader(extension.vec16(), "bad-extension")
    extension.finish("the ALPN list")
    if protocols.done():
        raise TlsParseError("bad-extension", "empty ALPN list")
    names: list[str] = []
    while not protocols.done():
        name = protocols.vec8()
        if not name:
            raise TlsParseError("bad-extension", "empty ALPN protocol name")
        names.append("".join(_PRINTABLE[byte] for byte in name))
    return tuple(names)
