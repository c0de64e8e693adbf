"""The event loop blockd runs on: uvloop when installed, else asyncio's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


def runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """Return uvloop.run when uvloop is installed (several times faster I/O), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run
