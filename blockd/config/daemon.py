"""How blockd runs: one process, or a supervisor and worker processes on every core."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator

from blockd.config.base import Seconds, _Section

MAX_WORKERS = 256


class DaemonConfig(_Section):
    """Processes."""

    workers: int | Literal["auto"] = Field(
        default=1,
        description='Processes that answer DNS and HTTP: a number, or "auto" for one per CPU '
        "blockd may run on. With more than one, a supervisor process syncs, verifies, "
        "compiles, keeps the audit log and serves the admin API, and the workers share the "
        "listening ports (SO_REUSEPORT) and one read-only copy of the policy. 1: one process "
        "does everything.",
    )
    restart_delay_max: Seconds = Field(
        default=30,
        description="Longest wait before restarting a worker that keeps crashing; the first "
        "restart is immediate, then the wait doubles from 0.5 s up to this.",
    )
    worker_timeout: Seconds = Field(
        default=10,
        ge=2,  # under two report intervals, healthy workers would be killed over and over
        description="A worker that has not reported for this long is killed and restarted "
        "(it reports every second, so this catches a stuck event loop); at least 2.",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _count(cls, value: object) -> object:
        if value == "auto" or (type(value) is int and 1 <= value <= MAX_WORKERS):
            return value
        raise ValueError(f'must be a whole number from 1 to {MAX_WORKERS}, or "auto"')

    def worker_count(self) -> int:
        """Return how many worker processes run: 1 means blockd answers in one process."""
        if self.workers == "auto":
            return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
        return self.workers
