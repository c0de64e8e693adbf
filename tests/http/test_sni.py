"""Tests of the ClientHello parser: real hellos from `ssl`, refragmenting, hostile input, fuzz."""

from __future__ import annotations

import functools
import itertools
import ssl
import struct
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockd.http import sni
from blockd.http.sni import ClientHello, NotTls, TlsParseError, alert, parse_client_hello

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CCS = b"\x14\x03\x03\x00\x01\x01"  # a middlebox-compatibility ChangeCipherSpec


@functools.cache
def real_hello(
    server_hostname: str | None = "www.example.com",
    alpn: tuple[str, ...] = (),
    tls12: bool = False,
) -> bytes:
    """Return the first flight of Python's own TLS client: one record holding a ClientHello."""
    context = ssl.create_default_context()
    if server_hostname is None:
        context.check_hostname = False
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    outgoing = ssl.MemoryBIO()
    client = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def record(payload: bytes, kind: int = 22, version: int = 0x0301) -> bytes:
    """Return one TLS record."""
    return struct.pack("!BHH", kind, version, len(payload)) + payload


def handshake(body: bytes, kind: int = 1, length: int | None = None) -> bytes:
    """Return a handshake message, its length field `length` when given."""
    return bytes([kind]) + (len(body) if length is None else length).to_bytes(3, "big") + body


def extension(kind: int, value: bytes) -> bytes:
    """Return one extension."""
    return struct.pack("!HH", kind, len(value)) + value


def vec16(value: bytes) -> bytes:
    """Return `value` with a two-byte length."""
    return struct.pack("!H", len(value)) + value


def server_name(*names: bytes, name_type: int = 0) -> bytes:
    """Return a server_name extension listing `names`."""
    return extension(0, vec16(b"".join(bytes([name_type]) + vec16(name) for name in names)))


def alpn(*names: bytes) -> bytes:
    """Return an ALPN extension offering `names`."""
    return extension(16, vec16(b"".join(bytes([len(name)]) + name for name in names)))


def hello_body(
    *extensions: bytes,
    version: int = 0x0303,
    session_id: bytes = b"\x00" * 32,
    suites: bytes = b"\x13\x01\x13\x02",
    compression: bytes = b"\x00",
    block: bytes | None = None,
) -> bytes:
    """Return a ClientHello body: `block` is the raw extensions block, else built from them."""
    fixed = struct.pack("!H", version) + b"\x5a" * 32 + bytes([len(session_id)]) + session_id
    fixed += vec16(suites) + bytes([len(compression)]) + compression
    return fixed + (vec16(b"".join(extensions)) if block is None else block)


def flight_of(body: bytes) -> bytes:
    """Return the ClientHello with `body` in one record."""
    return record(handshake(body))


def client_hello(*extensions: bytes) -> bytes:
    """Return a ClientHello offering `extensions` in one record."""
    return flight_of(hello_body(*extensions))


def refragment(flight: bytes, cuts: Sequence[int]) -> bytes:
    """Return the one-record ClientHello `flight` split into records at message offsets `cuts`."""
    message = flight[5:]
    assert len(message) == int.from_bytes(flight[3:5], "big")
    bounds = [0, *sorted(set(cuts)), len(message)]
    return b"".join(record(message[a:b]) for a, b in itertools.pairwise(bounds) if b > a)


def outcome(data: bytes, limit: int = sni.DEFAULT_LIMIT) -> ClientHello | str | None:
    """Return the parse of `data`, or the reason it was refused; let any other error through."""
    try:
        return parse_client_hello(data, limit=limit)
    except TlsParseError as error:
        reason: str = error.reason
    assert reason in sni.REASONS
    return reason


def reason_of(data: bytes, limit: int = sni.DEFAULT_LIMIT) -> str:
    """Return the reason `data` is refused."""
    with pytest.raises(TlsParseError) as caught:
        parse_client_hello(data, limit=limit)
    return caught.value.reason


# Real ClientHellos.


@pytest.mark.parametrize(
    ("flight", "expected"),
    [
        pytest.param(real_hello(), ClientHello("www.example.com", False, (), 0x0303), id="sni"),
        pytest.param(real_hello(None), ClientHello(None, False, (), 0x0303), id="no-sni"),
        pytest.param(
            real_hello(alpn=("h2", "http/1.1")),
            ClientHello("www.example.com", False, ("h2", "http/1.1"), 0x0303),
            id="alpn",
        ),
        pytest.param(
            real_hello("tls12.example.org", tls12=True),
            ClientHello("tls12.example.org", False, (), 0x0303),
            id="tls12",
        ),
        pytest.param(
            real_hello("bücher.example"),
            ClientHello("xn--bcher-kva.example", False, (), 0x0303),
            id="idn",
        ),
        pytest.param(
            real_hello("WWW.Example.COM"),
            ClientHello("www.example.com", False, (), 0x0303),
            id="uppercase",
        ),
    ],
)
def test_real_hello(flight: bytes, expected: ClientHello) -> None:
    assert parse_client_hello(flight) == expected


def test_uppercase_reaches_the_wire() -> None:
    assert b"WWW.Example.COM" in real_hello("WWW.Example.COM")


@pytest.mark.parametrize("flight", [real_hello(), real_hello(alpn=("h2", "http/1.1"))])
def test_fed_one_byte_at_a_time(flight: bytes) -> None:
    received = bytearray()
    for byte in flight[:-1]:
        received.append(byte)
        assert parse_client_hello(bytes(received)) is None
    received.append(flight[-1])
    hello = parse_client_hello(bytes(received))
    assert hello is not None
    assert hello == parse_client_hello(flight)


def test_bytearray_and_memoryview() -> None:
    flight = real_hello()
    expected = parse_client_hello(flight)
    assert parse_client_hello(bytearray(flight)) == expected
    assert parse_client_hello(memoryview(flight)) == expected


def test_bytes_after_the_hello_are_ignored() -> None:
    flight = real_hello()
    assert parse_client_hello(flight + CCS + b"\x17\x03\x03") == parse_client_hello(flight)


@pytest.mark.parametrize("cuts", [[1], [3], [4], [5], [200], [1, 2], [4, 40, 300], [100, 101]])
def test_refragmented_hello(cuts: list[int]) -> None:
    flight = real_hello(alpn=("h2",))
    fragmented = refragment(flight, cuts)
    assert len(fragmented) == len(flight) + 5 * len(cuts)
    assert parse_client_hello(fragmented) == parse_client_hello(flight)
    for end in range(len(fragmented)):
        assert parse_client_hello(fragmented[:end]) is None


def test_one_byte_records() -> None:
    flight = real_hello()
    fragmented = refragment(flight, range(1, len(flight) - 5))
    assert parse_client_hello(fragmented) == parse_client_hello(flight)
    assert reason_of(fragmented, limit=len(fragmented) - 1) == "too-large"


# Crafted hellos that are valid.


def test_crafted_hello() -> None:
    flight = client_hello(server_name(b"a.example"), alpn(b"h2"))
    assert parse_client_hello(flight) == ClientHello("a.example", False, ("h2",), 0x0303)


def test_no_extensions() -> None:
    flight = flight_of(hello_body(block=b""))
    assert parse_client_hello(flight) == ClientHello(None, False, (), 0x0303)


def test_empty_extensions_block() -> None:
    assert parse_client_hello(client_hello()) == ClientHello(None, False, (), 0x0303)


def test_ech_is_reported_with_the_outer_name() -> None:
    flight = client_hello(server_name(b"public.example"), extension(0xFE0D, b"\x00" * 40))
    assert parse_client_hello(flight) == ClientHello("public.example", True, (), 0x0303)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (b"example.com.", "example.com"),
        (b"_dmarc.Example.COM", "_dmarc.example.com"),
        (b"-odd-.example", "-odd-.example"),
        (b"a" * 63 + b".example", "a" * 63 + ".example"),
        (b"a." * 126 + b"b", "a." * 126 + "b"),  # 253 bytes
        (b"a." * 126 + b"b.", "a." * 126 + "b"),
        (b"localhost", "localhost"),
        (b"1.2.3.4.example", "1.2.3.4.example"),
        (b"0x7f.example", "0x7f.example"),
        (b"example.0a", "example.0a"),
    ],
)
def test_accepted_names(name: bytes, expected: str) -> None:
    hello = parse_client_hello(client_hello(server_name(name)))
    assert hello is not None
    assert hello.server_name == expected


def test_unknown_extensions_and_grease_are_skipped() -> None:
    flight = client_hello(
        extension(0x0A0A, b""), server_name(b"x.example"), extension(0x1A1A, b"0")
    )
    assert parse_client_hello(flight) == ClientHello("x.example", False, (), 0x0303)


def test_alpn_bytes_are_escaped() -> None:
    hello = parse_client_hello(client_hello(alpn(b"h2", b"\xff\x00\\ok")))
    assert hello is not None
    assert hello.alpn == ("h2", "\\xff\\x00\\x5cok")


# Lengths that lie towards the future: wait for more.


def test_message_longer_than_its_complete_records_needs_more() -> None:
    body = hello_body(server_name(b"a.example"))
    first = record(handshake(body, length=len(body) + 100))
    assert parse_client_hello(first) is None
    assert parse_client_hello(first + record(b"\x00" * 99)) is None
    assert reason_of(first + record(b"\x00" * 100)) == "bad-length"  # the extensions block ends


def test_record_longer_than_received_needs_more() -> None:
    flight = client_hello(server_name(b"a.example"))
    assert parse_client_hello(flight[:-1]) is None
    assert parse_client_hello(flight[:5]) is None


# A hostile corpus: every refusal says why.

HUGE = b"\x16\x03\x01\x40\x00" + handshake(b"", length=0xFFFFFF)
LONG_NAME = b"a." * 126 + b"bc"  # 254 bytes
OVERRUN = hello_body(block=vec16(struct.pack("!HH", 0x0A0A, 10) + b"12345"))

HOSTILE: list[tuple[str, bytes, str]] = [
    ("http", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "not-tls"),
    ("http-first-byte", b"G", "not-tls"),
    ("ssh", b"SSH-2.0-OpenSSH_9.6\r\n", "not-tls"),
    ("zero-byte", b"\x00", "not-tls"),
    ("handshake-then-junk", b"\x16\x00", "not-tls"),
    ("sslv2", b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10", "sslv2"),
    ("sslv2-first-byte", b"\x80", "sslv2"),
    ("alert", record(b"\x02\x28", kind=21), "not-handshake"),
    ("application-data", record(b"\x00" * 20, kind=23), "not-handshake"),
    ("change-cipher-spec", CCS, "not-handshake"),
    ("ssl3-record", record(handshake(hello_body()), version=0x0300), "bad-version"),
    ("tls14-record", b"\x16\x03\x05", "bad-version"),
    ("legacy-version", flight_of(hello_body(version=0x0200)), "bad-version"),
    ("legacy-version-high", flight_of(hello_body(version=0x0305)), "bad-version"),
    ("server-hello", b"\x16\x03\x03\x00\x30\x02", "not-client-hello"),
    ("hello-request", record(handshake(b"", kind=0)), "not-client-hello"),
    ("record-too-long", b"\x16\x03\x01\x40\x01", "record-too-long"),
    ("empty-record", record(b"") + client_hello(), "bad-length"),
    ("huge-message", HUGE, "too-large"),
    ("empty-message", record(handshake(b"")), "bad-length"),
    ("truncated-random", record(handshake(b"\x03\x03" + b"\x00" * 20)), "bad-length"),
    ("session-id-33", flight_of(hello_body(session_id=b"\x00" * 33)), "bad-length"),
    ("session-id-overrun", record(handshake(b"\x03\x03" + b"\x00" * 32 + b"\x20")), "bad-length"),
    ("odd-suites", flight_of(hello_body(suites=b"\x13\x01\x13")), "bad-length"),
    ("no-suites", flight_of(hello_body(suites=b"")), "bad-length"),
    ("no-compression", flight_of(hello_body(compression=b"")), "bad-length"),
    ("one-byte-extensions", flight_of(hello_body(block=b"\x00")), "bad-length"),
    ("extensions-long", flight_of(hello_body(block=b"\x00\x05\x00\x00\x00\x00")), "bad-length"),
    ("extensions-short", flight_of(hello_body(block=b"\x00\x03\x00\x00\x00\x00")), "bad-length"),
    ("extension-overrun", record(handshake(OVERRUN)), "bad-extension"),
    ("extension-header-cut", flight_of(hello_body(block=vec16(b"\x00\x00\x00"))), "bad-extension"),
    ("duplicate", client_hello(extension(5, b""), extension(5, b"")), "bad-extension"),
    ("duplicate-sni", client_hello(server_name(b"a"), server_name(b"a")), "bad-extension"),
    ("alpn-empty-list", client_hello(alpn()), "bad-extension"),
    ("alpn-empty-name", client_hello(alpn(b"h2", b"")), "bad-extension"),
    ("alpn-cut", client_hello(extension(16, b"\x00\x03\x03h2")), "bad-extension"),
    (
        "record-past-message",
        record(handshake(hello_body(), length=len(hello_body()) - 1)),
        "bad-length",
    ),
    ("second-record-alert", refragment(client_hello(), [10])[:15] + b"\x15", "not-handshake"),
    ("second-record-ssl3", refragment(client_hello(), [10])[:15] + b"\x16\x03\x00", "bad-version"),
    ("sni-empty-extension", client_hello(extension(0, b"")), "bad-sni"),
    ("sni-empty-list", client_hello(extension(0, vec16(b""))), "bad-sni"),
    ("sni-empty-name", client_hello(server_name(b"")), "bad-sni"),
    ("sni-dot", client_hello(server_name(b".")), "bad-sni"),
    ("sni-too-long", client_hello(server_name(LONG_NAME)), "bad-sni"),
    ("sni-label-64", client_hello(server_name(b"a" * 64 + b".example")), "bad-sni"),
    ("sni-empty-label", client_hello(server_name(b"a..example")), "bad-sni"),
    ("sni-leading-dot", client_hello(server_name(b".example")), "bad-sni"),
    ("sni-two-trailing-dots", client_hello(server_name(b"example..")), "bad-sni"),
    ("sni-nul", client_hello(server_name(b"evil.example\x00.good.example")), "bad-sni"),
    ("sni-space", client_hello(server_name(b"exa mple.com")), "bad-sni"),
    ("sni-slash", client_hello(server_name(b"example.com/x")), "bad-sni"),
    ("sni-utf8", client_hello(server_name("bücher.example".encode())), "bad-sni"),
    ("sni-ipv4", client_hello(server_name(b"192.0.2.1")), "bad-sni"),
    ("sni-ipv4-short", client_hello(server_name(b"10.1")), "bad-sni"),
    ("sni-ipv4-hex", client_hello(server_name(b"0x7f.0x1")), "bad-sni"),
    ("sni-number", client_hello(server_name(b"2130706433")), "bad-sni"),
    ("sni-ipv6", client_hello(server_name(b"2001:db8::1")), "bad-sni"),
    ("sni-ipv6-bracketed", client_hello(server_name(b"[::1]")), "bad-sni"),
    ("sni-name-type", client_hello(server_name(b"a.example", name_type=1)), "bad-sni"),
    ("sni-two-names", client_hello(server_name(b"a.example", b"b.example")), "bad-sni"),
    ("sni-list-long", client_hello(extension(0, b"\x00\x09\x00\x00\x01a")), "bad-sni"),
    ("sni-list-short", client_hello(extension(0, b"\x00\x03\x00\x00\x01ab")), "bad-sni"),
    ("sni-name-long", client_hello(extension(0, b"\x00\x04\x00\x00\x02a")), "bad-sni"),
]


@pytest.mark.parametrize(("data", "reason"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile(data: bytes, reason: str) -> None:
    assert reason_of(data) == reason


def test_hostile_corpus_covers_every_reason() -> None:
    assert {reason for _, _, reason in HOSTILE} == set(sni.REASONS)


@pytest.mark.parametrize("data", [b"G", b"\x80", b"\x00"], ids=["http", "sslv2", "zero"])
def test_not_tls_is_known_from_the_first_byte(data: bytes) -> None:
    with pytest.raises(NotTls):
        parse_client_hello(data)


def test_tls_refusals_are_not_not_tls() -> None:
    with pytest.raises(TlsParseError) as caught:
        parse_client_hello(record(b"\x02\x28", kind=21))
    assert not isinstance(caught.value, NotTls)
    assert isinstance(caught.value, ValueError)


def test_huge_message_is_refused_from_its_header() -> None:
    assert len(HUGE) == 9
    assert parse_client_hello(HUGE[:8]) is None


def test_limit() -> None:
    flight = real_hello()
    assert parse_client_hello(flight, limit=len(flight)) is not None
    assert reason_of(flight, limit=len(flight) - 1) == "too-large"
    assert reason_of(flight[:9], limit=len(flight) - 1) == "too-large"


# Fuzzing: no input raises anything but TlsParseError, and an early answer is final.


def check(data: bytes, limit: int = sni.DEFAULT_LIMIT) -> None:
    """Assert that `data` parses or is refused, and that its prefixes agree."""
    whole = outcome(data, limit)
    for end in {0, 1, 5, 6, 9, len(data) // 2, len(data) - 1}:
        if 0 <= end < len(data):
            early = outcome(data[:end], limit)
            if isinstance(whole, ClientHello):
                assert early is None
            elif isinstance(early, str):
                assert early == whole


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.sampled_from([b"\x16\x03\x01", b"\x16\x03\x03\x00\x40\x01\x00\x00\x3c"]), st.binary())
def test_fuzz_after_a_plausible_header(prefix: bytes, data: bytes) -> None:
    check(prefix + data)


@FUZZ
@given(st.data())
def test_fuzz_mutated_real_hello(data: st.DataObject) -> None:
    flight = bytearray(real_hello(alpn=("h2", "http/1.1")))
    positions = st.integers(0, len(flight) - 1)
    for position, value in data.draw(st.lists(st.tuples(positions, st.integers(0, 255)))):
        flight[position] = value
    cut = data.draw(st.integers(0, len(flight)))
    check(bytes(flight[:cut]), limit=data.draw(st.sampled_from([sni.DEFAULT_LIMIT, 600])))


EXTENSION_KINDS = st.sampled_from([0, 16, 0xFE0D, 0x0A0A, 43])


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.builds(server_name, st.binary(max_size=300)),
            st.builds(alpn, st.binary(max_size=8), st.binary(max_size=8)),
            st.builds(extension, EXTENSION_KINDS, st.binary(max_size=40)),
        ),
        max_size=5,
    ),
    st.lists(st.integers(1, 600), max_size=3),
)
def test_fuzz_crafted_extensions(extensions: list[bytes], cuts: list[int]) -> None:
    flight = client_hello(*extensions)
    whole = outcome(flight)
    cuts = [cut for cut in cuts if cut < len(flight) - 5]
    fragmented = refragment(flight, cuts)
    assert outcome(fragmented) == whole
    check(fragmented)


@FUZZ
@given(st.lists(st.integers(1, 2000), max_size=6))
def test_fuzz_refragmented_real_hello(cuts: list[int]) -> None:
    flight = real_hello(alpn=("h2",))
    cuts = [cut for cut in cuts if cut < len(flight) - 5]
    assert parse_client_hello(refragment(flight, cuts)) == parse_client_hello(flight)


# Incremental reassembly: a HelloReader fed piece by piece agrees with one whole parse.


def fed(
    data: bytes, cuts: Sequence[int], limit: int = sni.DEFAULT_LIMIT
) -> ClientHello | str | None:
    """Feed `data` to one HelloReader split at `cuts`; return the first answer or reason."""
    reader = sni.HelloReader(limit)
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    try:
        for a, b in itertools.pairwise(bounds):
            hello = reader.feed(data[a:b])
            if hello is not None:
                return hello
    except TlsParseError as error:
        return error.reason
    finally:
        assert bytes(reader.data) == data[: len(reader.data)]
    return None


def test_reader_keeps_every_byte_for_the_splice() -> None:
    flight = refragment(real_hello(), [3, 50]) + CCS
    reader = sni.HelloReader()
    hello = None
    for byte in range(len(flight)):
        hello = hello or reader.feed(flight[byte : byte + 1])
        if hello is not None:
            break
    assert hello == parse_client_hello(flight)
    assert flight.startswith(bytes(reader.data))
    assert len(reader.data) == len(flight) - len(CCS)


def test_reader_fed_one_byte_records_one_byte_at_a_time() -> None:
    flight = real_hello(alpn=("h2", "http/1.1"))
    fragmented = refragment(flight, range(1, len(flight) - 5))
    assert fed(fragmented, range(len(fragmented))) == parse_client_hello(flight)
    limit = len(fragmented) - 1
    assert fed(fragmented, range(len(fragmented)), limit=limit) == "too-large"


@pytest.mark.parametrize(("data", "reason"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_reader_refuses_the_hostile_corpus_however_split(data: bytes, reason: str) -> None:
    for cuts in ([], range(len(data)), [1], [5], [len(data) // 2], [4, 6, 9]):
        assert fed(data, cuts) == reason


def test_a_trickled_hello_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records are checked as they complete; the message is parsed once, when it is whole."""
    parses: list[int] = []
    real_parse = sni._parse_message

    def counting(message: bytes) -> ClientHello:
        parses.append(len(message))
        return real_parse(message)

    monkeypatch.setattr(sni, "_parse_message", counting)
    flight = real_hello()
    fragmented = refragment(flight, range(1, len(flight) - 5))
    assert fed(fragmented, range(len(fragmented))) == parse_client_hello(flight)
    assert parses == [len(flight) - 5, len(flight) - 5]


@FUZZ
@given(st.binary(max_size=2048), st.lists(st.integers(0, 2048), max_size=8))
def test_fuzz_reader_agrees_with_a_whole_parse(data: bytes, cuts: list[int]) -> None:
    assert fed(data, cuts) == outcome(data)


@FUZZ
@given(st.data())
def test_fuzz_reader_on_mutated_real_hellos(data: st.DataObject) -> None:
    flight = bytearray(refragment(real_hello(alpn=("h2",)), [7, 90]))
    positions = st.integers(0, len(flight) - 1)
    for position, value in data.draw(st.lists(st.tuples(positions, st.integers(0, 255)))):
        flight[position] = value
    cuts = data.draw(st.lists(st.integers(0, len(flight)), max_size=10))
    assert fed(bytes(flight), cuts) == outcome(bytes(flight))


# Alerts.


def test_alert() -> None:
    assert alert(sni.ALERT_UNRECOGNIZED_NAME) == b"\x15\x03\x03\x00\x02\x02\x70"
    assert alert(sni.ALERT_ACCESS_DENIED, version=0x0301) == b"\x15\x03\x01\x00\x02\x02\x31"
    assert alert(sni.ALERT_HANDSHAKE_FAILURE)[-1] == 40


@pytest.mark.parametrize(("description", "version"), [(256, 0x0303), (-1, 0x0303), (40, 0x10000)])
def test_alert_out_of_range(description: int, version: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        alert(description, version=version)
