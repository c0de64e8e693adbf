"""Fixtures the audit tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockd.audit.log import MerkleLog, open_log
from tests.audit.test_bundle import ORIGIN, entry


@pytest.fixture
def log(tmp_path: Path) -> MerkleLog:
    """A log of 40 entries with checkpoints at 10, 25 and 40 (a module may define its own)."""
    log = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    for start, end in ((0, 10), (10, 25), (25, 40)):
        log.append([entry(i) for i in range(start, end)])
        log.sign_checkpoint(f"2026-11-01T00:00:{end:02d}Z")
    return log
