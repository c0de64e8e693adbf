"""Shared fixtures: the HTTPS feed server, the loopback DNS upstream, headless Chromium.

Tests that stand up real servers, processes or a browser are marked `slow` here, by the
fixtures and modules they use, so `pytest -m "not slow"` is the quick inner loop (pure,
sans-IO and property tests) and `make test` still runs everything.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.feedserver", "tests.dnsupstream", "tests.browser"]

# Fixtures that start a real server, a browser or a subprocess.
SLOW_FIXTURES = frozenset(
    {
        "upstream",
        "feed_server",
        "chromium",
        "browser_tools",
        "origin_tools",
        "origin",
        "tls_origin",
        "daemon",
        "redis_server",
    }
)
# Modules whose every test runs blockd, a peer program or a subprocess.
SLOW_MODULES = frozenset(
    {
        "test_deploy.py",
        "test_prometheus.py",
        "test_run.py",
        "test_writer.py",
        "test_real_origins.py",
        "test_lifecycle.py",
        "test_layers.py",
        "test_forward.py",
        "test_fetch.py",
        "test_mmsg.py",
        "test_systemd.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark integration tests slow (see the module docstring)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SLOW_FIXTURES or item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
