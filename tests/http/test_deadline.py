"""The per-connection Deadline: a reusable timeout with one lazily re-armed timer."""

from __future__ import annotations

import asyncio

import pytest

from blockd.http.deadline import Deadline


async def test_a_wait_past_its_deadline_raises_timeout_and_the_deadline_serves_again() -> None:
    d = Deadline()
    never = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await d.wait(never, d.after(0.05))
    assert await d.wait(asyncio.sleep(0, "next"), d.after(0.05)) == "next"
    d.close()


async def test_a_later_wait_is_not_cut_short_by_the_timer_of_an_earlier_one() -> None:
    d = Deadline()
    assert await d.wait(asyncio.sleep(0.01, 1), d.after(0.1)) == 1  # timer armed for 0.1 s
    # The next wait runs past when the first timer fires: it must last its own time.
    assert await d.wait(asyncio.sleep(0.2, 2), d.after(5)) == 2
    d.close()


async def test_a_sooner_deadline_re_arms_the_timer() -> None:
    d = Deadline()
    assert await d.wait(asyncio.sleep(0, 1), d.after(60)) == 1
    with pytest.raises(TimeoutError):
        await d.wait(asyncio.get_running_loop().create_future(), d.after(0.05))
    d.close()


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def waits() -> None:
        d = Deadline()
        try:
            await d.wait(asyncio.get_running_loop().create_future(), d.after(60))
        finally:
            d.close()

    task = asyncio.ensure_future(waits())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_no_wait_in_progress_means_no_timeout() -> None:
    d = Deadline()
    await d.wait(asyncio.sleep(0), d.after(0.01))
    await asyncio.sleep(0.05)  # the timer fires between waits: nothing happens
    assert await d.wait(asyncio.sleep(0, 3), d.after(1)) == 3
    d.close()
