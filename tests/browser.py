"""Headless Chromium and axe-core for browser tests (a pytest plugin, see conftest.py).

`tools/ensure-browser` installs Debian's chromium, Khmer fonts and axe-core (npm, pinned)
when missing; a failure fails the tests that need them rather than skipping them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http.cdp import Chromium

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
