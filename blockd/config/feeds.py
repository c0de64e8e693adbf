"""What blockd enforces: the root of trust, the lists, the guard-rails, and its state."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

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
        pattern=r"^(https|file|rpz)://",
        description="https:// or file:// URL of the envelope; or rpz://PRIMARY:PORT/ZONE, a "
        "zone transferred from the authority's primary and bound to its signed manifest.",
    )
    manifest: str | None = Field(
        default=None,
        pattern=r"^(https|file)://",
        description="With an rpz:// source (required there, refused elsewhere): https:// or "
        "file:// URL of the authority's signed manifest (a list envelope naming the zone, its "
        "SOA serial and ZONEMD digest).",
    )
    tsig_key_file: Path | None = Field(
        default=None,
        description="With an rpz:// source: the TSIG key (as tsig-keygen writes it) the "
        "transfer is signed with.",
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

    @model_validator(mode="after")
    def _rpz_source(self) -> Self:
        if self.is_rpz:
            rpz_endpoint(self.source)
            if self.manifest is None:
                raise ValueError(
                    f"lists {self.ref}: an rpz:// source needs manifest, the URL of the "
                    "authority's signed manifest: TSIG proves who sent a zone, not who wrote it"
                )
        elif self.manifest is not None or self.tsig_key_file is not None:
            raise ValueError(f"lists {self.ref}: manifest and tsig_key_file go with rpz:// only")
        return self

    @property
    def is_rpz(self) -> bool:
        """Say whether the list arrives as a zone transfer."""
        return self.source.startswith("rpz://")

    @property
    def ref(self) -> str:
        """Return 'authority/list'."""
        return f"{self.authority}/{self.list}"


_ZONE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")


def rpz_endpoint(source: str) -> tuple[str, int, str]:
    """Return the primary's address, port and the zone of an rpz:// source; ValueError if bad."""
    try:
        parts = urlsplit(source)
        host, port = parts.hostname, parts.port or 53
    except ValueError as e:
        raise ValueError(f"{source!r}: {e}") from None
    zone = parts.path.strip("/").lower().removesuffix(".")
    if (
        parts.scheme != "rpz"
        or not host
        or parts.username
        or parts.query
        or parts.fragment
        or not _ZONE.fullmatch(zone)
    ):
        raise ValueError(
            f"{source!r}: expected rpz://PRIMARY:PORT/ZONE, e.g. rpz://192.0.2.1:53/rpz.authority.example"
        )
    return host, port, zone


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
