"""The DNS enforcement point's section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from blockd.config.base import Endpoint, IPv4, IPv6, Network, Text, _Section
from blockd.config.encrypted import EncryptedDnsConfig


class DnsConfig(_Section):
    """The DNS enforcement point."""

    listen: list[Endpoint] = Field(
        default_factory=lambda: ["127.0.0.1:5300"],
        description="Addresses to serve DNS on, UDP and TCP.",
    )
    upstreams: list[Endpoint] = Field(
        default_factory=list,
        description="Recursive resolvers to forward to; empty means the nameservers in "
        "/etc/resolv.conf.",
    )
    allow: list[Network] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="Client networks that may query; others get REFUSED.",
    )
    notice_v4: list[IPv4] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="Notice server addresses answered (A) for wholly blocked hosts.",
    )
    notice_v6: list[IPv6] = Field(
        default_factory=lambda: ["::1"],
        description="Notice server addresses answered (AAAA) for wholly blocked hosts.",
    )
    proxy_v4: list[IPv4] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="URL proxy addresses answered (A) for hosts with URL-level entries.",
    )
    proxy_v6: list[IPv6] = Field(
        default_factory=lambda: ["::1"],
        description="URL proxy addresses answered (AAAA) for hosts with URL-level entries.",
    )
    start: Literal["fail-closed", "forward"] | None = Field(
        default=None,
        description="Until every configured list has a verified version in force: "
        "fail-closed answers every query the policy does not decide REFUSED (EDE 14, Not "
        "Ready), so stubs move to another resolver and no listed name resolves; forward "
        "answers them from upstream, listed names included. Default: fail-closed, or "
        "forward when the configuration is the demo.",
    )
    ttl: int = Field(default=60, ge=0, le=86400, description="TTL of blocked and routed answers.")
    policy_zone: str = Field(
        default="blocked.policy.invalid",
        description="Owner of the SOA carried by negative blocked answers.",
    )
    keep_client_subnet: bool = Field(
        default=False, description="Forward EDNS client subnet options (stripped by default)."
    )
    structured_error_option: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="EDNS option code by which clients ask for structured DNS errors, while "
        "the draft has none assigned; an empty EDE option in the query also asks.",
    )
    operator: Text = Field(
        max_length=200,
        description="Organisation named in structured DNS errors (no default: only the demo "
        "fills it in).",
    )
    attempt_timeout: float = Field(default=1.0, gt=0, le=30, description="Upstream attempt, s.")
    total_timeout: float = Field(
        default=3.0, gt=0, le=60, description="Whole forwarding budget before SERVFAIL, s."
    )
    tcp_idle_timeout: float = Field(default=10.0, gt=0, le=300, description="TCP idle, s.")
    max_tcp_connections: int = Field(default=512, ge=1, le=100_000)
    max_inflight: int = Field(
        default=4096, ge=16, le=1_000_000, description="Queries in progress before UDP drops."
    )
    cache_entries: int = Field(default=100_000, ge=0, le=10_000_000)
    encrypted: EncryptedDnsConfig = EncryptedDnsConfig()
