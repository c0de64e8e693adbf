"""Configuration: TOML, validated strictly, every error reported at once with its path.

Relative paths are resolved against the configuration file's directory. The JSON schema
in config/blockd.schema.json is generated from these models (`blockd config-schema`).
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from blockd.feeds.model import Ident
from blockd.http.notice import NoticeConfig
from blockd.urls import canonical_host


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


Seconds = Annotated[float, Field(gt=0, le=7 * 86400)]


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


def _protected_name(value: str) -> str:
    try:
        canonical_host(value[2:] if value.startswith("*.") else value)
    except ValueError as e:
        raise ValueError(f"must be a host name or *.name: {e}") from None
    return value


ProtectedName = Annotated[str, AfterValidator(_protected_name)]


def _endpoint(value: str) -> str:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        ok = bool(sep) and 0 <= int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        raise ValueError("must be ADDRESS:PORT with a literal IP, e.g. 127.0.0.1:5300 or [::1]:53")
    return value


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError("must be a literal IPv4 address") from None


def _ipv6(value: str) -> str:
    try:
        return str(ipaddress.IPv6Address(value))
    except ValueError:
        raise ValueError("must be a literal IPv6 address") from None


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("must be a network like 192.0.2.0/24 or ::1/128") from None


Endpoint = Annotated[str, AfterValidator(_endpoint)]
IPv4 = Annotated[str, AfterValidator(_ipv4)]
IPv6 = Annotated[str, AfterValidator(_ipv6)]
Network = Annotated[str, AfterValidator(_network)]


def split_endpoint(value: str) -> tuple[str, int]:
    """Return (address, port) of a validated ADDRESS:PORT."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


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
    operator: str = Field(
        default="", max_length=200, description="Organisation named in structured DNS errors."
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


Port = Annotated[int, Field(ge=1, le=65535)]


def _origin(value: str) -> str:
    try:
        ipaddress.ip_address(value.strip("[]"))
        return value
    except ValueError:
        pass
    try:
        return _endpoint(value)
    except ValueError:
        raise ValueError("must be ADDRESS or ADDRESS:PORT with a literal IP") from None


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
        default=80, description="Origin port for proxied requests whose Host names none."
    )
    origin_https_port: Port = Field(default=443, description="Origin port for spliced TLS.")
    origins: dict[str, Annotated[str, AfterValidator(_origin)]] = Field(
        default_factory=dict,
        description="Fixed origins by host name, ADDRESS or ADDRESS:PORT (the port for plain "
        "HTTP), for the demo and testing; other origins are resolved through the DNS "
        "upstreams, never through blockd's own answers.",
    )
    tls_default: Literal["refuse", "splice"] = Field(
        default="refuse",
        description="An Encrypted Client Hello (only the public name visible): refuse, or "
        "splice to that public name. A ClientHello without SNI is always refused.",
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
    max_connections: int = Field(
        default=1024, ge=1, le=1_000_000, description="Client connections open at once."
    )
    demo_origin: Endpoint | None = Field(
        default=None,
        description="Serve a tiny demo website here (for `make run` only; never in production).",
    )
    notice: NoticeConfig = NoticeConfig()


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
        if self.keep_max_days < self.keep_min_days:
            raise ValueError("keep_max_days must not be below keep_min_days")
        return self


class AuditConfig(_Section):
    """The tamper-evident audit log that regulators verify."""

    enabled: bool = Field(default=True, description="Keep the audit log.")
    dir: Path | None = Field(
        default=None, description="Where the log and its key live; default <state dir>/audit."
    )
    origin: str = Field(
        default="blockd.invalid/demo-log",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="The log's name on its checkpoints, e.g. isp.example/blockd/resolver-1; "
        "never change it once regulators hold checkpoints.",
    )
    key_name: str = Field(
        default="blockd-demo-operator",
        min_length=1,
        max_length=100,
        pattern=r"^[\x21-\x2a\x2c-\x7e]+$",
        description="Name of the operator's log signing key (no '+' or spaces).",
    )
    period: float = Field(
        default=3600, ge=60, le=86400, description="Seconds each aggregated block count covers."
    )
    checkpoint_interval: float = Field(
        default=300, ge=1, le=86400, description="Longest time between signed checkpoints, s."
    )
    records: RecordsConfig = RecordsConfig()

    @model_validator(mode="after")
    def _records_need_the_log(self) -> Self:
        if self.records.enabled and not self.enabled:
            raise ValueError("records.enabled needs the audit log (audit.enabled = true)")
        return self

    def directory(self, state: Path) -> Path:
        """Return where the log lives."""
        return self.dir or state / "audit"


class SelfTestConfig(_Section):
    """Regular self-tests through blockd's own listeners (the authorities' probe entries)."""

    interval: float = Field(
        default=3600, ge=0, le=7 * 86400, description="Seconds between runs; 0 turns them off."
    )
    first_after: float = Field(
        default=30, ge=0, le=86400, description="Seconds after start before the first run."
    )
    control: str = Field(
        default="example.com",
        description="A name that must never be blocked; checked on every run ('' for none).",
    )
    timeout: float = Field(default=3.0, gt=0, le=60, description="Seconds per check.")


class AdminConfig(_Section):
    """The admin listener: health, readiness, metrics, status page and the operator API."""

    listen: list[Endpoint] = Field(
        default_factory=lambda: ["127.0.0.1:9153"],
        description="Admin HTTP listeners; keep them on loopback or a management network.",
    )
    token_file: Path | None = Field(
        default=None,
        description="File holding the bearer token the operator API requires; without one "
        "the API answers 403 (health, readiness, metrics and the status page stay open).",
    )
    public_metrics: bool = Field(
        default=True, description="Serve /metrics without the token (for Prometheus)."
    )


class Config(_Section):
    """The whole configuration."""

    trust: TrustConfig
    state: StateConfig = StateConfig()
    lists: list[ListConfig] = Field(default_factory=list)
    guards: GuardsConfig = GuardsConfig()
    dns: DnsConfig = DnsConfig()
    http: HttpConfig = HttpConfig()
    audit: AuditConfig = AuditConfig()
    selftest: SelfTestConfig = SelfTestConfig()
    admin: AdminConfig = AdminConfig()

    @model_validator(mode="after")
    def _unique_lists(self) -> Self:
        refs = [c.ref for c in self.lists]
        dupes = sorted({r for r in refs if refs.count(r) > 1})
        if dupes:
            raise ValueError(f"lists configured twice: {', '.join(dupes)}")
        return self

    def resolved(self, base: Path) -> Config:
        """Return a copy with relative paths made absolute against base."""

        def fix(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        def fix_url(u: str) -> str:
            if u.startswith("file://") and not u.startswith("file:///"):
                return "file://" + str(fix(Path(u[len("file://") :])))
            return u

        return self.model_copy(
            update={
                "trust": self.trust.model_copy(
                    update={
                        "pinned": fix(self.trust.pinned),
                        "updates": fix_url(self.trust.updates) if self.trust.updates else None,
                    }
                ),
                "state": StateConfig(dir=fix(self.state.dir)),
                "admin": self.admin.model_copy(
                    update={
                        "token_file": fix(self.admin.token_file) if self.admin.token_file else None
                    }
                ),
                "audit": self.audit.model_copy(
                    update={"dir": fix(self.audit.dir) if self.audit.dir else None}
                ),
                "http": self.http.model_copy(
                    update={
                        "notice": self.http.notice.model_copy(
                            update={
                                "languages_dir": fix(self.http.notice.languages_dir)
                                if self.http.notice.languages_dir
                                else None
                            }
                        )
                    }
                ),
                "lists": [
                    c.model_copy(
                        update={
                            "source": fix_url(c.source),
                            "ca_file": fix(c.ca_file) if c.ca_file else None,
                        }
                    )
                    for c in self.lists
                ],
            }
        )


def parse(text: str, base: Path, origin: str = "config") -> Config:
    """Parse TOML text; paths resolve against base."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{origin}: not valid TOML: {e}") from None
    try:
        return Config.model_validate(doc).resolved(base)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            path = ".".join(str(p) for p in err["loc"]) or "(top)"
            got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
            problems.append(f"  {path}: {err['msg']}{got}")
        raise ConfigError(f"{origin}: {len(problems)} problem(s)\n" + "\n".join(problems)) from None


def load(path: Path) -> Config:
    """Read and validate a configuration file."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    return parse(text, path.parent.resolve(), str(path))


def json_schema() -> dict[str, object]:
    """Return the JSON schema of the configuration."""
    return Config.model_json_schema()
