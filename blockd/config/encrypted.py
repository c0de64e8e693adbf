"""DNS over TLS and DNS over HTTPS listeners, their certificate, and DDR."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from blockd.config.base import Endpoint, Seconds, _Section


class EncryptedDnsConfig(_Section):
    """[dns.encrypted]: DoT (RFC 7858), DoH (RFC 8484) and their discovery (DDR, RFC 9462)."""

    dot_listen: list[Endpoint] = Field(
        default_factory=list,
        description="DNS over TLS listeners (port 853 in production). Empty: none.",
    )
    doh_listen: list[Endpoint] = Field(
        default_factory=list,
        description="DNS over HTTPS listeners, HTTP/2 and HTTP/1.1 by ALPN (port 443 in "
        "production, on an address of its own). Empty: none.",
    )
    doh_path: str = Field(default="/dns-query", description="The DoH path (GET ?dns= and POST).")
    certificate: Path | None = Field(
        default=None,
        description="PEM certificate chain for DoT and DoH; its names must include `name`. "
        "Re-read on reload. Required with a listener, except in the demo (a demo "
        "certificate is generated in the state directory).",
    )
    private_key: Path | None = Field(
        default=None, description="PEM private key of the certificate (mode 0600)."
    )
    name: str | None = Field(
        default=None,
        description="The resolver's name as in its certificate (the authentication domain "
        "name): DDR announces it, and clients check the certificate against it.",
    )
    ddr: bool = Field(
        default=True,
        description="Answer _dns.resolver.arpa SVCB queries with these listeners, so clients "
        "discover and upgrade to encrypted DNS (needs `name`).",
    )
    handshake_timeout: Seconds = Field(default=5, description="Seconds for a TLS handshake.")
    idle_timeout: Seconds = Field(
        default=30, description="Seconds an encrypted connection may stay idle."
    )
    max_connections: int = Field(
        default=1024, ge=1, le=100_000, description="Open DoT and DoH connections, together."
    )
    max_streams: int = Field(
        default=100, ge=1, le=1000, description="Concurrent HTTP/2 streams per connection."
    )

    @field_validator("doh_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in "?#{} \t\r\n"):
            raise ValueError("must be an absolute path without query, fragment or spaces")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.rstrip(".").lower()
        labels = name.split(".")
        ok = (
            len(name) <= 253
            and len(labels) >= 2
            and all(
                0 < len(x) <= 63 and x.replace("-", "").isalnum() and x.isascii() for x in labels
            )
        )
        if not ok:
            raise ValueError("must be a host name, e.g. dns.isp.example")
        return name

    @property
    def enabled(self) -> bool:
        """Say whether any encrypted listener is configured."""
        return bool(self.dot_listen or self.doh_listen)
