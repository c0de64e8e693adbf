"""ZONEMD (RFC 8976) in the served zone, checked by dnspython's own verification."""

from __future__ import annotations

import dataclasses

import dns.message
import dns.rdatatype
import dns.zone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockd.rpz import zonemd
from blockd.rpz.zone import (
    NODATA,
    NOTICE,
    NXDOMAIN,
    PASSTHRU,
    ROUTE,
    T_AXFR,
    T_IXFR,
    WILD,
    Actions,
    Zone,
    axfr_records,
    changes,
    ixfr_records,
    messages,
)

ACTIONS = Actions(("192.0.2.9", "192.0.2.1", "2001:db8::1", "192.0.2.1"), ("192.0.2.2",), 60)


def with_zonemd(z: Zone) -> Zone:
    return dataclasses.replace(z, zonemd=zonemd.record(z, zonemd.digest(z)))


def transferred(z: Zone) -> dns.zone.Zone:
    """Read an AXFR of z into a dnspython zone, as a secondary would."""
    out = dns.zone.Zone(z.name + ".")
    for wire in messages(1, z.name, T_AXFR, axfr_records(z)):
        msg = dns.message.from_wire(wire, xfr=True)
        for rrset in msg.answer:
            node = out.find_node(rrset.name, create=True)
            rds = node.find_rdataset(rrset.rdclass, rrset.rdtype, create=True)
            rds.update(rrset)  # type: ignore[no-untyped-call]
    return out


def test_the_served_zone_carries_a_zonemd_dnspython_verifies() -> None:
    entries = {
        "b.test": NXDOMAIN | WILD,
        "a.b.test": NOTICE | WILD,
        "A-0.test": NODATA,  # mixed case: the digest uses canonical (lowercase) owners
        "z.example": PASSTHRU | WILD,
        "r.example": ROUTE,
        "_x.test": NXDOMAIN | WILD,
    }
    z = with_zonemd(Zone("rpz.example", 42, entries, ACTIONS))
    zone = transferred(z)
    zone.verify_digest()  # raises if the digest is not the zone's
    rr = zone.get_rdataset("@", dns.rdatatype.ZONEMD)
    assert rr is not None and rr[0].serial == 42 and rr[0].scheme == 1 and rr[0].hash_algorithm == 1


def test_a_changed_record_no_longer_verifies() -> None:
    z = with_zonemd(Zone("rpz.example", 3, {"b.test": NXDOMAIN | WILD}, ACTIONS))
    tampered = dataclasses.replace(z, entries={"c.test": NXDOMAIN | WILD})
    with pytest.raises(dns.zone.DigestVerificationFailure):
        transferred(tampered).verify_digest()


def test_without_zonemd_there_is_none() -> None:
    z = Zone("rpz.example", 3, {"b.test": NXDOMAIN}, ACTIONS)
    assert transferred(z).get_rdataset("@", dns.rdatatype.ZONEMD) is None


names = st.from_regex(
    r"[a-z0-9_][a-z0-9-]{0,5}(\.[a-z0-9][a-z0-9-]{0,5}){0,3}\.test", fullmatch=True
)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(names, st.sampled_from([NXDOMAIN, NOTICE | WILD, PASSTHRU, ROUTE | WILD])))
def test_any_zone_verifies(entries: dict[str, int]) -> None:
    transferred(with_zonemd(Zone("rpz.example", 1, entries, ACTIONS))).verify_digest()


def test_ixfr_replaces_the_zonemd_with_the_new_serials() -> None:
    old = with_zonemd(Zone("rpz.example", 1, {"a.test": NXDOMAIN | WILD}, ACTIONS))
    new = with_zonemd(Zone("rpz.example", 2, {"b.test": NXDOMAIN | WILD}, ACTIONS))
    zone = transferred(old)
    recs = [
        rr
        for w in messages(1, new.name, T_IXFR, ixfr_records(new, [changes(old, new)]))
        for rr in dns.message.from_wire(w, xfr=True, one_rr_per_rrset=True).answer
    ]
    # apply the difference sequence as a secondary does: deletions, then additions
    soas = [i for i, r in enumerate(recs) if r.rdtype == dns.rdatatype.SOA]
    deleting, adding = recs[soas[1] + 1 : soas[2]], recs[soas[2] + 1 : soas[3]]
    assert any(r.rdtype == dns.rdatatype.ZONEMD for r in deleting)
    for r in deleting:
        node = zone.get_node(r.name)
        assert node is not None
        rds = node.get_rdataset(r.rdclass, r.rdtype)
        assert rds is not None
        rds.discard(r[0])  # type: ignore[no-untyped-call]
        if not rds:
            node.delete_rdataset(r.rdclass, r.rdtype)
        if not len(node):
            zone.delete_node(r.name)
    for r in [recs[soas[2]], *adding]:
        node = zone.find_node(r.name, create=True)
        rds = node.find_rdataset(r.rdclass, r.rdtype, create=True)
        if r.rdtype == dns.rdatatype.SOA:
            rds.clear()  # type: ignore[no-untyped-call]
        rds.update(r)  # type: ignore[no-untyped-call]
    zone.verify_digest()
    rr = zone.get_rdataset("@", dns.rdatatype.ZONEMD)
    assert rr is not None and [x.serial for x in rr] == [2]
