"""The notice page as bytes: headers, languages, escaping, locale files; no sockets."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from blockd.feeds.model import Authority
from blockd.http.notice import NoticeConfig, NoticeError, NoticePage, preferred_languages
from blockd.policy.verdict import Verdict
from tests.factories import authority, notice_config

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LOCALES = Path(__file__).resolve().parents[2] / "blockd" / "http" / "locales"
REF = "r1-5e0c9a1b2f3d4c5b6a79"
VERDICT = Verdict("notice", "cpa", "hosts", 7, REF)
AUTHORITY = authority(
    id="cpa",
    name="Cambodian Child Protection Authority",
    legal_basis="Law on Suppression of Human Trafficking and Sexual Exploitation, Article 41",
    contact="appeals@cpa.example",
)
RECORDS_NOTHING = {
    "en": "Nothing about you or this visit was recorded.",
    "km": "យើងមិនបានកត់ត្រាអ្វីអំពីអ្នក ឬអំពីការចូលមើលនេះទេ។",
}


class Response:
    """A parsed HTTP response."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        status, *fields = head.decode("ascii").split("\r\n")
        self.status = status
        self.fields = [tuple(f.split(": ", 1)) for f in fields]
        self.headers = {name.lower(): value for name, value in self.fields}
        self.text = self.body.decode("utf-8")


@pytest.fixture(scope="module")
def notice() -> NoticePage:
    """Return the notice page with the default configuration."""
    return NoticePage(notice_config())


def get(
    page: NoticePage,
    accept_language: str | None = "en",
    *,
    method: str = "GET",
    verdict: Verdict | None = VERDICT,
    authority: Authority | None = AUTHORITY,
    records_nothing: bool = False,
    keep_alive: bool = True,
) -> Response:
    """Ask page for a response and parse it."""
    return Response(
        page.response(
            method,
            verdict,
            authority,
            accept_language,
            records_nothing=records_nothing,
            keep_alive=keep_alive,
        )
    )


def test_answers_451_with_the_headers_of_a_legal_block(notice: NoticePage) -> None:
    r = get(notice)
    assert r.status == "HTTP/1.1 451 Unavailable For Legal Reasons"
    assert r.headers["link"] == '<https://isp.example/blocking>; rel="blocked-by"'
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["content-language"] == "en"
    assert r.headers["vary"] == "Accept-Language"
    assert r.headers["connection"] == "keep-alive"
    assert int(r.headers["content-length"]) == len(r.body)
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", r.headers["date"])
    assert "set-cookie" not in r.headers
    assert len(r.headers) == len(r.fields), "a header is sent twice"
    assert get(notice, keep_alive=False).headers["connection"] == "close"


def test_content_security_policy_allows_only_the_inline_style(notice: NoticePage) -> None:
    r = get(notice)
    directives = dict(
        d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";")
    )
    [style] = re.findall(r"<style>(.*?)</style>", r.text, re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert directives == {
        "default-src": "'none'",
        "style-src": f"'sha256-{digest}'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert "<script" not in r.text and " style=" not in r.text


def test_head_gets_the_headers_alone(notice: NoticePage) -> None:
    page = get(notice, method="GET")
    head = get(notice, method="HEAD")
    assert head.status == page.status and head.body == b""
    assert head.headers["content-length"] == page.headers["content-length"]
    assert head.headers.keys() == page.headers.keys()


@pytest.mark.parametrize("method", ["POST", "PUT", "OPTIONS", "DELETE", "BREW", "head"])
def test_every_other_method_gets_the_page(notice: NoticePage, method: str) -> None:
    r = get(notice, method=method)
    assert r.status.startswith("HTTP/1.1 451 ")
    assert int(r.headers["content-length"]) == len(r.body) > 0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ["en", "km"]),
        ("", ["en", "km"]),
        ("km", ["km", "en"]),
        ("km-KH", ["km", "en"]),
        ("KM-kh, en;q=0.8", ["km", "en"]),
        ("en-US,en;q=0.9,km;q=0.8", ["en", "km"]),
        ("fr, km;q=0.5", ["km", "en"]),
        ("fr", ["en", "km"]),
        ("en;q=0.1, km;q=0.2", ["km", "en"]),
        ("en;q=0.500, km;q=0.5", ["en", "km"]),
        ("en;q=0, *", ["km", "en"]),
        ("en;q=0", ["km", "en"]),
        ("*", ["en", "km"]),
        ("*;q=0.5, km;q=0.1", ["en", "km"]),
        ("km;q=2, en;q=0.4", ["en", "km"]),  # q > 1 is malformed: skipped
        ("km;q=abc", ["en", "km"]),
        ("km;level=1", ["en", "km"]),
        ("km ; q = 0.7 ,en;q=0.6", ["km", "en"]),
        (";;;,,,=,km", ["km", "en"]),
    ],
)
def test_accept_language_picks_the_preferred_language(
    header: str | None, expected: list[str]
) -> None:
    assert preferred_languages(header, ["en", "km"], "en") == expected


def test_default_language_comes_first_when_nothing_matches() -> None:
    assert preferred_languages("fr", ["en", "km", "th"], "km") == ["km", "en", "th"]
    assert preferred_languages("pt", ["en", "pt-BR"], "en") == ["pt-BR", "en"]


def test_hostile_accept_language_headers_are_harmless(notice: NoticePage) -> None:
    for header in [
        "km;q=0.9," * 100_000,
        "x" * 1_000_000,
        ",".join(f"l{i % 999:03d}" for i in range(50_000)) + ",km",
        "\x00\r\n<script>",
        "km-" + "a" * 10_000,
    ]:
        assert get(notice, header).headers["content-language"] in ("en", "km")


@FUZZ
@given(st.text(max_size=2000) | st.binary(max_size=2000).map(lambda b: b.decode("latin-1")))
def test_accept_language_never_crashes(header: str) -> None:
    order = preferred_languages(header, ["en", "km", "pt-BR"], "en")
    assert sorted(order) == ["en", "km", "pt-BR"]


@FUZZ
@given(
    st.permutations(["en", "km"]),
    st.integers(min_value=1, max_value=1000),
    st.integers(min_value=0, max_value=999),
)
def test_higher_q_wins(names: list[str], high: int, low: int) -> None:
    low = min(low, high - 1)
    header = f"{names[1]};q={low / 1000:.3f}, {names[0]};q={high / 1000:.3f}"
    assert preferred_languages(header, ["en", "km"], "en") == names


@pytest.mark.parametrize(("header", "lang"), [("en", "en"), ("km", "km")])
def test_preferred_language_is_the_page_language(
    notice: NoticePage, header: str, lang: str
) -> None:
    r = get(notice, header)
    assert r.headers["content-language"] == lang
    assert f'<html lang="{lang}" dir="ltr">' in r.text
    # The preferred section is last, so `.alt:target ~ .pref` can hide it.
    sections = re.findall(r'<section id="([^"]+)" lang="([^"]+)" dir="ltr" class="(\w+)">', r.text)
    assert sections[-1] == (lang, lang, "pref")
    assert sorted(s[0] for s in sections) == ["en", "km"]
    assert [s[2] for s in sections[:-1]] == ["alt"]
    assert '<a href="#en" hreflang="en" lang="en">English</a>' in r.text
    assert '<a href="#km" hreflang="km" lang="km">ខ្មែរ</a>' in r.text


def test_says_nothing_was_recorded_only_when_that_is_true(notice: NoticePage) -> None:
    said = get(notice, records_nothing=True).text
    unsaid = get(notice, records_nothing=False).text
    for sentence in RECORDS_NOTHING.values():
        assert said.count(sentence) == 1
        assert sentence not in unsaid


def test_names_the_authority_and_the_law(notice: NoticePage) -> None:
    text = get(notice).text
    assert text.count("<bdi>Cambodian Child Protection Authority</bdi> is a child-protection") == 1
    assert text.count(AUTHORITY.legal_basis) == 2
    assert text.count('<a href="mailto:appeals@cpa.example">appeals@cpa.example</a>') == 2
    assert text.count('<a href="mailto:abuse@isp.example">abuse@isp.example</a>') == 2


def test_without_an_authority_speaks_in_general_terms(notice: NoticePage) -> None:
    text = get(notice, authority=None).text
    assert "A child-protection organisation recognised by law found" in text
    assert "who listed this page" not in text
    assert "your internet provider" in text


def test_helpline_is_a_phone_link_in_every_language(notice: NoticePage) -> None:
    text = get(notice).text
    assert '<a class="call" href="tel:1280">Call 1280</a>' in text
    assert '<a class="call" href="tel:1280">ហៅទូរស័ព្ទលេខ 1280</a>' in text
    assert "call Child Helpline Cambodia." in text
    assert "ខ្សែទូរស័ព្ទជំនួយកុមារកម្ពុជា" in text
    assert '<a href="https://report.example/">the child abuse reporting website</a>' in text


def test_shows_the_reference_or_says_there_is_none(notice: NoticePage) -> None:
    text = get(notice).text
    assert text.count(f"<code>{REF}</code>") == 2
    other = get(notice, verdict=Verdict("notice", "cpa", "hosts", 7, "other-ref")).text
    assert REF not in other and other.count("<code>other-ref</code>") == 2
    none = get(notice, verdict=None).text
    assert "<code>" not in none and "This block has no reference." in none


HOSTILE = "<script>alert('x')</script>\"&'\x00\x1b"


def test_escapes_whatever_the_trust_policy_says(notice: NoticePage) -> None:
    hostile = authority(id="evil", name=HOSTILE, legal_basis=HOSTILE, contact="javascript:alert(1)")
    verdict = Verdict("notice", "evil", "hosts", 1, '"><img src=x onerror=alert(1)>')
    r = get(notice, authority=hostile, verdict=verdict)
    assert "<script" not in r.text and "<img" not in r.text and "\x00" not in r.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;&amp;&#x27;" in r.text
    assert 'href="javascript' not in r.text
    assert "<bdi>javascript:alert(1)</bdi>" in r.text
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in r.text
    assert int(r.headers["content-length"]) == len(r.body)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [(name, v or "") for name, v in attrs if name in ("href", "src", "srcset")]


def test_loads_nothing_from_anywhere(notice: NoticePage) -> None:
    links = _Links()
    links.feed(get(notice).text)
    assert not {"script", "img", "link", "iframe", "object", "embed", "form"} & set(links.tags)
    assert [name for name, _ in links.urls] == ["href"] * len(links.urls)
    configured = {"https://report.example/"}
    for _, url in links.urls:
        assert url.startswith(("#", "tel:", "mailto:")) or url in configured, url
    assert "url(" not in get(notice).text and "@import" not in get(notice).text


def test_stays_small_at_its_largest(notice: NoticePage) -> None:
    big = authority(id="big", name="N" * 200, legal_basis="L" * 500, contact="C" * 500)
    verdict = Verdict("notice", "big", "urls", 1, "R" * 64)
    for lang in ("en", "km"):
        raw = notice.response("GET", verdict, big, lang, records_nothing=True, keep_alive=True)
        assert len(raw) < 16 * 1024


def test_operator_settings_are_used_and_localised(tmp_path: Path) -> None:
    page = NoticePage(
        NoticeConfig(
            operator_name={"en": "Example Net", "km": "អ៊ិចសំផលណិត"},
            operator_url="https://isp.example/why-blocked?a=1&b=2",
            operator_contact="+855 23 000 000",
            helpline_name="Kids Line",
            helpline_number="+855 (0)12 345",
            helpline_url="https://help.example/",
            hotline_name="Report Hotline",
            hotline_url="https://hotline.example/report",
            default_language="km",
        )
    )
    r = get(page, None)
    assert r.headers["content-language"] == "km"
    assert r.headers["link"] == '<https://isp.example/why-blocked?a=1&b=2>; rel="blocked-by"'
    assert "<bdi>អ៊ិចសំផលណិត</bdi>" in r.text and "<bdi>Example Net</bdi>" in r.text
    assert '<a href="tel:+85523000000">+855 23 000 000</a>' in r.text
    assert '<a class="call" href="tel:+85512345">Call +855 (0)12 345</a>' in r.text
    assert '<a href="https://help.example/">Kids Line</a>' in r.text
    assert '<a href="https://hotline.example/report">Report Hotline</a>' in r.text


@pytest.mark.parametrize(
    "bad",
    [
        {"operator_url": "https://isp.example/\r\nSet-Cookie: a=b"},
        {"operator_url": "javascript:alert(1)"},
        {"hotline_url": 'https://x.example/"><script>'},
        {"helpline_number": "1280<script>"},
        {"default_language": "EN\r\n"},
        {"unknown_key": 1},
    ],
)
def test_config_refuses_what_could_break_the_page(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        notice_config(**bad)


def test_every_config_field_is_described() -> None:
    schema = NoticeConfig.model_json_schema()
    assert all(field.get("description") for field in schema["properties"].values())


def locale(**change: str | None) -> str:
    """Return en.toml with keys changed (None removes the key)."""
    text = (LOCALES / "en.toml").read_text("utf-8")
    for key, value in change.items():
        text = re.sub(rf"(?m)^{key} = .*\n", "", text)
        if value is not None:
            text += f"{key} = {value!r}\n"
    return text


def test_a_locale_file_dropped_in_the_directory_adds_a_language(tmp_path: Path) -> None:
    (tmp_path / "fr.toml").write_text(locale(name="Français", title="Cette page est bloquée"))
    (tmp_path / "en.toml").write_text(locale(title="Blocked by law"))
    (tmp_path / "README.txt").write_text("not a locale")
    page = NoticePage(notice_config(languages_dir=tmp_path))
    assert page.languages() == ["en", "fr", "km"]
    r = get(page, "fr-CA, en;q=0.5")
    assert r.headers["content-language"] == "fr"
    assert '<html lang="fr" dir="ltr">' in r.text
    assert "<title>Cette page est bloquée</title>" in r.text
    assert '<a href="#fr" hreflang="fr" lang="fr">Français</a>' in r.text
    assert "<h1>Blocked by law</h1>" in r.text  # the operator's en.toml replaced the shipped one


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("fr.toml", locale(why=None), "fr.toml: missing key(s) 'why'"),
        ("fr.toml", locale() + "whyy = 'x'\n", "fr.toml: unknown key 'whyy'"),
        ("fr.toml", "name = 'x\n", "fr.toml: not valid TOML"),
        (
            "fr.toml",
            locale(title="{authority} blocked"),
            "fr.toml: key 'title': unknown placeholder",
        ),
        ("fr.toml", locale(why="{authority!r}"), "fr.toml: key 'why': write the placeholder as"),
        ("fr.toml", locale(help="call {"), "fr.toml: key 'help': "),
        ("fr.toml", locale(lead=""), "fr.toml: key 'lead' must be a non-empty string"),
        ("fr.toml", locale() + "dir = 'up'\n", "fr.toml: key 'dir' must be 'ltr' or 'rtl'"),
        ("French.toml", locale(), "French.toml: file name must be a language tag"),
    ],
)
def test_a_bad_locale_file_is_named_with_its_problem(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(NoticeError) as e:
        NoticePage(notice_config(languages_dir=tmp_path))
    assert str(tmp_path / name) in str(e.value)
    assert message in str(e.value)


def test_a_locale_file_must_be_a_table_of_strings(tmp_path: Path) -> None:
    (tmp_path / "fr.toml").write_text(locale() + "[extra]\nx = 1\n")
    with pytest.raises(NoticeError, match=r"fr\.toml: unknown key 'extra'"):
        NoticePage(notice_config(languages_dir=tmp_path))


def test_a_missing_directory_or_default_language_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NoticeError, match="languages_dir is not a directory"):
        NoticePage(notice_config(languages_dir=tmp_path / "nope"))
    with pytest.raises(NoticeError, match="default_language 'th' has no locale file"):
        NoticePage(notice_config(default_language="th"))


def test_shipped_locales_have_every_key() -> None:
    page = NoticePage(notice_config())
    assert page.languages() == ["en", "km"]
