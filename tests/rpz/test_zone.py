"""The zone, pure: triggers answer as blockd does, and the wire form reads back as written."""

from __future__ import annotations

import dns.message
import dns.rdatatype

from blockd.rpz.triggers import ServedList, triggers
from blockd.rpz.zone import (
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

ACTIONS = Actions(("192.0.2.1", "2001:db8::1"), ("192.0.2.2",), 60)


def test_triggers_answer_as_blockd_decides() -> None:
    lists = [
        ServedList("a/x", 1, NXDOMAIN, ["evil.test", "both.test"], ["routed.test", "a.evil.test"]),
        ServedList("a/y", 1, NOTICE, ["both.test", "sub.routed.test"], []),
    ]
    got = triggers(lists, ["good.example", "*.safe.example"])
    assert got == {
        "both.test": NXDOMAIN | WILD,  # the first list configured wins a name
        "evil.test": NXDOMAIN | WILD,  # a.evil.test's route would undo the block: left out
        "good.example": PASSTHRU,
        "routed.test": ROUTE | WILD,
        "safe.example": PASSTHRU | WILD,
        "sub.routed.test": NOTICE | WILD,  # the more specific block wins, as in blockd
    }
    assert list(got) == sorted(got)


def zone_text(wires: list[bytes]) -> list[str]:
    out = []
    for wire in wires:
        msg = dns.message.from_wire(wire, xfr=True, one_rr_per_rrset=True)
        assert str(msg.question[0].name) == "rpz.example."
        out += [f"{r.name} {dns.rdatatype.to_text(r.rdtype)} {r[0]}" for r in msg.answer]
    return out


def test_a_transfer_reads_back_as_the_zone_in_messages_under_64k() -> None:
    entries = {f"h{i}.test": NXDOMAIN | WILD for i in range(3000)} | {"n.test": NOTICE}
    zone = Zone("rpz.example", 7, entries, ACTIONS)
    wires = list(messages(1, zone.name, T_AXFR, axfr_records(zone)))
    assert len(wires) > 1 and all(len(w) < 65535 for w in wires)
    text = zone_text(wires)
    assert text[0].startswith("rpz.example. SOA localhost. hostmaster.rpz.example. 7 ")
    assert text[-1] == text[0]
    assert "h12.test.rpz.example. CNAME ." in text
    assert "*.h12.test.rpz.example. CNAME ." in text
    assert "n.test.rpz.example. A 192.0.2.1" in text
    assert "n.test.rpz.example. AAAA 2001:db8::1" in text
    assert "*.n.test.rpz.example. A 192.0.2.1" not in text
    assert len(text) == 2 + 1 + 3000 * 2 + 2  # SOA, NS, triggers, SOA


def test_an_incremental_transfer_holds_each_step_between_its_soas() -> None:
    old = {"a.test": NXDOMAIN | WILD, "b.test": NXDOMAIN | WILD}
    new = {"a.test": NXDOMAIN | WILD, "b.test": NOTICE | WILD, "c.test": PASSTHRU}
    step = changes(Zone("rpz.example", 1, old, ACTIONS), Zone("rpz.example", 2, new, ACTIONS))
    assert step.removed == {"b.test": NXDOMAIN | WILD}
    assert step.added == {"b.test": NOTICE | WILD, "c.test": PASSTHRU}
    zone = Zone("rpz.example", 2, new, ACTIONS)
    text = zone_text(list(messages(1, zone.name, T_IXFR, ixfr_records(zone, [step]))))
    serials = [int(t.split()[4]) for t in text if " SOA " in t]
    assert serials == [2, 1, 2, 2]
    assert text[2:4] == ["b.test.rpz.example. CNAME .", "*.b.test.rpz.example. CNAME ."]
    assert "c.test.rpz.example. CNAME rpz-passthru." in text
