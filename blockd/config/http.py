"""The HTTP enforcement point's section: notice server, URL proxy and SNI front."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from blockd.config.base import Endpoint, Origin, Port, _Section
from blockd.config.notice import NoticeConfig


class HttpConfig(_Section):
    """The notice server and URL proxy (HTTP), and the SNI front (HTTPS)."""

    listen: list[Endpoint] = Field(
        default_factory=lambda: ["127.0.0.1:8080"],
        description="HTTP listeners: notice page and URL proxy (port 80 in production).",
    )
    tls_listen: list[Endpoint] = Field(
        default_factory=lambda: ["127.0.0.1:8443"],
        description="HTTPS listeners: SNI splice or refusal (port 443 in production).",
    )
    origin_http_port: Port = Field(
        default=80,
        description="The port blockd connects to for proxied HTTP (a Host naming another "
        "port is refused with 421).",
    )
    origin_https_port: Port = Field(default=443, description="Origin port for spliced TLS.")
    origins: dict[str, Origin] = Field(
        default_factory=dict,
        description="Fixed origins by host name, ADDRESS or ADDRESS:PORT (the port for plain "
        "HTTP), for the demo and testing; only these may be local. Other origins are resolved "
        "through the DNS upstreams, never through blockd's own answers, and only their public "
        "addresses are used.",
    )
    tls_default: Literal["refuse", "splice"] = Field(
        default="refuse",
        description="An Encrypted Client Hello (only the public name visible): refuse, or "
        "decide on that public name like any SNI (blocked: refused; routed: spliced; other: "
        "unrecognized_name). A ClientHello without SNI is always refused.",
    )
    header_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds to send a request head or ClientHello."
    )
    idle_timeout: float = Field(
        default=30.0, gt=0, le=3600, description="Seconds a kept-alive or body read may idle."
    )
    origin_timeout: float = Field(
        default=30.0, gt=0, le=3600, description="Seconds to wait on the origin's response."
    )
    connect_timeout: float = Field(default=5.0, gt=0, le=60, description="Origin connect, s.")
    tunnel_idle_timeout: float = Field(
        default=300.0, gt=0, le=86400, description="Seconds a splice or WebSocket may idle."
    )
    write_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds a client (or origin) may take to accept each write; one that "
        "stops reading is disconnected, and its socket aborted, after this.",
    )
    max_connections: int = Field(
        default=1024, ge=1, le=1_000_000, description="Client connections open at once."
    )
    max_connections_per_client: int = Field(
        default=64,
        ge=1,
        le=1_000_000,
        description="Connections one client address (an IPv6 /64) may hold open at once. Only "
        "routed and blocked hosts reach blockd, so a browser needs few; raise it if many "
        "subscribers reach blockd from one address (a NAT in front of the resolver).",
    )
    demo_origin: Endpoint | None = Field(
        default=None,
        description="Serve a tiny demo website here (for `make run` only; never in production).",
    )
    notice: NoticeConfig  # created when absent, before validation (blockd.config.demo)
