"""The transparency report: the numbers it states, its filtering, and its three forms."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from blockd.audit import report
from blockd.audit.report import (
    DayBlocks,
    Period,
    Report,
    ReportSource,
    build_report,
    render_csv,
    render_html,
    render_json,
)

SCHEMA = Path(report.__file__).parent.with_name("report.schema.json")
HOSTILE = "<img src=x onerror=alert(1)>"
CPA = ("cpa", "hosts")
EVIL = (HOSTILE, "urls")
NOW = "2024-05-04T00:00:00Z"
SOURCE = ReportSource(
    "isp.example/blockd",
    10_000,
    "q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng=",
    "isp.example+5d6e1a2b",
    True,
)

Entry = dict[str, object]


def at(time: str, type_: str, /, **fields: object) -> Entry:
    """Return an entry as the recorder writes it."""
    return {"time": time, "blockd": "0.1.0", "type": type_} | fields


def hourly(
    ref: tuple[str, str], version: int, first: str, last: str, skip: set[str]
) -> list[Entry]:
    """Return a feed-unchanged entry at every hour and a half from first to last."""
    t, end, out = datetime.fromisoformat(first), datetime.fromisoformat(last), []
    while t <= end:
        time = t.strftime("%Y-%m-%dT%H:%M:%SZ")
        if time not in skip:
            out.append(at(time, "feed-unchanged", authority=ref[0], list=ref[1], version=version))
        t += timedelta(hours=1)
    return out


def accepted(time: str, ref: tuple[str, str], version: int, entries: int, key: str) -> Entry:
    return at(
        time,
        "feed-accepted",
        authority=ref[0],
        list=ref[1],
        version=version,
        envelope_sha256=f"{version:064x}",
        keyids=[key],
        entries=entries,
        rejected_entries={"syntax": 2} if ref == CPA else {},
    )


def rejected(time: str, ref: tuple[str, str], version: int | None, reason: str) -> Entry:
    return at(
        time,
        "feed-rejected",
        authority=ref[0],
        list=ref[1],
        version=version,
        envelope_sha256=None,
        keyids=[],
        reason=reason,
    )


def activated(time: str, generation: int, cpa: int, evil: int, entries: int) -> Entry:
    versions = {f"{CPA[0]}/{CPA[1]}": cpa, f"{EVIL[0]}/{EVIL[1]}": evil}
    return at(time, "policy-activated", generation=generation, versions=versions, entries=entries)


def counts(time: str, start: str, *rows: tuple[tuple[str, str], int, str, str, int]) -> Entry:
    return at(
        time,
        "block-counts",
        period_start=start,
        period_end=time,
        counts=[
            {
                "authority": ref[0],
                "list": ref[1],
                "version": v,
                "action": action,
                "transport": transport,
                "count": n,
            }
            for ref, v, action, transport, n in rows
        ],
    )


def guard(time: str, kind: str, ref: tuple[str, str], version: int, detail: str, n: int) -> Entry:
    return at(
        time,
        "guard-intervention",
        kind=kind,
        authority=ref[0],
        list=ref[1],
        version=version,
        detail=detail,
        count=n,
    )


# Three days of one ISP's log. cpa/hosts goes stale on 2 May (01:30 to 06:00, while version
# 8 is refused as expired and a fetch fails); the hostile authority's list stops syncing on
# 3 May at 09:30 and is still stale when the report is made. Blocks: 1 May cpa 18, evil 2;
# 2 May cpa 8, evil 4; 3 May cpa 20, evil 6 (the 00:00 counts of 2 May began on 1 May).
SKIP_CPA = {f"2024-05-02T{h:02}:30:00Z" for h in (2, 3, 4, 5)} | {"2024-05-02T23:30:00Z"}
EVENTS: list[Entry] = [
    at("2024-05-01T00:00:00Z", "daemon-start"),
    at(
        "2024-05-01T00:00:01Z",
        "trust-accepted",
        version=3,
        envelope_sha256="ab" * 32,
        keyids=["regulator-1"],
    ),
    accepted("2024-05-01T00:01:00Z", CPA, 7, 1000, "cpa-2024"),
    guard("2024-05-01T00:01:00Z", "never-block", CPA, 7, "3 entries touch never-block names", 3),
    accepted("2024-05-01T00:01:01Z", EVIL, 1, 50, "evil-1"),
    activated("2024-05-01T00:01:02Z", 1, 7, 1, 1050),
    at("2024-05-01T00:02:00Z", "self-test", passed=True, checks=4, failures=[]),
    counts(
        "2024-05-01T01:00:00Z",
        "2024-05-01T00:00:00Z",
        (CPA, 7, "notice", "udp", 10),
        (CPA, 7, "nxdomain", "tcp", 5),
        (EVIL, 1, "notice", "https", 2),
    ),
    counts("2024-05-02T00:00:00Z", "2024-05-01T23:00:00Z", (CPA, 7, "notice", "udp", 3)),
    rejected("2024-05-02T03:00:00Z", CPA, 8, "expired"),
    rejected("2024-05-02T04:00:00Z", CPA, None, "fetch"),
    accepted("2024-05-02T06:00:00Z", CPA, 9, 1100, "cpa-2024"),
    activated("2024-05-02T06:00:01Z", 2, 9, 1, 1150),
    guard(
        "2024-05-02T11:00:00Z",
        "quarantine",
        EVIL,
        2,
        "update adds 40 and removes 0 of 50 entries (80%); approval needed",
        40,
    ),
    counts(
        "2024-05-02T12:00:00Z",
        "2024-05-02T11:00:00Z",
        (CPA, 9, "notice", "udp", 7),
        (EVIL, 1, "refused", "https", 4),
    ),
    guard("2024-05-02T13:00:00Z", "approve", EVIL, 2, "operator approved a quarantined update", 0),
    at(
        "2024-05-02T13:00:01Z",
        "operator-action",
        action="approve",
        detail=f"{EVIL[0]}/urls 2",
        config_sha256="cd" * 32,
    ),
    activated("2024-05-02T13:00:02Z", 3, 9, 2, 1190),
    at(
        "2024-05-02T14:00:00Z",
        "trust-rejected",
        version=4,
        envelope_sha256=None,
        reason="malformed",
    ),
    at(
        "2024-05-02T20:00:00Z",
        "self-test",
        passed=False,
        checks=4,
        failures=["probe cpa/hosts: answered NOERROR"],
    ),
    at(
        "2024-05-02T21:00:00Z",
        "retention-purge",
        period="2024-03",
        records=1234,
        before="2024-04-01T00:00:00Z",
    ),
    at("2024-05-02T22:00:00Z", "lunar-eclipse", phase="total"),
    counts("2024-05-02T23:00:00Z", "2024-05-02T22:00:00Z", (CPA, 9, "notice", "doh", 1)),
    at("2024-05-02T23:00:00Z", "daemon-stop"),
    at("2024-05-03T00:00:10Z", "daemon-start"),
    activated("2024-05-03T00:00:11Z", 1, 9, 2, 1190),
    counts(
        "2024-05-03T05:00:00Z",
        "2024-05-03T04:00:00Z",
        (CPA, 9, "notice", "udp", 20),
        (EVIL, 2, "notice", "http", 6),
    ),
    rejected("2024-05-03T12:00:00Z", EVIL, 3, "expired"),
]
SYNCS = hourly(CPA, 7, "2024-05-01T01:30:00", "2024-05-03T23:30:00", SKIP_CPA) + hourly(
    EVIL, 1, "2024-05-01T01:30:00", "2024-05-03T09:30:00", {"2024-05-02T23:30:00Z"}
)
LOG: list[tuple[int, Entry]] = list(enumerate(sorted(EVENTS + SYNCS, key=lambda e: str(e["time"]))))


def index_of(kind: str, time: str) -> int:
    return next(i for i, e in LOG if e["type"] == kind and e["time"] == time)


def whole(**kw: object) -> Report:
    return build_report(LOG, SOURCE, None, None, now=NOW, **kw)  # type: ignore[arg-type]


def day_totals(r: Report) -> dict[tuple[str, str], int]:
    """Return every measure of each day and authority, added up (only a test may do that)."""
    out: Counter[tuple[str, str]] = Counter()
    for d in r.blocks_by_day:
        out[(d.day, d.authority)] += d.count
    return dict(out)


def test_blocks_per_authority_per_day_add_up() -> None:
    r = whole()
    assert day_totals(r) == {
        ("2024-05-01", "cpa"): 18,
        ("2024-05-01", HOSTILE): 2,
        ("2024-05-02", "cpa"): 8,
        ("2024-05-02", HOSTILE): 4,
        ("2024-05-03", "cpa"): 20,
        ("2024-05-03", HOSTILE): 6,
    }
    assert r.totals() == {"dns-blocked": 46, "notice-page": 8, "tls-refused": 4, "dns-routed": 0}
    assert r.blocks_per_authority() == {"cpa": 46, HOSTILE: 0}
    by_list = {
        (b.authority, b.list, b.version, b.action, b.transport): b.count for b in r.blocks_by_list
    }
    assert by_list[("cpa", "hosts", 7, "notice", "udp")] == 13
    assert by_list[("cpa", "hosts", 9, "notice", "udp")] == 27
    assert sum(by_list.values()) == 58


def test_days_without_blocks_are_listed_as_zero() -> None:
    entries = [
        (0, counts("2024-05-01T01:00:00Z", "2024-05-01T00:00:00Z", (CPA, 7, "n", "udp", 5))),
        (1, counts("2024-05-03T01:00:00Z", "2024-05-03T00:00:00Z", (CPA, 7, "n", "udp", 1))),
    ]
    r = build_report(entries, SOURCE, None, None, now=NOW)
    assert tuple(d for d in r.blocks_by_day if d.measure == "dns-blocked") == (
        DayBlocks("2024-05-01", "cpa", "dns-blocked", 5),
        DayBlocks("2024-05-02", "cpa", "dns-blocked", 0),
        DayBlocks("2024-05-03", "cpa", "dns-blocked", 1),
    )


def test_versions_say_when_they_were_accepted_and_enforced() -> None:
    enforced = {(v.authority, v.list, v.version): v for v in whole().enforced}
    assert set(enforced) == {
        ("cpa", "hosts", 7),
        ("cpa", "hosts", 9),
        (HOSTILE, "urls", 1),
        (HOSTILE, "urls", 2),
    }
    v7 = enforced[("cpa", "hosts", 7)]
    assert (v7.accepted, v7.first_enforced) == ("2024-05-01T00:01:00Z", "2024-05-01T00:01:02Z")
    assert v7.periods == (Period("2024-05-01T00:01:02Z", "2024-05-02T06:00:01Z"),)
    assert (v7.envelope_sha256, v7.keyids, v7.entries) == (f"{7:064x}", ("cpa-2024",), 1000)
    assert not v7.in_force_at_end
    # The daemon was down from 23:00 to 00:00:10: nothing was enforced meanwhile.
    v9 = enforced[("cpa", "hosts", 9)]
    assert v9.periods == (
        Period("2024-05-02T06:00:01Z", "2024-05-02T23:00:00Z"),
        Period("2024-05-03T00:00:11Z", None),
    )
    assert v9.in_force_at_end
    # Approved out of quarantine: enforced, but never the subject of a feed-accepted entry.
    v2 = enforced[(HOSTILE, "urls", 2)]
    assert (v2.accepted, v2.first_enforced, v2.envelope_sha256) == (
        None,
        "2024-05-02T13:00:02Z",
        None,
    )
    lists = {(x.authority, x.list): x for x in whole().lists}
    assert lists[CPA].versions == (7, 9)
    assert (lists[CPA].accepted, lists[CPA].rejected) == (2, 2)
    assert lists[CPA].last_sync == "2024-05-03T23:30:00Z"
    assert lists[EVIL].versions == (1, 2)


def test_entries_per_list_version_over_time() -> None:
    sizes = [(s.time, s.authority, s.version, s.entries) for s in whole().list_sizes]
    assert sizes == [
        ("2024-05-01T00:01:00Z", "cpa", 7, 1000),
        ("2024-05-01T00:01:01Z", HOSTILE, 1, 50),
        ("2024-05-02T06:00:00Z", "cpa", 9, 1100),
    ]
    assert whole().list_sizes[0].rejected_entries == {"syntax": 2}
    assert [a.entries for a in whole().activations] == [1050, 1150, 1190, 1190]


def test_stale_periods_are_the_long_gaps_between_syncs() -> None:
    gaps = whole().stale
    assert [(g.authority, g.last_sync, g.stale_from, g.until, g.ongoing) for g in gaps] == [
        ("cpa", "2024-05-02T01:30:00Z", "2024-05-02T03:30:00Z", "2024-05-02T06:00:00Z", False),
        (HOSTILE, "2024-05-03T09:30:00Z", "2024-05-03T11:30:00Z", NOW, True),
    ]
    assert [g.seconds for g in gaps] == [9000, 45000]
    assert gaps[0].rejections == {"expired": 1, "fetch": 1}
    assert gaps[1].rejections == {"expired": 1}
    # Exactly two hours without a sync (22:30 to 00:30 across the restart) is not stale.
    assert not any(g.last_sync == "2024-05-02T22:30:00Z" for g in gaps)


def test_stale_after_is_configurable() -> None:
    assert len(whole(stale_after=6 * 3600).stale) == 1
    assert len(whole(stale_after=3600).stale) > 2


def test_a_list_that_never_synced_is_stale_from_when_it_was_first_seen() -> None:
    entries = [(0, activated("2024-05-01T00:00:00Z", 1, 7, 1, 10))]
    gaps = build_report(entries, SOURCE, None, None, now="2024-05-01T05:00:00Z").stale
    assert [(g.authority, g.last_sync, g.stale_from, g.seconds) for g in gaps] == [
        (HOSTILE, None, "2024-05-01T02:00:00Z", 3 * 3600),  # "<" sorts before "c"
        ("cpa", None, "2024-05-01T02:00:00Z", 3 * 3600),
    ]


def test_rejections_interventions_actions_and_self_tests() -> None:
    r = whole()
    assert [(x.source, x.authority, x.version, x.reason) for x in r.rejected] == [
        ("feed", "cpa", 8, "expired"),
        ("feed", "cpa", None, "fetch"),
        ("trust", None, 4, "malformed"),
        ("feed", HOSTILE, 3, "expired"),
    ]
    assert [(i.kind, i.version, i.count) for i in r.interventions] == [
        ("never-block", 7, 3),
        ("quarantine", 2, 40),
        ("approve", 2, 0),
    ]
    assert [(o.action, o.config_sha256) for o in r.operator_actions] == [("approve", "cd" * 32)]
    assert [(t.passed, t.failures) for t in r.self_tests] == [
        (True, ()),
        (False, ("probe cpa/hosts: answered NOERROR",)),
    ]
    assert [(t.version, t.keyids) for t in r.trust_updates] == [(3, ("regulator-1",))]
    assert [(d.time, d.event) for d in r.daemon] == [
        ("2024-05-01T00:00:00Z", "start"),
        ("2024-05-02T23:00:00Z", "stop"),
        ("2024-05-03T00:00:10Z", "start"),
    ]
    [purge] = r.retention_purges
    assert purge.fields == {
        "blockd": "0.1.0",
        "period": "2024-03",
        "records": 1234,
        "before": "2024-04-01T00:00:00Z",
    }


def test_unknown_and_malformed_entries_are_listed_not_fatal() -> None:
    broken = at(
        "2024-05-01T01:00:00Z", "feed-accepted", authority="cpa", list="hosts", version="seven"
    )
    entries = [*LOG, (len(LOG), broken), (len(LOG) + 1, {"type": "x", "time": 5})]
    other = build_report(entries, SOURCE, None, None, now=NOW).other
    assert [(o.type, o.note) for o in other] == [
        ("lunar-eclipse", "type not known to this report"),
        ("feed-accepted", "field 'version' is not an integer"),
        ("x", "no valid 'time'"),
    ]
    assert other[0].fields == {"blockd": "0.1.0", "phase": "total"}


def test_source_names_the_checkpoint_and_the_entries_read() -> None:
    r = whole()
    assert (r.first_index, r.end_index, r.entries, r.beyond_checkpoint) == (
        0,
        len(LOG),
        len(LOG),
        0,
    )
    short = ReportSource(SOURCE.origin, 100, SOURCE.checkpoint_root_b64, SOURCE.key_name, True)
    r = build_report(LOG, short, None, None, now=NOW)
    assert (r.first_index, r.end_index, r.beyond_checkpoint) == (0, 100, len(LOG) - 100)


def test_start_and_end_filter_by_entry_time_end_exclusive() -> None:
    r = build_report(LOG, SOURCE, "2024-05-02", "2024-05-03T00:00:00Z", now=NOW)
    assert (r.start, r.end) == ("2024-05-02T00:00:00Z", "2024-05-03T00:00:00Z")
    # The counts written at 00:00 on 2 May are in (start is inclusive); they began on 1 May.
    assert day_totals(r) == {
        ("2024-05-01", "cpa"): 3,
        ("2024-05-01", HOSTILE): 0,
        ("2024-05-02", "cpa"): 8,
        ("2024-05-02", HOSTILE): 4,
    }
    assert sum(r.totals().values()) == 15
    assert [x.reason for x in r.rejected] == ["expired", "fetch", "malformed"]
    assert [a.generation for a in r.activations] == [2, 3]
    assert [d.event for d in r.daemon] == ["stop"]
    # Version 7 was activated before the window (read as context) and ended inside it.
    enforced = {(v.authority, v.version): v for v in r.enforced}
    assert set(enforced) == {("cpa", 7), ("cpa", 9), (HOSTILE, 1), (HOSTILE, 2)}
    assert enforced[("cpa", 7)].first_enforced == "2024-05-01T00:01:02Z"
    assert enforced[("cpa", 7)].envelope_sha256 == f"{7:064x}"
    assert enforced[("cpa", 9)].periods == (Period("2024-05-02T06:00:01Z", "2024-05-02T23:00:00Z"),)
    assert [(g.authority, g.stale_from) for g in r.stale] == [("cpa", "2024-05-02T03:30:00Z")]
    first = index_of("block-counts", "2024-05-02T00:00:00Z")
    last = index_of("daemon-stop", "2024-05-02T23:00:00Z")
    assert (r.first_index, r.end_index) == (first, last + 1)
    assert r.entries == sum(1 for _, e in LOG if "2024-05-02" <= str(e["time"]) < "2024-05-03")


def test_versions_from_before_the_window_are_not_listed_if_they_ended_before_it() -> None:
    r = build_report(LOG, SOURCE, "2024-05-03T00:00:00Z", None, now=NOW)
    assert {(v.authority, v.version) for v in r.enforced} == {("cpa", 9), (HOSTILE, 2)}
    assert [d.event for d in r.daemon] == ["start"]


def test_bad_times_are_refused_with_what_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"start: 'yesterday' is not a date or time \(accepted"):
        build_report(LOG, SOURCE, "yesterday", None, now=NOW)
    with pytest.raises(ValueError, match="is not after start"):
        build_report(LOG, SOURCE, "2024-05-02", "2024-05-01", now=NOW)
    r = build_report(LOG, SOURCE, "2024-05-02T02:00:00+02:00", None, now=NOW)
    assert r.start == "2024-05-02T00:00:00Z"


def test_json_validates_against_the_schema_and_states_the_numbers() -> None:
    schema = json.loads(SCHEMA.read_text("utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    for r in (whole(), build_report([], SOURCE, None, None, now=NOW)):
        data = json.loads(render_json(r))
        jsonschema.Draft202012Validator(schema).validate(data)
    data = json.loads(render_json(whole()))
    assert data["summary"]["blocks_by_day"] == 3 * 2 * 4  # days, authorities, measures
    assert data["blocks_by_list"]["totals"]["dns-blocked"] == 46
    by_authority = data["blocks_by_day"]["by_authority"]
    assert {a: sum(n.values()) for a, n in by_authority.items()} == {"cpa": 46, HOSTILE: 12}
    assert by_authority[HOSTILE]["tls-refused"] == 4
    assert data["blocks_by_day"]["days"] == ["2024-05-01", "2024-05-02", "2024-05-03"]
    assert data["source"]["checkpoint_root"] == SOURCE.checkpoint_root_b64
    assert data["interventions"]["by_kind"] == {"approve": 1, "never-block": 1, "quarantine": 1}
    assert (data["self_tests"]["passed"], data["self_tests"]["failed"]) == (1, 1)
    assert data["stale"]["items"][1]["ongoing"] is True


def test_schema_rejects_what_the_report_never_writes() -> None:
    schema = json.loads(SCHEMA.read_text("utf-8"))
    data = json.loads(render_json(whole()))
    data["blocks_by_day"]["items"][0]["count"] = -1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)


def test_csv_parses_back_with_the_same_totals() -> None:
    text = render_csv(whole())
    assert text.startswith("section,index,time,authority,list,version,key,value\r\n")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    per_day: Counter[tuple[str, str]] = Counter()
    for row in rows:
        if row["section"] == "blocks_by_day" and row["key"] == "count" and row["time"]:
            per_day[(row["time"], row["authority"])] += int(row["value"])
    assert dict(per_day) == day_totals(whole())
    per_list = sum(
        int(r["value"])
        for r in rows
        if r["section"] == "blocks_by_list" and r["key"] == "count" and r["authority"]
    )
    assert per_list == 58
    summary = {r["key"]: r["value"] for r in rows if r["section"] == "summary"}
    assert summary["blocks_by_day"] == "24"
    assert summary["rejected"] == "4"
    source = {r["key"]: r["value"] for r in rows if r["section"] == "source"}
    assert source["checkpoint_root"] == SOURCE.checkpoint_root_b64
    keyids = [r["value"] for r in rows if r["section"] == "enforced" and r["key"] == "keyids"]
    assert sorted(keyids) == ["cpa-2024", "cpa-2024", "evil-1"]
    purge = {
        r["key"]: r["value"] for r in rows if r["section"] == "retention_purges" and r["index"]
    }
    assert purge["fields.records"] == "1234"


def test_csv_defuses_spreadsheet_formulas() -> None:
    entry = at(
        "2024-05-01T00:00:00Z",
        "operator-action",
        action="reload",
        detail='=HYPERLINK("http://x")',
        config_sha256="",
    )
    text = render_csv(build_report([(0, entry)], SOURCE, None, None, now=NOW))
    [detail] = [r for r in csv.DictReader(io.StringIO(text, newline="")) if r["key"] == "detail"]
    assert detail["value"] == '\'=HYPERLINK("http://x")'


def test_html_has_no_script_and_escapes_what_entries_say() -> None:
    page = render_html(whole())
    assert "<script" not in page.lower()
    assert " on" + "error=" not in page.replace("onerror=alert(1)&gt;", "")
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.startswith('<!DOCTYPE html>\n<html lang="en">')
    assert 'role="img"' in page and '<title id="chart-title">' in page
    assert page.count("<caption>") >= 10
    assert '<th scope="col"' in page and '<th scope="row"' in page


def test_html_states_the_checkpoint_and_every_section_count() -> None:
    page = render_html(whole())
    assert SOURCE.origin in page and SOURCE.checkpoint_root_b64 in page and SOURCE.key_name in page
    assert f"entries 0 to {len(LOG) - 1}" in page
    for heading in (
        "Rejected updates (4)",
        "Guard-rail interventions (3)",
        f"Blocked answers, notice pages and routes ({len(whole().blocks_by_list)})",
        "Periods a list was stale (2)",
        "Retention purges (1)",
        "Other entries (1)",
        "Daemon starts and stops (3)",
    ):
        assert heading in page
    unverified = ReportSource(SOURCE.origin, 1, "AA==", "k", False)
    assert "NO: the numbers below are not verified" in render_html(
        build_report([], unverified, None, None, now=NOW)
    )


def test_html_allows_only_its_own_stylesheet() -> None:
    page = render_html(whole())
    assert "default-src 'none'; style-src 'sha256-" in page
    assert " style=" not in page  # inline style attributes would need 'unsafe-inline'


def test_activations_say_why_generation_numbers_skip() -> None:
    r = whole()
    notes = [(a.generation, a.note) for a in r.activations]
    assert notes == [
        (1, "the first policy in the log"),
        (2, "cpa/hosts v7 to v9"),
        (3, f"{HOSTILE}/urls v1 to v2"),
        (1, "blockd restarted: generations count again from its start; "
            "the same list versions as before (the policy was built again)"),
    ]  # fmt: skip
    entries = [
        (0, activated("2024-05-01T00:00:00Z", 2, 7, 1, 10)),
        (1, activated("2024-05-01T01:00:00Z", 5, 7, 1, 10)),
    ]
    (_, second) = build_report(entries, SOURCE, None, None, now=NOW).activations
    assert second.note == (
        "2 generation numbers skipped: policies built but never put in force; "
        "the same list versions as before (the policy was built again)"
    )
    assert "numbers are skipped for policies that were built" in render_html(r)


def test_the_counting_period_is_the_one_the_log_states() -> None:
    stated = counts("2024-05-01T00:01:00Z", "2024-05-01T00:00:00Z", (CPA, 7, "notice", "udp", 1))
    stated["period_seconds"] = 60
    r = build_report([(0, stated)], SOURCE, None, None, now=NOW)
    assert r.count_periods == (60,)
    assert "in periods of 1 min" in render_html(r) and "per hour" not in render_html(r)
    # Older logs do not state it: the longest span is the period (the last one is cut short).
    older = [
        (0, counts("2024-05-01T00:02:00Z", "2024-05-01T00:00:00Z", (CPA, 7, "n", "udp", 1))),
        (1, counts("2024-05-01T00:02:30Z", "2024-05-01T00:02:00Z", (CPA, 7, "n", "udp", 1))),
    ]
    assert build_report(older, SOURCE, None, None, now=NOW).count_periods == (120,)


def test_self_tests_are_counted_apart_and_older_counts_are_said_to_include_them() -> None:
    entry = counts(
        "2024-05-01T01:00:00Z",
        "2024-05-01T00:00:00Z",
        (CPA, 7, "notice", "udp", 4),
        (CPA, 7, "notice", "udp", 2),
        (CPA, 7, "route", "udp", 9),
    )
    rows = entry["counts"]
    assert isinstance(rows, list)
    rows[0]["selftest"], rows[1]["selftest"] = False, True
    r = build_report([(0, entry)], SOURCE, None, None, now=NOW)
    assert r.totals() == {"dns-blocked": 4, "notice-page": 0, "tls-refused": 0, "dns-routed": 9}
    assert r.totals(selftest=True)["dns-blocked"] == 2
    assert day_totals(r) == {("2024-05-01", "cpa"): 13}  # self-tests are not in the days
    page = render_html(r)
    assert "9 of these were counted by a blockd that did not yet tell self-tests apart" in page


def test_the_signing_key_is_named_with_its_key_id_and_vkey() -> None:
    source = replace(SOURCE, key_id="1a2b3c4d", vkey="op+1a2b3c4d+AQ==")
    page = render_html(build_report([], source, None, None, now=NOW))
    assert "key id <code>1a2b3c4d</code>" in page and "<code>op+1a2b3c4d+AQ==</code>" in page
    data = json.loads(render_json(build_report([], source, None, None, now=NOW)))
    assert (data["source"]["key_id"], data["source"]["vkey"]) == ("1a2b3c4d", "op+1a2b3c4d+AQ==")
