"""Identifiers shared by the configuration and the signed documents: authority and list ids."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def _ident(value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError("must be 1-63 of a-z 0-9 . _ - starting with a letter or digit")
    return value


Ident = Annotated[str, AfterValidator(_ident)]
