"""The signed documents' payloads: trust policy and list snapshot (feeds/FORMAT.md).

Models are strict: unknown keys, wrong types (no "2" or 2.0 for 2, no true for 1) and
out-of-range values are errors, and every error is reported at once with its path. The
JSON itself is read by `strictjson` (bounded, no duplicate keys).
"""

from __future__ import annotations

import builtins
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from blockd.feeds import strictjson
from blockd.feeds.keys import KeyFileError, PublicKey
from blockd.ids import Ident
from blockd.policy.entries import FORMATS as FORMATS  # the formats payloads may name
from blockd.policy.entries import Format as Format

TRUST_PAYLOAD_TYPE = "application/vnd.blockd.trust.v1+json"
LIST_PAYLOAD_TYPE = "application/vnd.blockd.list.v1+json"


_HEX64 = re.compile(r"[0-9a-f]{64}")


class PayloadError(ValueError):
    """A payload failed its schema; the message lists every problem with its path."""


def _rfc3339(value: object) -> object:
    """Read a timestamp from its JSON text (strict mode takes no strings for datetimes)."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an RFC 3339 time, e.g. 2026-01-01T00:00:00Z") from None
    return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp needs a UTC offset, e.g. 2026-01-01T00:00:00Z")
    return value.astimezone(UTC)


def _key(value: str) -> str:
    try:
        PublicKey.from_b64(value)
    except KeyFileError as e:
        raise ValueError(str(e)) from None
    return value


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_utc)]
KeyB64 = Annotated[str, AfterValidator(_key)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class KeySet(_Strict):
    """Keys and how many distinct ones must sign."""

    keys: list[KeyB64] = Field(min_length=1, max_length=16)
    threshold: int = Field(ge=1)

    @model_validator(mode="after")
    def _threshold_reachable(self) -> Self:
        distinct = {PublicKey.from_b64(k).keyid for k in self.keys}
        if len(distinct) != len(self.keys):
            raise ValueError("keys must be distinct")
        if self.threshold > len(distinct):
            raise ValueError(f"threshold {self.threshold} exceeds the {len(distinct)} keys")
        return self

    def public_keys(self) -> list[PublicKey]:
        """Return the keys as PublicKey objects."""
        return [PublicKey.from_b64(k) for k in self.keys]


class Regulator(KeySet):
    """The body whose keys sign the trust policy."""

    name: str = Field(min_length=1, max_length=200)


class Authority(KeySet):
    """A recognised database allowed to publish lists."""

    id: Ident
    name: str = Field(min_length=1, max_length=200)
    lists: list[Ident] = Field(min_length=1)
    formats: list[Format] = Field(min_length=1)
    max_entries: int = Field(ge=1, le=50_000_000)
    max_bytes: int = Field(ge=1024, le=4 * 1024**3)
    max_age_seconds: int = Field(ge=60)
    legal_basis: str = Field(default="", max_length=500)
    contact: str = Field(default="", max_length=500)


class TrustPolicy(_Strict):
    """The root of trust: who may publish which lists, pinned by the operator."""

    version: int = Field(ge=1)
    issued_at: Timestamp
    expires: Timestamp
    regulator: Regulator
    authorities: list[Authority] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        ids = [a.id for a in self.authorities]
        if len(set(ids)) != len(ids):
            raise ValueError("authority ids must be unique")
        return self

    def authority(self, authority_id: str) -> Authority | None:
        """Return the named authority, or None."""
        return next((a for a in self.authorities if a.id == authority_id), None)


class Body(_Strict):
    """A list body delivered beside the envelope, bound by its digest."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    sha256: str
    size: int = Field(ge=0)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not _HEX64.fullmatch(v):
            raise ValueError("must be 64 lowercase hex digits")
        return v


class TestEntry(_Strict):
    """An entry the authority marks as a self-test probe; enforced like any other."""

    host: str | None = Field(default=None, min_length=1, max_length=253)
    url: str | None = Field(default=None, min_length=1, max_length=4096)

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.host is None) == (self.url is None):
            raise ValueError("give exactly one of host or url")
        return self


class RpzBinding(_Strict):
    """The zone a list version was delivered as: the transfer must be exactly this zone."""

    zone: str = Field(
        pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$",
        max_length=253,
    )
    serial: int = Field(ge=0, lt=2**32)
    zonemd: str = Field(pattern=r"^[0-9a-f]{96}$")


class ListPayload(_Strict):
    """One signed version of one authority's list."""

    authority: Ident
    list: Ident
    version: int = Field(ge=1, lt=2**63)
    issued_at: Timestamp
    expires: Timestamp
    format: Format
    entry_count: int = Field(ge=0)
    # `builtins.list`: the field named `list` shadows the type inside this class.
    entries: builtins.list[str] | None = None
    body: Body | None = None
    test_entries: builtins.list[TestEntry] = Field(default_factory=builtins.list, max_length=100)
    rpz: RpzBinding | None = None

    @model_validator(mode="after")
    def _entries_or_body(self) -> Self:
        if self.rpz is not None and (self.body is None or self.format != "hosts"):
            raise ValueError("a list bound to a zone (rpz) has format hosts and a body")
        if (self.entries is None) == (self.body is None):
            raise ValueError("give exactly one of entries (inline) or body (file beside)")
        if self.entries is not None and len(self.entries) != self.entry_count:
            raise ValueError(
                f"entry_count is {self.entry_count} but {len(self.entries)} entries are inline"
            )
        if self.expires <= self.issued_at:
            raise ValueError("expires must be after issued_at")
        return self

    @property
    def ref(self) -> str:
        """Return 'authority/list'."""
        return f"{self.authority}/{self.list}"


def validation_problems(e: ValidationError) -> str:
    """Return every problem of a failed validation on one line, each with its path."""
    parts = []
    for err in e.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"]) or "(top)"
        parts.append(f"{path}: {err['msg']}")
    return "; ".join(parts)


def parse_trust(payload: bytes) -> TrustPolicy:
    """Parse a trust policy payload."""
    try:
        return TrustPolicy.model_validate(_json(payload))
    except ValidationError as e:
        raise PayloadError(f"trust policy: {validation_problems(e)}") from None


def parse_list(payload: bytes) -> ListPayload:
    """Parse a list payload (entries not yet validated one by one)."""
    try:
        return ListPayload.model_validate(_json(payload))
    except ValidationError as e:
        raise PayloadError(f"list payload: {validation_problems(e)}") from None


def _json(payload: bytes) -> object:
    try:
        return strictjson.loads(payload)
    except strictjson.JSONError as e:
        raise PayloadError(f"payload is not JSON blockd reads: {e}") from None


def dump(model: BaseModel) -> bytes:
    """Serialise a payload deterministically (sorted keys, UTC 'Z' times)."""
    data = model.model_dump(mode="json", exclude_none=True)
    return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode()


def rfc3339(t: datetime) -> str:
    """Format a UTC time as 2026-01-01T00:00:00Z."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
