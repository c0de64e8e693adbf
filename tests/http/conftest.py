"""Run the HTTP tests that use an event loop on asyncio's own loop and on uvloop.

blockd runs on uvloop when it is installed (blockd.cli), and its transports differ from
asyncio's (write buffering, read sizes), so the proxy is tested on both.
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
    """Parametrize the proxy's socket tests over both loops."""
    return LOOPS
