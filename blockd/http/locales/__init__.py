"""The notice page's languages: locale files, one `<language>.toml` each, and Accept-Language.

The files beside this module ship with blockd; an operator's directory can add languages or
replace shipped ones. A locale's text is checked and HTML-escaped when it is loaded, so a
page is built from it by plain substitution.
"""

from __future__ import annotations

import html
import re
import string
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from blockd.config.notice import LANGUAGE_TAG


class LocaleError(ValueError):
    """A locale file is invalid; the message names the file and the key."""


_LANGUAGE_TAG = re.compile(LANGUAGE_TAG)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

# Every key is required (but `dir`, ltr or rtl); the set is the placeholders each may use.
KEYS: dict[str, frozenset[str]] = {
    k: frozenset(v)
    for k, v in {
        "name": (),  # the language's name in itself, for the language switch
        "language_menu": (),
        "title": (),
        "lead": (),
        "not_in_trouble": (),
        "records_nothing": (),
        "why_heading": (),
        "why": ("authority",),
        "why_unknown": (),
        "legal_basis": ("legal_basis",),
        "help_heading": (),
        "help": ("helpline_name",),
        "help_call": ("helpline_number",),
        "report_heading": (),
        "report": ("hotline",),
        "contest_heading": (),
        "contest": (),
        "contest_authority": ("authority", "contact"),
        "contest_operator": ("operator", "contact"),
        "reference": ("reference",),
        "reference_none": (),
    }.items()
}

Template = tuple[tuple[str, str | None], ...]  # (escaped literal, placeholder or None)


def escape(value: str) -> str:
    """Return value as HTML text or attribute value, control characters dropped."""
    return html.escape(_CONTROL.sub("", value), quote=True)


@dataclass(frozen=True, slots=True)
class Locale:
    """One language's text, checked and HTML-escaped."""

    code: str
    dir: str
    text: dict[str, Template]

    def fill(self, key: str, **values: str) -> str:
        """Return the text of key as HTML, its placeholders replaced by the given HTML."""
        return "".join(lit + (values[f] if f else "") for lit, f in self.text[key])


def parse_locale(code: str, source: str, origin: str) -> Locale:
    """Parse one locale file's TOML text; errors name origin and the key."""
    if not _LANGUAGE_TAG.fullmatch(code):
        raise LocaleError(f"{origin}: file name must be a language tag, like km.toml or pt-BR.toml")
    try:
        doc: dict[str, Any] = tomllib.loads(source)
    except tomllib.TOMLDecodeError as e:
        raise LocaleError(f"{origin}: not valid TOML: {e}") from None
    for key, value in doc.items():
        if key not in KEYS and key != "dir":
            raise LocaleError(f"{origin}: unknown key {key!r}; allowed: {', '.join(KEYS)}, dir")
        if not isinstance(value, str) or not value.strip():
            raise LocaleError(f"{origin}: key {key!r} must be a non-empty string")
    missing = [k for k in KEYS if k not in doc]
    if missing:
        raise LocaleError(f"{origin}: missing key(s) {', '.join(map(repr, missing))}")
    direction = doc.get("dir", "ltr")
    if direction not in ("ltr", "rtl"):
        raise LocaleError(f"{origin}: key 'dir' must be 'ltr' or 'rtl'")
    text: dict[str, Template] = {}
    for key, allowed in KEYS.items():
        try:
            parsed = list(string.Formatter().parse(doc[key]))
        except ValueError as e:
            hint = "write {{ and }} for literal braces"
            raise LocaleError(f"{origin}: key {key!r}: {e}; {hint}") from None
        for _, field, spec, conversion in parsed:
            if field is None:
                continue
            if field not in allowed:
                accepted = ", ".join(f"{{{a}}}" for a in sorted(allowed)) or "none"
                raise LocaleError(
                    f"{origin}: key {key!r}: unknown placeholder {{{field}}}; allowed: {accepted}"
                )
            if spec or conversion:
                raise LocaleError(
                    f"{origin}: key {key!r}: write the placeholder as {{{field}}}, "
                    "without ! or : after the name"
                )
        text[key] = tuple((escape(literal), field) for literal, field, _, _ in parsed)
    return Locale(code, direction, text)


def load_locales(extra_dir: Path | None = None) -> dict[str, Locale]:
    """Return the shipped locales, plus or replaced by those in extra_dir, by language code."""
    files: list[tuple[str, Traversable]] = [
        (f"blockd/http/locales/{f.name}", f) for f in resources.files(__name__).iterdir()
    ]
    if extra_dir is not None:
        if not extra_dir.is_dir():
            raise LocaleError(f"{extra_dir}: languages_dir is not a directory")
        files += [(str(p), p) for p in sorted(extra_dir.iterdir())]
    found: dict[str, Locale] = {}
    for origin, f in files:
        if not f.name.endswith(".toml"):
            continue
        code = f.name.removesuffix(".toml")
        try:
            source = f.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise LocaleError(f"{origin}: cannot read: {e}") from None
        found[code] = parse_locale(code, source, origin)
    return dict(sorted(found.items()))


_RANGE = re.compile(r"\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")
_QVALUE = re.compile(r"[qQ]\s*=\s*(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")
_MAX_ACCEPT_LANGUAGE = 1024  # longer headers are cut here; browsers send well under 200 bytes


def preferred_languages(
    accept_language: str | None, available: Sequence[str], default: str
) -> list[str]:
    """Return every available language, the visitor's preferred first (RFC 9110 12.5.4).

    A range matches a language equal to, more or less specific than it (`en` and `en-GB`
    match each other); `*` matches the rest; q=0 puts a language last. Malformed entries are
    skipped, so any header value gives an answer. Ties keep the header's order, then the
    default comes first, then `available`'s order.
    """
    ranges: list[tuple[float, int, str]] = []
    for i, item in enumerate((accept_language or "")[:_MAX_ACCEPT_LANGUAGE].split(",")):
        tag, _, params = item.partition(";")
        tag = tag.strip()
        if not _RANGE.fullmatch(tag):
            continue
        q = 1.0
        if params:
            m = _QVALUE.fullmatch(params.strip())
            if m is None:
                continue
            q = float(m.group(1))
        ranges.append((q, i, tag.lower()))
    ranges.sort(key=lambda r: (-r[0], r[1]))

    def matches(tag: str, lang: str) -> bool:
        lang = lang.lower()
        return lang == tag or lang.startswith(tag + "-") or tag.startswith(lang + "-")

    rest = ([default] if default in available else []) + [a for a in available if a != default]
    named = {t: [a for a in rest if matches(t, a)] for _, _, t in ranges if t != "*"}
    excluded = {a for q, _, t in ranges if q == 0 and t != "*" for a in named[t]}
    unnamed = [a for a in rest if not any(a in langs for langs in named.values())]
    order: list[str] = []
    for q, _, tag in ranges:
        if q > 0:
            order += [a for a in (unnamed if tag == "*" else named[tag]) if a not in excluded]
    order += [a for a in rest if a not in excluded] + [a for a in rest if a in excluded]
    return list(dict.fromkeys(order))
