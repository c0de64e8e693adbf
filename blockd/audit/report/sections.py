"""The sections of the report page, in reading order: each one's id, title, count and body."""

from __future__ import annotations

import json

from blockd.audit.report.chart import chart
from blockd.audit.report.markup import (
    Safe,
    code_tag,
    duration,
    lines,
    mark,
    table,
    tally,
    time_tag,
)
from blockd.audit.report.model import MEASURES, Period, Report

Section = tuple[str, str, int, str]  # id, title, count, body


def sections(r: Report) -> list[Section]:
    """Return the report's sections in reading order."""
    stale_for = duration(r.stale_after)
    passed = sum(t.passed for t in r.self_tests)
    return [
        (
            "lists",
            "Lists enforced",
            len(r.lists),
            "<p>Each authority's lists, the versions enforced in this period, and how often "
            "blockd checked for updates.</p>"
            + table(
                "Lists and their syncs",
                [
                    "Authority",
                    "List",
                    "Versions enforced",
                    "Accepted",
                    "Unchanged",
                    "Rejected",
                    "Last sync",
                ],
                [
                    [
                        x.authority,
                        x.list,
                        ", ".join(map(str, x.versions)) or None,
                        x.accepted,
                        x.unchanged,
                        x.rejected,
                        time_tag(x.last_sync),
                    ]
                    for x in r.lists
                ],
                numeric=(3, 4, 5),
            ),
        ),
        (
            "enforced",
            "Versions enforced",
            len(r.enforced),
            "<p>When each list version was accepted and in force, with the SHA-256 of its "
            "signed envelope and the keys that signed it. A period with no end (“onwards”) "
            "was still in force when the report ends; stopping blockd ends a period.</p>"
            + table(
                "List versions",
                [
                    "Authority",
                    "List",
                    "Version",
                    "Accepted",
                    "In force",
                    "Entries",
                    "Envelope SHA-256",
                    "Signing keys",
                ],
                [
                    [
                        v.authority,
                        v.list,
                        v.version,
                        time_tag(v.accepted),
                        lines(map(_period, v.periods)),
                        v.entries,
                        code_tag(v.envelope_sha256),
                        lines(map(code_tag, v.keyids)),
                    ]
                    for v in r.enforced
                ],
                numeric=(2, 5),
            ),
        ),
        (
            "activations",
            "Policy activations",
            len(r.activations),
            "<p>A policy is the set of list versions blockd enforces together; every row is a "
            "policy that came into force, and every policy that came into force has a row. Its "
            "generation number counts the policies blockd built since it started, so numbers "
            "start again after a restart, and numbers are skipped for policies that were built "
            "but never put in force (the empty policy blockd starts with before its lists are "
            "loaded, and the trial policy a configuration reload builds to check the new "
            "configuration). A policy with the same list versions as the one before was built "
            "again, after a reload or a trust policy update, say; the last column says what "
            "changed.</p>"
            + table(
                "Policies that came into force",
                ["Time", "Generation", "Entries", "List versions", "Change"],
                [
                    [
                        time_tag(a.time),
                        a.generation,
                        a.entries,
                        lines(f"{k} version {v}" for k, v in a.versions.items()),
                        a.note,
                    ]
                    for a in r.activations
                ],
                numeric=(1, 2),
            ),
        ),
        (
            "list-sizes",
            "Entries per list version",
            len(r.list_sizes),
            table(
                "Entries in each accepted version",
                ["Accepted", "Authority", "List", "Version", "Entries", "Entries refused"],
                [
                    [
                        time_tag(s.time),
                        s.authority,
                        s.list,
                        s.version,
                        s.entries,
                        tally(s.rejected_entries),
                    ]
                    for s in r.list_sizes
                ],
                numeric=(3, 4),
            ),
        ),
        ("blocks", "Blocked answers, notice pages and routes", len(r.blocks_by_list), _blocks(r)),
        (
            "stale",
            "Periods a list was stale",
            len(r.stale),
            f"<p>A list is stale once it has gone more than {stale_for} without a successful "
            "sync (a version accepted, or the source unchanged). The last accepted version "
            "stays in force meanwhile; an expired list cannot be renewed until its authority "
            "publishes a new one.</p>"
            + table(
                "Stale periods",
                [
                    "Authority",
                    "List",
                    "Last sync",
                    "Stale from",
                    "Until",
                    "Stale for",
                    "Updates rejected meanwhile",
                ],
                [
                    [
                        g.authority,
                        g.list,
                        time_tag(g.last_sync),
                        time_tag(g.stale_from),
                        Safe(f"{time_tag(g.until)} (still stale)")
                        if g.ongoing
                        else time_tag(g.until),
                        duration(g.seconds),
                        tally(g.rejections),
                    ]
                    for g in r.stale
                ],
            ),
        ),
        (
            "rejected",
            "Rejected updates",
            len(r.rejected),
            "<p>Updates blockd refused; the version in force before stays in force.</p>"
            + table(
                "Rejected list and trust policy updates",
                ["Time", "Of", "Authority", "List", "Version", "Reason", "Envelope SHA-256"],
                [
                    [
                        time_tag(x.time),
                        "trust policy" if x.source == "trust" else "list",
                        x.authority,
                        x.list,
                        x.version,
                        x.reason,
                        code_tag(x.envelope_sha256),
                    ]
                    for x in r.rejected
                ],
                numeric=(4,),
            ),
        ),
        (
            "trust",
            "Trust policy updates",
            len(r.trust_updates),
            table(
                "Trust policy versions accepted",
                ["Time", "Version", "Envelope SHA-256", "Signing keys"],
                [
                    [
                        time_tag(t.time),
                        t.version,
                        code_tag(t.envelope_sha256),
                        lines(map(code_tag, t.keyids)),
                    ]
                    for t in r.trust_updates
                ],
                numeric=(1,),
            ),
        ),
        (
            "interventions",
            "Guard-rail interventions",
            len(r.interventions),
            "<p>Entries dropped because they touch never-block names, updates held for "
            "approval, and an operator's approvals, rollbacks and releases.</p>"
            + table(
                "Guard-rail interventions",
                ["Time", "Kind", "Authority", "List", "Version", "Entries", "Detail"],
                [
                    [time_tag(i.time), i.kind, i.authority, i.list, i.version, i.count, i.detail]
                    for i in r.interventions
                ],
                numeric=(4, 5),
            ),
        ),
        (
            "operator",
            "Operator actions",
            len(r.operator_actions),
            table(
                "Operator actions",
                ["Time", "Action", "Detail", "Configuration SHA-256"],
                [
                    [time_tag(o.time), o.action, o.detail, code_tag(o.config_sha256)]
                    for o in r.operator_actions
                ],
            ),
        ),
        (
            "self-tests",
            "Self-tests",
            len(r.self_tests),
            f"<p>{passed:,} passed, {len(r.self_tests) - passed:,} failed.</p>"
            + table(
                "Self-test runs",
                ["Time", "Result", "Checks", "Failures"],
                [
                    [
                        time_tag(t.time),
                        mark(t.passed, "passed", "failed"),
                        t.checks,
                        lines(t.failures),
                    ]
                    for t in r.self_tests
                ],
                numeric=(2,),
            ),
        ),
        (
            "daemon",
            "Daemon starts and stops",
            len(r.daemon),
            table(
                "blockd starts and stops",
                ["Time", "Event", "blockd version"],
                [
                    [time_tag(d.time), "started" if d.event == "start" else "stopped", d.blockd]
                    for d in r.daemon
                ],
            ),
        ),
        (
            "retention",
            "Retention purges",
            len(r.retention_purges),
            table(
                "Retention purges",
                ["Time", "Details"],
                [[time_tag(p.time), _fields(p.fields)] for p in r.retention_purges],
            ),
        ),
        (
            "other",
            "Other entries",
            len(r.other),
            "<p>Entries this version of blockd cannot read in full, shown as they are.</p>"
            + table(
                "Other entries",
                ["Log index", "Time", "Type", "Note", "Fields"],
                [[o.index, time_tag(o.time), o.type, o.note, _fields(o.fields)] for o in r.other],
            ),
        ),
        (
            "anomalies",
            "Duplicate and backdated entries",
            len(r.anomalies),
            "<p>Entries the signed log holds but should not: a repeat of an earlier entry "
            "(counted once above) or an entry older than one logged before it.</p>"
            + table(
                "Duplicate and backdated entries",
                ["Log index", "Kind", "Detail"],
                [[a.index, a.kind, a.detail] for a in r.anomalies],
            ),
        ),
    ]


# What each measure counts, in the words the report uses.
_MEANING = {
    "dns-blocked": "DNS queries for a name an authority listed as a whole host, answered with "
    "the notice page's address (or NXDOMAIN, if the list says so).",
    "notice-page": "HTTP requests answered with the notice page: on a wholly blocked host (the "
    "page a browser loads after a blocked DNS answer), or for a listed URL on a routed host.",
    "tls-refused": "HTTPS connections refused with a TLS alert: to a wholly blocked host (after "
    "a blocked DNS answer), or to a routed host whose list says refuse.",
    "dns-routed": "Not blocks. DNS queries for a host on which an authority listed some URLs, "
    "answered with the URL proxy's address: the proxy passes every other page through and "
    "serves the notice page only for the listed URLs (counted as notice pages).",
}


def _blocks(r: Report) -> str:
    """Return the body of the blocks section: what each number counts, then the tables."""
    days, traffic, probes = r.block_days(), r.totals(), r.totals(selftest=True)
    untold = sum(b.count for b in r.blocks_by_list if b.selftest is None)
    per = ", ".join(_seconds(p) for p in r.count_periods) if r.count_periods else "no block counts"
    intro = (
        f"<p>blockd counts what it decided in periods of {per} (the configured period, as "
        "the log's block counts state it), for each list version, and never per visitor: "
        "nothing about the people who were blocked is recorded. Each number below counts "
        "one kind of event, and they are not added together: one visit to a blocked site "
        "is usually counted twice, as the DNS answer that sent the browser to the notice "
        "address and again as the notice page it then loaded (HTTP) or the HTTPS "
        "connection blockd refused. Self-tests are blockd checking its own enforcement "
        "with the authorities' test entries; they are counted apart and are not in the "
        "other numbers. Days are UTC, by the day each counting period began.</p>"
    )
    if untold:
        intro += (
            f"<p>{untold:,} of these were counted by a blockd that did not yet tell "
            "self-tests apart; they are counted as traffic.</p>"
        )
    summary = table(
        "What was counted",
        ["Measure", "Traffic", "Self-tests", "What it counts"],
        [[MEASURES[m], traffic[m], probes[m], _MEANING[m]] for m in MEASURES],
        numeric=(1, 2),
    )
    grid = {(d.day, d.authority, d.measure): d.count for d in r.blocks_by_day}
    authorities = sorted({d.authority for d in r.blocks_by_day})
    by_day = table(
        "Per authority per day (self-tests apart)",
        ["Day (UTC)", "Authority", *(MEASURES[m] for m in MEASURES)],
        [[d, a, *(grid.get((d, a, m), 0) for m in MEASURES)] for d in days for a in authorities],
        numeric=range(2, 2 + len(MEASURES)),
    )
    by_list = table(
        "Per list version, action and transport",
        ["Authority", "List", "Version", "Action", "Transport", "Counts", "Self-test", "Count"],
        [
            [
                b.authority,
                b.list,
                b.version,
                b.action,
                b.transport,
                MEASURES.get(b.measure, b.measure),
                "not told" if b.selftest is None else ("yes" if b.selftest else "no"),
                b.count,
            ]
            for b in r.blocks_by_list
        ],
        numeric=(2, 7),
    )
    chart_html = f'<div class="chart">{chart(r)}</div>' if days else ""
    return intro + summary + chart_html + by_day + by_list


def _seconds(seconds: int) -> str:
    """Return a counting period: `1 h`, `1 min`, `90 s`."""
    return f"{seconds} s" if seconds % 60 else duration(seconds)


def _fields(fields: dict[str, object]) -> Safe:
    """Return an entry's fields, but its blockd version, one a line."""
    return lines(
        f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
        for k, v in fields.items()
        if k != "blockd"
    )


def _period(p: Period) -> Safe:
    """Return when a version was in force: `from to until`, or `from onwards`."""
    return Safe(
        f"{time_tag(p.start)} to {time_tag(p.end)}" if p.end else f"{time_tag(p.start)} onwards"
    )
