"""HTTP/1.1 message heads (RFC 9112), parsed strictly: pure functions, no sockets.

A proxy that disagrees with the origin about where a message ends can be made to smuggle
a request past the URL check. So anything ambiguous is refused, not repaired: both
Content-Length and Transfer-Encoding, a transfer coding other than a final `chunked`,
differing Content-Length values, obs-fold, whitespace before a colon, bare CR or LF, control
characters, oversized lines and heads. Errors carry the status to answer and a stable slug.

Heads are read by llhttp (through httptools) with none of its lenient flags set, and a
head passes only if blockd's rules accept what llhttp read too: llhttp accepts several
things those rules refuse (a `#`, `\\` or encoded control in the target, protocols other
than HTTP/1.0 and 1.1, runs of spaces in the request line, transfer codings before
`chunked` in a request, 19-digit lengths, status codes below 100, controls in a reason
phrase; tests/http/test_h1.py lists each). A refused head is read again by the hand-written
reader below (`_strict_request`, `_strict_response`), only to name the refusal with the
same slug as before; it is never on the path of a head that passes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NoReturn

import httptools

MAX_REQUEST_LINE = 8192
MAX_HEAD = 32768
MAX_HEADERS = 100
MAX_CHUNK_LINE = 1024
MAX_CHUNK = 2**31 - 1  # origins that keep a chunk size in 32 signed bits read no other size
NO_BODY_METHODS = frozenset({"GET", "HEAD", "TRACE"})  # a body here has no meaning (CL.0)

Framing = Literal["none", "length", "chunked", "close"]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# name ":" value; one character class for the value, so matching stays linear (no ReDoS)
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):([\t\x20-\x7e\x80-\xff]*)")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_ENCODED_CONTROL = re.compile(rb"%(?:[01][0-9A-Fa-f]|7[Ff]|5[Cc])")  # %00-%1f, %7f, %5c (\\)
_ABSOLUTE = re.compile(r"https?://[^/?#]", re.IGNORECASE)
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([1-9][0-9]{2})(?: [\t\x20-\x7e\x80-\xff]*)?")


class HttpError(ValueError):
    """A message that must not be passed on; `status` is what to answer."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        """Record the status to answer and a stable reason slug for metrics."""
        super().__init__(detail or reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Request:
    """A request head as received, with what the proxy needs to decide and relay it."""

    method: str
    target: str  # as sent: origin-form '/path?q', absolute-form 'http://h/p', or authority
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # names and values as received
    host: str  # authority from the absolute-form target, else the Host header ('' if none)
    framing: Framing  # of the request body: none, length or chunked
    length: int
    keep_alive: bool
    upgrade: bool  # asks to switch to WebSocket, the one protocol that carries no requests

    @property
    def path(self) -> str:
        """Return the origin-form target ('/path?query')."""
        if self.target.startswith("/") or self.target == "*":
            return self.target
        if "://" in self.target:
            rest = self.target.split("://", 1)[1]
            slash = rest.find("/")
            query = rest.find("?")
            if slash < 0 or 0 <= query < slash:
                return "/" + rest[query:] if query >= 0 else "/"
            return rest[slash:]
        return "/"


@dataclass(frozen=True, slots=True)
class Response:
    """A response head: its status and where its body ends."""

    status: int
    framing: Framing
    length: int
    keep_alive: bool
    websocket: bool = False  # a 101 that switches to WebSocket


def head_end(buffer: bytes | bytearray) -> int:
    """Return the index just past the blank line ending a head, or -1 if not complete.

    Raise HttpError if the head is already too long to accept.
    """
    first = buffer.find(b"\r\n", 0, MAX_REQUEST_LINE + 2)
    seen = min(len(buffer), MAX_REQUEST_LINE + 2)  # of the first line, CR not counted
    if first < 0 and seen - buffer[:seen].endswith(b"\r") > MAX_REQUEST_LINE:
        raise HttpError(414, "line-too-long")
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise HttpError(431, "head-too-large")
        return -1
    if end + 4 > MAX_HEAD:
        raise HttpError(431, "head-too-large")
    return end + 4


def _fields(lines: list[bytes]) -> tuple[tuple[bytes, bytes], ...]:
    """Parse header lines strictly."""
    if len(lines) > MAX_HEADERS:
        raise HttpError(431, "too-many-headers")
    out = []
    match = _FIELD.fullmatch
    for line in lines:
        m = match(line)  # hot path: one regex per field line
        if m is None:
            raise HttpError(400, "obs-fold" if line[:1] in (b" ", b"\t") else "bad-header")
        out.append((m[1], m[2].strip(b" \t")))
    return tuple(out)


def _split_head(head: bytes) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]:
    if not head.endswith(b"\r\n\r\n"):
        raise HttpError(400, "bad-head")
    lines = head[:-4].split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise HttpError(400, "bare-cr-lf")
        if b"\x00" in line:
            raise HttpError(400, "control-character")
    return lines[0], _fields(lines[1:])


def _framing(
    headers: tuple[tuple[bytes, bytes], ...], *, response: bool
) -> tuple[Framing, int, set[bytes]]:
    """Return (framing, length, connection options), refusing every ambiguity."""
    bad = 502 if response else 400
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    connection: set[bytes] = set()
    for name, value in headers:
        key = name.lower()
        if b"_" in key and key.replace(b"_", b"-") in (b"content-length", b"transfer-encoding"):
            raise HttpError(bad, "ambiguous-header")  # some origins read _ as -
        if key == b"content-length":
            for part in value.split(b","):
                lengths.add(part.strip(b" \t"))
        elif key == b"transfer-encoding":
            codings += [c.strip(b" \t").lower() for c in value.split(b",")]
        elif key == b"connection":
            connection |= {c.strip(b" \t").lower() for c in value.split(b",")}
    if codings:
        if lengths:
            raise HttpError(bad, "length-and-chunked")
        if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            raise HttpError(501 if not response else bad, "unsupported-coding")
        if not response and codings != [b"chunked"]:
            raise HttpError(501, "unsupported-coding")
        return "chunked", 0, connection
    if lengths:
        if len(lengths) != 1:
            raise HttpError(bad, "conflicting-length")
        (text,) = lengths
        if not _DIGITS.fullmatch(text):
            raise HttpError(bad, "bad-length")
        return "length", int(text), connection
    return ("close" if response else "none"), 0, connection


def _persistent(version: bytes, connection: set[bytes]) -> bool:
    """Say whether the connection stays open after this message (RFC 9112 9.3)."""
    if b"close" in connection:
        return False
    return version == b"HTTP/1.1" or b"keep-alive" in connection


def _upgrades_to(headers: tuple[tuple[bytes, bytes], ...]) -> list[bytes]:
    """Return the protocols an Upgrade header asks for, lowercased."""
    return [
        p.strip(b" \t").lower()
        for n, v in headers
        if n.lower() == b"upgrade"
        for p in v.split(b",")
    ]


class _Head:
    """What llhttp read of one head: its callbacks (called from C) fill this in."""

    __slots__ = ("complete", "headers", "target")

    def __init__(self) -> None:
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value.rstrip(b" \t")))  # llhttp keeps trailing OWS

    def on_headers_complete(self) -> None:
        self.complete = True


def parse_request(head: bytes) -> Request:
    """Parse a request head ending in CRLF CRLF; raise HttpError for anything ambiguous."""
    # Hot path (every proxied request): llhttp reads the head in C, then blockd's rules
    # check what it read; only a refusal pays for the hand-written reader.
    got = _Head()
    parser = httptools.HttpRequestParser(got)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # CONNECT, or an Upgrade: llhttp stops after the head, as blockd does
    except httptools.HttpParserError as e:
        raise _request_refusal(head, e) from None
    line = head[: head.find(b"\r\n")]
    method, target, version = parser.get_method(), got.target, line[-8:]
    if (
        not got.complete
        or head.find(b"\r\n\r\n") != len(head) - 4  # one head, nothing after it
        or (version != b"HTTP/1.1" and version != b"HTTP/1.0")
        # llhttp allows runs of spaces and other protocols (RTSP, ICE): one exact line
        or len(line) != len(method) + len(target) + 10
        or not line.startswith(method + b" " + target)
        or line[-9] != 0x20
        or not _TARGET.fullmatch(target)
        # One meaning: what RFC 9112/3986 forbid in a request-target, and what origins
        # read in more than one way (`\` as `/`, a fragment, an encoded NUL), is refused.
        or b"#" in target
        or b"\\" in target
        or (b"%" in target and _ENCODED_CONTROL.search(target))
        or len(got.headers) > MAX_HEADERS
    ):
        raise _request_refusal(head, None)
    return _request(method, target, version, tuple(got.headers))


def _request_refusal(head: bytes, error: httptools.HttpParserError | None) -> HttpError:
    """Return the HttpError for a head llhttp or blockd's checks refused, named as before."""
    try:
        _strict_request(head)
    except HttpError as e:
        return e
    # Where llhttp is stricter than the hand-written reader (tests/http/test_h1.py, LLHTTP_ONLY)
    if isinstance(error, httptools.HttpParserInvalidMethodError):
        return HttpError(501, "unknown-method")  # a token llhttp does not know (RFC 9110 9.1)
    reason = _stricter(error)
    return HttpError(501 if reason == "unsupported-coding" else 400, reason)


def _stricter(error: httptools.HttpParserError | None) -> str:
    """Name what llhttp refused that blockd's own rules let pass."""
    reason = str(error)
    if "Content-Length" in reason:
        return "repeated-length"  # the same length twice, as a list or in two fields
    if "Transfer-Encoding" in reason:
        return "unsupported-coding"  # whitespace other than spaces after `chunked`
    return "malformed"


def _strict_request(head: bytes) -> Request:
    """Read a request head by hand, refusing as blockd always has (names refusals)."""
    line, headers = _split_head(head)
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "bad-request-line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
        raise HttpError(400, "bad-request-line")
    # One meaning: what RFC 9112/3986 forbid in a request-target, and what origins read
    # in more than one way (`\` as `/`, a fragment, an encoded NUL), is refused.
    if b"#" in target or b"\\" in target or _ENCODED_CONTROL.search(target):
        raise HttpError(400, "bad-target")
    if not _VERSION.fullmatch(version):
        raise HttpError(505, "bad-version")
    return _request(method, target, version, headers)


def _request(
    method: bytes, target: bytes, version: bytes, headers: tuple[tuple[bytes, bytes], ...]
) -> Request:
    """Apply blockd's framing, host and body rules to a request line and its fields."""
    framing, length, connection = _framing(headers, response=False)
    if framing == "chunked" and version == b"HTTP/1.0":
        raise HttpError(400, "chunked-http10")  # RFC 9112 6.1: faulty framing
    hosts = [v for n, v in headers if n.lower() == b"host"]
    if len(hosts) > 1:
        raise HttpError(400, "several-hosts")
    text = target.decode("ascii")
    host = hosts[0].decode("latin-1") if hosts else ""
    if method == b"CONNECT":
        host = text  # authority-form
    elif not text.startswith("/") and text != "*":  # absolute-form wins over Host (3.2.2)
        if not _ABSOLUTE.match(text):
            raise HttpError(400, "bad-target")
        authority = text.split("://", 1)[1]
        host = re.split(r"[/?#]", authority, maxsplit=1)[0]
    elif version == b"HTTP/1.1" and not hosts:
        raise HttpError(400, "no-host")
    if method.decode("ascii") in NO_BODY_METHODS and (
        framing == "chunked" or (framing == "length" and length > 0)
    ):
        raise HttpError(400, "body-not-allowed")
    keep_alive = _persistent(version, connection)
    upgrade = b"upgrade" in connection and _upgrades_to(headers) == [b"websocket"]
    return Request(
        method.decode("ascii"),
        text,
        version,
        headers,
        host,
        framing if framing != "close" else "none",
        length,
        keep_alive,
        upgrade,
    )


def parse_response(head: bytes, method: str) -> Response:
    """Parse a response head to a request of `method`; raise HttpError(502) if ambiguous."""
    # Hot path (every proxied response): llhttp reads the fields, one regex the status line.
    got = _Head()
    parser = httptools.HttpResponseParser(got)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError as e:
        # llhttp stops after the head of a 101 (a switch of protocols), upgrade or not
        if not (got.complete and parser.get_status_code() == 101):
            _response_refusal(head, method, e)
    m = _STATUS_LINE.fullmatch(head, 0, head.find(b"\r\n"))
    if (
        m is None
        or not got.complete
        or head.find(b"\r\n\r\n") != len(head) - 4
        or len(got.headers) > MAX_HEADERS
    ):
        _response_refusal(head, method, None)
    return _response(int(m[2]), m[1], tuple(got.headers), method)


def _response_refusal(
    head: bytes, method: str, error: httptools.HttpParserError | None
) -> NoReturn:
    """Raise the HttpError(502) for a response head refused by llhttp or blockd's checks."""
    _strict_response(head, method)
    raise HttpError(502, _stricter(error))


def _strict_response(head: bytes, method: str) -> Response:
    """Read a response head by hand, refusing as blockd always has (names refusals)."""
    try:
        line, headers = _split_head(head)
    except HttpError as e:
        raise HttpError(502, e.reason) from None
    m = _STATUS_LINE.fullmatch(line)
    if m is None:
        raise HttpError(502, "bad-status-line")
    return _response(int(m[2]), m[1], headers, method)


def _response(
    status: int, version: bytes, headers: tuple[tuple[bytes, bytes], ...], method: str
) -> Response:
    """Apply blockd's framing rules to a status and its fields."""
    framing, length, connection = _framing(headers, response=True)
    keep_alive = _persistent(version, connection)
    if method == "HEAD" or status < 200 or status in (204, 304):
        framing, length = "none", 0
    if framing == "close":
        keep_alive = False
    websocket = status == 101 and _upgrades_to(headers) == [b"websocket"]
    return Response(status, framing, length, keep_alive, websocket)


def chunk_size(line: bytes) -> int:
    """Return the size announced by a chunk-size line (CRLF included); raise HttpError."""
    if len(line) > MAX_CHUNK_LINE or not line.endswith(b"\r\n"):
        raise HttpError(400, "bad-chunk")
    if b"\r" in line[:-2] or b"\n" in line[:-2]:
        raise HttpError(400, "bad-chunk")
    size, _, _ext = line[:-2].partition(b";")
    size = size.rstrip(b" \t")
    if not _HEX.fullmatch(size) or int(size, 16) > MAX_CHUNK:
        raise HttpError(400, "bad-chunk")
    return int(size, 16)


def field_line(line: bytes) -> bool:
    """Say whether line (CRLF included) is a well-formed field, as a trailer must be."""
    return line.endswith(b"\r\n") and _FIELD.fullmatch(line[:-2]) is not None
