"""Run a directory's event-loop tests on asyncio's own loop and on uvloop.

blockd runs on uvloop when it is installed (blockd.loop), and its transports differ from
asyncio's (classes, write buffering, read sizes). A conftest.py imports
`pytest_asyncio_loop_factories` from here to test its directory on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Parametrize the tests that use an event loop over both loops."""
    return LOOPS
