"""Tests of the strict HTTP/1.1 head parser: framing, smuggling attempts, limits, fuzz.

Every refusal is asserted with its status and reason slug: the slug is a metric label and
the status is what the client (or, for responses, the client of a bad origin) is told.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockd.http import h1
from blockd.http.decide import split_host
from blockd.http.proxy import _origin_head
from blockd.urls import InvalidName

T = TypeVar("T")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def head(*lines: bytes | str, first: bytes = b"GET / HTTP/1.1") -> bytes:
    """Return a request (or response) head: the first line, header lines, blank line."""
    raw = [line.encode("latin-1") if isinstance(line, str) else line for line in lines]
    return b"\r\n".join([first, *raw]) + b"\r\n\r\n"


def post(*lines: bytes | str, version: bytes = b"HTTP/1.1") -> bytes:
    """Return a POST head to a.example with the given extra header lines."""
    return head("Host: a.example", *lines, first=b"POST /upload " + version)


def refusal(parse: Callable[[bytes], object], data: bytes) -> tuple[int, str]:
    """Return (status, reason) of the HttpError that parse(data) must raise."""
    with pytest.raises(h1.HttpError) as caught:
        parse(data)
    return caught.value.status, caught.value.reason


def attempt(parse: Callable[[bytes], T], data: bytes) -> T | h1.HttpError:
    """Return parse(data), or the HttpError it raised; any other exception propagates."""
    try:
        return parse(data)
    except h1.HttpError as e:
        return e


def response(data: bytes, method: str = "GET") -> h1.Response:
    """Parse a response head to a request of method."""
    return h1.parse_response(data, method)


# -- requests: what is accepted ----------------------------------------------------------------


def test_origin_form_request() -> None:
    req = h1.parse_request(head("Host: a.example", "Accept: */*", first=b"GET /p?q=1 HTTP/1.1"))
    assert (req.method, req.target, req.version) == ("GET", "/p?q=1", b"HTTP/1.1")
    assert (req.host, req.path) == ("a.example", "/p?q=1")
    assert (req.framing, req.length, req.keep_alive, req.upgrade) == ("none", 0, True, False)


def test_header_names_and_values_are_kept_as_received() -> None:
    req = h1.parse_request(
        head("hOsT: A.Example", "X-Odd:  spaced  value \t", "X-Empty:", "X-C:a:b")
    )
    assert req.headers == (
        (b"hOsT", b"A.Example"),
        (b"X-Odd", b"spaced  value"),  # only the surrounding whitespace goes
        (b"X-Empty", b""),
        (b"X-C", b"a:b"),
    )
    assert req.host == "A.Example"  # canonicalising the host is the proxy's job


def test_obs_text_in_a_value_is_kept() -> None:
    req = h1.parse_request(head("Host: a.example", b"X-Latin: caf\xe9 \xff"))
    assert req.headers[1] == (b"X-Latin", b"caf\xe9 \xff")


@pytest.mark.parametrize(
    ("target", "host", "path"),
    [
        ("http://a.example/p?q=1", "a.example", "/p?q=1"),
        ("http://a.example", "a.example", "/"),
        ("http://a.example?x", "a.example", "/?x"),
        ("http://a.example?x/y", "a.example", "/?x/y"),
        ("http://a.example/a?b/c", "a.example", "/a?b/c"),
        ("http://a.example:8080/p", "a.example:8080", "/p"),
        ("http://[::1]:8080/p", "[::1]:8080", "/p"),
        ("HTTP://A.EXAMPLE/P", "A.EXAMPLE", "/P"),
    ],
)
def test_absolute_form_host_wins_over_the_host_header(target: str, host: str, path: str) -> None:
    req = h1.parse_request(head("Host: other.example", first=f"GET {target} HTTP/1.1".encode()))
    assert (req.target, req.host, req.path) == (target, host, path)


def test_absolute_form_needs_no_host_header() -> None:
    req = h1.parse_request(head(first=b"GET http://a.example/ HTTP/1.1"))
    assert req.host == "a.example"


@pytest.mark.parametrize(
    ("first", "host", "path"),
    [
        (b"CONNECT a.example:443 HTTP/1.1", "a.example:443", "/"),
        (b"OPTIONS * HTTP/1.1", "a.example:443", "*"),
    ],
)
def test_authority_and_asterisk_forms_take_the_host_header(
    first: bytes, host: str, path: str
) -> None:
    req = h1.parse_request(head("Host: a.example:443", first=first))
    assert (req.host, req.path) == (host, path)


def test_http_10_needs_no_host() -> None:
    req = h1.parse_request(head(first=b"GET / HTTP/1.0"))
    assert (req.host, req.keep_alive) == ("", False)


def test_an_empty_host_header_is_left_to_the_proxy() -> None:
    assert h1.parse_request(head("Host:")).host == ""


@pytest.mark.parametrize(
    ("version", "lines", "keep_alive"),
    [
        (b"HTTP/1.1", [], True),
        (b"HTTP/1.1", ["Connection: close"], False),
        (b"HTTP/1.1", ["Connection: Close"], False),
        (b"HTTP/1.1", ["Connection: foo, close"], False),
        (b"HTTP/1.1", ["Connection: keep-alive", "Connection: close"], False),
        (b"HTTP/1.1", ["Connection: keep-alive"], True),
        (b"HTTP/1.1", ["Connection: closed"], True),
        (b"HTTP/1.0", [], False),
        (b"HTTP/1.0", ["Connection: keep-alive"], True),
        (b"HTTP/1.0", ["Connection: Keep-Alive"], True),
        (b"HTTP/1.0", ["Keep-Alive: timeout=5"], False),
    ],
)
def test_keep_alive(version: bytes, lines: list[str], keep_alive: bool) -> None:
    req = h1.parse_request(head("Host: a.example", *lines, first=b"GET / " + version))
    assert req.keep_alive is keep_alive


@pytest.mark.parametrize(
    ("lines", "upgrade"),
    [
        (["Connection: Upgrade", "Upgrade: websocket"], True),
        (["Connection: keep-alive, upgrade", "upgrade: websocket"], True),
        (["Upgrade: websocket", "Connection: UPGRADE"], True),
        (["Connection: upgrade"], False),
        (["Upgrade: websocket"], False),
        (["Connection: keep-alive", "Upgrade: websocket"], False),
        (["Connection: upgraded", "Upgrade: websocket"], False),
    ],
)
def test_upgrade_needs_the_connection_option_and_the_header(
    lines: list[str], upgrade: bool
) -> None:
    assert h1.parse_request(head("Host: a.example", *lines)).upgrade is upgrade


def test_an_upgrade_request_stays_keep_alive_until_switched() -> None:
    req = h1.parse_request(head("Host: a.example", "Connection: upgrade", "Upgrade: h2c"))
    assert req.keep_alive


@pytest.mark.parametrize(
    ("lines", "framing", "length"),
    [
        ([], "none", 0),
        (["Content-Length: 0"], "length", 0),
        (["Content-Length: 10"], "length", 10),
        (["content-length:  7 "], "length", 7),
        (["Content-Length: 005"], "length", 5),
        (["Content-Length: " + "9" * 18], "length", 10**18 - 1),
        (["Transfer-Encoding: chunked"], "chunked", 0),
        (["transfer-encoding: CHUNKED"], "chunked", 0),
        (["Transfer-Encoding:  \tChunked  "], "chunked", 0),
    ],
)
def test_request_framing(lines: list[str], framing: str, length: int) -> None:
    req = h1.parse_request(post(*lines))
    assert (req.framing, req.length) == (framing, length)


# -- requests: smuggling and other hostile heads -------------------------------------------------


def with_line(first: bytes) -> bytes:
    """Return a request head with this request line and a Host header."""
    return head("Host: a.example", first=first)


REFUSED: dict[tuple[int, str], dict[str, bytes]] = {
    (400, "length-and-chunked"): {  # both framings: the classic CL.TE / TE.CL desync
        "cl-then-te": post("Content-Length: 5", "Transfer-Encoding: chunked"),
        "te-then-cl": post("Transfer-Encoding: chunked", "Content-Length: 5"),
        "te-gzip-and-cl": post("Transfer-Encoding: gzip", "content-length: 5"),
        "te-and-zero-cl": post("Content-Length: 0", "Transfer-Encoding: chunked"),
    },
    (400, "conflicting-length"): {
        "two-headers": post("Content-Length: 5", "Content-Length: 6"),
        "list": post("Content-Length: 5, 6"),
        "empty-list-member": post("Content-Length: 5,,5"),
        "trailing-comma": post("Content-Length: 5,"),
        "leading-comma": post("Content-Length: ,5"),
        "leading-zero-differs": post("Content-Length: 5", "Content-Length: 05"),
    },
    (400, "bad-length"): {
        "letters": post("Content-Length: abc"),
        "negative": post("Content-Length: -1"),
        "plus-sign": post("Content-Length: +5"),
        "hex": post("Content-Length: 0x5"),
        "decimal-point": post("Content-Length: 5.0"),
        "inner-space": post("Content-Length: 1 0"),
        "empty": post("Content-Length:"),
        "nineteen-digits": post("Content-Length: " + "9" * 19),
        "superscript-two": post(b"Content-Length: \xb2"),
    },
    (501, "unsupported-coding"): {  # a request may only be `chunked`, once
        "chunked-twice": post("Transfer-Encoding: chunked, chunked"),
        "chunked-two-headers": post("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
        "gzip-chunked": post("Transfer-Encoding: gzip, chunked"),
        "gzip-then-chunked-headers": post("Transfer-Encoding: gzip", "Transfer-Encoding: chunked"),
        "chunked-gzip": post("Transfer-Encoding: chunked, gzip"),
        "gzip": post("Transfer-Encoding: gzip"),
        "identity": post("Transfer-Encoding: identity"),
        "xchunked": post("Transfer-Encoding: xchunked"),
        "chunkedx": post("Transfer-Encoding: chunkedx"),
        "quoted": post('Transfer-Encoding: "chunked"'),
        "parameter": post("Transfer-Encoding: chunked;q=1"),
        "leading-comma": post("Transfer-Encoding: ,chunked"),
        "trailing-comma": post("Transfer-Encoding: chunked,"),
        "empty": post("Transfer-Encoding:"),
        "inner-space": post("Transfer-Encoding: chun ked"),
        "nbsp": post(b"Transfer-Encoding: \xa0chunked"),
    },
    (400, "obs-fold"): {
        "space": post("Content-Length: 5", " 6"),
        "tab": post("X-A: a", "\tTransfer-Encoding: chunked"),
        "into-request-line": head(" Host: a.example"),
    },
    (400, "bad-header"): {
        "space-before-colon": head("Host : a.example"),
        "tab-before-colon": post("Transfer-Encoding\t: chunked"),
        "te-space-before-colon": post("Transfer-Encoding : chunked"),
        "no-colon": head("Host a.example"),
        "empty-name": head("Host: a.example", ": x"),
        "non-token-name": head("Host: a.example", "X(A): 1"),
        "non-ascii-name": head("Host: a.example", b"X-\xe9: 1"),
        "control-in-value": head("Host: a.example", "X-A: a\x01b"),
        "del-in-value": head("Host: a.example", "X-A: a\x7fb"),
        "escape-in-value": head("Host: a.example", "X-A: \x1b[31m"),
        "vertical-tab-in-te": post("Transfer-Encoding: \x0bchunked"),
        "form-feed-in-te": post("Transfer-Encoding: chunked\x0c"),
        "blank-line-twice": head("Host: a.example") + b"\r\n",
        "whitespace-then-control": head("Host: a.example", "X-A:" + "\t" * 20000 + "\x01"),
    },
    (400, "bare-cr-lf"): {
        "lf-in-value": head("Host: a.example", "X-A: a\nTransfer-Encoding: chunked"),
        "cr-in-value": head("Host: a.example", "X-A: a\rb"),
        "lf-after-request-line": b"GET / HTTP/1.1\nHost: a.example\r\n\r\n",
        "cr-in-target": with_line(b"GET /\r HTTP/1.1"),
    },
    (400, "control-character"): {
        "nul-in-value": head("Host: a.example", "X-A: a\x00b"),
        "nul-in-name": head("Host: a.example", "X-\x00A: 1"),
        "nul-in-target": with_line(b"GET /\x00 HTTP/1.1"),
    },
    (400, "chunked-http10"): {  # RFC 9112 6.1: an origin may ignore it and read no body
        "te-on-1.0": head(
            "Host: a.example", "Transfer-Encoding: chunked", first=b"POST / HTTP/1.0"
        ),
    },
    (400, "ambiguous-header"): {  # some origins read _ as -
        "underscore-te": head("Host: a.example", "Transfer_Encoding: chunked"),
        "underscore-cl": head("Host: a.example", "Content_Length: 5"),
    },
    (400, "bad-target"): {  # a :// inside a path must not change the host checked
        "scheme-less": with_line(b"GET x/a://b.example HTTP/1.1"),
        "ftp": with_line(b"GET ftp://b.example/ HTTP/1.1"),
    },
    (400, "bad-head"): {
        "lf-crlf": b"GET / HTTP/1.1\r\nHost: a.example\n\r\n",
        "lf-lf": b"GET / HTTP/1.1\r\nHost: a.example\n\n",
        "no-blank-line": b"GET / HTTP/1.1\r\nHost: a.example\r\n",
    },
    (400, "no-host"): {
        "none": head(),
        "only-lookalikes": head("X-Host: a.example", "Host_: a.example"),
    },
    (400, "several-hosts"): {
        "different": head("Host: a.example", "Host: b.example"),
        "same": head("Host: a.example", "host: a.example"),
        "http-1.0": head("Host: a", "Host: b", first=b"GET / HTTP/1.0"),
        "absolute-form": head("Host: a", "Host: b", first=b"GET http://c/ HTTP/1.1"),
    },
    (400, "bad-request-line"): {
        "extra-space": with_line(b"GET  / HTTP/1.1"),
        "trailing-space": with_line(b"GET / HTTP/1.1 "),
        "leading-space": with_line(b" GET / HTTP/1.1"),
        "tabs": with_line(b"GET\t/\tHTTP/1.1"),
        "space-in-target": with_line(b"GET /a b HTTP/1.1"),
        "tab-in-target": with_line(b"GET /a\tb HTTP/1.1"),
        "del-in-target": with_line(b"GET /\x7f HTTP/1.1"),
        "control-in-target": with_line(b"GET /\x01 HTTP/1.1"),
        "non-ascii-target": with_line(b"GET /\xe9 HTTP/1.1"),
        "no-version": with_line(b"GET /"),
        "method-only": with_line(b"GET"),
        "empty": with_line(b""),
        "empty-method": with_line(b" / HTTP/1.1"),
        "non-token-method": with_line(b"G(T / HTTP/1.1"),
        "non-ascii-method": with_line(b"G\xc9T / HTTP/1.1"),
    },
    (505, "bad-version"): {
        "http-2": with_line(b"GET / HTTP/2.0"),
        "http-1.2": with_line(b"GET / HTTP/1.2"),
        "http-0.9": with_line(b"GET / HTTP/0.9"),
        "lowercase": with_line(b"GET / http/1.1"),
        "no-minor": with_line(b"GET / HTTP/1"),
        "padded": with_line(b"GET / HTTP/01.1"),
        "no-name": with_line(b"GET / 1.1"),
    },
}


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        pytest.param(data, status, reason, id=f"{reason}:{name}")
        for (status, reason), cases in REFUSED.items()
        for name, data in cases.items()
    ],
)
def test_hostile_request_is_refused(data: bytes, status: int, reason: str) -> None:
    assert refusal(h1.parse_request, data) == (status, reason)


# Where llhttp (strict: no lenient flag set) and the hand-written reader blockd used before
# disagree. LLHTTP_ACCEPTS: llhttp reads these, blockd's rules on top of it refuse them, with
# the reason the hand-written reader gave. LLHTTP_ONLY: llhttp refuses what blockd's own rules
# let pass; a refusal is safe, and nginx (>= 1.23) refuses repeated lengths too.
LLHTTP_ACCEPTS: dict[str, tuple[bytes, tuple[int, str]]] = {
    "fragment": (with_line(b"GET /a#b HTTP/1.1"), (400, "bad-target")),
    "backslash": (with_line(b"GET /a\\b HTTP/1.1"), (400, "bad-target")),
    "encoded-nul": (with_line(b"GET /a%00 HTTP/1.1"), (400, "bad-target")),
    "encoded-backslash": (with_line(b"GET /a%5c HTTP/1.1"), (400, "bad-target")),
    "ftp-absolute-form": (with_line(b"GET ftp://b.example/ HTTP/1.1"), (400, "bad-target")),
    "two-spaces": (with_line(b"GET  / HTTP/1.1"), (400, "bad-request-line")),
    "http-0.9-line": (with_line(b"GET /"), (400, "bad-request-line")),
    "http-2.0": (with_line(b"GET / HTTP/2.0"), (505, "bad-version")),
    "http-0.9": (with_line(b"GET / HTTP/0.9"), (505, "bad-version")),
    "rtsp": (with_line(b"GET / RTSP/1.0"), (505, "bad-version")),
    "nineteen-digit-length": (post("Content-Length: " + "9" * 19), (400, "bad-length")),
    "gzip-then-chunked": (post("Transfer-Encoding: gzip, chunked"), (501, "unsupported-coding")),
    "coding-lists-in-two-fields": (
        post("Transfer-Encoding: gzip", "Transfer-Encoding: chunked"),
        (501, "unsupported-coding"),
    ),
    "leading-comma-coding": (post("Transfer-Encoding: ,chunked"), (501, "unsupported-coding")),
    "chunked-on-http-1.0": (
        head("Host: a.example", "Transfer-Encoding: chunked", first=b"POST / HTTP/1.0"),
        (400, "chunked-http10"),
    ),
    "underscore-length": (head("Host: a.example", "Content_Length: 5"), (400, "ambiguous-header")),
    "blank-line-twice": (head("Host: a.example") + b"\r\n", (400, "bad-header")),
    "no-host": (head(), (400, "no-host")),
    "two-hosts": (head("Host: a.example", "Host: b.example"), (400, "several-hosts")),
    "body-on-get": (head("Host: a.example", "Content-Length: 1"), (400, "body-not-allowed")),
}
LLHTTP_ONLY: dict[str, tuple[bytes, tuple[int, str]]] = {
    "extension-method": (with_line(b"FROB / HTTP/1.1"), (501, "unknown-method")),
    "same-length-as-list": (post("Content-Length: 5, 5"), (400, "repeated-length")),
    "same-length-spaced-list": (post("Content-Length: 5 ,5"), (400, "repeated-length")),
    "same-length-twice": (
        post("Content-Length: 5", "Content-Length: 5"),
        (400, "repeated-length"),
    ),
    "tab-after-chunked": (post("Transfer-Encoding: chunked\t"), (501, "unsupported-coding")),
}


@pytest.mark.parametrize(
    ("data", "expected"), [pytest.param(*case, id=name) for name, case in LLHTTP_ACCEPTS.items()]
)
def test_what_llhttp_accepts_blockd_refuses_as_before(
    data: bytes, expected: tuple[int, str]
) -> None:
    assert refusal(h1._strict_request, data) == expected  # the hand-written reader's answer
    assert refusal(h1.parse_request, data) == expected


@pytest.mark.parametrize(
    ("data", "expected"), [pytest.param(*case, id=name) for name, case in LLHTTP_ONLY.items()]
)
def test_what_only_llhttp_refuses_is_refused(data: bytes, expected: tuple[int, str]) -> None:
    h1._strict_request(data)  # blockd's own rules alone would pass it
    assert refusal(h1.parse_request, data) == expected


@pytest.mark.parametrize(
    ("first", "lines", "reason"),
    [  # llhttp reads these status lines; blockd's status-line rule refuses them
        (b"HTTP/1.1 099 Low", [], "bad-status-line"),
        (b"HTTP/1.1 200 O\x01K", [], "bad-status-line"),
        (b"HTTP/2.0 200 OK", [], "bad-status-line"),
        (b"RTSP/1.0 200 OK", [], "bad-status-line"),
        (b"HTTP/1.1 200 OK", ["Content-Length: 3, 3"], "repeated-length"),  # llhttp only
        (b"HTTP/1.1 200 OK", ["Content-Length: 3", "Content-Length: 3"], "repeated-length"),
    ],
)
def test_response_heads_where_llhttp_and_blockd_differ(
    first: bytes, lines: list[str], reason: str
) -> None:
    assert refusal(response, head(*lines, first=first)) == (502, reason)


def test_a_101_without_upgrade_header_is_read() -> None:
    resp = response(head("Connection: close", first=b"HTTP/1.1 101 Switching Protocols"))
    assert (resp.status, resp.websocket) == (101, False)


def test_header_count_limit() -> None:
    lines = ["Host: a.example"] + [f"X-{i}: {i}" for i in range(h1.MAX_HEADERS - 1)]
    assert len(h1.parse_request(head(*lines)).headers) == h1.MAX_HEADERS
    assert refusal(h1.parse_request, head(*lines, "X-Last: 1")) == (431, "too-many-headers")


def test_http_error_is_a_value_error_with_status_and_reason() -> None:
    error = h1.HttpError(431, "head-too-large", "head of 40000 bytes")
    assert isinstance(error, ValueError)
    assert (error.status, error.reason) == (431, "head-too-large")
    assert str(error) == "head of 40000 bytes"
    assert str(h1.HttpError(400, "obs-fold")) == "obs-fold"


# -- head_end -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "buffer",
    [b"", b"GET", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: a\r\n", b"GET / HTTP/1.1\r\n\r"],
)
def test_head_end_of_an_incomplete_head(buffer: bytes) -> None:
    assert h1.head_end(buffer) == -1


def test_head_end_points_just_past_the_blank_line() -> None:
    data = head("Host: a.example")
    assert h1.head_end(data) == len(data)
    assert h1.head_end(data + b"body bytes\r\n\r\n") == len(data)
    assert h1.head_end(bytearray(data)) == len(data)
    assert h1.head_end(b"\r\n\r\n") == 4


def test_a_scheme_inside_a_path_does_not_change_the_host() -> None:
    req = h1.parse_request(with_line(b"GET /bad?://b.example HTTP/1.1"))
    assert (req.host, req.path) == ("a.example", "/bad?://b.example")


def test_close_wins_over_keep_alive() -> None:
    req = h1.parse_request(
        head("Host: a.example", "Connection: keep-alive, close", first=b"GET / HTTP/1.0")
    )
    assert not req.keep_alive
    resp = h1.parse_response(b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\n\r\n", "GET")
    assert not resp.keep_alive


def test_head_end_request_line_limit_while_incomplete() -> None:
    line = b"G" * h1.MAX_REQUEST_LINE
    assert h1.head_end(line) == -1
    assert h1.head_end(line + b"\r\n") == -1
    assert h1.head_end(line + b"\r\nHost: a\r\n") == -1
    assert refusal(h1.head_end, line + b"G") == (414, "line-too-long")
    assert refusal(h1.head_end, line + b"G\r\n") == (414, "line-too-long")
    assert refusal(h1.head_end, line + b"G\r\nHost: a\r\n") == (414, "line-too-long")


def test_head_end_head_size_limit() -> None:
    start = b"GET / HTTP/1.1\r\n"
    exact = start + b"X: " + b"a" * (h1.MAX_HEAD - len(start) - 7) + b"\r\n\r\n"
    assert len(exact) == h1.MAX_HEAD
    assert h1.head_end(exact) == h1.MAX_HEAD
    longer = start + b"X: " + b"a" * (h1.MAX_HEAD - len(start) - 6) + b"\r\n\r\n"
    assert refusal(h1.head_end, longer) == (431, "head-too-large")
    assert h1.head_end(exact[:-1]) == -1  # still incomplete, still within the limit
    unfinished = start + b"X: " + b"a" * (h1.MAX_HEAD - len(start) - 2)
    assert len(unfinished) == h1.MAX_HEAD + 1
    assert refusal(h1.head_end, unfinished) == (431, "head-too-large")
    many = start + b"X: a\r\n" * (h1.MAX_HEAD // 6)
    assert refusal(h1.head_end, many) == (431, "head-too-large")


# -- responses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "status"),
    [
        (b"HTTP/1.1 200 OK", 200),
        (b"HTTP/1.1 200", 200),
        (b"HTTP/1.1 200 ", 200),
        (b"HTTP/1.1 404 Not  Found ", 404),
        (b"HTTP/1.0 302 Moved\tTemporarily", 302),
        (b"HTTP/1.1 599 Whatever", 599),
        (b"HTTP/1.1 100 Continue", 100),
        (b"HTTP/1.1 200 \xc3\xa9t\xe9", 200),
    ],
)
def test_status_lines(first: bytes, status: int) -> None:
    assert response(head("Content-Length: 0", first=first)).status == status


@pytest.mark.parametrize(
    "first",
    [
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1 099 Low",
        b"HTTP/1.1 OK",
        b"HTTP/1.1  200 OK",
        b"HTTP/1.1\t200 OK",
        b"HTTP/1.1 200OK",
        b"HTTP/1.1 +20 OK",
        b"HTTP/1.1 200 O\x01K",
        b"HTTP/1.1 200 O\x7fK",
        b"HTTP/2 200 OK",
        b"HTTP/2.0 200 OK",
        b"HTTP/1.2 200 OK",
        b"http/1.1 200 OK",
        b" HTTP/1.1 200 OK",
        b"HTTP/1.1",
        b"",
        b"ICY 200 OK",
    ],
)
def test_bad_status_lines(first: bytes) -> None:
    assert refusal(response, head(first=first)) == (502, "bad-status-line")


@pytest.mark.parametrize(
    ("first", "lines", "method", "expected"),
    [
        ("1.1 200", ["Content-Length: 12"], "GET", ("length", 12, True)),
        ("1.1 200", ["Transfer-Encoding: chunked"], "GET", ("chunked", 0, True)),
        ("1.1 200", ["Transfer-Encoding: gzip, chunked"], "GET", ("chunked", 0, True)),
        (
            "1.1 200",
            ["Transfer-Encoding: gzip", "Transfer-Encoding: Chunked"],
            "GET",
            ("chunked", 0, True),
        ),
        ("1.1 200", [], "GET", ("close", 0, False)),
        ("1.1 200", ["Connection: keep-alive"], "GET", ("close", 0, False)),
        ("1.1 205", [], "GET", ("close", 0, False)),
        ("1.1 200", ["Content-Length: 5", "Connection: close"], "GET", ("length", 5, False)),
        ("1.0 200", ["Content-Length: 5"], "GET", ("length", 5, False)),
        ("1.0 200", ["Content-Length: 5", "Connection: keep-alive"], "GET", ("length", 5, True)),
        ("1.0 200", [], "GET", ("close", 0, False)),
        ("1.1 200", ["Content-Length: 500"], "HEAD", ("none", 0, True)),
        ("1.1 200", ["Transfer-Encoding: chunked"], "HEAD", ("none", 0, True)),
        ("1.1 200", [], "HEAD", ("none", 0, True)),
        ("1.1 204", [], "GET", ("none", 0, True)),
        ("1.1 204", ["Content-Length: 9"], "GET", ("none", 0, True)),
        ("1.1 304", ["Content-Length: 9"], "GET", ("none", 0, True)),
        ("1.1 304", ["Transfer-Encoding: chunked"], "GET", ("none", 0, True)),
        ("1.1 100", [], "POST", ("none", 0, True)),
        ("1.1 103", ["Link: </s.css>; rel=preload"], "GET", ("none", 0, True)),
        ("1.1 101", ["Connection: upgrade", "Upgrade: websocket"], "GET", ("none", 0, True)),
    ],
)
def test_response_framing(
    first: str, lines: list[str], method: str, expected: tuple[str, int, bool]
) -> None:
    resp = response(head(*lines, first=f"HTTP/{first} Reason".encode()), method)
    assert (resp.framing, resp.length, resp.keep_alive) == expected


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (["Content-Length: 5", "Transfer-Encoding: chunked"], "length-and-chunked"),
        (["Transfer-Encoding: gzip, chunked", "Content-Length: 5"], "length-and-chunked"),
        (["Content-Length: 5", "Content-Length: 6"], "conflicting-length"),
        (["Content-Length: 5, 6"], "conflicting-length"),
        (["Content-Length: five"], "bad-length"),
        (["Content-Length: -5"], "bad-length"),
        (["Content-Length: " + "1" * 19], "bad-length"),
        (["Transfer-Encoding: chunked, gzip"], "unsupported-coding"),
        (["Transfer-Encoding: chunked, chunked"], "unsupported-coding"),
        (["Transfer-Encoding: gzip"], "unsupported-coding"),
        (["Transfer-Encoding: xchunked"], "unsupported-coding"),
        (["X-A: a", " folded"], "obs-fold"),
        (["Content-Length : 5"], "bad-header"),
        (["X-A: a\nb"], "bare-cr-lf"),
        (["X-A: a\x00b"], "control-character"),
    ],
)
def test_hostile_response_is_a_bad_gateway(lines: list[str], reason: str) -> None:
    assert refusal(response, head(*lines, first=b"HTTP/1.1 200 OK")) == (502, reason)


def test_ambiguous_framing_is_refused_even_where_no_body_is_expected() -> None:
    both = ["Content-Length: 5", "Transfer-Encoding: chunked"]
    head_response = head(*both, first=b"HTTP/1.1 200 OK")
    not_modified = head(*both, first=b"HTTP/1.1 304 Not Modified")
    expected = (502, "length-and-chunked")
    assert refusal(lambda d: response(d, "HEAD"), head_response) == expected
    assert refusal(response, not_modified) == expected


def test_response_without_blank_line_is_a_bad_gateway() -> None:
    assert refusal(response, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n") == (502, "bad-head")


# -- chunk sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "size"),
    [
        (b"0\r\n", 0),
        (b"a\r\n", 10),
        (b"A\r\n", 10),
        (b"Ff\r\n", 255),
        (b"0010\r\n", 16),
        (b"000000000000000\r\n", 0),
        (b"7fffffff\r\n", 2**31 - 1),  # the largest size every origin reads alike
        (b"00000007fffffff\r\n", 2**31 - 1),
        (b"a;name=value\r\n", 10),
        (b'a;name="quoted ; value"\r\n', 10),
        (b"a;one;two=2\r\n", 10),
        (b"a;\r\n", 10),
        (b"a \r\n", 10),
        (b"a\t;x\r\n", 10),
        (b"a ; x\r\n", 10),
        (b"1;" + b"x" * (h1.MAX_CHUNK_LINE - 4) + b"\r\n", 1),
    ],
)
def test_chunk_size(line: bytes, size: int) -> None:
    assert h1.chunk_size(line) == size


@pytest.mark.parametrize(
    "line",
    [
        b"\r\n",
        b";ext\r\n",
        b"0x10\r\n",
        b"-1\r\n",
        b"+1\r\n",
        b" a\r\n",
        b"\ta\r\n",
        b"a b\r\n",
        b"g\r\n",
        b"1_0\r\n",
        b"\xef\xbc\x91\r\n",  # a full-width digit
        b"0000000000000010\r\n",  # 16 hex digits, however small the value
        b"80000000\r\n",  # 2**31: origins keeping 32 signed bits read it otherwise
        b"fffffffffffffff\r\n",  # 15 digits: truncated to 32 bits by some origins
        b"10000000000000000\r\n",
        b"a",
        b"a\n",
        b"a\r",
        b"a\n\r\n",
        b"a\rb\r\n",
        b"a;x\ny\r\n",
        b"a;x\ry\r\n",
        b"a\r\n\r\n",
        b"1;" + b"x" * (h1.MAX_CHUNK_LINE - 3) + b"\r\n",
    ],
)
def test_bad_chunk_size(line: bytes) -> None:
    assert refusal(h1.chunk_size, line) == (400, "bad-chunk")


# -- split_host (blockd.http.decide) --------------------------------------------------------


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("a.example", ("a.example", None)),
        ("a.example:8080", ("a.example", 8080)),
        ("a.example:1", ("a.example", 1)),
        ("a.example:65535", ("a.example", 65535)),
        ("a.example:080", ("a.example", 80)),
        ("a.example:", ("a.example", None)),
        ("A.Example.", ("a.example", None)),
        ("A.EXAMPLE.:81", ("a.example", 81)),
        ("[::1]", ("[::1]", None)),
        ("[::1]:8080", ("[::1]", 8080)),
        ("[::1]:", ("[::1]", None)),
        ("[0:0:0:0:0:0:0:1]:80", ("[::1]", 80)),
        ("[2001:DB8::A]", ("[2001:db8::a]", None)),
        ("0x7f.1", ("127.0.0.1", None)),
        ("2130706433", ("127.0.0.1", None)),
        ("0177.0.0.1", ("127.0.0.1", None)),
        ("0x7f.0.0.1:8080", ("127.0.0.1", 8080)),
        ("127.0.0.1", ("127.0.0.1", None)),
        ("xn--bcher-kva.example", ("xn--bcher-kva.example", None)),
    ],
)
def test_split_host(authority: str, expected: tuple[str, int | None]) -> None:
    assert split_host(authority) == expected


@pytest.mark.parametrize(
    "authority",
    [
        "",
        ":80",
        "a.example:0",
        "a.example:65536",
        "a.example:99999",
        "a.example:000080",
        "a.example:80a",
        "a.example:-1",
        "a.example:+80",
        "a.example: 80",
        "a.example:0x50",
        "a:b:80",
        "::1",
        "[::1",
        "[::1]x",
        "[::1]80",
        "[::1]:0",
        "[::1]:http",
        "[not-ipv6]",
        "[fe80::1%25eth0]",
        "a@b",
        "user@a.example:80",
        "a.example:80@b.example",
        "user:pass@a.example",
        "a b.example",
        "a..example",
        "a.example/x",
        "%61.example",
    ],
)
def test_split_host_refuses(authority: str) -> None:
    with pytest.raises(InvalidName):
        split_host(authority)


# -- _origin_head (blockd.http.proxy) -----------------------------------------------------------


def test_origin_head_turns_absolute_form_into_origin_form() -> None:
    req = h1.parse_request(
        head(
            "X-First: 1",
            "Host: other.example",
            "Proxy-Connection: keep-alive",
            "x-odd-Case:  v  a ",
            "Cookie: a=1; b=2",
            first=b"GET http://a.example:8080/p?q=1 HTTP/1.1",
        )
    )
    assert _origin_head(req) == (
        b"GET /p?q=1 HTTP/1.1\r\n"
        b"Host: a.example:8080\r\n"
        b"X-First: 1\r\n"
        b"x-odd-Case: v  a\r\n"
        b"Cookie: a=1; b=2\r\n\r\n"
    )


def test_origin_head_adds_the_host_an_absolute_form_lacked() -> None:
    req = h1.parse_request(head("Accept: */*", first=b"HEAD http://a.example?x HTTP/1.0"))
    assert _origin_head(req) == b"HEAD /?x HTTP/1.0\r\nHost: a.example\r\nAccept: */*\r\n\r\n"


def test_origin_head_keeps_an_origin_form_request() -> None:
    req = h1.parse_request(
        head(
            "User-Agent: t",
            "hOST: a.example",
            "proxy-connection: close",
            "Content-Length: 3",
            b"X-Latin: \xe9",
            first=b"POST /a?b HTTP/1.1",
        )
    )
    assert _origin_head(req) == (
        b"POST /a?b HTTP/1.1\r\nUser-Agent: t\r\nhOST: a.example\r\nContent-Length: 3\r\n"
        b"X-Latin: \xe9\r\n\r\n"
    )


# -- fuzz -----------------------------------------------------------------------------------------

VALID = head(
    "Host: a.example",
    "Content-Length: 3",
    "Connection: keep-alive",
    first=b"POST http://a.example/p?q=1 HTTP/1.1",
)
HOSTILE_BYTES = st.sampled_from(
    [b" ", b"\t", b"\r", b"\n", b"\r\n", b"\x00", b",", b":", b";", b"\x7f", b"\xff", b"0"]
)
EDIT = st.tuples(
    st.sampled_from(["insert", "replace", "delete"]),
    st.integers(0, len(VALID)),
    st.one_of(HOSTILE_BYTES, st.binary(min_size=1, max_size=4)),
)


def _mutate(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    for kind, at, chunk in edits:
        at = min(at, len(data))
        if kind == "insert":
            data = data[:at] + chunk + data[at:]
        elif kind == "replace":
            data = data[:at] + chunk + data[at + len(chunk) :]
        else:
            data = data[:at] + data[at + len(chunk) :]
    return data


def _framing_fields(headers: tuple[tuple[bytes, bytes], ...]) -> tuple[list[bytes], list[bytes]]:
    """Return every Content-Length and transfer-coding member, as a lenient reader splits them."""
    lengths = [
        part.strip(b" \t")
        for name, value in headers
        if name.lower() == b"content-length"
        for part in value.split(b",")
    ]
    codings = [
        part.strip(b" \t").lower()
        for name, value in headers
        if name.lower() == b"transfer-encoding"
        for part in value.split(b",")
    ]
    return lengths, codings


def assert_unambiguous(req: h1.Request) -> None:
    """Assert an accepted request leaves an origin only one way to find where its body ends."""
    lengths, codings = _framing_fields(req.headers)
    if req.framing == "chunked":
        assert (lengths, codings) == ([], [b"chunked"])
    elif req.framing == "length":
        assert codings == []
        assert lengths
        assert all(text.isdigit() and int(text) == req.length for text in lengths)
    else:
        assert (lengths, codings, req.length) == ([], [], 0)
    assert req.path.startswith("/")
    relayed = h1.parse_request(_origin_head(req))
    assert (relayed.framing, relayed.length) == (req.framing, req.length)
    assert (relayed.method, relayed.path) == (req.method, req.path)


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_request_raises_only_http_error(data: bytes) -> None:
    for candidate in (data + b"\r\n\r\n", data):
        attempt(h1.parse_request, candidate)  # anything but HttpError escapes and fails


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(["GET", "HEAD", "POST"]))
def test_fuzz_response_raises_only_http_error(data: bytes, method: str) -> None:
    for candidate in (data + b"\r\n\r\n", b"HTTP/1.1 200 OK\r\n" + data + b"\r\n\r\n"):
        resp = attempt(lambda d: h1.parse_response(d, method), candidate)
        if isinstance(resp, h1.HttpError):
            assert resp.status == 502
        else:
            assert resp.framing in ("none", "length", "chunked", "close")


@FUZZ
@given(st.lists(EDIT, min_size=1, max_size=4))
def test_fuzz_mutated_request_is_refused_or_unambiguous(
    edits: list[tuple[str, int, bytes]],
) -> None:
    req = attempt(h1.parse_request, _mutate(VALID, edits))
    if not isinstance(req, h1.HttpError):
        assert_unambiguous(req)


FRAMING_LINES = st.sampled_from(
    [
        b"Content-Length: 5",
        b"Content-Length: 6",
        b"content-length: 5, 5",
        b"Content-Length: 5, 6",
        b"Content-Length:",
        b"Content-Length: 05",
        b"Transfer-Encoding: chunked",
        b"TRANSFER-ENCODING: Chunked",
        b"Transfer-Encoding: gzip",
        b"Transfer-Encoding: gzip, chunked",
        b"Transfer-Encoding: chunked, identity",
        b"Transfer-Encoding:  chunked\t",
        b"Transfer-Encoding : chunked",
        b" Transfer-Encoding: chunked",
        b"\tContent-Length: 5",
        b"Connection: close",
        b"Connection: upgrade",
        b"Upgrade: websocket",
        b"Proxy-Connection: keep-alive",
        b"X-Other: chunked",
    ]
)


@FUZZ
@given(
    st.sampled_from([b"GET / HTTP/1.1", b"POST /a?b HTTP/1.0", b"PUT http://b.example/x HTTP/1.1"]),
    st.lists(FRAMING_LINES, max_size=5),
)
def test_fuzz_framing_headers_are_refused_or_unambiguous(first: bytes, lines: list[bytes]) -> None:
    req = attempt(h1.parse_request, head("Host: a.example", *lines, first=first))
    if isinstance(req, h1.HttpError):
        assert (req.status, req.reason) in {
            (400, "length-and-chunked"),
            (400, "conflicting-length"),
            (400, "bad-length"),
            (400, "bad-header"),
            (400, "obs-fold"),
            (501, "unsupported-coding"),
            (400, "chunked-http10"),
            (400, "ambiguous-header"),
            (400, "body-not-allowed"),
            (400, "repeated-length"),
        }
    else:
        assert_unambiguous(req)


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_chunk_size(data: bytes) -> None:
    for line in (data, data + b"\r\n"):
        size = attempt(h1.chunk_size, line)
        if isinstance(size, h1.HttpError):
            assert (size.status, size.reason) == (400, "bad-chunk")
        else:
            assert 0 <= size <= h1.MAX_CHUNK


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_head_end(data: bytes) -> None:
    end = attempt(h1.head_end, data)
    if isinstance(end, h1.HttpError):
        assert end.status in (414, 431)
    else:
        assert end == -1 or data[end - 4 : end] == b"\r\n\r\n"


# What a Host header can carry once decoded as latin-1 (superscript digits included: str.isdigit
# accepts them and int() does not).
LATIN_1 = st.characters(max_codepoint=0xFF)


@pytest.mark.parametrize("authority", ["h:\xb2", "[::1]:\xb9", "h:1\xb3"])
def test_superscript_digits_are_not_a_port(authority: str) -> None:
    with pytest.raises(InvalidName):
        split_host(authority)


@FUZZ
@given(st.text(LATIN_1, max_size=64))
def test_fuzz_split_host_raises_only_invalid_name(authority: str) -> None:
    try:
        host, port = split_host(authority)
    except InvalidName:
        return
    assert host == host.lower()
    assert port is None or 0 < port < 65536


@FUZZ
@given(st.lists(EDIT, min_size=1, max_size=4))
def test_fuzz_llhttp_passes_only_what_the_hand_written_reader_passes(
    edits: list[tuple[str, int, bytes]],
) -> None:
    data = _mutate(VALID, edits)
    req = attempt(h1.parse_request, data)
    strict = attempt(h1._strict_request, data)
    if isinstance(req, h1.HttpError):
        if not isinstance(strict, h1.HttpError):  # only llhttp refused it
            assert (req.status, req.reason) in {
                (501, "unknown-method"),
                (400, "repeated-length"),
                (501, "unsupported-coding"),
                (400, "malformed"),
            }
        else:
            assert (req.status, req.reason) == (strict.status, strict.reason)
    else:
        assert req == strict
