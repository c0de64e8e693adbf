"""The notice page in a real browser: headless Chromium, axe-core's WCAG rules, a phone screen.

tools/ensure-browser installs Chromium, Khmer fonts and a pinned axe-core; if it fails, these
tests fail. Everything runs on loopback: the page is served by a tiny server in the test.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from blockd.http.notice import NoticePage
from blockd.policy.verdict import Verdict
from tests.browser import run_axe
from tests.factories import authority, notice_config
from tests.http.cdp import Browser, Chromium, Page

TITLES = {"en": "This page is blocked", "km": "ទំព័រនេះត្រូវបានបិទ"}
BLOCKED_PATH = "/gallery/photo.php?id=1234"

AUTHORITY = authority(
    id="cpa",
    name="Cambodian Child Protection Authority",
    legal_basis="Law on Suppression of Human Trafficking and Sexual Exploitation, Article 41",
    contact="appeals@cpa.example",
)
VERDICT = Verdict("notice", "cpa", "hosts", 7, "r1-5e0c9a1b2f3d4c5b6a79")


class NoticeServer:
    """Answer every request on a loopback port with the notice page, as blockd would."""

    def __init__(self, page: NoticePage) -> None:
        self.page = page
        self.requests: list[str] = []  # request targets, in order
        self._open: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}

    async def __aenter__(self) -> NoticeServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.origin = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        open_now = dict(self._open)  # idle connections the browser opened ahead
        for writer in open_now:
            writer.close()
        await asyncio.gather(*open_now.values())
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[writer] = task
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ", 2)
            fields = (line.partition(":") for line in head[1:] if line)
            headers = {name.strip().lower(): value.strip() for name, _, value in fields}
            self.requests.append(target)
            writer.write(
                self.page.response(
                    method,
                    VERDICT,
                    AUTHORITY,
                    headers.get("accept-language"),
                    records_nothing=True,
                    keep_alive=False,
                )
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            del self._open[writer]
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[NoticeServer]:
    """Serve the default notice page on loopback."""
    async with NoticeServer(NoticePage(notice_config())) as s:
        yield s


@dataclass(frozen=True)
class Heading:
    """An h1 as drawn: its text, language and box in CSS pixels."""

    text: str
    lang: str
    top: float
    bottom: float
    left: float
    right: float


async def visible_headings(page: Page) -> list[Heading]:
    """Return the h1 elements a person can see."""
    found = await page.evaluate(
        "[...document.querySelectorAll('h1')].filter(h => h.getClientRects().length > 0)"
        ".map(h => { const r = h.getBoundingClientRect(); return {text: h.textContent,"
        " lang: h.closest('[lang]').lang, top: r.top, bottom: r.bottom, left: r.left,"
        " right: r.right}; })"
    )
    assert isinstance(found, list)
    return [Heading(**h) for h in found]


@asynccontextmanager
async def notice_tab(
    chromium: Chromium, server: NoticeServer, language: str, fragment: str = "", width: int = 360
) -> AsyncIterator[Page]:
    """Open a phone-sized tab that prefers language, with the notice loaded in it."""
    async with Browser(chromium.ws_url) as browser:
        page = await browser.new_page(width, 740, f"{language},en;q=0.5")
        try:
            await page.goto(server.origin + BLOCKED_PATH + fragment)
            yield page
        finally:
            await page.close()


@pytest.mark.parametrize(
    ("language", "fragment", "shown"),
    [("en", "", "en"), ("km", "", "km"), ("en", "#km", "km"), ("km", "#en", "en")],
)
async def test_axe_finds_no_wcag_a_or_aa_violations(
    chromium: Chromium,
    server: NoticeServer,
    axe_source: str,
    language: str,
    fragment: str,
    shown: str,
) -> None:
    async with notice_tab(chromium, server, language, fragment) as page:
        assert [h.lang for h in await visible_headings(page)] == [shown]
        result = await run_axe(page, axe_source)
    assert result["violations"] == [], json.dumps(
        result["violations"], indent=1, ensure_ascii=False
    )
    assert {"color-contrast", "html-has-lang", "valid-lang", "target-size"} <= set(result["passed"])


def png_size(png: bytes) -> tuple[int, int]:
    """Return (width, height) from a PNG's header."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


@pytest.mark.parametrize("language", ["en", "km"])
async def test_fits_a_phone_screen(
    chromium: Chromium, server: NoticeServer, tmp_path: Path, language: str
) -> None:
    for width in (320, 360):
        async with notice_tab(chromium, server, language, width=width) as page:
            scroll_width = await page.evaluate("document.documentElement.scrollWidth")
            inner_width = await page.evaluate("window.innerWidth")
            headings = await visible_headings(page)
            png = await page.screenshot()
        (tmp_path / f"notice-{language}-{width}.png").write_bytes(png)

        assert inner_width == width
        assert scroll_width <= inner_width, f"scrolls sideways at {width}px"
        assert png_size(png) == (width, 740)
        assert len(png) > 10_000, "screenshot looks blank"
        [heading] = headings
        assert (heading.text, heading.lang) == (TITLES[language], language)
        assert heading.top >= 0 and heading.bottom <= 740, "main heading off screen"
        assert heading.left >= 0 and heading.right <= width, "main heading off screen"


async def test_khmer_is_drawn_with_a_khmer_font(chromium: Chromium, server: NoticeServer) -> None:
    async with notice_tab(chromium, server, "km") as page:
        fonts = await page.fonts("section.pref h1")
    assert any("Khmer" in f for f in fonts), fonts


async def test_language_link_switches_without_script_or_new_request(
    chromium: Chromium, server: NoticeServer
) -> None:
    async with notice_tab(chromium, server, "en") as page:
        before = list(server.requests)
        assert [h.text for h in await visible_headings(page)] == [TITLES["en"]]
        moved = page.browser.expect("Page.navigatedWithinDocument", page.session)
        await page.click('nav a[href="#km"]')
        await asyncio.wait_for(moved, 30)
        shown = [h.text for h in await visible_headings(page)]
        location = await page.evaluate("[location.pathname + location.search, location.hash]")
        scripts = await page.evaluate("document.scripts.length")
    assert shown == [TITLES["km"]]
    assert location == [BLOCKED_PATH, "#km"]
    assert [r for r in server.requests if r == BLOCKED_PATH] == [
        r for r in before if r == BLOCKED_PATH
    ]
    assert scripts == 0
