"""Totals.absorb against what a compromised worker may send: refused whole, nothing changed.

A worker parses attackers' packets; if one takes it over, its reports are the attacker's.
Every refused report must raise ReportError (never another exception, which would end the
supervisor's task for that worker) and leave every supervisor tally exactly as it was.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from collections.abc import Callable
from typing import Any

import pytest

from blockd.events import EventBus
from blockd.metrics import BlockCounts, DnsCounters, Metrics
from blockd.metrics.counters import UPSTREAM_BUCKETS
from blockd.workers.totals import MAX_LABEL_SETS, MAX_ROWS, ReportError, Tallies, Totals, parse

UP1 = ("127.0.0.1", 53)
UP2 = ("::1", 5353)
NAME1, NAME2 = "127.0.0.1:53", "[::1]:5353"
BUCKETS = len(UPSTREAM_BUCKETS) + 1
BLOCK = ["auth", "list", 3, "notice", "udp", False]


def report(n: int = 1, **over: Any) -> dict[str, Any]:
    """Return what an honest worker sends, every count n, changed by over."""
    out: dict[str, Any] = {
        "t": "report",
        "generation": 7,
        "cached": {"udp": n, "tcp": n},
        "forwarded": {"udp": n},
        "upstream_seconds": [[n] * BUCKETS, 0.5 * n],
        "blocks_dns": [[*BLOCK, n], ["auth", "list", 3, "nxdomain", "tcp", True, n]],
        "blocks_http": [["auth", "list", 3, "notice", "http", False, n]],
        "dns_problems": [["malformed", "short", "udp", n]],
        "http": [["http", "notice", n]],
        "http_problems": [["http", "timeout", "read", n]],
        "cache": [n, n, n],
        "http_connections": n,
        "upstreams": [[NAME1, True, False, None, None, 0], [NAME2, True, False, None, None, 0]],
    }
    out.update(over)
    return out


def totals() -> Totals:
    return Totals(Tallies(BlockCounts(), DnsCounters()), [UP1, UP2])


def totals_with_metrics() -> tuple[Totals, Metrics]:
    """Totals counting into the tallies a Metrics renders (as App wires them)."""
    f = totals()
    m = Metrics(EventBus(), dns=f.tallies.dns, blocks=f.tallies.blocks)
    t = m.tallies
    f.tallies.dns_problems, f.tallies.http, f.tallies.http_problems = (
        t.dns_problems,
        t.http,
        t.http_problems,
    )
    return f, m


def state(f: Totals) -> dict[str, Any]:
    """Everything absorb may change, as plain values to compare."""
    t = f.tallies
    return copy.deepcopy(
        {
            "blocks_dns": dict(t.blocks.dns),
            "blocks_http": dict(t.blocks.http),
            "dns_problems": dict(t.dns_problems),
            "http": dict(t.http),
            "http_problems": dict(t.http_problems),
            "cached": dict(t.dns.cached),
            "forwarded": dict(t.dns.forwarded),
            "hist": (list(t.dns.upstream_seconds.counts), t.dns.upstream_seconds.total),
            "hits": (f.hits, f.misses, len(f), f.http_connections()),
            "latest": f.latest,
            "upstreams": [vars(u) for u in f.upstreams],
        }
    )


def nested() -> list[Any]:
    """A list nested deeper than repr() can go (JSON decodes nearly as deep, a few frames up)."""
    out: list[Any] = []
    for _ in range(sys.getrecursionlimit() + 10):
        out = [out]
    return out


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(r: dict[str, Any]) -> None:
        target: Any = r
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda r: r.pop(key)


BIG = "x" * (1 << 20)
HOSTILE: dict[str, Callable[[dict[str, Any]], None]] = {
    # counts of the wrong type or out of range
    "bool count": _set(("blocks_dns", 0, 6), True),
    "float count": _set(("blocks_dns", 0, 6), 2.0),
    "negative count": _set(("blocks_dns", 0, 6), -1),
    "huge count": _set(("blocks_dns", 0, 6), 10**4000),
    "count just over int64": _set(("blocks_dns", 0, 6), 2**63),
    "str count": _set(("blocks_dns", 0, 6), "5"),
    "null count": _set(("blocks_dns", 0, 6), None),
    "nan count": _set(("http", 0, 2), math.nan),
    "bool cached": _set(("cached", "udp"), False),
    "negative forwarded": _set(("forwarded", "udp"), -5),
    "float cache hits": _set(("cache",), [1.0, 1, 1]),
    "bool http_connections": _set(("http_connections",), True),
    "huge http_connections": _set(("http_connections",), 10**300),
    "bool bucket": _set(("upstream_seconds", 0, 0), True),
    "negative failures": _set(("upstreams", 0, 5), -1),
    # seconds
    "nan seconds": _set(("upstream_seconds", 1), math.nan),
    "inf seconds": _set(("upstream_seconds", 1), math.inf),
    "-inf seconds": _set(("upstream_seconds", 1), -math.inf),
    "negative seconds": _set(("upstream_seconds", 1), -0.5),
    "bool seconds": _set(("upstream_seconds", 1), True),
    "str seconds": _set(("upstream_seconds", 1), "0.5"),
    "nan down_since": _set(("upstreams", 0, 4), math.nan),
    "huge down_since": _set(("upstreams", 0, 4), 1e300),
    # labels
    "int label where str": _set(("blocks_dns", 0, 0), 5),
    "bool label where int": _set(("blocks_dns", 0, 2), True),
    "str label where int": _set(("blocks_dns", 0, 2), "3"),
    "float label where int": _set(("blocks_dns", 0, 2), 3.0),
    "int label where bool": _set(("blocks_dns", 0, 5), 0),
    "null label": _set(("http", 0, 0), None),
    "list label": _set(("http", 0, 0), ["http"]),
    "nested list label": _set(("dns_problems", 0, 1), [[["a"]], []]),
    "dict label": _set(("http", 0, 1), {"a": 1}),
    "1 MB label": _set(("http", 0, 0), BIG),
    "257-char label": _set(("http", 0, 0), "x" * 257),
    "deeply nested label": _set(("http", 0, 0), nested()),
    "deeply nested row": _set(("http", 0), nested()),
    # rows of the wrong shape
    "short row": _set(("blocks_dns", 0), BLOCK),
    "long row": _set(("blocks_dns", 0), [*BLOCK, 1, 1]),
    "empty row": _set(("http", 0), []),
    "row not a list": _set(("http", 0), {"transport": "http"}),
    "row a string": _set(("http", 0), "http,notice,1"),
    "rows not a list": _set(("http",), {"http": 1}),
    "rows a string": _set(("http",), BIG),
    "rows null": _set(("dns_problems",), None),
    "same labels twice": _set(("http",), [["http", "notice", 1], ["http", "notice", 2]]),
    "too many rows": _set(("http",), [["http", str(i), 1] for i in range(MAX_ROWS + 1)]),
    "1e6 rows": _set(("dns_problems",), [["a", "b", "c", 1]] * 1_000_000),
    # the other fields
    "cached a list": _set(("cached",), [["udp", 1]]),
    "cached too many transports": _set(("cached",), {f"t{i}": 1 for i in range(17)}),
    "cached a count of a dict": _set(("cached", "udp"), {"n": 1}),
    "too few buckets": _set(("upstream_seconds",), [[0] * (BUCKETS - 1), 0.0]),
    "too many buckets": _set(("upstream_seconds",), [[0] * (BUCKETS + 1), 0.0]),
    "buckets a string": _set(("upstream_seconds",), [BIG, 0.0]),
    "upstream_seconds of 3": _set(("upstream_seconds",), [[0] * BUCKETS, 0.0, 0.0]),
    "upstream_seconds a number": _set(("upstream_seconds",), 5),
    "upstream_seconds a 1 MB string": _set(("upstream_seconds",), BIG),
    "cache of 2": _set(("cache",), [1, 1]),
    "cache of 4": _set(("cache",), [1, 1, 1, 1]),
    "cache a dict": _set(("cache",), {"hits": 1, "misses": 1, "entries": 1}),
    "cache a 3-char string": _set(("cache",), "abc"),
    "upstreams a string": _set(("upstreams",), "abc"),
    "upstreams an empty string": _set(("upstreams",), ""),
    "upstreams an empty object": _set(("upstreams",), {}),
    "upstream row of 5": _set(("upstreams", 0), [NAME1, True, False, None, None]),
    "upstream name an int": _set(("upstreams", 0, 0), 53),
    "upstream flag an int": _set(("upstreams", 0, 2), 1),
    "upstream reason 1 MB": _set(("upstreams", 0, 3), BIG),
    "upstream reason a list": _set(("upstreams", 0, 3), ["timeout"]),
    **{f"missing {k}": _drop(k) for k in report() if k not in ("t", "generation")},
}


def test_the_honest_report_is_accepted() -> None:
    parse(report())  # the corpus changes a report that passes


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_report_is_refused_whole_and_changes_nothing(name: str) -> None:
    f = totals()
    f.absorb(1, report(2))
    f.absorb(2, report(5))
    before = state(f)
    bad = report(9)  # every count grown: anything merged would show
    HOSTILE[name](bad)
    with pytest.raises(ReportError):
        f.absorb(1, bad)
    assert state(f) == before
    # the worker's next good report merges from its previous good one
    f.absorb(1, report(4))
    assert f.tallies.blocks.dns[(*BLOCK,)] == 5 + 4  # type: ignore[index]
    assert f.tallies.http[("http", "notice")] == 9
    assert f.tallies.dns.cached["tcp"] == 9
    assert f.tallies.dns.upstream_seconds.counts == [9] * BUCKETS
    assert f.tallies.dns.upstream_seconds.total == pytest.approx(4.5)
    assert (f.hits, f.misses, len(f)) == (9, 9, 9)


@pytest.mark.parametrize(
    "junk",
    [None, [], "report", 5, [("cached", {})], {"t": "report"}, {}],
    ids=repr,
)
def test_a_report_that_is_not_an_object_of_fields_is_refused(junk: Any) -> None:
    f = totals()
    before = state(f)
    with pytest.raises(ReportError):
        f.absorb(1, junk)
    assert state(f) == before


def test_extra_keys_and_odd_unicode_labels_are_plain_values_and_metrics_render() -> None:
    f, m = totals_with_metrics()
    odd = ['ü\x00\n\u202e"}{ la\\bel', "\ud800", "\x7f" * 256]
    rows = [["http", label, 3] for label in odd]
    wire = json.loads(json.dumps(report(1, extra={"code": "__import__('os')"}, http=rows)))
    f.absorb(1, wire)
    assert all(f.tallies.http[("http", label)] == 3 for label in odd)
    text = m.render()[0].decode()  # labels that are not slugs are shown as "other"
    assert 'blockd_http_decisions_total{outcome="other",transport="http"} 9.0' in text


def test_the_largest_counts_accepted_still_render_in_metrics() -> None:
    f, m = totals_with_metrics()
    top = 2**63 - 1
    for i in range(1, 9):  # restarts: each new worker counts to the top again
        f.absorb(i, report(top, upstream_seconds=[[top] * BUCKETS, 1e12 - 1]))
        f.forget(i)
    text = m.render()[0].decode()  # 10**400 would make float() overflow here
    assert f'blockd_http_decisions_total{{outcome="notice",transport="http"}} {8.0 * top!r}' in text


def test_counts_never_go_backwards_when_a_worker_restarts_or_shrinks() -> None:
    f = totals()
    f.absorb(1, report(10))
    f.absorb(1, report(3))  # a restarted worker in the same slot, before forget
    after_drop = state(f)
    assert f.tallies.http[("http", "notice")] == 10
    assert f.tallies.dns.upstream_seconds.counts == [10] * BUCKETS
    assert f.tallies.dns.upstream_seconds.total == pytest.approx(5.0)
    assert (f.hits, f.misses) == (10, 10)
    f.absorb(1, report(4))  # grows by 1 from what it said last
    assert f.tallies.http[("http", "notice")] == 11
    assert after_drop["hist"][0] == [10] * BUCKETS
    f.absorb(1, report(4, http=[]))  # a label gone from a report takes nothing away
    assert f.tallies.http[("http", "notice")] == 11


def test_forget_keeps_counts_and_a_new_worker_counts_from_zero() -> None:
    f = totals()
    f.absorb(1, report(6))
    f.absorb(2, report(1))
    f.forget(1)
    f.forget(99)  # never seen: nothing
    assert f.tallies.http[("http", "notice")] == 7
    assert f.tallies.blocks.http[("auth", "list", 3, "notice", "http", False)] == 7
    assert (f.hits, len(f), f.http_connections()) == (7, 1, 1)  # live state is worker 2's
    f.absorb(1, report(2))  # its replacement, from zero
    assert f.tallies.http[("http", "notice")] == 9


def up(name: str, *, down: bool, since: float | None = None, failures: int = 0) -> list[Any]:
    return [name, not down, down, "timeout" if down else None, since, failures]


def seen(f: Totals, i: int = 0) -> tuple[bool, float | None, int]:
    u = f.upstreams[i]
    return u.down, u.down_since, u.failures


def test_an_upstream_is_down_only_when_every_live_worker_says_so() -> None:
    f = totals()
    calls: list[tuple[str, bool]] = []
    f.on_upstream_change = lambda s: calls.append((s.name, s.down))
    ok2 = up(NAME2, down=False)
    f.absorb(1, report(1, upstreams=[up(NAME1, down=True, since=100.0, failures=3), ok2]))
    assert calls == [(NAME1, True)]  # the only live worker says down
    assert seen(f) == (True, 100.0, 3)
    f.absorb(2, report(1, upstreams=[up(NAME1, down=False), ok2]))
    assert calls == [(NAME1, True), (NAME1, False)]
    assert seen(f) == (False, None, 3)
    f.absorb(2, report(2, upstreams=[up(NAME1, down=True, since=50.0, failures=5), ok2]))
    assert calls[2:] == [(NAME1, True)]
    assert seen(f) == (True, 50.0, 5)
    for n in (3, 4, 5):  # still down: no more calls
        f.absorb(1, report(n, upstreams=[up(NAME1, down=True, since=100.0), ok2]))
    assert len(calls) == 3
    f.forget(2)
    f.forget(1)  # no live worker: nothing is known, nothing changes
    assert len(calls) == 3 and f.upstreams[0].down
    f.absorb(3, report(1, upstreams=[up(NAME1, down=False), ok2]))
    assert calls[3:] == [(NAME1, False)]
    assert not f.upstreams[1].down  # never said down


def test_a_refused_report_calls_no_upstream_change() -> None:
    f = totals()
    calls: list[bool] = []
    f.on_upstream_change = lambda s: calls.append(s.down)
    bad = report(1, upstreams=[up(NAME1, down=True), up(NAME2, down=True)])
    bad["cache"] = [1, 1]
    with pytest.raises(ReportError):
        f.absorb(1, bad)
    assert calls == [] and not any(u.down for u in f.upstreams)


def test_upstreams_not_configured_are_ignored() -> None:
    f = totals()
    calls: list[str] = []
    f.on_upstream_change = lambda s: calls.append(s.name)
    f.absorb(1, report(1, upstreams=[up("192.0.2.1:53", down=True), up("x" * 5000, down=True)]))
    assert calls == [] and [u.name for u in f.upstreams] == [NAME1, NAME2]


def test_label_sets_are_bounded_over_every_report() -> None:
    # Each report is within MAX_ROWS, but a compromised worker sending new labels every
    # second must not grow the supervisor without end: refused whole once over the cap.
    t = totals()
    cap = MAX_LABEL_SETS
    rows = [["dropped", f"r{i}", "udp", 1] for i in range(cap)]
    t.absorb(1, report(dns_problems=rows))
    before = state(t)
    with pytest.raises(ReportError, match="label sets"):
        t.absorb(1, report(dns_problems=[*rows, ["dropped", "one-more", "udp", 1]]))
    assert state(t) == before
