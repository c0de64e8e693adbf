"""The notice page's configuration: what it says about the operator, where it sends for help."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

LANGUAGE_TAG = r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*"  # BCP 47, as far as the notice needs

URL_RE = re.compile(r"https?://[^\s<>\"'`\\\x00-\x1f\x7f]+")
EMAIL_RE = re.compile(r"[^@\s<>\"'`\\]+@[^@\s<>\"'`\\]+\.[^@\s<>\"'`\\]+")
PHONE_RE = re.compile(r"\+?[0-9][0-9 ()-]{1,30}")


def _http_url(value: str) -> str:
    if not URL_RE.fullmatch(value):
        raise ValueError("must be an http:// or https:// URL without spaces, quotes or <>")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
LocalText = str | dict[str, str]


class NoticeConfig(BaseModel):
    """What the notice page says about the operator and where a visitor can get help."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operator_name: LocalText = Field(
        default="Demo ISP (DEMO)",
        description="The internet provider's name; a string, or a table of language -> name.",
    )
    operator_url: HttpUrl = Field(
        default="https://isp.example/blocking",
        description="Page about the operator's blocking; sent as Link rel=blocked-by (RFC 7725).",
    )
    operator_contact: str = Field(
        default="abuse@isp.example",
        max_length=500,
        description="Where to contest a block with the operator: e-mail, URL or phone; "
        "empty to leave out.",
    )
    helpline_name: LocalText = Field(
        default_factory=lambda: {
            "en": "Child Helpline Cambodia",
            "km": "ខ្សែទូរស័ព្ទជំនួយកុមារកម្ពុជា",
        },
        description="Child helpline's name; a string, or a table of language -> name.",
    )
    helpline_number: str = Field(
        default="1280",
        pattern=r"^\+?[0-9][0-9 ()-]{0,30}$",
        description="Child helpline's phone number, offered as a tel: link.",
    )
    helpline_url: HttpUrl | None = Field(
        default=None, description="Child helpline's web site; its name links there when set."
    )
    hotline_name: LocalText = Field(
        default_factory=lambda: {
            "en": "the child abuse reporting website",
            "km": "គេហទំព័ររាយការណ៍ការរំលោភបំពានកុមារ",
        },
        description="Where to report abuse material; a string, or a table of language -> name.",
    )
    hotline_url: HttpUrl = Field(
        default="https://report.example/", description="Web address for reporting abuse material."
    )
    languages_dir: Path | None = Field(
        default=None,
        description="Directory of extra or replacement locale files, one <language>.toml each.",
    )
    default_language: str = Field(
        default="en",
        pattern=f"^{LANGUAGE_TAG}$",
        description="Language shown when Accept-Language names none that is available.",
    )
