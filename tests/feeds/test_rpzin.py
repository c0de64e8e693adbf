"""RPZ in, pure: ZONEMD checked, the manifest's binding compared, records converted or refused."""

from __future__ import annotations

import dns.zone
import pytest

from blockd.feeds import rpzin
from blockd.feeds.model import RpzBinding
from tests.rpz.ingest import zone_text

ZONE = "rpz.authority.example"


def zone(text: str) -> dns.zone.Zone:
    return dns.zone.from_text(text, ZONE + ".", relativize=True)


def test_a_zone_reads_as_its_serial_digest_and_hosts() -> None:
    found = rpzin.read(zone(zone_text(ZONE, 7, ["b.test", "a.test"])))
    assert (found.zone, found.serial, found.hosts) == (ZONE, 7, ["a.test", "b.test"])
    assert len(found.zonemd) == 96
    assert found.body() == b"a.test\nb.test\n"
    rpzin.check(found, RpzBinding(zone=ZONE, serial=7, zonemd=found.zonemd))


def test_local_data_is_a_block_too() -> None:
    extra = "n.test A 192.0.2.1\n*.n.test A 192.0.2.1\n"
    assert rpzin.read(zone(zone_text(ZONE, 1, [], extra))).hosts == ["n.test"]


def test_a_zone_changed_under_its_zonemd_is_refused() -> None:
    text = zone_text(ZONE, 7, ["a.test"]) + "evil.test 60 IN CNAME .\n*.evil.test 60 IN CNAME .\n"
    with pytest.raises(rpzin.ZoneError) as e:
        rpzin.read(zone(text))
    assert e.value.reason == "zonemd"


def test_a_zone_without_zonemd_is_refused() -> None:
    text = "\n".join(x for x in zone_text(ZONE, 7, ["a.test"]).splitlines() if "ZONEMD" not in x)
    with pytest.raises(rpzin.ZoneError, match="no SHA-384 ZONEMD"):
        rpzin.read(zone(text))


def test_the_manifest_binds_serial_and_digest() -> None:
    found = rpzin.read(zone(zone_text(ZONE, 7, ["a.test"])))
    for binding in (
        RpzBinding(zone=ZONE, serial=6, zonemd=found.zonemd),
        RpzBinding(zone=ZONE, serial=7, zonemd="0" * 96),
        RpzBinding(zone="other.example", serial=7, zonemd=found.zonemd),
    ):
        with pytest.raises(rpzin.ZoneError) as e:
            rpzin.check(found, binding)
        assert e.value.reason == "zone-mismatch"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("p.test CNAME rpz-passthru.\n*.p.test CNAME rpz-passthru.\n", "passthru"),
        ("d.test CNAME rpz-drop.\n*.d.test CNAME rpz-drop.\n", "drop"),
        ("n.test CNAME *.\n*.n.test CNAME *.\n", "NODATA"),
        ("r.test CNAME walled.example.\n*.r.test CNAME walled.example.\n", "redirect"),
        ("t.test TXT hello\n*.t.test TXT hello\n", "TXT"),
        ("32.1.2.0.192.rpz-ip CNAME .\n", "IP"),
        ("only.test CNAME .\n", "without *.only.test"),
        ("*.wild.test CNAME .\n", "without wild.test"),
        ("@ TXT apex\n", "apex TXT"),
    ],
)
def test_what_blockd_cannot_represent_is_refused_by_name(extra: str, named: str) -> None:
    with pytest.raises(rpzin.ZoneError) as e:
        rpzin.read(zone(zone_text(ZONE, 1, ["ok.test"], extra)))
    assert e.value.reason == "entries" and named in str(e.value)
