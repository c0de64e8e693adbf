"""A running blockd has its checkpoints cosigned by a real witness process, off the query path.

The witness starts down: blockd keeps answering DNS, counts the failures, retries with
back-off, and has its checkpoints cosigned once the witness is up; an export then carries
the cosignature and verifies with the witness's key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from blockd.cli import main
from tests.daemon import ask, demo_config, running
from tests.ports import free_port
from tests.witness.process import witness, witness_key

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

pytestmark = pytest.mark.slow


async def until(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_witness_down_then_up(tmp_path: Path, upstream: Upstream) -> None:
    key, vkey = witness_key(tmp_path)
    port = free_port()
    text = demo_config(tmp_path, upstream.addr) + (
        f"\n[audit]\ncheckpoint_interval = 1\nwitness_retry_max = 1\nwitness_timeout = 2\n"
        f'witnesses = [{{ url = "http://127.0.0.1:{port}", key = "{vkey}" }}]\n'
    )
    async with running(text, tmp_path, write=True) as app:
        assert app.audit is not None and app.witnessing is not None
        state = app.witnessing.states[0]
        await until(lambda: state.outcomes["error"] >= 2)  # down: tried, and tried again
        assert (await ask(app, "blocked.demo.test")).rr  # and DNS is answered meanwhile
        ready = app.readiness()
        assert ready.ready and "failing: unreachable" in ready.reason, ready.reason
        with witness(
            key,
            tmp_path / "witness",
            {app.audit.log.origin: app.audit.log.signer.verifier.vkey},
            port,
        ) as w:
            await until(lambda: state.cosigned_size is not None)
            assert (await ask(app, "www.blocked.demo.test")).rr
            body, _ = app.metrics.render()
            assert b'outcome="cosigned"' in body and b"blockd_witness_cosigned_size{" in body
            assert "cosigned size" in app.readiness().reason
            conf = str(tmp_path / "blockd.toml")
            out = tmp_path / "bundle.json"
            assert (
                await asyncio.to_thread(main, ["audit", "export", "-c", conf, "-o", str(out)]) == 0
            )
            operator = app.audit.log.signer.verifier.vkey
            args = ["audit", "verify", str(out), "--key", operator, "--witness-key", vkey]
            assert await asyncio.to_thread(main, args) == 0
            assert "Traceback" not in w.stderr()
