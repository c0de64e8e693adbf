"""Render the report as one self-contained HTML page: no scripts, one inline stylesheet."""

from __future__ import annotations

import base64
import hashlib
from html import escape

from blockd import __version__
from blockd.audit.report.markup import Safe, code_tag, mark, table, time_tag
from blockd.audit.report.model import Report
from blockd.audit.report.sections import sections
from blockd.audit.span import entry_span

# One stylesheet, allowed by its hash in the page's own content security policy.
_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, "Segoe UI", Roboto, "Noto Sans", sans-serif; color: #1a1a1a;
  background: #fff; max-width: 75rem; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.7rem; margin: 0 0 .3rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .5rem; padding-bottom: .2rem;
  border-bottom: 2px solid #1a1a1a; }
p { max-width: 48rem; }
a { color: #0b4f8a; }
dl.source { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1.2rem; }
dl.source dt { font-weight: 600; }
dl.source dd { margin: 0; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 1.2rem; font-size: .9rem; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { border: 1px solid #b5b5b5; padding: .3rem .45rem; text-align: left; vertical-align: top; }
thead th { background: #e9edf1; }
tbody th { font-weight: normal; }
tfoot th, tfoot td { font-weight: 600; background: #f4f4f4; }
td, th { overflow-wrap: break-word; }
.n { text-align: right; font-variant-numeric: tabular-nums; }
time span { white-space: nowrap; }
ul.lines { list-style: none; margin: 0; padding: 0; }
ul.lines li + li { margin-top: .3rem; }
.table { overflow-x: auto; }
.table:focus-visible { outline: 2px solid #0b4f8a; }
code { font: .85em ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  overflow-wrap: anywhere; }
.bad { color: #a4000f; font-weight: 600; }
.good { color: #0b6b2c; font-weight: 600; }
.empty { color: #4a4a4a; font-style: italic; }
.chart { max-width: 52rem; margin: .5rem 0 1rem; }
.chart svg { width: 100%; height: auto; }
nav table { width: auto; min-width: 24rem; }
@page { margin: 14mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 9.5pt; }
  th, td { padding: .2rem .3rem; }
  h2 { break-after: avoid; }
  tr, .chart, dl.source { break-inside: avoid; }
  .table { overflow: visible; }
  thead { display: table-header-group; }
  a { color: inherit; text-decoration: none; }
  thead th, tfoot th, tfoot td { background: none; }
}
"""


def render_html(report: Report) -> str:
    """Return the report as one self-contained HTML page: no scripts, one inline style."""
    r, src = report, report.source
    digest = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    parts = sections(r)
    root = code_tag(src.checkpoint_root_b64)
    until = time_tag(r.end) if r.end else Safe(f"{time_tag(r.generated)}, when it was generated")
    since = time_tag(r.start) if r.start else "the first entry in the log"
    read = "no entries"
    if r.first_index is not None and r.end_index is not None:
        read = entry_span(r.first_index, r.end_index)
        if r.entries != r.end_index - r.first_index:  # entries out of time order at the edges
            read += f", {r.entries:,} of them in the period"
    verified = mark(
        src.verified, "yes: signature and proofs checked", "NO: the numbers below are not verified"
    )
    beyond = (
        f"<dt>Not included</dt><dd>{r.beyond_checkpoint:,} entries written after the "
        "checkpoint</dd>"
        if r.beyond_checkpoint
        else ""
    )
    contents = table(
        "Contents",
        ["Section", "Count"],
        [[Safe(f'<a href="#{sid}">{escape(title)}</a>'), count] for sid, title, count, _ in parts],
        numeric=(1,),
    )
    body = "\n".join(
        f'<section id="{sid}" aria-labelledby="{sid}-h">\n'
        f'<h2 id="{sid}-h">{escape(title)} ({count:,})</h2>\n{html}\n</section>'
        for sid, title, count, html in parts
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="blockd {escape(__version__)}">
<title>Transparency report: {escape(src.origin)}</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>Transparency report</h1>
<p>What blockd enforced at <strong>{escape(src.origin)}</strong> from {since} to {until}.
All times are UTC.</p>
</header>
<main>
<section id="source" aria-labelledby="source-h">
<h2 id="source-h">Derived from</h2>
<p>Every number here is computed from the audit log entries named below; anyone holding
the log bundle and the operator's public key can check them.</p>
<dl class="source">
<dt>Log</dt><dd>{escape(src.origin)}</dd>
<dt>Checkpoint</dt><dd>{src.checkpoint_size:,} entries, root {root}</dd>
<dt>Signed by key</dt><dd>{_key(src.key_name, src.key_id, src.vkey)}</dd>
<dt>Verified</dt><dd>{verified}</dd>
<dt>Entries read</dt><dd>{read}</dd>
{beyond}
<dt>Generated</dt><dd>{time_tag(r.generated)} by blockd {escape(__version__)}</dd>
</dl>
</section>
<nav aria-label="Sections">
{contents}
</nav>
{body}
</main>
</body>
</html>
"""


def _key(name: str, key_id: str, vkey: str) -> str:
    """Return a key as its name, its key id and its whole verifier key (vkey)."""
    out = escape(name)
    if key_id:
        out += f", key id {code_tag(key_id)}"
    if vkey:
        out += f"; verifier key {code_tag(vkey)}"
    return out
