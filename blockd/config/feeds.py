"""What blockd enforces: the root of trust, the lists, the guard-rails, and its state."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from blockd.config.base import Seconds, _Section
from blockd.ids import Ident
from blockd.urls import canonical_host


class TrustConfig(_Section):
    """The root of trust."""

    pinned: Path = Field(description="Read-only trust policy envelope pinned by the operator.")
    updates: str | None = Field(
        default=None,
        description="Directory URL (https:// or file://) where newer trust policy versions "
        "are published as <version>.trust.dsse; each must be signed by the current regulator.",
    )


class StateConfig(_Section):
    """Where blockd keeps its last-known-good state."""

    dir: Path = Field(default=Path("state"), description="Writable state directory.")
    publish_policy: bool = Field(
        default=False,
        description="Write each new policy snapshot as a file in <dir>/policy/ (always so "
        "with more than one worker: the workers map it read-only).",
    )


class ListConfig(_Section):
    """One authority list to enforce."""

    authority: Ident
    list: Ident
    source: str = Field(
        pattern=r"^(https|file)://", description="https:// or file:// URL of the envelope."
    )
    action: Literal["notice", "nxdomain"] = Field(
        default="notice", description="DNS answer for wholly blocked hosts."
    )
    interval: Seconds = Field(default=3600, description="Seconds between syncs.")
    deadline: Seconds = Field(default=120, description="Whole-retrieval deadline, seconds.")
    ca_file: Path | None = Field(default=None, description="CA bundle instead of the system's.")
    https: Literal["splice", "refuse"] = Field(
        default="splice",
        description="HTTPS to a host with URL-level entries: splice relays it untouched (its "
        "URLs cannot be seen, so none is blocked), refuse closes it with a TLS alert.",
    )

    @property
    def ref(self) -> str:
        """Return 'authority/list'."""
        return f"{self.authority}/{self.list}"


def _protected_name(value: str) -> str:
    try:
        canonical_host(value[2:] if value.startswith("*.") else value)
    except ValueError as e:
        raise ValueError(f"must be a host name or *.name: {e}") from None
    return value


ProtectedName = Annotated[str, AfterValidator(_protected_name)]


class GuardsConfig(_Section):
    """Guard-rails: they can only reduce blocking, and every use is an event."""

    never_block: list[ProtectedName] = Field(
        default_factory=list,
        description="Hosts never blocked: 'name' protects the name, '*.name' also subdomains.",
    )
    max_change_fraction: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Quarantine an update that adds or removes more than this fraction.",
    )
    min_change_entries: int = Field(
        default=100,
        ge=0,
        description="Never quarantine an update that changes fewer entries than this.",
    )
    clock_skew: Seconds = Field(default=300, description="Tolerated clock skew, seconds.")
