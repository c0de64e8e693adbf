"""DNS over TLS, DNS over HTTPS (HTTP/2 and 1.1) and DDR, with real clients on loopback.

dnspython (DoT, DoH over HTTP/2 through httpx) and httpx are independent clients; h2 as a
client sends what a hostile peer would. Every query goes through the same pipeline as UDP.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest
import pytest_asyncio
import trustme

from blockd.app import App
from tests.daemon import demo_config, one, running

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

ENCRYPTED = {"dot_listen": ["127.0.0.1:0"], "doh_listen": ["127.0.0.1:0"]}


@pytest_asyncio.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    text = demo_config(tmp_path, None, encrypted=ENCRYPTED)
    async with running(text, tmp_path, write=True) as a:
        yield a


def port(app: App, kind: str) -> int:
    return next(p for k, _, p in app.listeners() if k == kind)


def context(app: App) -> ssl.SSLContext:
    cert = app.config.dns.encrypted.certificate
    assert cert is not None
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.set_alpn_protocols(["dot"])
    return ctx


def trusting(app: App) -> ssl.SSLContext:
    """Return a client context that trusts the demo certificate (and nothing else)."""
    return ssl.create_default_context(cafile=str(app.config.dns.encrypted.certificate))


def question(name: str, qtype: str = "A") -> dns.message.Message:
    return dns.message.make_query(name, qtype, use_edns=0)


async def dot_query(app: App, name: str) -> dns.message.Message:
    """Ask blockd's DoT listener, checking its demo certificate."""
    return await asyncio.to_thread(
        dns.query.tls,
        question(name),
        "127.0.0.1",
        port=port(app, "dot"),
        ssl_context=context(app),
        server_hostname="dns.demo.test",
        timeout=5,
    )


def ede_codes(reply: dns.message.Message) -> list[int]:
    return [o.code for o in reply.options if isinstance(o, dns.edns.EDEOption)]


async def test_dot_answers_blocked_names_like_port_53_with_ede(app: App) -> None:
    reply = await dot_query(app, "blocked.demo.test")
    assert [r.to_text() for rrset in reply.answer for r in rrset] == ["127.0.0.1"]
    assert 16 in ede_codes(reply)  # Censored, as over UDP


async def test_doh_over_http2_get_and_post(app: App) -> None:
    cert = trusting(app)
    url = f"https://127.0.0.1:{port(app, 'doh')}/dns-query"
    wire = question("blocked.demo.test").to_wire()
    encoded = base64.urlsafe_b64encode(wire).rstrip(b"=").decode()
    async with httpx.AsyncClient(http2=True, verify=cert) as client:
        got = await client.get(url, params={"dns": encoded})
        posted = await client.post(
            url, content=wire, headers={"content-type": "application/dns-message"}
        )
    for r in (got, posted):
        assert r.http_version == "HTTP/2" and r.status_code == 200
        assert r.headers["content-type"] == "application/dns-message"
        assert r.headers["cache-control"] == "max-age=60"  # the blocked answer's TTL
        reply = dns.message.from_wire(r.content)
        assert [x.to_text() for rrset in reply.answer for x in rrset] == ["127.0.0.1"]
        assert 16 in ede_codes(reply)


async def test_doh_over_http11(app: App) -> None:
    cert = trusting(app)
    url = f"https://127.0.0.1:{port(app, 'doh')}/dns-query"
    wire = question("partial.demo.test").to_wire()
    async with httpx.AsyncClient(http2=False, verify=cert) as client:
        for _ in range(2):  # keep-alive: two requests on one connection
            r = await client.post(
                url, content=wire, headers={"content-type": "application/dns-message"}
            )
            assert r.http_version == "HTTP/1.1" and r.status_code == 200
            reply = dns.message.from_wire(r.content)
            assert [x.to_text() for rrset in reply.answer for x in rrset] == ["127.0.0.1"]


async def test_dnspython_doh_client(app: App) -> None:
    reply = await asyncio.to_thread(
        dns.query.https,
        question("blocked.demo.test"),
        f"https://127.0.0.1:{port(app, 'doh')}/dns-query",
        verify=trusting(app),
        http_version=dns.query.HTTPVersion.H2,
        timeout=5,
    )
    assert [x.to_text() for rrset in reply.answer for x in rrset] == ["127.0.0.1"]


async def test_ddr_announces_the_encrypted_listeners(app: App) -> None:
    udp = port(app, "udp")
    reply = await asyncio.to_thread(
        dns.query.udp, question("_dns.resolver.arpa", "SVCB"), "127.0.0.1", port=udp, timeout=3
    )
    records = [r for rrset in reply.answer for r in rrset]
    assert len(records) == 2 and reply.flags & dns.flags.AA
    by_alpn = {tuple(a.decode() for a in r.params[1].ids): r for r in records}
    doh = by_alpn[("h2", "http/1.1")]
    dot = by_alpn[("dot",)]
    assert doh.target.to_text() == dot.target.to_text() == "dns.demo.test."
    assert doh.params[3].port == port(app, "doh") and dot.params[3].port == port(app, "dot")
    assert doh.params[7].value == b"/dns-query{?dns}"  # dohpath (RFC 9461)
    # Other questions under resolver.arpa: answered here, with no data, never forwarded.
    other = await asyncio.to_thread(
        dns.query.udp, question("resolver.arpa", "A"), "127.0.0.1", port=udp, timeout=3
    )
    assert other.rcode() == 0 and not other.answer


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "status"),
    [
        ("GET", "/dns-query", {}, b"", 400),  # no dns parameter
        ("GET", "/dns-query?dns=!!!", {}, b"", 400),  # not base64url
        ("GET", "/dns-query?dns=AAAA", {}, b"", 400),  # too short to be a DNS message
        ("GET", "/dns-query?dns=" + "A" * 10_000, {}, b"", 414),
        ("GET", "/other?dns=AAAA", {}, b"", 404),
        ("PUT", "/dns-query", {"content-type": "application/dns-message"}, b"x" * 20, 405),
        ("POST", "/dns-query", {"content-type": "text/plain"}, b"x" * 20, 415),
        ("POST", "/dns-query", {"content-type": "application/dns-message"}, b"x" * 70_000, 413),
    ],
)
async def test_bad_doh_requests_get_a_clear_status_and_the_server_keeps_serving(
    app: App, method: str, target: str, headers: dict[str, str], body: bytes, status: int
) -> None:
    cert = trusting(app)
    base = f"https://127.0.0.1:{port(app, 'doh')}"
    async with httpx.AsyncClient(http2=True, verify=cert) as client:
        r = await client.request(method, base + target, headers=headers, content=body)
        assert r.status_code == status
        ok = await client.post(
            base + "/dns-query",
            content=question("blocked.demo.test").to_wire(),
            headers={"content-type": "application/dns-message"},
        )
        assert ok.status_code == 200


async def test_hostile_http2_frames_close_that_connection_only(app: App) -> None:
    cert = str(app.config.dns.encrypted.certificate)
    ctx = ssl.create_default_context(cafile=cert)
    ctx.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port(app, "doh"), ssl=ctx, server_hostname="dns.demo.test"
    )
    writer.write(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x99\x00\x00\x00\x00\x01junk" * 3
    )
    writer.write(b"\xff" * 20_000)  # a 16 MB frame announced, then never sent whole
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) is not None  # closed: read returns
    writer.close()
    # Streams beyond the limit at once (settings never read): each extra one is refused
    # (REFUSED_STREAM: the client may retry it); the connection stays.
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port(app, "doh"), ssl=ctx, server_hostname="dns.demo.test"
    )
    head = [(":method", "POST"), (":scheme", "https"), (":authority", "x"), (":path", "/dns-query")]

    async def refused_after(first: int, count: int) -> int:
        for i in range(first, first + 2 * count, 2):  # opened, never ended
            conn.send_headers(i, head)
        writer.write(conn.data_to_send())
        await writer.drain()
        resets = 0
        with contextlib.suppress(TimeoutError):
            while resets < count - 100:
                data = await asyncio.wait_for(reader.read(65536), 5)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.StreamReset):
                        assert event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                        resets += 1
        return resets

    assert await refused_after(1, 300) == 200  # 100 held (the limit), 200 refused
    # A client that goes on opening streams (now past the limit it has acknowledged: its own
    # h2 is told to ignore it) loses the connection.
    conn.remote_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2**31 - 1}
    )
    for i in range(601, 601 + 2 * 1200, 2):
        conn.send_headers(i, head)
    writer.write(conn.data_to_send())
    await writer.drain()
    async with asyncio.timeout(10):
        while await reader.read(65536):
            pass  # until blockd closes it
    writer.close()
    # 1,300 streams at once, before our limit is known: 100 held, 1,000 refused, then closed.
    flood = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    flood.initiate_connection()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port(app, "doh"), ssl=ctx, server_hostname="dns.demo.test"
    )
    for i in range(1, 2 * 1300, 2):
        flood.send_headers(i, head)
    writer.write(flood.data_to_send())
    await writer.drain()
    async with asyncio.timeout(10):
        while await reader.read(65536):
            pass
    writer.close()
    # Still serving.
    assert (await dot_query(app, "blocked.demo.test")).answer


async def test_a_silent_tls_client_is_dropped_after_the_handshake_timeout(tmp_path: Path) -> None:
    encrypted = {**ENCRYPTED, "handshake_timeout": 0.5}
    text = demo_config(tmp_path, None, encrypted=encrypted)
    async with running(text, tmp_path) as app:
        for kind in ("dot", "doh"):
            with socket.create_connection(("127.0.0.1", port(app, kind))) as s:
                s.settimeout(10)
                assert await asyncio.to_thread(s.recv, 100) == b""  # closed by blockd


async def test_metrics_count_each_encrypted_transport(app: App) -> None:
    await test_dot_answers_blocked_names_like_port_53_with_ede(app)
    await test_dnspython_doh_client(app)
    text = app.metrics.render()[0].decode()
    for transport in ("dot", "doh"):
        line = f'blockd_dns_queries_total{{result="blocked",transport="{transport}"}} 1.0'
        assert line in text.splitlines(), line


def test_the_h2_buffer_blockd_bounds_is_where_blockd_looks() -> None:
    # blockd.http.doh reads h2's private frame buffer to bound what a connection holds.
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    conn.receive_data(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 100)
    assert len(conn.incoming_buffer._data) == 100


async def test_a_renewed_certificate_is_used_after_a_reload_and_open_connections_stay(
    tmp_path: Path,
) -> None:
    old_ca, new_ca = trustme.CA(), trustme.CA()
    paths = {}
    for label, ca in (("old", old_ca), ("new", new_ca)):
        leaf = ca.issue_cert("dns.isp.test")
        paths[label] = (tmp_path / f"{label}.pem", tmp_path / f"{label}.key")
        leaf.private_key_and_cert_chain_pem.write_to_path(str(paths[label][0]))
        leaf.private_key_pem.write_to_path(str(paths[label][1]))
    live_cert, live_key = tmp_path / "cert.pem", tmp_path / "key.pem"
    live_cert.write_bytes(paths["old"][0].read_bytes())
    live_key.write_bytes(paths["old"][1].read_bytes())
    encrypted = {
        "dot_listen": ["127.0.0.1:0"],
        "certificate": str(live_cert),
        "private_key": str(live_key),
        "name": "dns.isp.test",
    }
    text = demo_config(tmp_path, None, demo=False, encrypted=encrypted)
    async with running(text, tmp_path, write=True) as app:
        dot = port(app, "dot")

        def client(ca: trustme.CA) -> ssl.SSLContext:
            ctx = ssl.create_default_context()
            ca.configure_trust(ctx)
            return ctx

        # A connection made before the renewal...
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", dot, ssl=client(old_ca), server_hostname="dns.isp.test"
        )
        live_cert.write_bytes(paths["new"][0].read_bytes())
        live_key.write_bytes(paths["new"][1].read_bytes())
        assert await app.reload() == "reloaded"
        # ...new handshakes get the new certificate (the old CA no longer verifies it)...
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1", dot, ssl=client(old_ca), server_hostname="dns.isp.test"
            )
        _, w2 = await asyncio.open_connection(
            "127.0.0.1", dot, ssl=client(new_ca), server_hostname="dns.isp.test"
        )
        w2.close()
        # ...and the old connection still answers.
        wire = question("blocked.demo.test").to_wire()
        writer.write(len(wire).to_bytes(2, "big") + wire)
        size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
        reply = dns.message.from_wire(await reader.readexactly(size))
        assert [x.to_text() for rrset in reply.answer for x in rrset] == ["127.0.0.1"]
        writer.close()


async def test_a_bad_renewed_certificate_keeps_the_old_one(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("dns.isp.test")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    encrypted = {
        "dot_listen": ["127.0.0.1:0"],
        "certificate": str(cert),
        "private_key": str(key),
    }
    text = demo_config(tmp_path, None, demo=False, encrypted=encrypted)
    async with running(text, tmp_path, write=True) as app:
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
        await app.reload()
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        reply = await asyncio.to_thread(
            dns.query.tls,
            question("blocked.demo.test"),
            "127.0.0.1",
            port=port(app, "dot"),
            ssl_context=ctx,
            server_hostname="dns.isp.test",
            timeout=5,
        )
        assert reply.answer


async def test_pipelined_http11_requests_are_answered_in_order(app: App) -> None:
    ctx = trusting(app)
    ctx.set_alpn_protocols(["http/1.1"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port(app, "doh"), ssl=ctx, server_hostname="dns.demo.test"
    )
    names = [f"n{i}.blocked.demo.test" for i in range(300)]
    requests = b""
    for name in names:
        query = dns.message.make_query(name, "A").to_wire()
        encoded = base64.urlsafe_b64encode(query).rstrip(b"=")
        requests += b"GET /dns-query?dns=" + encoded + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(requests)  # one write: 300 requests pipelined
    await writer.drain()
    seen: list[str] = []
    async with asyncio.timeout(20):
        while len(seen) < len(names):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            reply = dns.message.from_wire(await reader.readexactly(length))
            seen.append(reply.question[0].name.to_text().rstrip("."))
    assert seen == names
    writer.close()


async def test_forwarded_then_cached_names_over_dot_and_doh(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.add("www.example.com", "A", "192.0.2.80")
    text = demo_config(tmp_path, upstream.addr, encrypted=ENCRYPTED)
    async with running(text, tmp_path) as app:
        url = f"https://127.0.0.1:{port(app, 'doh')}/dns-query"
        for _ in range(2):  # forwarded, then from the cache
            over_dot = await dot_query(app, "www.example.com")
            over_doh = await asyncio.to_thread(
                dns.query.https, question("www.example.com"), url, verify=trusting(app), timeout=5
            )
            for reply in (over_dot, over_doh):
                assert [x.to_text() for rrset in reply.answer for x in rrset] == ["192.0.2.80"]
        assert len(upstream.seen("www.example.com")) == 1
        counts = one(app).pipeline.counts
        assert counts.forwarded["dot"] == 1 and counts.cached["dot"] == 1
        assert counts.cached["doh"] == 2  # the first DoH query came after DoT's: cached too
