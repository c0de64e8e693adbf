"""The notice page: the HTTP 451 answer a blocked visitor sees, in words a child can follow.

Every shipped language is in the one page, each in its own `<section lang id>`; the visitor's
preferred one (Accept-Language) is shown and the others are one `#code` link away, switched by
the CSS `:target` selector: no script, and the request URL never changes. Pages are rendered
once per (language, authority, flags) and cached; a response only splices in the reference.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from email.utils import formatdate

from blockd.config.notice import EMAIL_RE as _EMAIL
from blockd.config.notice import PHONE_RE as _PHONE
from blockd.config.notice import URL_RE as _URL
from blockd.config.notice import LocalText, NoticeConfig
from blockd.feeds.model import Authority
from blockd.http.locales import (
    Locale,
    LocaleError,
    escape,
    load_locales,
    preferred_languages,
)
from blockd.policy.verdict import Verdict

__all__ = ["CSP", "NoticeConfig", "NoticeError", "NoticePage", "preferred_languages"]


class NoticeError(ValueError):
    """A locale file or the notice configuration is invalid; the message says where."""


_CSS = (
    "*{box-sizing:border-box}"
    "html{-webkit-text-size-adjust:100%;text-size-adjust:100%}"
    "body{margin:0;background:#eef1f5;color:#1a1a1a;overflow-wrap:anywhere;"
    'font:1.125rem/1.6 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",'
    '"Liberation Sans",Arial,sans-serif}'
    '[lang|=km]{font-family:"Noto Sans Khmer","Khmer OS System","Khmer OS",'
    '"Khmer OS Battambang","Khmer UI","Leelawadee UI","Khmer Sangam MN",sans-serif;'
    "line-height:1.9}"
    # Khmer vowels and subscripts reach below the baseline, through a normal underline.
    "[lang|=km] a{text-underline-position:under}"
    "nav,main{max-width:40rem;margin:0 auto;padding:0 .75rem}"
    "nav ul{display:flex;flex-wrap:wrap;justify-content:flex-end;gap:.5rem;"
    "list-style:none;margin:0;padding:.5rem 0}"
    "nav a{display:inline-flex;align-items:center;min-height:44px;min-width:44px;"
    "padding:0 .75rem}"
    "section{background:#fff;border-top:.5rem solid #0b4f8a;border-radius:.5rem;"
    "padding:1rem 1.25rem 1.5rem;margin-bottom:2rem}"
    "h1{font-size:1.75rem;line-height:1.3;margin:.25rem 0 .75rem}"
    "h2{font-size:1.25rem;line-height:1.4;margin:1.75rem 0 .25rem}"
    "[lang|=km] h1,[lang|=km] h2{line-height:1.7}"
    "p,ul{margin:.5rem 0}"
    ".lead{font-size:1.25rem;font-weight:700}"
    "a{color:#0645ad;text-decoration:underline;text-underline-offset:.15em}"
    "a:focus-visible{outline:3px solid #1a1a1a;outline-offset:3px}"
    ".call{display:inline-flex;align-items:center;min-height:48px;padding:.25rem 1.25rem;"
    "border-radius:.5rem;background:#0b4f8a;color:#fff;font-weight:700;text-decoration:none}"
    "code{font:1rem ui-monospace,Menlo,Consolas,monospace;background:#eef1f5;"
    "padding:.1em .3em;word-break:break-all}"
    # The preferred section comes last; another shows instead while its #code is targeted.
    ".alt{display:none}.alt:target{display:block}.alt:target~.pref{display:none}"
)
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_REF = "\x00"  # marks where the reference goes; escape() removes NULs from everything else
_MAX_CACHED = 1024  # pages or Accept-Language values; a full cache starts again
_MAX_CACHED_HEADER = 256  # longer Accept-Language values are parsed every time


def _link(href: str, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def _tel(number: str) -> str:
    """Return a tel: URL; "+855 (0)12 345" dials as +85512345."""
    return "tel:" + re.sub(r"[^0-9+]", "", number.replace("(0)", ""))


def _contact(value: str) -> str:
    """Return value as a link when it is an address, else as isolated text."""
    value = value.strip()
    if _URL.fullmatch(value):
        return _link(value, value)
    if _EMAIL.fullmatch(value):
        return _link("mailto:" + value, value)
    if _PHONE.fullmatch(value):
        return _link(_tel(value), value)
    return f"<bdi>{escape(value)}</bdi>"


@dataclass(frozen=True, slots=True)
class _Page:
    head: bytes  # status line and the headers that do not change per response
    parts: tuple[bytes, ...]  # the body, split where the reference goes


_AuthorityText = tuple[str, str, str]  # name, legal basis, contact


class NoticePage:
    """Build complete HTTP/1.1 notice responses."""

    def __init__(self, cfg: NoticeConfig) -> None:
        self.cfg = cfg
        try:
            self._locales = load_locales(cfg.languages_dir)
        except LocaleError as e:
            raise NoticeError(str(e)) from None
        if cfg.default_language not in self._locales:
            raise NoticeError(
                f"default_language {cfg.default_language!r} has no locale file; "
                f"available: {', '.join(self._locales)}"
            )
        self._pages: dict[tuple[str, _AuthorityText | None, bool, bool], _Page] = {}
        self._preferred: dict[str | None, str] = {}

    def languages(self) -> list[str]:
        """Return the available language codes."""
        return list(self._locales)

    def response(
        self,
        method: str,
        verdict: Verdict | None,
        authority: Authority | None,
        accept_language: str | None,
        *,
        records_nothing: bool,
        keep_alive: bool,
    ) -> bytes:
        """Return the whole response: status line, headers and, unless HEAD, the page."""
        # Hot path: two dict look-ups and a join; pages are rendered once per key.
        lang = self._preferred.get(accept_language)
        if lang is None:
            lang = preferred_languages(accept_language, self.languages(), self._default)[0]
            if accept_language is None or len(accept_language) <= _MAX_CACHED_HEADER:
                if len(self._preferred) >= _MAX_CACHED:
                    self._preferred.clear()
                self._preferred[accept_language] = lang
        auth = (authority.name, authority.legal_basis, authority.contact) if authority else None
        key = (lang, auth, records_nothing, verdict is not None)
        page = self._pages.get(key)
        if page is None:
            if len(self._pages) >= _MAX_CACHED:
                self._pages.clear()
            page = self._pages[key] = self._render(*key)
        body = escape(verdict.entry_ref).encode().join(page.parts) if verdict else page.parts[0]
        head = b"%sDate: %s\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n" % (
            page.head,
            _http_date(),
            len(body),
            b"keep-alive" if keep_alive else b"close",
        )
        return head if method == "HEAD" else head + body

    @property
    def _default(self) -> str:
        return self.cfg.default_language

    def _local(self, value: LocalText, lang: str) -> str:
        if isinstance(value, str):
            return value
        for code in (lang, lang.split("-")[0], self._default, "en"):
            if code in value:
                return value[code]
        return next(iter(value.values()), "")

    def _render(
        self, lang: str, auth: _AuthorityText | None, records_nothing: bool, has_ref: bool
    ) -> _Page:
        pref = self._locales[lang]
        others = [loc for code, loc in self._locales.items() if code != lang]
        sections = [self._section(loc, auth, records_nothing, has_ref, "alt") for loc in others]
        sections.append(self._section(pref, auth, records_nothing, has_ref, "pref"))
        nav = ""
        if others:
            links = "".join(
                f'<li><a href="#{c}" hreflang="{c}" lang="{c}">{loc.fill("name")}</a></li>'
                for c, loc in self._locales.items()
            )
            nav = f'<nav aria-label="{pref.fill("language_menu")}"><ul>{links}</ul></nav>'
        document = (
            f'<!DOCTYPE html>\n<html lang="{lang}" dir="{pref.dir}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            '<meta name="robots" content="noindex">'
            f"<title>{pref.fill('title')}</title><style>{_CSS}</style></head>"
            f"<body>{nav}<main>{''.join(sections)}</main></body></html>\n"
        )
        head = (
            "HTTP/1.1 451 Unavailable For Legal Reasons\r\n"
            "Content-Type: text/html; charset=utf-8\r\n"
            f"Content-Language: {lang}\r\n"
            "Vary: Accept-Language\r\n"
            "Cache-Control: no-store\r\n"
            f'Link: <{self.cfg.operator_url}>; rel="blocked-by"\r\n'
            f"Content-Security-Policy: {CSP}\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            "Referrer-Policy: no-referrer\r\n"
            "X-Frame-Options: DENY\r\n"
        )
        parts = tuple(p.encode() for p in document.split(_REF))
        return _Page(head.encode("ascii"), parts)

    def _section(
        self,
        loc: Locale,
        auth: _AuthorityText | None,
        records_nothing: bool,
        has_ref: bool,
        cls: str,
    ) -> str:
        cfg, fill = self.cfg, loc.fill
        name, basis, contact = auth or ("", "", "")
        authority = f"<bdi>{escape(name)}</bdi>"
        out = [
            f'<section id="{loc.code}" lang="{loc.code}" dir="{loc.dir}" class="{cls}">',
            f"<h1>{fill('title')}</h1>",
            f'<p class="lead">{fill("lead")}</p>',
            f"<p>{fill('not_in_trouble')}</p>",
        ]
        if records_nothing:
            out.append(f"<p>{fill('records_nothing')}</p>")

        out.append(f"<h2>{fill('why_heading')}</h2>")
        out.append(f"<p>{fill('why', authority=authority) if auth else fill('why_unknown')}</p>")
        if basis.strip():
            out.append(f"<p>{fill('legal_basis', legal_basis=f'<bdi>{escape(basis)}</bdi>')}</p>")

        helpline = escape(self._local(cfg.helpline_name, loc.code))
        if cfg.helpline_url:
            helpline = f'<a href="{escape(cfg.helpline_url)}">{helpline}</a>'
        call = fill("help_call", helpline_number=escape(cfg.helpline_number))
        out.append(f"<h2>{fill('help_heading')}</h2>")
        out.append(f"<p>{fill('help', helpline_name=helpline)}</p>")
        out.append(f'<p><a class="call" href="{_tel(cfg.helpline_number)}">{call}</a></p>')

        hotline = escape(self._local(cfg.hotline_name, loc.code))
        hotline = f'<a href="{escape(cfg.hotline_url)}">{hotline}</a>'
        out.append(f"<h2>{fill('report_heading')}</h2>")
        out.append(f"<p>{fill('report', hotline=hotline)}</p>")

        ways = []
        if contact.strip():
            ways.append(fill("contest_authority", authority=authority, contact=_contact(contact)))
        if cfg.operator_contact.strip():
            operator = f"<bdi>{escape(self._local(cfg.operator_name, loc.code))}</bdi>"
            ways.append(
                fill("contest_operator", operator=operator, contact=_contact(cfg.operator_contact))
            )
        out.append(f"<h2>{fill('contest_heading')}</h2>")
        if ways:
            items = "".join(f"<li>{w}</li>" for w in ways)
            out.append(f"<p>{fill('contest')}</p><ul>{items}</ul>")
        if has_ref:
            out.append(f"<p>{fill('reference', reference=f'<code>{_REF}</code>')}</p>")
        else:
            out.append(f"<p>{fill('reference_none')}</p>")
        out.append("</section>")
        return "".join(out)


_date: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    """Return the Date header value, formatted at most once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date[1]
