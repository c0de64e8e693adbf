"""The Grafana dashboard: importable as shared, and every query names a metric blockd exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.test_metrics import populated, scrape

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "blockd-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
METRIC = re.compile(r"\bblockd_[a-z0-9_]+")
# What Grafana puts in place of its variables, for a query Prometheus can run.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$instance": ".*"}


def load() -> dict[str, Any]:
    """Return the dashboard document."""
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every panel that queries (not rows)."""
    return [p for p in doc["panels"] if p["type"] != "row"]


def expressions(doc: dict[str, Any]) -> list[str]:
    """Return every PromQL expression: panel targets, annotations, variables."""
    exprs = [t["expr"] for p in panels(doc) for t in p["targets"]]
    exprs += [a["expr"] for a in doc["annotations"]["list"] if "expr" in a]
    return exprs + [v["query"]["query"] for v in query_variables(doc)]


def query_variables(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the templating variables that run a query (not the datasource variable)."""
    return [v for v in doc["templating"]["list"] if v.get("type") != "datasource"]


def runnable(expr: str) -> str:
    """Return expr with Grafana's variables replaced, as Grafana would send it."""
    expr = re.sub(r"^label_values\((.+), *\w+\)$", r"\1", expr)  # a variable's: the series
    for variable, replacement in VARIABLES.items():
        expr = expr.replace(variable, replacement)
    assert "$" not in expr, expr
    return expr


def test_is_importable_with_a_stable_uid_and_a_datasource_input() -> None:
    doc = load()
    assert doc["uid"] == "blockd-overview" and doc["id"] is None
    [ds] = doc["__inputs"]
    assert (ds["name"], ds["type"], ds["pluginId"]) == ("DS_PROMETHEUS", "datasource", "prometheus")


def test_every_query_uses_the_datasource_input() -> None:
    doc = load()
    for panel in panels(doc):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for variable in query_variables(doc):
        assert variable["datasource"] == DATASOURCE
    for annotation in doc["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"] == DATASOURCE


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    doc = load()
    ids = [p["id"] for p in doc["panels"]]
    assert len(set(ids)) == len(ids)
    taken: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        xs, ys = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
        cells = {(x, y) for x in xs for y in ys}
        assert not cells & taken, panel["title"]
        taken |= cells


def test_queries_name_only_metrics_blockd_exposes() -> None:
    exposed = {name for name, _ in scrape(populated())}
    for expr in expressions(load()):
        for name in METRIC.findall(expr):
            assert name in exposed, f"{name} in {expr!r} is not exposed by blockd.metrics"


def test_covers_what_operators_watch() -> None:
    used = {name for expr in expressions(load()) for name in METRIC.findall(expr)}
    assert {
        "blockd_dns_queries_total",  # DNS rate by result
        "blockd_dns_blocked_total",  # blocked by list
        "blockd_upstream_query_duration_seconds_bucket",  # upstream p50/p99
        "blockd_dns_cache_hits_total",  # cache hit ratio
        "blockd_http_decisions_total",  # notices, pass-through, refusals
        "blockd_list_version",
        "blockd_list_last_success_timestamp_seconds",  # freshness
        "blockd_list_expiry_timestamp_seconds",
        "blockd_audit_log_entries",
        "blockd_audit_last_checkpoint_timestamp_seconds",  # checkpoint lag
        "blockd_selftest_passed",
    } <= used
    quantiles = [e for e in expressions(load()) if "histogram_quantile" in e]
    assert any("0.5," in e for e in quantiles) and any("0.99," in e for e in quantiles)
    assert all(runnable(e) for e in expressions(load()))
