"""Authoring signed documents: what an authority or a regulator runs to publish.

The daemon never signs lists; these functions back the CLI's sign commands, the demo
authority, and the test factories.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from pydantic import ValidationError

from blockd.feeds import dsse
from blockd.feeds.keys import SigningKey
from blockd.feeds.model import (
    LIST_PAYLOAD_TYPE,
    TRUST_PAYLOAD_TYPE,
    Body,
    Format,
    ListPayload,
    PayloadError,
    RpzBinding,
    TestEntry,
    TrustPolicy,
    dump,
    validation_problems,
)


def body_bytes(entries: Sequence[str]) -> bytes:
    """Return a body file: one entry per line, LF, final newline."""
    return "".join(e + "\n" for e in entries).encode()


def list_payload(
    authority: str,
    list_id: str,
    version: int,
    fmt: Format,
    entries: Sequence[str],
    *,
    issued_at: datetime,
    expires: datetime,
    body_name: str | None = None,
    test_entries: Sequence[TestEntry] = (),
    rpz: RpzBinding | None = None,
) -> tuple[ListPayload, bytes | None]:
    """Build a list payload, inline or with a body file beside it (returned too).

    Raise PayloadError naming every field the payload schema refuses (ids, version, times).
    """
    body = body_bytes(entries) if body_name else None
    try:
        payload = ListPayload(
            authority=authority,
            list=list_id,
            version=version,
            issued_at=issued_at,
            expires=expires,
            format=fmt,
            entry_count=len(entries),
            entries=None if body is not None else list(entries),
            body=Body(name=body_name, sha256=hashlib.sha256(body).hexdigest(), size=len(body))
            if body is not None and body_name
            else None,
            test_entries=list(test_entries),
            rpz=rpz,
        )
    except ValidationError as e:
        raise PayloadError(f"list payload: {validation_problems(e)}") from None
    return payload, body


def sign_list(payload: ListPayload, keys: Sequence[SigningKey]) -> bytes:
    """Return the DSSE envelope of a list payload."""
    return dsse.sign(LIST_PAYLOAD_TYPE, dump(payload), keys)


def sign_trust(policy: TrustPolicy, keys: Sequence[SigningKey]) -> bytes:
    """Return the DSSE envelope of a trust policy."""
    return dsse.sign(TRUST_PAYLOAD_TYPE, dump(policy), keys)


def hashed_entry(kind: str, key: str) -> str:
    """Return a `sha256` format line: kind (host, url, route) and SHA-256 of key."""
    return f"{kind}:{hashlib.sha256(key.encode()).hexdigest()}"
