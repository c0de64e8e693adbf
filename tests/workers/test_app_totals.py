"""App with workers: what the workers report reaches /metrics (no process is started)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from blockd.app import App
from blockd.config import parse
from blockd.workers.zygote import Zygote
from tests.factories import operator_toml
from tests.workers.test_totals_hostile import report


def test_every_count_a_worker_reports_is_shown_by_the_supervisors_metrics(
    tmp_path: Path,
) -> None:
    text = "\n".join(
        [
            "[trust]",
            f'pinned = "{tmp_path / "trust.dsse"}"',
            "[state]",
            f'dir = "{tmp_path / "state"}"',
            "[daemon]",
            "workers = 2",
            operator_toml(),
        ]
    )
    config = parse(text, tmp_path)
    app = App(config, zygote=cast(Zygote, object()))  # never asked for a worker here
    app.totals.absorb(
        1,
        report(
            4,
            http=[["http", "notice", 4]],
            http_problems=[["http", "slow", "read", 4]],
            dns_problems=[["dropped", "rate", "udp", 4]],
        ),
    )
    text = app.metrics.render()[0].decode()
    for line in (
        'blockd_dns_blocked_total{action="notice",authority="auth",list="list",transport="udp"}'
        " 4.0",
        'blockd_http_decisions_total{outcome="notice",transport="http"} 4.0',
        'blockd_http_problems_total{kind="slow",reason="read",transport="http"} 4.0',
        'blockd_dns_dropped_total{reason="rate",transport="udp"} 4.0',
        'blockd_dns_queries_total{result="cached",transport="udp"} 4.0',
    ):
        assert line in text.splitlines(), line
