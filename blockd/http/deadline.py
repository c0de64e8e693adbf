"""One timer per connection for the waits of the proxy's hot path.

asyncio.timeout costs about 10 µs a wait on uvloop (a context object, a timer made and
cancelled); a proxied request waits twice (its head, the origin's answer). A Deadline is made
once per connection: a wait sets a float, and the one timer is re-armed only when it fires
before the deadline in force, or must fire sooner. A wait past its deadline raises
TimeoutError in the waiting task, as asyncio.timeout does.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    """A reusable timeout for one task's waits, one wait at a time."""

    __slots__ = ("_armed", "_expired", "_handle", "_loop", "_task", "_when")

    def __init__(self) -> None:
        """Serve the current task."""
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._when = math.inf  # the deadline of the wait in progress (inf: none)
        self._armed = math.inf  # when the timer fires (inf: no timer)
        self._handle: asyncio.TimerHandle | None = None
        self._expired = False

    def after(self, seconds: float) -> float:
        """Return the loop time `seconds` from now (a deadline for wait)."""
        return self._loop.time() + seconds

    async def wait(self, awaitable: Awaitable[T], until: float) -> T:
        """Return what awaitable gives; raise TimeoutError at loop time `until`."""
        self._when = until
        if until < self._armed:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self._loop.call_at(until, self._fire)
            self._armed = until
        cancelling = self._task.cancelling()
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if self._task.uncancel() <= cancelling:  # ours alone, not a stop
                    raise TimeoutError from None
            raise
        finally:
            self._when = math.inf

    def close(self) -> None:
        """Drop the timer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed = math.inf

    def _fire(self) -> None:
        self._handle = None
        self._armed = math.inf
        when = self._when
        if when == math.inf:
            return  # no wait in progress: the timer comes back with the next one
        if self._loop.time() < when:  # the wait began after the timer was set: later
            self._handle = self._loop.call_at(when, self._fire)
            self._armed = when
            return
        self._expired = True
        self._task.cancel()
