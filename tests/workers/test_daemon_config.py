"""[daemon]: hostile worker counts, bounds on the timings, what workers cannot do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blockd.config import Config, parse
from tests.test_config import problems, production


def daemon(*settings: str, extra: str = "") -> str:
    return production(extra=extra) + "\n[daemon]\n" + "\n".join(settings)


def load(text: str) -> Config:
    return parse(text, Path("/etc/blockd"), "blockd.toml")


WORKERS_ERROR = 'daemon.workers: must be a whole number from 1 to 256, or "auto"'


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "-1",
        "257",
        "9" * 30,
        '"4"',
        "4.0",
        "4.5",
        "1e2",
        "true",
        "false",
        '"AUTO"',
        '"Auto"',
        '" auto"',
        '""',
        "[]",
        "[4]",
        "{}",
        "{ n = 4 }",
        "nan",
        "inf",
    ],
)
def test_a_hostile_worker_count_is_one_line_naming_the_setting(value: str) -> None:
    [line] = problems(daemon(f"workers = {value}"))
    assert line.startswith(WORKERS_ERROR), line
    assert len(line) < 200 and "\n" not in line


@pytest.mark.parametrize("value", [1, 2, 255, 256])
def test_whole_worker_counts_in_range_are_taken(value: int) -> None:
    cfg = load(daemon(f"workers = {value}"))
    assert cfg.daemon.workers == value and cfg.daemon.worker_count() == value


def test_auto_is_one_worker_per_cpu_blockd_may_run_on() -> None:
    cfg = load(daemon('workers = "auto"'))
    assert cfg.daemon.worker_count() == len(os.sched_getaffinity(0))


def test_the_default_is_one_process() -> None:
    cfg = load(production())
    assert cfg.daemon.workers == 1 and cfg.daemon.worker_count() == 1


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("restart_delay_max = 0", "greater than 0"),
        ("restart_delay_max = -1", "greater than 0"),
        ("restart_delay_max = 604801", "less than or equal to 604800"),
        ("restart_delay_max = nan", "restart_delay_max"),
        ("restart_delay_max = inf", "less than or equal to 604800"),
        ('restart_delay_max = "soon"', "valid number"),
        ("restart_delay_max = []", "valid number"),
        ("worker_timeout = 0", "greater than or equal to 2"),
        ("worker_timeout = -1", "greater than or equal to 2"),
        ("worker_timeout = 1", "greater than or equal to 2"),  # it reports every second
        ("worker_timeout = 1.99", "greater than or equal to 2"),
        ("worker_timeout = 604801", "less than or equal to 604800"),
        ("worker_timeout = nan", "worker_timeout"),
        ("worker_timeout = inf", "less than or equal to 604800"),
        ("colour = 1", "Extra inputs are not permitted"),
    ],
)
def test_timings_out_of_bounds_are_one_line_naming_the_setting(setting: str, needle: str) -> None:
    [line] = problems(daemon(setting))
    key = setting.split(" ")[0]
    assert line.startswith(f"daemon.{key}: "), line
    assert needle in line, line


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("restart_delay_max = 0.001", 0.001),
        ("restart_delay_max = 604800", 604800.0),
        ("worker_timeout = 2", 2.0),
        ("worker_timeout = 604800", 604800.0),
    ],
)
def test_timings_at_their_bounds_are_taken(setting: str, value: float) -> None:
    cfg = load(daemon(setting))
    assert getattr(cfg.daemon, setting.split(" ")[0]) == value


@pytest.mark.parametrize("workers", ["2", '"auto"', "256"])
def test_subscriber_records_need_one_process(workers: str) -> None:
    [line] = problems(daemon(f"workers = {workers}", extra="[audit.records]\nenabled = true"))
    assert "daemon.workers" in line and "audit.records" in line and "needs workers = 1" in line


def test_subscriber_records_with_one_process_are_taken() -> None:
    cfg = load(daemon("workers = 1", extra="[audit.records]\nenabled = true"))
    assert cfg.audit.records.enabled and cfg.daemon.worker_count() == 1


def test_every_daemon_problem_is_said_at_once() -> None:
    found = problems(daemon("workers = 0", "worker_timeout = 0"))
    assert [line.split(":")[0] for line in found] == ["daemon.workers", "daemon.worker_timeout"]
