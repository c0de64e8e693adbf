"""blockd.tasks.cancel: tasks end for certain, even those that drop a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from blockd import tasks


async def stubborn(dropped: list[int], times: int) -> None:
    """Run until cancelled, dropping the first `times` cancellations (as 3.11's wait_for can)."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if len(dropped) == times:
                raise
            dropped.append(1)
            asyncio.current_task().uncancel()  # type: ignore[union-attr]


async def test_a_task_that_drops_cancellations_is_cancelled_until_it_ends() -> None:
    dropped: list[int] = []
    task = asyncio.create_task(stubborn(dropped, 3))
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await tasks.cancel(task, again_after=0.01)
    assert task.cancelled() and len(dropped) == 3


async def test_tasks_that_ended_or_none_are_fine_and_errors_are_retrieved() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    failed = asyncio.create_task(fail())
    finished = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await tasks.cancel(failed, finished, None)
    assert isinstance(failed.exception(), ValueError) and finished.done()


async def test_the_callers_cancellation_waits_for_the_tasks_then_is_raised() -> None:
    dropped: list[int] = []
    child = asyncio.create_task(stubborn(dropped, 2))
    await asyncio.sleep(0)
    stopping = asyncio.create_task(tasks.cancel(child, again_after=0.05))
    await asyncio.sleep(0.01)
    stopping.cancel()  # the caller is cancelled while the child still runs
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert child.cancelled(), "the child was left running behind the caller"
