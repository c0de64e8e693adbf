"""Render the report as JSON, the reference form, or flattened to CSV, one fact a row.

The JSON's structure is `blockd/audit/report.schema.json`.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from blockd import __version__
from blockd.audit.report.model import MEASURES, Report

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

FORMAT = "blockd-transparency-report"
FORMAT_VERSION = 2  # 2: blocks by measure, self-tests apart, count periods, key ids
CSV_COLUMNS = ("section", "index", "time", "authority", "list", "version", "key", "value")

Json = dict[str, object]
_NOWHERE = ("", "", "", "", "")  # index, time, authority, list, version: a section's own facts


def report_json(report: Report) -> Json:
    """Return the report as the JSON value `report.schema.json` describes."""

    def section(rows: Sequence[DataclassInstance], **extra: object) -> Json:
        return {"count": len(rows), **extra, "items": [asdict(r) for r in rows]}

    r, src = report, report.source
    by_kind = Counter(i.kind for i in r.interventions)
    passed = sum(t.passed for t in r.self_tests)
    sections: Json = {
        "lists": section(r.lists),
        "enforced": section(r.enforced),
        "activations": section(r.activations),
        "list_sizes": section(r.list_sizes),
        "blocks_by_day": section(
            r.blocks_by_day,
            days=r.block_days(),
            by_authority={
                a: _by_measure(r, a) for a in sorted({d.authority for d in r.blocks_by_day})
            },
        ),
        "blocks_by_list": section(
            r.blocks_by_list,
            period_seconds=list(r.count_periods),
            totals=r.totals(),
            selftest=r.totals(selftest=True),
        ),
        "stale": section(r.stale),
        "rejected": section(r.rejected),
        "trust_updates": section(r.trust_updates),
        "interventions": section(r.interventions, by_kind=dict(sorted(by_kind.items()))),
        "operator_actions": section(r.operator_actions),
        "self_tests": section(r.self_tests, passed=passed, failed=len(r.self_tests) - passed),
        "daemon": section(r.daemon),
        "retention_purges": section(r.retention_purges),
        "other": section(r.other),
        "anomalies": section(
            r.anomalies,
            duplicates=sum(a.kind == "duplicate" for a in r.anomalies),
            backdated=sum(a.kind == "backdated" for a in r.anomalies),
        ),
    }
    summary = {name: _count(name, value) for name, value in sections.items()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generator": f"blockd {__version__}",
        "generated": r.generated,
        "period": {"start": r.start, "end": r.end},
        "stale_after_seconds": r.stale_after,
        "source": {
            "origin": src.origin,
            "checkpoint_size": src.checkpoint_size,
            "checkpoint_root": src.checkpoint_root_b64,
            "key_name": src.key_name,
            "key_id": src.key_id,
            "vkey": src.vkey,
            "verified": src.verified,
            "first_index": r.first_index,
            "end_index": r.end_index,
            "entries": r.entries,
            "beyond_checkpoint": r.beyond_checkpoint,
        },
        "summary": summary,
        **sections,
    }


def _count(name: str, section: object) -> int:
    """Return what the summary says of a section: its number of items."""
    assert isinstance(section, dict)
    value = section["count"]
    assert isinstance(value, int)
    return value


def _by_measure(report: Report, authority: str) -> dict[str, int]:
    """Return {measure: count} of one authority over the period (self-tests apart)."""
    out = dict.fromkeys(MEASURES, 0)
    for d in report.blocks_by_day:
        if d.authority == authority:
            out[d.measure] += d.count
    return out


def render_json(report: Report) -> str:
    """Return the report as JSON (UTF-8 text, two-space indent, keys in a fixed order)."""
    return json.dumps(report_json(report), indent=2, ensure_ascii=False) + "\n"


def render_csv(report: Report) -> str:
    """Return the report as RFC 4180 CSV, one fact a row (see CSV_COLUMNS).

    `report` and `source` rows give the report's own facts, `summary` rows each section's
    count; every other section gives its own counts (index and time empty) and then one row
    per field of each item, with the item's index, time (or day), authority, list and
    version in their columns. Lists repeat the key; maps add `.name` to it; nulls are left
    out. Text a spreadsheet would run as a formula is prefixed with an apostrophe.
    """
    data = report_json(report)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    head = {k: data[k] for k in ("format", "format_version", "generator", "generated")}
    head |= {"start": report.start, "end": report.end, "stale_after_seconds": report.stale_after}
    for section in ("report", "source", "summary"):
        facts = head if section == "report" else data[section]
        assert isinstance(facts, dict)
        writer.writerows(_rows((section, *_NOWHERE), facts))
    for section, value in data.items():
        if section in head or section in ("period", "source", "summary"):
            continue
        assert isinstance(value, dict)
        own = {k: v for k, v in value.items() if k != "items"}
        writer.writerows(_rows((section, *_NOWHERE), own))
        for item in value["items"]:
            row = dict(item)
            where = [row.pop(k, None) for k in ("index", "time", "day", "authority", "list")]
            index, time, day, authority, list_id = ("" if w is None else w for w in where)
            version = row.pop("version", None)
            where_cols = (_cell_text(authority), _cell_text(list_id))
            cols = (section, index, time or day, *where_cols, "" if version is None else version)
            writer.writerows(_rows(cols, row))
    return out.getvalue()


def _rows(cols: tuple[object, ...], fields: dict[str, object]) -> Iterable[tuple[object, ...]]:
    """Yield a row per fact of each field, after the columns that place it."""
    for key, value in fields.items():
        for k, v in _facts(key, value):
            yield (*cols, k, v)


def _facts(key: str, value: object) -> Iterable[tuple[str, str]]:
    """Yield (key, value) rows for one field: a row per list element, `.name` per map key."""
    if value is None:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _facts(f"{key}.{k}", v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _facts(key, v)
    elif isinstance(value, bool):
        yield key, "true" if value else "false"
    elif isinstance(value, int | float):
        yield key, str(value)
    else:
        yield key, _cell_text(value)


def _cell_text(value: object) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
