"""bench/fleet_bench.py in a tiny mode, so the benchmark cannot rot unnoticed.

Two nodes, a 100-entry list, two updates: it must run end to end, print its table and
write its figures; the figures themselves are not judged (timings are never asserted).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_the_fleet_bench_runs_in_a_tiny_mode(redis_binary: str, tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fleet_bench.py"),
            *("--nodes", "2", "--entries", "100", "--updates", "2"),
            *("--heartbeat", "0.5", "--lease", "2", "--pause", "0.2", "--out", str(out)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| **syncer accepted -> every node enforcing (DNS)** |" in done.stdout
    figures = json.loads(out.read_text())
    assert [u["version"] for u in figures["updates"]] == [2, 3]
    assert all(len(u["enforced"]) == 2 for u in figures["updates"])
