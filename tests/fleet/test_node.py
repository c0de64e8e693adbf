"""The node's heartbeat loop, alone: a wake that comes while a round runs is not lost.

A follower that applies a version wakes the loop (PolicyActivated) to report it at once,
and the syncer wakes it (FeedAccepted) to publish. The wake must count even when it lands
while the loop is busy with a round (writing a heartbeat, waiting for the policy lock),
or the report or the publication waits a whole heartbeat.
"""

from __future__ import annotations

import asyncio

from blockd import tasks
from blockd.config.fleet import FleetConfig
from blockd.fleet.keys import Keys
from blockd.fleet.lease import Lease
from blockd.fleet.node import FleetNode


async def test_a_wake_during_a_round_brings_another_round_at_once() -> None:
    node = FleetNode.__new__(FleetNode)  # no Redis, no feeds: only the loop is under test
    node.cfg = FleetConfig(redis="redis://127.0.0.1:1/0", node="a", heartbeat=60, lease=180)
    node.lease = Lease(Keys("t"), "a", 180)
    node._wake = asyncio.Event()
    rounds = 0
    second = asyncio.Event()

    async def elect(r: object) -> None:
        return None

    async def heartbeat(r: object) -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            node._wake.set()  # a policy activated while this heartbeat was being written
        else:
            second.set()

    node._elect = elect  # type: ignore[method-assign]
    node._heartbeat = heartbeat  # type: ignore[method-assign]
    loop = asyncio.ensure_future(node._beat(None))  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(5):  # not the 60 s heartbeat
            await second.wait()
    finally:
        await tasks.cancel(loop)
