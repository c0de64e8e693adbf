"""The notice page's configuration: what it says about the operator, where it sends for help."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from blockd.config.base import Text

LANGUAGE_TAG = r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*"  # BCP 47, as far as the notice needs

URL_RE = re.compile(r"https?://[^\s<>\"'`\\\x00-\x1f\x7f]+")
EMAIL_RE = re.compile(r"[^@\s<>\"'`\\]+@[^@\s<>\"'`\\]+\.[^@\s<>\"'`\\]+")
PHONE_RE = re.compile(r"\+?[0-9][0-9 ()-]{1,30}")


def _http_url(value: str) -> str:
    if not URL_RE.fullmatch(value):
        raise ValueError("must be an http:// or https:// URL without spaces, quotes or <>")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


def _local_text(value: object) -> object:
    """Check a name given as a string or a table of language -> name: one problem, one line."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty or only spaces")
        return value
    if not isinstance(value, dict):
        raise ValueError("must be a name, or a table of language -> name")
    if not value:
        raise ValueError("must name at least one language")
    for lang, text in value.items():
        if not re.fullmatch(LANGUAGE_TAG, lang):
            raise ValueError(f"{lang!r} is not a language tag like 'en' or 'km'")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"the {lang!r} name must be text, not empty or only spaces")
    return value


LocalText = Annotated[str | dict[str, str], BeforeValidator(_local_text)]


class NoticeConfig(BaseModel):
    """What the notice page says about the operator and where a visitor can get help.

    The operator's and helpline's settings have no default: only the demo fills them in
    (blockd.config.demo).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    operator_name: LocalText = Field(
        description="The internet provider's name; a string, or a table of language -> name.",
    )
    operator_url: HttpUrl = Field(
        description="Page about the operator's blocking; sent as Link rel=blocked-by (RFC 7725).",
    )
    operator_contact: Text = Field(
        max_length=500,
        description="Where to contest a block with the operator: e-mail, URL or phone.",
    )
    helpline_name: LocalText = Field(
        description="Child helpline's name; a string, or a table of language -> name.",
    )
    helpline_number: str = Field(
        pattern=r"^\+?[0-9][0-9 ()-]{0,30}$",
        description="Child helpline's phone number, offered as a tel: link.",
    )
    helpline_url: HttpUrl | None = Field(
        default=None, description="Child helpline's web site; its name links there when set."
    )
    hotline_name: LocalText = Field(
        description="Where to report abuse material; a string, or a table of language -> name.",
    )
    hotline_url: HttpUrl = Field(description="Web address for reporting abuse material.")
    languages_dir: Path | None = Field(
        default=None,
        description="Directory of extra or replacement locale files, one <language>.toml each.",
    )
    default_language: str = Field(
        default="en",
        pattern=f"^{LANGUAGE_TAG}$",
        description="Language shown when Accept-Language names none that is available.",
    )
