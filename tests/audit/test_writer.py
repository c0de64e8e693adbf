"""The helper process that writes the log: it commits, and it is replaced if it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blockd.audit.log import open_log
from blockd.audit.writer import LogWriter


def entries(start: int, n: int) -> list[dict[str, object]]:
    return [{"time": "2026-11-23T00:00:00Z", "type": "t", "n": i} for i in range(start, start + n)]


async def test_the_helper_commits_and_a_dead_helper_is_replaced(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path, "isp.example/blockd/t", "op")
    try:
        assert (await writer.append(entries(0, 5))).size == 5
        await writer.sign_checkpoint("2026-11-23T00:00:01Z")
        pool = writer._pool
        assert pool is not None
        for pid in list(pool._processes):  # the helper dies (OOM killer, say)
            os.kill(pid, signal.SIGKILL)
        head = await writer.append(entries(5, 3))  # a new helper takes the batch
        assert head.size == 8
        await writer.sign_checkpoint("2026-11-23T00:00:02Z")
    finally:
        writer.close()
    log = open_log(tmp_path, "isp.example/blockd/t", "op")
    assert log.verify_disk().size == 8
    assert len(log.checkpoints()) == 2


ORPHAN = """
import asyncio, os, sys
from pathlib import Path

import pytest
from blockd.audit.writer import LogWriter

async def main() -> None:
    writer = LogWriter(Path(sys.argv[1]), "isp.example/blockd/t", "op")
    await writer.append([{"time": "2026-11-23T00:00:00Z", "type": "t"}])
    assert writer._pool is not None
    print(*writer._pool._processes, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_the_helper_does_not_outlive_a_killed_blockd(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    helper = int(parent.stdout.readline())
    parent.kill()  # SIGKILL: no clean-up runs in blockd
    parent.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(helper):
        time.sleep(0.2)
    assert not _alive(helper), "the log helper outlived blockd"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def _helper_pid(writer: LogWriter) -> int:
    pool = writer._pool
    assert pool is not None
    (pid,) = pool._processes
    return pid


async def test_the_helper_runs_at_idle_priority_unless_told_otherwise(tmp_path: Path) -> None:
    for idle, policy in ((True, os.SCHED_IDLE), (False, os.SCHED_OTHER)):
        writer = LogWriter(tmp_path / str(idle), "isp.example/blockd/t", "op", idle=idle)
        try:
            await writer.append(entries(0, 1))
            assert os.sched_getscheduler(_helper_pid(writer)) == policy
        finally:
            writer.close()


async def test_an_idle_helper_is_lifted_to_normal_priority_to_stop(tmp_path: Path) -> None:
    """Stopping waits for the helper to exit: at idle priority, on a busy machine, it could
    wait for minutes."""
    writer = LogWriter(tmp_path, "isp.example/blockd/t", "op", idle=True)
    await writer.append(entries(0, 1))
    pid, pool = _helper_pid(writer), writer._pool
    assert pool is not None and os.sched_getscheduler(pid) == os.SCHED_IDLE
    seen: list[int] = []
    shutdown = pool.shutdown

    def observed(wait: bool = True, *, cancel_futures: bool = False) -> None:
        seen.append(os.sched_getscheduler(pid))  # the policy it exits at
        shutdown(wait, cancel_futures=cancel_futures)

    pool.shutdown = observed  # type: ignore[method-assign]
    writer.close()
    assert seen == [os.SCHED_OTHER] and not _alive(pid)


async def test_a_starved_idle_helper_is_replaced_by_a_normal_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Every call "takes too long" here: after the first, the helper runs at normal priority.
    writer = LogWriter(tmp_path, "isp.example/blockd/t", "op", idle=True, starved_after=0.0)
    try:
        assert (await writer.append(entries(0, 2))).size == 2
        assert writer._pool is None and not writer.idle
        assert "starved at idle priority" in caplog.text
        assert (await writer.append(entries(2, 2))).size == 4
        assert os.sched_getscheduler(_helper_pid(writer)) == os.SCHED_OTHER
    finally:
        writer.close()
    assert open_log(tmp_path, "isp.example/blockd/t", "op").verify_disk().size == 4
