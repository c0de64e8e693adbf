"""Legally required records: pseudonymous, sealed per period, crypto-shredded on time."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import dnslib
import pytest

from blockd.audit import bundle
from blockd.audit.log import open_log
from blockd.audit.recorder import AuditRecorder
from blockd.audit.records import DAY, RecordKeeper, RecordsError
from blockd.config import ConfigError, parse
from blockd.events import EventBus
from blockd.policy.verdict import Verdict
from tests.daemon import demo_config, one, running

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

V = Verdict("notice", "demo-authority", "demo-hosts", 1, "0123456789abcdef0123")
CLIENT = "198.51.100.23"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def keeper(tmp_path: Path, clock: Clock) -> RecordKeeper:
    return RecordKeeper(
        tmp_path / "records", period=DAY, keep_min=3 * DAY, keep_max=5 * DAY, clock=clock
    )


def everything_on_disk(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_records_hold_a_pseudonym_never_the_address(tmp_path: Path) -> None:
    clock = Clock(100 * DAY + 10)
    k = keeper(tmp_path, clock)
    k.note(CLIENT, V, "udp")
    k.note(CLIENT, V, "http")
    k.note("198.51.100.24", V, "udp")
    assert k.flush() == 3
    disk = everything_on_disk(tmp_path)
    assert CLIENT.encode() not in disk and socket.inet_aton(CLIENT) not in disk
    assert b"demo-hosts" not in disk  # sealed, not just pseudonymous
    records = k.read(100)
    assert [r["transport"] for r in records] == ["udp", "http", "udp"]
    assert records[0]["client"] == records[1]["client"] != records[2]["client"]
    assert records[0]["list"] == "demo-hosts" and records[0]["reference"] == V.entry_ref
    # Another period, another key: the same client cannot be linked across periods.
    clock.now += DAY
    k.note(CLIENT, V, "udp")
    k.flush()
    assert k.read(101)[0]["client"] != records[0]["client"]
    for key in (tmp_path / "records/keys").iterdir():
        assert key.stat().st_mode & 0o777 == 0o600


def test_purge_shreds_the_period_and_respects_the_floor(tmp_path: Path) -> None:
    clock = Clock(100 * DAY)
    k = keeper(tmp_path, clock)
    k.note(CLIENT, V, "udp")
    k.flush()
    sealed = (tmp_path / "records/data/100.rec").read_bytes()
    clock.now = 102 * DAY  # ended a day ago: below the 3-day floor
    with pytest.raises(RecordsError, match="minimum retention"):
        k.purge(100)
    assert k.due() == []
    clock.now = 106 * DAY  # past the 5-day ceiling
    assert k.due() == [100]
    purge = k.purge(100)
    assert purge.records == 1 and purge.start == 100 * DAY
    assert not (tmp_path / "records/keys/100.key").exists()
    assert not (tmp_path / "records/data/100.rec").exists()
    with pytest.raises(RecordsError, match="destroyed"):
        k.read(100)
    # Even a copy of the sealed data taken before the purge is now unreadable.
    (tmp_path / "records/data/100.rec").write_bytes(sealed)
    with pytest.raises(RecordsError):
        k.read(100)


async def test_purges_are_logged_and_the_log_still_verifies(tmp_path: Path) -> None:
    clock = Clock(100 * DAY)
    k = keeper(tmp_path, clock)
    log = open_log(tmp_path / "audit", "isp.example/blockd/t", "op")
    recorder = AuditRecorder(log, EventBus(), clock=clock, records=k, period=3600)
    k.note(CLIENT, V, "udp")
    await recorder.flush(checkpoint=True)
    clock.now = 106 * DAY
    await recorder.flush(checkpoint=True)
    await recorder.flush(checkpoint=True)  # the purge entry queued above is written now
    verdict = bundle.verify(bundle.export(log, 0, log.head().size), log.signer.verifier)
    assert verdict.ok, verdict.message
    purges = [e for e in verdict.entries if e["type"] == "retention-purge"]
    assert purges == [
        {
            "blockd": purges[0]["blockd"],
            "period_end": "1970-04-12T00:00:00Z",
            "period_start": "1970-04-11T00:00:00Z",
            "records": 1,
            "time": purges[0]["time"],
            "type": "retention-purge",
        }
    ]
    assert k.periods() == []


def test_config_floor_ceiling_and_the_log(tmp_path: Path) -> None:
    base = '[trust]\npinned = "t"\n'
    with pytest.raises(ConfigError, match="keep_max_days"):
        parse(
            base + "[audit.records]\nenabled = true\nkeep_min_days = 10\nkeep_max_days = 5",
            tmp_path,
        )
    with pytest.raises(ConfigError, match="needs the audit log"):
        parse(base + "[audit]\nenabled = false\n[audit.records]\nenabled = true", tmp_path)


async def test_a_daemon_with_records_keeps_only_pseudonyms(
    tmp_path: Path, upstream: Upstream
) -> None:
    text = demo_config(tmp_path, upstream.addr) + "\n[audit.records]\nenabled = true\n"
    async with running(text, tmp_path) as app:
        port = next(p for t, _, p in app.listeners() if t == "udp")
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.7", 0))
            s.setblocking(False)
            for _ in range(2):
                await loop.sock_sendto(
                    s, dnslib.DNSRecord.question("blocked.demo.test").pack(), ("127.0.0.1", port)
                )
                async with asyncio.timeout(5):
                    await loop.sock_recv(s, 4096)
        assert app.audit is not None and app.audit.records is not None
        await app.audit.flush()
        index = app.audit.records.periods()[0]
        records = app.audit.records.read(index)
        assert len(records) == 2 and records[0]["client"] == records[1]["client"]
        assert b"127.0.0.7" not in everything_on_disk(tmp_path / "state")
        assert not one(app).http_front.records_nothing  # the notice page must not say otherwise
