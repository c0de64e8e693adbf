"""The audit sections: the tamper-evident log and the legally required access records."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from blockd.config.base import ConfigError, _Section

RECORDS_NEED_THE_LOG = "records.enabled needs the audit log (audit.enabled = true)"


def retention_problem(keep_min_days: float, keep_max_days: float) -> str | None:
    """Say what is wrong with a retention floor and ceiling, if anything."""
    if keep_max_days < keep_min_days:
        return (
            f"keep_max_days ({keep_max_days:g}) must not be below keep_min_days ({keep_min_days:g})"
        )
    return None


class RecordsConfig(_Section):
    """Legally required access records: OFF unless the law requires them."""

    enabled: bool = Field(
        default=False,
        description="Keep pseudonymous, encrypted records of blocked accesses (client address "
        "as an HMAC pseudonym with a per-period key). Off: nothing about clients exists.",
    )
    period: float = Field(
        default=86400, ge=3600, le=31 * 86400, description="Seconds each key period lasts."
    )
    keep_min_days: float = Field(
        default=180, ge=0, le=3650, description="Never destroy records younger than this."
    )
    keep_max_days: float = Field(
        default=190, ge=0, le=3650, description="Destroy (crypto-shred) records older than this."
    )

    @model_validator(mode="after")
    def _floor_below_ceiling(self) -> Self:
        problem = retention_problem(self.keep_min_days, self.keep_max_days)
        if problem:
            raise ValueError(problem)
        return self


class WitnessConfig(_Section):
    """A witness (C2SP tlog-witness) that cosigns the log's checkpoints."""

    url: str = Field(
        pattern=r"^https?://[^\s]+$",
        max_length=500,
        description="The witness's submission prefix; blockd POSTs to <url>/add-checkpoint.",
    )
    key: str = Field(
        pattern=r"^[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]+=*$",
        max_length=300,
        description="The witness's cosignature vkey (name+keyid+base64), from its operator.",
    )


class AuditConfig(_Section):
    """The tamper-evident audit log that regulators verify.

    Its origin has no default while the log is on: only the demo fills it in
    (blockd.config.demo).
    """

    enabled: bool = Field(default=True, description="Keep the audit log.")
    dir: Path | None = Field(
        default=None, description="Where the log and its key live; default <state dir>/audit."
    )
    origin: str | None = Field(
        default=None,
        validate_default=True,
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="The log's name on its checkpoints, e.g. isp.example/blockd/resolver-1. "
        "Required while the log is on (only the demo fills it in); never change it: blockd "
        "refuses to open a log under another origin.",
    )
    key_name: str | None = Field(
        default=None,
        validate_default=True,
        min_length=1,
        max_length=100,
        pattern=r"^[\x21-\x2a\x2c-\x7e]+$",
        description="Name of the operator's log signing key (no '+' or spaces); default: the "
        "origin. Fixed when the key is made: blockd refuses a key under another name.",
    )
    period: float = Field(
        default=3600, ge=60, le=86400, description="Seconds each aggregated block count covers."
    )
    checkpoint_interval: float = Field(
        default=300, ge=1, le=86400, description="Longest time between signed checkpoints, s."
    )
    helper_priority: Literal["idle", "normal"] = Field(
        default="idle",
        description="Priority of the process that writes the log: idle uses only CPU time "
        "the listeners leave (and turns normal for good if the log falls behind).",
    )
    witnesses: list[WitnessConfig] = Field(
        default_factory=list,
        max_length=32,
        description="Witnesses each new checkpoint is submitted to; their cosignatures are "
        "kept beside the checkpoints and travel in bundles.",
    )
    witness_timeout: float = Field(
        default=10, gt=0, le=300, description="Seconds one submission to a witness may take."
    )
    witness_retry_max: float = Field(
        default=300,
        ge=1,
        le=86400,
        description="Longest wait, s, between retries to a witness that is down or refuses.",
    )
    records: RecordsConfig = RecordsConfig()

    @field_validator("origin")
    @classmethod
    def _origin_while_on(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("enabled") is not False:
            raise PydanticCustomError("missing", "Field required")
        return value

    @field_validator("key_name")
    @classmethod
    def _key_name_is_the_origin(cls, value: str | None, info: ValidationInfo) -> str | None:
        origin = info.data.get("origin")
        if value is not None or origin is None:
            return value
        if "+" in origin:
            raise PydanticCustomError(
                "missing",
                "required when origin has a '+' (it defaults to the origin, and a key name "
                "has no '+' or spaces)",
            )
        return str(origin)

    @model_validator(mode="after")
    def _records_need_the_log(self) -> Self:
        if self.records.enabled and not self.enabled:
            raise ValueError(RECORDS_NEED_THE_LOG)
        return self

    def names(self) -> tuple[str, str]:
        """Return the log's origin and its key's name; both are set while the log is on."""
        if self.origin is None or self.key_name is None:
            raise ConfigError("audit: the audit log is off (audit.enabled = false)")
        return self.origin, self.key_name

    def directory(self, state: Path) -> Path:
        """Return where the log lives."""
        return self.dir or state / "audit"
