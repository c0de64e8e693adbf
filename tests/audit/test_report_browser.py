"""The HTML transparency report in a real browser: headless Chromium, axe-core, print layout.

tools/ensure-browser installs Chromium and a pinned axe-core; if it fails, these tests fail.
The report is opened from a file: nothing is served and nothing leaves the machine.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from blockd.audit.report import render_html
from tests.audit.test_report import HOSTILE, whole
from tests.browser import run_axe
from tests.http.cdp import Browser, Chromium, Page

A4_TEXT_WIDTH = 688  # CSS pixels across an A4 page inside the report's 14 mm margins


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write the three-day test report to an HTML file."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_html(whole()), "utf-8")
    return path


@asynccontextmanager
async def report_tab(chromium: Chromium, report: Path, width: int = 1100) -> AsyncIterator[Page]:
    """Open a desktop-sized tab with the report loaded in it."""
    async with Browser(chromium.ws_url) as browser:
        page = await browser.new_page(width, 900, "en")
        try:
            await page.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            )
            await page.goto(report.as_uri())
            yield page
        finally:
            await page.close()


def png_size(png: bytes) -> tuple[int, int]:
    """Return (width, height) from a PNG's header."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


async def test_chart_and_tables_render(
    chromium: Chromium, report_file: Path, tmp_path: Path
) -> None:
    async with report_tab(chromium, report_file) as page:
        found = await page.evaluate(
            """(() => {
              const svg = document.querySelector('svg[role="img"]');
              const blocks = [...document.querySelectorAll('table')].find(
                t => t.caption.textContent === 'Per authority per day (self-tests apart)');
              const r = svg.getBoundingClientRect();
              return {
                scripts: document.scripts.length,
                images: document.images.length,
                title: svg.querySelector('title').textContent,
                labelledby: svg.getAttribute('aria-labelledby'),
                bars: [...svg.querySelectorAll('rect.bar')].map(b => b.textContent),
                chart: [r.x, r.y, r.width, r.height],
                head: [...blocks.tHead.rows[0].cells].map(c => c.textContent),
                first: [...blocks.tBodies[0].rows[0].cells].map(c => c.textContent),
                collapse: getComputedStyle(blocks).borderCollapse,
                authorities: [...document.querySelectorAll('#lists tbody th')]
                  .map(c => c.textContent),
              };
            })()"""
        )
        png = await page.screenshot()
        x, y, w, h = found["chart"]
        shot = await page.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "clip": {"x": x, "y": y, "width": w, "height": h, "scale": 1},
                "captureBeyondViewport": True,
            },
        )
    chart = base64.b64decode(shot["data"])
    (tmp_path / "report.png").write_bytes(png)
    (tmp_path / "chart.png").write_bytes(chart)

    assert found["scripts"] == 0 and found["images"] == 0
    assert found["title"] == "DNS answers blocked per authority per day"
    assert found["labelledby"] == "chart-title chart-desc"
    # Only DNS answers blocked are charted; the hostile authority had notice pages and
    # refused HTTPS connections only (in the table, never added to the DNS answers).
    assert sorted(found["bars"]) == [
        "2024-05-01, cpa: 18",
        "2024-05-02, cpa: 8",
        "2024-05-03, cpa: 20",
    ]
    assert found["head"] == [
        "Day (UTC)",
        "Authority",
        "DNS answers blocked",
        "Notice pages served",
        "HTTPS connections refused",
        "DNS answers routed to the URL proxy (not blocks)",
    ]
    assert found["first"] == ["2024-05-01", HOSTILE, "0", "2", "0", "0"]
    assert found["collapse"] == "collapse", "the stylesheet was blocked by the page's CSP"
    assert found["authorities"] == [HOSTILE, "cpa"]  # shown as text, not markup
    assert png_size(png) == (1100, 900)
    assert len(png) > 20_000, "screenshot looks blank"
    assert png_size(chart)[0] >= 600 and len(chart) > 5_000, "chart looks blank"


async def test_axe_finds_no_wcag_a_or_aa_violations(
    chromium: Chromium, report_file: Path, axe_source: str
) -> None:
    async with report_tab(chromium, report_file) as page:
        result = await run_axe(page, axe_source)
    assert result["violations"] == [], json.dumps(result["violations"], indent=1)
    assert {"color-contrast", "html-has-lang", "svg-img-alt", "th-has-data-cells"} <= set(
        result["passed"]
    )


async def test_prints_on_a4_without_cutting_tables(
    chromium: Chromium, report_file: Path, tmp_path: Path
) -> None:
    async with report_tab(chromium, report_file, width=A4_TEXT_WIDTH) as page:
        await page.send("Emulation.setEmulatedMedia", {"media": "print"})
        widths = await page.evaluate(
            "[document.documentElement.scrollWidth, window.innerWidth,"
            " Math.max(...[...document.querySelectorAll('table')].map("
            "t => t.getBoundingClientRect().right))]"
        )
        pdf = await page.send(
            "Page.printToPDF", {"paperWidth": 8.27, "paperHeight": 11.69, "printBackground": True}
        )
    data = base64.b64decode(pdf["data"])
    (tmp_path / "report.pdf").write_bytes(data)
    scroll_width, inner_width, table_right = widths
    assert scroll_width <= inner_width, "the printed page is wider than the paper"
    assert table_right <= inner_width
    assert data.startswith(b"%PDF") and len(data) > 20_000
