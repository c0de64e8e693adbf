"""Headless Chromium and axe-core for browser tests (a pytest plugin, see conftest.py).

`tools/ensure-browser` installs Debian's chromium, Khmer fonts and axe-core (npm, pinned)
when missing; a failure fails the tests that need them rather than skipping them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http.cdp import Chromium, Page

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def browser_tools() -> dict[str, str]:
    """Install Chromium, fonts and axe-core if missing; return their paths."""
    done = subprocess.run(
        [str(ROOT / "tools" / "ensure-browser")], capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        pytest.fail(f"tools/ensure-browser failed ({done.returncode}):\n{done.stderr}")
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def chromium(
    browser_tools: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Chromium]:
    """Run one headless Chromium for the module."""
    browser = Chromium(browser_tools["CHROMIUM"], tmp_path_factory.mktemp("chromium") / "profile")
    yield browser
    browser.close()


@pytest.fixture
def axe_source(browser_tools: dict[str, str]) -> str:
    """Return axe.min.js."""
    return Path(browser_tools["AXE"]).read_text("utf-8")


WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


async def run_axe(page: Page, axe_source: str) -> dict[str, Any]:
    """Run axe-core's WCAG 2.x A and AA rules on the page; return passes and violations."""
    await page.evaluate(axe_source + "\n;true")
    options = {"runOnly": {"type": "tag", "values": WCAG_TAGS}, "resultTypes": ["violations"]}
    result: dict[str, Any] = await page.evaluate(
        f"axe.run(document, {json.dumps(options)}).then(r => ({{passed: r.passes.map(p => "
        "p.id), violations: r.violations.map(v => ({id: v.id, help: v.help, nodes: "
        "v.nodes.map(n => n.html)}))}))"
    )
    return result
