"""The HTTP verdict rule without a socket: every outcome, as proxy, HTTPS front and check see it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockd.http.decide import Decision, check, decide
from tests.factories import snapshot

SNAP = snapshot(
    hosts=["blocked.example"],
    urls=["partial.example/listed/page.html", "partial.example/dir/"],
    nxdomain=["gone.example"],
)
PORTS = (80, 8080)  # the origin's port and the listener's own


def ports(host: str) -> tuple[int, ...]:
    return PORTS


@pytest.mark.parametrize(
    ("authority", "path", "outcome", "list_id", "reason"),
    [
        # wholly blocked: notice for every path, port and spelling of the host
        ("blocked.example", "/", "notice", "hosts", ""),
        ("www.Blocked.EXAMPLE.", "/any?x", "notice", "hosts", ""),
        ("blocked.example:9999", "/", "notice", "hosts", ""),  # any port: the notice
        ("gone.example", "/", "notice", "nx", ""),
        # routed: a listed URL in any form an origin may read it as is the notice
        ("partial.example", "/listed/page.html", "notice", "urls", ""),
        ("partial.example:80", "/%6Cisted/page.html", "notice", "urls", ""),
        ("partial.example", "/listed/page.html;jsessionid=1", "notice", "urls", ""),
        ("partial.example", "/listed/page.html./", "notice", "urls", ""),
        ("partial.example:9999", "/listed/page.html", "notice", "urls", ""),
        ("partial.example", "/dir/deeper/file", "notice", "urls", ""),
        # routed, unlisted: pass with the route, on the ports served
        ("partial.example", "/other", "pass", "urls", ""),
        ("partial.example:8080", "/other", "pass", "urls", ""),
        ("sub.partial.example", "/other", "pass", "urls", ""),
        # not an open proxy, and the Host port never chooses where blockd connects
        ("elsewhere.example", "/", "misdirected", None, "host"),
        ("partial.example:9999", "/other", "misdirected", None, "port"),
        ("127.0.0.1", "/", "misdirected", None, "host"),
        # authorities that do not parse
        ("partial.example:0", "/", "bad-request", None, "bad port '0'"),
        ("partial.example:99999", "/", "bad-request", None, "bad port '99999'"),
        ("user@partial.example", "/", "bad-request", None, "user information in authority"),
        ("[::1", "/", "bad-request", None, "unclosed IPv6 bracket"),
        ("", "/", "bad-request", None, None),
        ("bad..name", "/", "bad-request", None, None),
    ],
)
def test_the_proxy_rule(
    authority: str, path: str, outcome: str, list_id: str | None, reason: str | None
) -> None:
    d = decide(SNAP, authority, path, ports)
    assert d.outcome == outcome
    assert (d.verdict.list if d.verdict else None) == list_id
    if reason is not None:
        assert d.reason == reason
    if outcome == "pass":
        assert d.verdict is not None and d.verdict.action == "route"


@pytest.mark.parametrize(
    ("name", "outcome", "action"),
    [
        ("blocked.example", "notice", "notice"),
        ("gone.example", "notice", "nxdomain"),
        ("partial.example", "pass", "route"),  # HTTPS to a routed host: splice or refuse
        ("elsewhere.example", "misdirected", None),
    ],
)
def test_the_https_front_decides_on_the_name_alone(
    name: str, outcome: str, action: str | None
) -> None:
    d = decide(SNAP, name, None)
    assert d.outcome == outcome
    assert (d.verdict.action if d.verdict else None) == action


def test_without_a_port_rule_any_port_passes() -> None:
    assert decide(SNAP, "partial.example:9999", "/other").outcome == "pass"


def test_decisions_carry_the_parsed_authority() -> None:
    assert decide(SNAP, "Partial.Example.:8080", "/x", ports) == Decision(
        "pass", SNAP.host_verdict("partial.example"), "partial.example", 8080
    )


@pytest.mark.parametrize(
    ("target", "outcome", "action", "canonical"),
    [
        ("blocked.example", "notice", "notice", "blocked.example"),
        ("blocked.example:8080", "notice", "notice", "blocked.example"),  # was a URL verdict
        ("WWW.blocked.example.", "notice", "notice", "www.blocked.example"),
        ("partial.example", "pass", "route", "partial.example"),  # a host reports its route
        ("partial.example:8080", "pass", "route", "partial.example"),
        ("partial.example/listed/page.html", "notice", "notice", None),
        ("http://partial.example/listed/page.html", "notice", "notice", None),
        ("HTTPS://partial.example:443/%6Cisted/page.html", "notice", "notice", None),
        ("partial.example/other", "pass", None, None),  # an unlisted URL is not blocked
        ("http://partial.example", "pass", None, None),
        ("example.com", "misdirected", None, "example.com"),
        ("example.com/a/b", "misdirected", None, None),
    ],
)
def test_check_reports(
    target: str, outcome: str, action: str | None, canonical: str | None
) -> None:
    report = check(SNAP, target)
    assert report["target"] == target and report["outcome"] == outcome
    verdict = report["verdict"]
    assert (verdict["action"] if isinstance(verdict, dict) else None) == action
    if canonical is not None:
        assert report["canonical"] == canonical


@pytest.mark.parametrize(
    "target", ["ftp://blocked.example/", "bad..name", "host:99999", "a@b.example", "[::1", ""]
)
def test_check_refuses_what_does_not_parse(target: str) -> None:
    report = check(SNAP, target)
    assert report["outcome"] == "bad-request" and report["error"]
    assert "verdict" not in report


def test_a_check_never_names_the_entry() -> None:
    report = check(SNAP, "partial.example/listed/page.html")
    assert "listed" not in str(report["verdict"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.one_of(st.none(), st.text(max_size=80)))
def test_fuzz_decide_never_raises(authority: str, path: str | None) -> None:
    d = decide(SNAP, authority, path if path is None else "/" + path, ports)
    assert d.outcome in ("notice", "pass", "misdirected", "bad-request")
    assert (d.verdict is None) == (d.outcome in ("misdirected", "bad-request"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_fuzz_check_never_raises(target: str) -> None:
    assert check(SNAP, target)["outcome"] in ("notice", "pass", "misdirected", "bad-request")
