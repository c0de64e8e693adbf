"""Ending background tasks for certain."""

from __future__ import annotations

import asyncio
from typing import Any

AGAIN_AFTER = 0.5  # seconds to wait for a cancelled task before cancelling it again


async def cancel(*tasks: asyncio.Future[Any] | None, again_after: float = AGAIN_AFTER) -> None:
    """Cancel tasks and wait until every one has ended, cancelling again while any runs on.

    One cancellation is not always enough in Python 3.11: asyncio.wait_for (which redis-py
    awaits for every command it writes) drops a cancellation that arrives as the awaited
    thing completes, and the task carries on. A cancellation of the caller meanwhile is
    held until the tasks have ended, then raised: nothing is left running behind it.
    """
    pending = {t for t in tasks if t is not None and not t.done()}
    cancelled = False
    while pending:
        for task in pending:
            task.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=again_after)
        except asyncio.CancelledError:
            cancelled = True
    for ended in tasks:
        if ended is not None and not ended.cancelled():
            ended.exception()  # retrieved: an error on the way out is not logged as lost
    if cancelled:
        raise asyncio.CancelledError
