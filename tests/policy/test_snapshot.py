"""The policy snapshot's three questions, its precedence and its opacity."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockd.feeds.authoring import hashed_entry
from blockd.feeds.model import Format
from blockd.policy import entries as entry_rules
from blockd.policy.compile import IndexedList, compile_snapshot, empty_snapshot, index_list
from blockd.policy.index import KeyColumn, KeySet
from blockd.policy.snapshot import ListInfo, PolicySnapshot
from blockd.policy.verdict import HostAction, ListSource
from tests.factories import NOW


def indexed(
    list_id: str, fmt: Format, lines: list[str], action: HostAction = "notice", version: int = 1
) -> IndexedList:
    entries = entry_rules.build(fmt, lines)
    info = ListInfo(ListSource("auth", list_id, version, action), NOW, NOW, entries.count)
    return index_list(info, entries)


def snapshot(*lists: IndexedList) -> PolicySnapshot:
    return compile_snapshot(list(lists), ref_key=b"k" * 32)


def test_host_entry_blocks_host_and_subdomains_only() -> None:
    snap = snapshot(indexed("hosts", "hosts", ["blocked.example"]))
    for name in ("blocked.example", "a.blocked.example", "x.y.z.blocked.example"):
        v = snap.host_verdict(name)
        assert v is not None and v.action == "notice" and v.list == "hosts"
    for name in ("example", "notblocked.example", "blocked.example.org", "blocked.exampl"):
        assert snap.host_verdict(name) is None


def test_url_entry_routes_the_host_and_blocks_only_that_url() -> None:
    snap = snapshot(indexed("urls", "urls", ["http://partial.example/listed/page.html"]))
    assert snap.host_verdict("partial.example").action == "route"  # type: ignore[union-attr]
    assert snap.host_verdict("www.partial.example").action == "route"  # type: ignore[union-attr]
    assert snap.blocked_host("partial.example") is None
    assert snap.url_verdict("http://partial.example/listed/page.html") is not None
    assert snap.url_verdict("https://partial.example/listed/page.html?x=1") is not None
    assert snap.url_verdict("http://partial.example/listed/") is None
    assert snap.url_verdict("http://partial.example/other") is None
    assert snap.url_verdict("http://other.example/listed/page.html") is None


@pytest.mark.parametrize(
    "url",
    [
        "http://PARTIAL.example/listed/page.html",
        "http://partial.example./listed/page.html",
        "http://partial.example/listed/./page.html",
        "http://partial.example/x/../listed/page.html",
        "http://partial.example//listed//page.html",
        "http://partial.example/%6cisted/page.html",
        "http://partial.example/%256cisted/page.html",
        "http://user:pw@partial.example:8080/listed/page.html#frag",
        "partial.example/listed/page.html",
    ],
)
def test_encoding_tricks_do_not_slip_past(url: str) -> None:
    snap = snapshot(indexed("urls", "urls", ["http://partial.example/listed/page.html"]))
    assert snap.url_verdict(url) is not None


def test_block_beats_route_and_earlier_list_wins() -> None:
    snap = snapshot(
        indexed("first", "hosts", ["shared.example"], action="nxdomain"),
        indexed("second", "hosts", ["shared.example", "other.example"]),
        indexed("urls", "urls", ["http://www.other.example/x"]),
    )
    shared = snap.host_verdict("shared.example")
    assert shared is not None and (shared.list, shared.action) == ("first", "nxdomain")
    other = snap.host_verdict("www.other.example")
    assert other is not None and (other.list, other.action) == ("second", "notice")
    url = snap.url_verdict("http://www.other.example/y")
    assert url is not None and url.list == "second"


def test_hashed_lists_answer_without_plaintext() -> None:
    lines = [
        hashed_entry("host", "secret.example"),
        hashed_entry("url", "p.example/a/"),
        hashed_entry("route", "p.example"),
    ]
    snap = snapshot(indexed("hashed", "sha256", lines))
    assert snap.blocked_host("x.secret.example") is not None
    assert snap.host_verdict("p.example").action == "route"  # type: ignore[union-attr]
    assert snap.url_verdict("http://p.example/a/b/c.html") is not None
    assert snap.url_verdict("http://p.example/b") is None


def test_hashed_url_entries_match_on_the_hosts_their_route_hashes_name() -> None:
    lines = [
        hashed_entry("url", "p.example/a/"),  # its host routed: matched, on subdomains too
        hashed_entry("route", "p.example"),
        hashed_entry("url", "q.example/a/"),  # no route hash for q.example (FORMAT.md needs one)
        hashed_entry("route", "www.q.example"),
    ]
    snap = snapshot(indexed("hashed", "sha256", lines))
    assert snap.url_verdict("http://p.example/a/") is not None
    assert snap.url_verdict("http://www.p.example/a/x") is not None
    assert snap.url_verdict("http://www.q.example/a/") is None


def test_a_walked_host_gives_the_same_url_verdicts() -> None:
    lines = [hashed_entry("url", "p.example/a/"), hashed_entry("route", "p.example")]
    plain = indexed("plain", "urls", ["http://p.example/a/"])
    for snap in (snapshot(indexed("hashed", "sha256", lines)), snapshot(plain)):
        _, routed = snap.host_route("www.p.example")
        assert routed == ("p.example",)
        for url in ("http://www.p.example/a/b", "http://www.p.example/b", "http://p.example/a/"):
            walked = snap.url_verdict(url, ("www.p.example", routed))
            assert walked == snap.url_verdict(url)


def test_a_routed_host_answers_the_same_every_time_past_the_route_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("blockd.policy.snapshot.ROUTE_CACHE", 3)
    lines = [hashed_entry("url", "p.example/a/"), hashed_entry("route", "p.example")]
    hosts = indexed("hosts", "hosts", ["blocked.p.example"])
    snap = snapshot(indexed("hashed", "sha256", lines), hosts)
    names = [f"h{i}.p.example" for i in range(8)] + ["p.example", "blocked.p.example", "q.example"]
    first = [snap.host_route(n) for n in names]
    assert first[-3][1] == ("p.example",)
    assert first[-2][0] is not None and first[-2][0].action == "notice"  # a block wins
    assert first[-1] == (None, ())
    for _ in range(3):  # kept or walked again after the cache is cleared: the same answers
        assert [snap.host_route(n) for n in names] == first


def test_verdicts_are_identical_in_shape_and_reveal_no_entry() -> None:
    snap = snapshot(indexed("hosts", "hosts", ["a.example", "b.example"]))
    va, vb = snap.host_verdict("a.example"), snap.host_verdict("x.b.example")
    assert va is not None and vb is not None
    assert (va.action, va.authority, va.list, va.version) == (
        vb.action,
        vb.authority,
        vb.list,
        vb.version,
    )
    assert va.entry_ref != vb.entry_ref and len(va.entry_ref) == len(vb.entry_ref)
    assert "a.example" not in repr(va)
    # The reference is keyed: without the operator's key, a guess cannot be confirmed.
    assert va.entry_ref not in hashlib.sha256(b"a.example").hexdigest()
    other_key = compile_snapshot(list(snap_lists(snap)), ref_key=b"z" * 32)
    assert other_key.host_verdict("a.example").entry_ref != va.entry_ref  # type: ignore[union-attr]
    # The operator, holding the key, maps a reference back to the entry for an appeal.
    assert snap.entry_ref(snap.lists[0].source, "host", "a.example") == va.entry_ref


def snap_lists(snap: PolicySnapshot) -> list[IndexedList]:
    return [indexed("hosts", "hosts", ["a.example", "b.example"])]


def test_empty_snapshot_blocks_nothing() -> None:
    snap = empty_snapshot()
    assert snap.host_verdict("blocked.example") is None
    assert snap.url_verdict("http://blocked.example/") is None
    assert snap.versions == {}


def test_keyset_filter_false_positives_are_confirmed_away() -> None:
    keys = [f"k{i}.example" for i in range(5000)]
    ks = KeySet([KeyColumn.from_plain(keys)])
    assert all(ks.owner(k) is not None for k in keys)
    misses = [f"m{i}.example" for i in range(20000)]
    assert not any(ks.owner(m) is not None for m in misses)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_lookups_never_crash_on_arbitrary_names(name: str) -> None:
    snap = _FUZZ
    snap.host_verdict(name)
    with contextlib.suppress(ValueError):
        snap.url_verdict(name)


_FUZZ = snapshot(
    indexed("hosts", "hosts", ["blocked.example"]),
    indexed("urls", "urls", ["http://partial.example/listed/page.html"]),
)


def test_keyset_finds_digests_at_the_edges_of_the_range() -> None:
    edges = [
        b"\x00" * 32,
        b"\x00" * 7 + b"\x01" + b"\x00" * 24,
        b"\xff" * 32,
        b"\x80" + b"\x00" * 31,
    ]
    ks = KeySet([KeyColumn.from_sha256(edges[:2]), KeyColumn.from_sha256(edges[2:])])
    for i, d in enumerate(edges):
        found = ks.owner_of_digest(int.from_bytes(d[:8], "big"))
        assert found is not None and found[0] == i // 2
    assert ks.owner_of_digest(2**64 - 2) is None
    assert ks.owner_of_digest(2) is None


@pytest.mark.parametrize("fmt", ["hosts", "urls", "sha256"])
def test_verdicts_say_when_an_authoritys_self_test_entry_matched(fmt: Format) -> None:
    @dataclasses.dataclass(frozen=True)
    class Probe:
        host: str | None = None
        url: str | None = None

    probes = {
        "hosts": [Probe(host="selftest.example")],
        "urls": [Probe(url="http://probe.example/test/page.html")],
        "sha256": [Probe(host="selftest.example"), Probe(url="http://probe.example/test/")],
    }[fmt]
    lines = {
        "hosts": ["real.example"],
        "urls": ["real.example/listed"],
        "sha256": [hashed_entry("host", "real.example")],
    }[fmt]
    entries = entry_rules.build(fmt, lines, probes)
    info = ListInfo(ListSource("auth", "l", 1), NOW, NOW, entries.count, tuple(entries.probes))
    snap = compile_snapshot([index_list(info, entries)])
    if fmt != "urls":
        host = snap.host_verdict("www.selftest.example")
        assert host is not None and host.probe and host.action == "notice"
    if fmt != "hosts":
        url = snap.url_verdict("http://probe.example/test/page.html")
        assert url is not None and url.probe
    if fmt == "urls":
        route = snap.host_verdict("probe.example")
        assert route is not None and route.action == "route" and route.probe
        real = snap.url_verdict("http://real.example/listed")
        assert real is not None and not real.probe
        real_route = snap.host_verdict("real.example")
        assert real_route is not None and not real_route.probe
    else:
        real = snap.host_verdict("real.example")
        assert real is not None and not real.probe
