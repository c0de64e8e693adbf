"""What the supervisor tells a worker (pickled down the channel)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blockd.config import Config
from blockd.feeds.model import TrustPolicy

REPORT_INTERVAL = 1.0  # seconds between a worker's reports


@dataclass(frozen=True)
class Start:
    """The first message: everything a worker needs to answer."""

    index: int
    config: Config  # listen addresses with their ports chosen (no port 0)
    policy_dir: Path  # where the supervisor publishes snapshot files
    trust: TrustPolicy | None
    closed: bool  # fail-closed start: REFUSED for what the policy does not decide
    own: tuple[tuple[str, int], ...]  # the supervisor's listeners: never an origin
    cache_entries: int


@dataclass(frozen=True)
class Policy:
    """Map the snapshot published now and answer from it from the next query on."""

    generation: int


@dataclass(frozen=True)
class Trust:
    """Take authority names and contacts from this trust policy."""

    trust: TrustPolicy | None


@dataclass(frozen=True)
class Configure:
    """Apply a reloaded configuration (what a reload may change)."""

    config: Config


@dataclass(frozen=True)
class Open:
    """Every configured list is in force: answer from upstream now."""


@dataclass(frozen=True)
class Stop:
    """Drain, report a last time, exit."""
