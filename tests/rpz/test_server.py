"""The policy zone served by a running blockd: AXFR, IXFR, SOA, TSIG, clients, serials, audit."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from pathlib import Path

import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.xfr
import dns.zone
import pytest

from blockd.app import App
from blockd.events import ZoneTransferred
from tests.daemon import eventually, running
from tests.rpz.common import KEY, ZONE, publish_hosts, rpz_config


def rpz_port(app: App) -> int:
    assert app.rpz is not None
    return next(p for t, _, p in app.rpz.bound if t == "tcp")


def axfr(port: int, key: dns.tsig.Key | None = KEY) -> dns.zone.Zone:
    """Transfer the zone as a secondary does (dnspython checks TSIG on every message)."""
    zone = dns.zone.Zone(ZONE + ".")
    ring = {key.name: key} if key else None
    query, _ = dns.xfr.make_query(zone, keyring=ring, keyname=key.name if key else None)
    dns.query.inbound_xfr("127.0.0.1", zone, query, port=port, timeout=5)
    return zone


def ixfr_messages(port: int, serial: int) -> list[dns.message.Message]:
    """Ask for the changes since serial; return the answer's messages (TSIG checked)."""
    query = dns.message.make_query(ZONE, dns.rdatatype.IXFR)
    query.authority.append(_soa_rrset(serial))
    query.use_tsig({KEY.name: KEY}, KEY.name)
    wire = query.to_wire()
    out: list[dns.message.Message] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        ctx = None
        while not out or not _complete(out):
            size = struct.unpack("!H", _read(sock, 2))[0]
            msg = dns.message.from_wire(
                _read(sock, size),
                keyring={KEY.name: KEY},
                request_mac=query.mac,
                xfr=True,
                tsig_ctx=ctx,
                multi=bool(out),
            )
            ctx = msg.tsig_ctx
            out.append(msg)
    return out


def _complete(out: list[dns.message.Message]) -> bool:
    """Say whether the last SOA closes the transfer (the current serial, seen twice or alone)."""
    records = [(r.rdtype, rd) for m in out for r in m.answer for rd in r]
    first = records[0][1]
    if len(records) == 1:
        return True
    last_type, last = records[-1]
    return last_type == dns.rdatatype.SOA and last == first and len(records) > 1


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def _soa_rrset(serial: int) -> dns.rrset.RRset:
    return dns.rrset.from_text(
        ZONE + ".", 0, "IN", "SOA", f"localhost. hostmaster.{ZONE}. {serial} 0 0 0 0"
    )


def udp(port: int, query: dns.message.Message) -> dns.message.Message:
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=3)


def triggers(zone: dns.zone.Zone) -> set[str]:
    """Return 'owner TYPE rdata' of the zone's trigger records (SOA and NS left out)."""
    out = set()
    for name, node in zone.nodes.items():
        for rdataset in node:
            if rdataset.rdtype in (dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.ZONEMD):
                continue
            for rd in rdataset:
                out.add(f"{name} {dns.rdatatype.to_text(rdataset.rdtype)} {rd}")
    return out


async def test_a_secondary_transfers_the_host_level_policy_signed(tmp_path: Path) -> None:
    transfers: list[ZoneTransferred] = []
    async with running(rpz_config(tmp_path), tmp_path) as app:
        app.bus.subscribe(ZoneTransferred, transfers.append)
        assert app.rpz is not None
        served = await app.rpz.settled()
        assert served is not None
        zone = await asyncio.to_thread(axfr, rpz_port(app))
        records = triggers(zone)
        # demo-hosts (notice): local data at the notice page, for the name and subdomains
        assert "blocked.demo.test A 127.0.0.1" in records
        assert "*.blocked.demo.test AAAA ::1" in records
        assert "selftest.demo.test A 127.0.0.1" in records
        # demo-urls: the host of a URL entry goes to the proxy, not blocked
        assert "partial.demo.test A 127.0.0.1" in records
        # demo-hashed is hashed: nothing of it can be served
        assert not any("hashed" in r for r in records)
        soa = zone.get_soa()
        assert soa.serial == served.serial
        zone.verify_digest()  # ZONEMD (RFC 8976), on by default
        await eventually(lambda: transfers)  # counted once the last message is sent
        assert [t.kind for t in transfers] == ["AXFR"]
        assert transfers[0].client == "127.0.0.1" and "TSIG key xfr-key" in transfers[0].detail
        assert app.audit is not None
        await app.audit.flush()
        log = app.audit.log
        entries = [json.loads(d) for _, d in log.entries(0, log.head().size)]
        logged = [e for e in entries if e.get("action") == "rpz-transfer"]
        assert logged and "AXFR of zone rpz.example" in str(logged[0]["detail"])


async def test_ixfr_carries_only_the_differences_and_the_serial_grows(tmp_path: Path) -> None:
    async with running(rpz_config(tmp_path), tmp_path) as app:
        assert app.rpz is not None
        first = await app.rpz.settled()
        assert first is not None
        publish_hosts(tmp_path, 2, ["blocked.demo.test", "new.demo.test"])
        await app.feeds.sync_all()
        second = await app.rpz.settled()
        assert second is not None and second.serial == first.serial + 1
        messages = await asyncio.to_thread(ixfr_messages, rpz_port(app), first.serial)
        records = [
            f"{r.name} {dns.rdatatype.to_text(r.rdtype)} {rd}"
            for m in messages
            for r in m.answer
            for rd in r
            if r.rdtype not in (dns.rdatatype.SOA, dns.rdatatype.ZONEMD)
        ]
        zonemds = [rd.serial for m in messages for r in m.answer if r.rdtype == 63 for rd in r]
        assert zonemds == [first.serial, second.serial]  # the old one deleted, the new added
        assert sorted(records) == sorted(
            [
                "new.demo.test.rpz.example. A 127.0.0.1",
                "new.demo.test.rpz.example. AAAA ::1",
                "*.new.demo.test.rpz.example. A 127.0.0.1",
                "*.new.demo.test.rpz.example. AAAA ::1",
            ]
        )
        # up to date: the SOA alone; too old: the whole zone
        [current] = await asyncio.to_thread(ixfr_messages, rpz_port(app), second.serial)
        assert [r.rdtype for r in current.answer] == [dns.rdatatype.SOA]
        whole = await asyncio.to_thread(ixfr_messages, rpz_port(app), 12345)
        names = {str(r.name) for m in whole for r in m.answer}
        assert "blocked.demo.test.rpz.example." in names
        rpz = app.rpz
        await eventually(lambda: rpz.transfers == {"ixfr": 1, "ixfr-current": 1, "ixfr-axfr": 1})
        metrics, _ = app.metrics.render()
        assert b'blockd_rpz_transfers_total{kind="ixfr"} 1.0' in metrics
        assert b'blockd_rpz_transfers_total{kind="ixfr-current"} 1.0' in metrics
        assert f"blockd_rpz_zone_serial {float(second.serial)}".encode() in metrics
        assert f"blockd_rpz_zone_entries {float(len(second.entries))}".encode() in metrics


async def test_the_serial_survives_a_restart_and_only_grows(tmp_path: Path) -> None:
    text = rpz_config(tmp_path)
    async with running(text, tmp_path) as app:
        assert app.rpz is not None
        before = await app.rpz.settled()
        assert before is not None
    async with running(text, tmp_path, sync=False) as app:
        assert app.rpz is not None
        again = await app.rpz.settled()
        assert again is not None and again.serial == before.serial  # same content
        publish_hosts(tmp_path, 2, ["other.demo.test"])
        await app.feeds.sync_all()
        after = await app.rpz.settled()
        assert after is not None and after.serial == before.serial + 1
    saved = json.loads((tmp_path / "state" / "rpz" / "serial.json").read_text())
    assert saved["serial"] == after.serial


async def test_unauthorised_clients_unsigned_and_badly_signed_requests_are_refused(
    tmp_path: Path,
) -> None:
    async with running(rpz_config(tmp_path), tmp_path) as app:
        assert app.rpz is not None
        await app.rpz.settled()
        port = rpz_port(app)
        with pytest.raises(dns.xfr.TransferError, match="REFUSED"):
            await asyncio.to_thread(axfr, port, None)
        wrong = dns.tsig.Key("xfr-key.", "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldA==", KEY.algorithm)
        with pytest.raises(dns.xfr.TransferError, match="NOTAUTH"):
            await asyncio.to_thread(axfr, port, wrong)
        reply = await asyncio.to_thread(udp, port, dns.message.make_query(ZONE, "SOA"))
        assert reply.rcode() == dns.rcode.REFUSED and not reply.answer
        signed = dns.message.make_query(ZONE, "SOA")
        signed.use_tsig({KEY.name: KEY}, KEY.name)
        reply = await asyncio.to_thread(
            lambda: dns.query.udp(signed, "127.0.0.1", port=port, timeout=3)
        )
        assert reply.rcode() == dns.rcode.NOERROR and reply.answer
        assert app.rpz.refused == {"unsigned": 2, "tsig": 1}
        metrics, _ = app.metrics.render()
        assert b'blockd_rpz_refused_total{reason="unsigned"} 2.0' in metrics
        assert b'blockd_rpz_refused_total{reason="tsig"} 1.0' in metrics


async def test_zonemd_can_be_left_out(tmp_path: Path) -> None:
    async with running(rpz_config(tmp_path, zonemd=False), tmp_path) as app:
        assert app.rpz is not None
        await app.rpz.settled()
        zone = await asyncio.to_thread(axfr, rpz_port(app))
        assert zone.get_rdataset("@", "ZONEMD") is None
        assert "blocked.demo.test A 127.0.0.1" in triggers(zone)


async def test_only_configured_clients_may_transfer(tmp_path: Path) -> None:
    text = rpz_config(tmp_path, clients=["127.0.0.2", "127.0.0.3"], unsigned_clients=["127.0.0.3"])
    async with running(text, tmp_path) as app:
        assert app.rpz is not None
        await app.rpz.settled()
        with pytest.raises(dns.xfr.TransferError, match="REFUSED"):
            await asyncio.to_thread(axfr, rpz_port(app))


async def test_an_unsigned_client_allowed_by_address_transfers(tmp_path: Path) -> None:
    text = rpz_config(tmp_path, unsigned_clients=["127.0.0.1"])
    transfers: list[ZoneTransferred] = []
    async with running(text, tmp_path) as app:
        app.bus.subscribe(ZoneTransferred, transfers.append)
        assert app.rpz is not None
        await app.rpz.settled()
        zone = await asyncio.to_thread(axfr, rpz_port(app), None)
        assert "blocked.demo.test A 127.0.0.1" in triggers(zone)
        await eventually(lambda: transfers)
        assert "unsigned, allowed by address" in transfers[0].detail


async def test_notify_goes_to_the_secondaries_on_every_change(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    target = f"127.0.0.1:{sock.getsockname()[1]}"
    loop = asyncio.get_running_loop()
    text = rpz_config(tmp_path, notify=[target], unsigned_clients=["127.0.0.1"])
    try:
        async with running(text, tmp_path, sync=False) as app:
            assert app.rpz is not None
            await app.feeds.sync_all()
            zone = await app.rpz.settled()
            assert zone is not None
            serials = []
            async with asyncio.timeout(10):
                while zone.serial not in serials:
                    data, addr = await loop.sock_recvfrom(sock, 4096)
                    msg = dns.message.from_wire(data)
                    assert (
                        msg.opcode() == dns.opcode.NOTIFY
                        and str(msg.question[0].name) == ZONE + "."
                    )
                    serials.append(msg.answer[0][0].serial)
                    answer = dns.message.make_response(msg)
                    await loop.sock_sendto(sock, answer.to_wire(), addr)
            assert addr[1] == rpz_port(app)  # sent from the zone's own listener
    finally:
        sock.close()
