"""Entry validation and guard-rails: what is refused, counted, and never enforced."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockd.feeds.authoring import hashed_entry
from blockd.feeds.model import Format, ListPayload, dump
from blockd.policy import entries as entry_rules
from blockd.policy.entries import build
from blockd.policy.guards import GuardConfigError, NeverBlock, change
from blockd.policy.index import KeyColumn
from blockd.policy.suffixes import crosses_suffix, is_public_suffix
from tests.factories import payload


@pytest.mark.parametrize(
    ("name", "public"),
    [
        ("com", True),
        ("co.uk", True),
        ("github.io", True),
        ("test", True),
        ("xn--p1ai", True),
        ("example.co.uk", False),
        ("demo.test", False),
        ("foo.ck", True),
        ("www.ck", False),
    ],
)
def test_public_suffixes(name: str, public: bool) -> None:
    assert is_public_suffix(name) is public


def test_host_entries_are_canonicalised_and_bad_ones_counted() -> None:
    e = entry_rules.build(
        "hosts",
        ["Blocked.Example.", "bücher.example", "com", "", "a..b", "x" * 300, "blocked.example"],
    )
    assert e.hosts == ["blocked.example", "xn--bcher-kva.example"]
    assert e.rejected == {
        "public-suffix": 1,
        "empty": 1,
        "invalid-name": 1,
        "too-long": 1,
        "duplicate": 1,
    }


def test_url_entries_become_safe_browsing_expressions() -> None:
    e = entry_rules.build(
        "urls",
        [
            "http://Partial.Example/a/../listed/page.html?q=1#frag",
            "http://co.uk/x",
            "http://",
            "not a url at all with spaces",
        ],
    )
    assert e.urls == ["partial.example/listed/page.html?q=1"]
    assert e.routed_hosts() == {"partial.example"}
    assert e.rejected["public-suffix"] == 1
    assert sum(e.rejected.values()) == 3


def test_hash_lines_are_checked() -> None:
    good = hashed_entry("host", "a.example")
    e = entry_rules.build(
        "sha256", [good, "host:" + "A" * 64, "nokind" + "0" * 64, "url:" + "0" * 63, good]
    )
    assert len(e.host_hashes) == 1
    assert e.rejected == {"invalid-hash": 3, "duplicate": 1}


def test_body_must_match_the_signed_count() -> None:
    assert entry_rules.split_body(b"a.example\nb.example\n", 2) == ["a.example", "b.example"]
    with pytest.raises(entry_rules.EntriesError, match="3 lines"):
        entry_rules.split_body(b"a\nb\nc\n", 2)
    with pytest.raises(entry_rules.EntriesError, match="not UTF-8"):
        entry_rules.split_body(b"\xff\n", 1)


def test_never_block_vetoes_parents_names_and_subtrees() -> None:
    guard = NeverBlock(["www.bank.example", "*.gov.example"])
    for host in ("www.bank.example", "bank.example", "gov.example", "a.b.gov.example"):
        assert guard.vetoes(host), host
    for host in ("evil.www.bank.example", "other.example", "notgov.example"):
        assert not guard.vetoes(host), host
    e = entry_rules.build("hosts", ["bank.example", "evil.example", "x.gov.example"])
    e.urls = ["www.bank.example/x", "evil.example/y"]
    e.host_hashes = [hashlib.sha256(b"gov.example").digest()]
    assert guard.apply(e) == 4
    assert e.hosts == ["evil.example"] and e.urls == ["evil.example/y"] and not e.host_hashes


def test_never_block_refuses_bad_names() -> None:
    with pytest.raises(GuardConfigError, match="never_block"):
        NeverBlock(["bad name"])


def test_change_fraction_compares_digests() -> None:
    old = KeyColumn.from_plain([f"{i}.example" for i in range(100)])
    new = KeyColumn.from_plain([f"{i}.example" for i in range(20, 130)])
    c = change([old], [new])
    assert (c.added, c.removed, c.before) == (30, 20, 100)
    assert c.fraction == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("host", "entry", "crosses"),
    [
        ("bucket.s3.amazonaws.com", "amazonaws.com", True),  # s3.amazonaws.com: PSL private
        ("www.amazonaws.com", "amazonaws.com", False),
        ("site.co.uk", "co.uk", True),  # an entry that is itself a suffix reaches nothing
        ("user.github.io", "github.io", True),
        ("www.site.co.uk", "site.co.uk", False),
        ("a.b.blocked.demo.test", "blocked.demo.test", False),
    ],
)
def test_entries_stop_at_public_suffixes(host: str, entry: str, crosses: bool) -> None:
    assert crosses_suffix(host, entry) is crosses


@pytest.mark.parametrize(
    ("fmt", "probe", "kept"),
    [
        ("hosts", {"host": "probe.example"}, True),
        ("hosts", {"url": "http://probe.example/x"}, False),  # a URL a hosts list can't hold
        ("urls", {"host": "probe.example"}, False),  # a whole host from a URL-only list
        ("urls", {"url": "http://probe.example/x"}, True),
        ("sha256", {"host": "probe.example"}, True),
        ("sha256", {"url": "http://probe.example/x"}, True),
    ],
)
def test_self_test_entries_obey_the_list_format(
    fmt: Format, probe: dict[str, str], kept: bool
) -> None:
    p = ListPayload.model_validate(
        {
            **json.loads(dump(payload(fmt=fmt, entries=[])[0])),
            "test_entries": [probe],
        }
    )
    out = build(fmt, [], p.test_entries)
    assert bool(out.probes) is kept and out.count == int(kept)
    assert out.rejected == ({} if kept else {"test-format": 1})


# The hosts format's inline fast path must take exactly the rule host_key states.
_TRICKY_HOSTS = [
    "blocked.example",
    "Blocked.Example",
    "blocked.example.",
    "www.blocked.example",
    "com",
    "co.uk",
    "example.co.uk",
    "kawasaki.jp",
    "foo.kawasaki.jp",
    "city.kawasaki.jp",
    "www.city.kawasaki.jp",
    "0e.vc",
    "x.0e.vc",
    "y.x.0e.vc",
    "1.2.3.4",
    "01.2.3.4",
    "0x7f.1",
    "example.123",
    "example.0x1f",
    "123.example",
    "_dmarc.example",
    "-a.example",
    "a..example",
    ".example",
    "",
    " ",
    "ex ample.test",
    "bücher.example",
    "xn--bcher-kva.example",
    "[::1]",
    "[fe80::1%eth0]",
    "a" * 63 + ".test",
    "a" * 64 + ".test",
    ".".join(["a" * 60] * 4) + ".tst",
    ".".join(["a" * 61] * 4),
    "blocked.example",
    "BLOCKED.example",
    "localhost",
    "test",
    "a.b.c.d.e.f.g.example",
]
_HOST_ALPHABET = "abcxyz019-_.ABÜ[]:%0x "


@pytest.mark.parametrize("extra", [[], ["bad", "ck", "www.ck", "a.ck"]])
def test_the_hosts_fast_path_keeps_host_keys_rule(extra: list[str]) -> None:
    lines = _TRICKY_HOSTS + extra
    fast = build("hosts", lines)
    slow_rejected: Counter[str] = Counter()
    slow = entry_rules._collect(lines, entry_rules.host_key, slow_rejected)
    assert fast.hosts == slow and fast.rejected == slow_rejected


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(_HOST_ALPHABET, max_size=80) | st.sampled_from(_TRICKY_HOSTS)))
def test_the_hosts_fast_path_agrees_with_host_key_on_any_lines(lines: list[str]) -> None:
    slow_rejected: Counter[str] = Counter()
    slow = entry_rules._collect(lines, entry_rules.host_key, slow_rejected)
    fast = build("hosts", lines)
    assert fast.hosts == slow and fast.rejected == slow_rejected
