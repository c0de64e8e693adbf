"""Draw the DNS answers blocked per authority per day as an inline SVG of stacked bars."""

from __future__ import annotations

import math
from html import escape

from blockd.audit.report.model import Report

# Okabe-Ito based colours, told apart by people with the common colour-vision deficiencies.
_PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#8c6d00", "#56b4e9", "#5a5a5a")


def chart(report: Report) -> str:
    """Return an inline SVG of stacked bars: DNS answers blocked per authority per day."""
    days, authorities = report.block_days(), list(report.blocks_per_authority())
    grid = report.blocks_grid()
    totals = [sum(grid.get((d, a), 0) for a in authorities) for d in days]
    step = _nice(max(max(totals), 1) / 4)
    top = step * max(1, math.ceil(max(totals) / step))
    width, left, right, pad, plot_h = 760, 84, 16, 14, 220
    base = pad + plot_h
    height = base + 34 + 20 * len(authorities) + 6
    plot_w = width - left - right
    slot = plot_w / len(days)
    bar = min(56.0, max(1.0, slot * 0.7))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img"'
        ' aria-labelledby="chart-title chart-desc" font-family="sans-serif" font-size="12">',
        '<title id="chart-title">DNS answers blocked per authority per day</title>',
        f'<desc id="chart-desc">Stacked bars, one per UTC day from {days[0]} to {days[-1]}, '
        f"one colour per authority ({escape(', '.join(authorities))}); the same numbers are "
        "in the table below.</desc>",
    ]
    for i in range(top // step + 1):
        y = base - plot_h * i * step / top
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d0d0"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#1a1a1a">'
            f"{i * step:,}</text>"
        )
    for di, day in enumerate(days):
        x, y = left + di * slot + (slot - bar) / 2, float(base)
        for ai, authority in enumerate(authorities):
            n = grid.get((day, authority), 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            out.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{_colour(ai)}"><title>{day}, {escape(authority)}: '
                f"{n:,}</title></rect>"
            )
    every = max(1, math.ceil(len(days) * 80 / plot_w))
    for di in range(0, len(days), every):
        x = left + (di + 0.5) * slot
        out.append(
            f'<text x="{x:.1f}" y="{base + 18}" text-anchor="middle" fill="#1a1a1a">'
            f"{days[di]}</text>"
        )
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{base}" y2="{base}" stroke="#1a1a1a"/>')
    for ai, authority in enumerate(authorities):
        y = base + 34 + 20 * ai
        out.append(
            f'<rect x="{left}" y="{y}" width="12" height="12" '
            f'fill="{_colour(ai)}"/>'
            f'<text x="{left + 18}" y="{y + 11}" fill="#1a1a1a">{escape(authority)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _colour(index: int) -> str:
    """Return the palette's colour for the index-th authority."""
    return _PALETTE[index % len(_PALETTE)]


def _nice(value: float) -> int:
    """Return the smallest 1, 2 or 5 times a power of ten (at least 1) not below value."""
    if value <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(value)))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)
