"""HTML pieces of the report page: escaped cells, times, lists and tables.

Every function escapes what it is given; text it returns as `Safe` is markup already.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape

DASH = "—"


class Safe(str):
    """Markup already escaped."""


Cell = Safe | str | int | None


def _html(value: Cell) -> str:
    if value is None:
        return DASH
    if isinstance(value, Safe):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return escape(value)


def time_tag(time: str | None) -> Safe:
    """Return a `<time>` whose day and clock each stay on one line."""
    if time is None:
        return Safe(DASH)
    day, _, clock = time.removesuffix("Z").partition("T")
    return Safe(
        f'<time datetime="{escape(time)}"><span>{escape(day)}</span> <span>{escape(clock)}</span>'
        "</time>"
    )


def code_tag(text: str | None) -> Safe:
    """Return text as `<code>`, or a dash for none."""
    return Safe(DASH if not text else f"<code>{escape(text)}</code>")


def mark(ok: bool, good: str, bad: str) -> Safe:
    """Return `good` marked as good when ok, else `bad` marked as bad."""
    return Safe(
        f'<span class="good">{escape(good)}</span>'
        if ok
        else f'<span class="bad">{escape(bad)}</span>'
    )


def lines(cells: Iterable[Cell]) -> Safe:
    """Return cells one a line, or a dash for none."""
    items = "".join(f"<li>{_html(c)}</li>" for c in cells)
    return Safe(f'<ul class="lines">{items}</ul>' if items else DASH)


def tally(counts: Mapping[str, int]) -> Safe:
    """Return `name: count` one a line, or a dash for none."""
    return lines(f"{k}: {n:,}" for k, n in counts.items())


def duration(seconds: int) -> str:
    """Return seconds as days, hours and minutes: `1 d 2 h`, `4 h 30 min`, `0 min`."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    parts = [f"{days} d"] if days else []
    parts += [f"{hours} h"] if hours else []
    parts += [f"{rest // 60} min"] if rest // 60 or not parts else []
    return " ".join(parts)


def table(
    caption: str,
    head: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    numeric: Iterable[int] = (),
    foot: Sequence[Cell] | None = None,
) -> str:
    """Return a table whose first column heads its row; numeric columns align right."""
    if not rows:
        return f'<p class="empty">{escape(caption)}: none in this period.</p>'
    right = set(numeric)
    cls = ' class="n"'

    def row(cells: Sequence[Cell]) -> str:
        out = []
        for i, v in enumerate(cells):
            tag, scope = ("th", ' scope="row"') if i == 0 else ("td", "")
            out.append(f"<{tag}{scope}{cls if i in right else ''}>{_html(v)}</{tag}>")
        return "<tr>" + "".join(out) + "</tr>"

    cols = "".join(
        f'<th scope="col"{cls if i in right else ""}>{escape(h)}</th>' for i, h in enumerate(head)
    )
    body = "\n".join(row(r) for r in rows)
    tfoot = f"<tfoot>{row(foot)}</tfoot>" if foot is not None else ""
    # A region that scrolls sideways on a narrow screen, reachable by keyboard.
    return (
        f'<div class="table" role="region" aria-label="{escape(caption)}" tabindex="0">'
        f"<table><caption>{escape(caption)}</caption><thead><tr>{cols}</tr></thead>"
        f"<tbody>\n{body}\n</tbody>{tfoot}</table></div>"
    )
