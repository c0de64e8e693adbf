"""The transparency report: build it from audit log entries; render it as JSON, CSV or HTML.

The report is derived only from entries a signed checkpoint covers, and names that
checkpoint and the index range it read, so a regulator can recompute every number from the
log. JSON (`render_json`) is the reference form; its structure is `report.schema.json` beside
this package. CSV (`render_csv`) flattens it to one fact per row. HTML (`render_html`) is one
page with no scripts and a content security policy that allows only its own stylesheet.

`model` holds the report as data; `entries` and `fold` read the log, `build` derives the
sections; `text` renders JSON and CSV; `page`, `sections`, `markup` and `chart` the HTML.
"""

from blockd.audit.report.build import STALE_AFTER, build_report
from blockd.audit.report.entries import TIME_FORMAT, normalize_time
from blockd.audit.report.model import (
    Activation,
    DaemonEvent,
    DayBlocks,
    EnforcedVersion,
    Intervention,
    ListBlocks,
    ListSize,
    ListSummary,
    LoggedEntry,
    OperatorActionRow,
    Period,
    Rejection,
    Report,
    ReportSource,
    SelfTest,
    StaleGap,
    TrustUpdate,
)
from blockd.audit.report.page import render_html
from blockd.audit.report.text import (
    CSV_COLUMNS,
    FORMAT,
    FORMAT_VERSION,
    Json,
    render_csv,
    render_json,
    report_json,
)

__all__ = [
    "CSV_COLUMNS",
    "FORMAT",
    "FORMAT_VERSION",
    "STALE_AFTER",
    "TIME_FORMAT",
    "Activation",
    "DaemonEvent",
    "DayBlocks",
    "EnforcedVersion",
    "Intervention",
    "Json",
    "ListBlocks",
    "ListSize",
    "ListSummary",
    "LoggedEntry",
    "OperatorActionRow",
    "Period",
    "Rejection",
    "Report",
    "ReportSource",
    "SelfTest",
    "StaleGap",
    "TrustUpdate",
    "build_report",
    "normalize_time",
    "render_csv",
    "render_html",
    "render_json",
    "report_json",
]
