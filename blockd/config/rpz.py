"""The RPZ section: blockd as the policy primary for existing resolvers (off by default)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Self

from pydantic import AfterValidator, Field, model_validator

from blockd.config.base import Endpoint, Network, _Section

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_REF = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}/[a-z0-9][a-z0-9._-]{0,62}")


def _zone(value: str) -> str:
    name = value.lower().removesuffix(".")
    if not name or len(name) > 200 or not all(_LABEL.fullmatch(x) for x in name.split(".")):
        raise ValueError("must be a domain name of letters, digits and hyphens, e.g. rpz.blockd")
    return name


def _ref(value: str) -> str:
    if not _REF.fullmatch(value):
        raise ValueError("must name a configured list as 'authority/list'")
    return value


ZoneName = Annotated[str, AfterValidator(_zone)]
ListRef = Annotated[str, AfterValidator(_ref)]


class RpzConfig(_Section):
    """The host-level policy served as a Response Policy Zone over AXFR/IXFR."""

    enabled: bool = Field(
        default=False,
        description="Serve the zone. Off by default: it hands plaintext host names to the "
        "secondaries, which hashed lists never do.",
    )
    listen: list[Endpoint] = Field(
        default_factory=lambda: ["127.0.0.1:5301"],
        description="Where transfers are served: TCP for AXFR/IXFR and SOA, UDP for SOA "
        "queries and the answers to NOTIFY. Never the DNS query listeners.",
    )
    zone: ZoneName = Field(default="rpz.blockd", description="The policy zone's name.")
    clients: list[Network] = Field(
        default_factory=list,
        description="Addresses (or networks) of the secondaries that may transfer the zone "
        "and ask its SOA; everyone else gets REFUSED.",
    )
    unsigned_clients: list[Network] = Field(
        default_factory=list,
        description="Secondaries that cannot sign transfers with TSIG (Unbound): they may "
        "transfer unsigned, held by address alone. Each must also be in clients.",
    )
    notify: list[Endpoint] = Field(
        default_factory=list,
        description="Secondaries (ADDRESS:PORT) sent a NOTIFY on every change of the zone.",
    )
    tsig_key_file: Path | None = Field(
        default=None,
        description="TSIG key as `tsig-keygen -a hmac-sha256` writes it; when set, every "
        "client but the unsigned_clients must sign with it.",
    )
    lists: list[ListRef] = Field(
        default_factory=list,
        description="Configured lists served ('authority/list'); hashed (sha256) lists "
        "cannot be. Empty: every configured list that is not hashed.",
    )
    zonemd: bool = Field(
        default=True,
        description="Put a ZONEMD record (RFC 8976, SHA-384, simple scheme) at the apex, so "
        "a secondary can check that the zone it holds is the one blockd built.",
    )
    ttl: int = Field(default=60, ge=0, le=86400, description="TTL of the zone's records.")
    refresh: int = Field(
        default=300,
        ge=30,
        le=86400,
        description="SOA refresh: how often secondaries check for a change they were not "
        "notified of, seconds.",
    )
    expire: int = Field(
        default=1_209_600,
        ge=3600,
        le=2_419_200,
        description="SOA expire: how long a secondary keeps the zone when blockd cannot be "
        "reached, seconds (after it, the secondary drops the policy).",
    )
    history: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="Changes kept for IXFR; a secondary further behind gets the whole zone.",
    )

    @model_validator(mode="after")
    def _unsigned_are_clients(self) -> Self:
        allowed = [ipaddress.ip_network(c) for c in self.clients]
        for n in self.unsigned_clients:
            net = ipaddress.ip_network(n)
            if not any(net.version == a.version and net.subnet_of(a) for a in allowed):  # type: ignore[arg-type]
                raise ValueError(f"rpz.unsigned_clients: {n} is not in rpz.clients")
        if self.enabled and not self.clients:
            raise ValueError("rpz.clients: name the secondaries that may transfer the zone")
        return self


class TsigKeyError(ValueError):
    """A TSIG key file is unreadable or not in the format tsig-keygen writes."""


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key: its name, algorithm and secret."""

    name: str
    algorithm: str
    secret: bytes


_KEY_FILE = re.compile(
    r'\s*key\s+"?(?P<name>[A-Za-z0-9._-]{1,200})"?\s*\{\s*'
    r"(?P<body>[^{}]*)\}\s*;\s*",
)
_STATEMENT = re.compile(r'\s*(?P<k>algorithm|secret)\s+"?(?P<v>[A-Za-z0-9+/=.-]+)"?\s*;\s*')


def read_tsig_key(path: Path) -> TsigKey:
    """Read the one hmac-sha256 key of a file `tsig-keygen` wrote; TsigKeyError if it is not."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TsigKeyError(f"cannot read {path}: {e.strerror or e}") from None
    if len(raw) > 4096:
        raise TsigKeyError(f"{path}: too long for a TSIG key file ({len(raw)} bytes)")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise TsigKeyError(f"{path}: not ASCII text") from None
    text = re.sub(r"(#|//)[^\n]*", "", text)
    m = _KEY_FILE.fullmatch(text)
    if m is None:
        raise TsigKeyError(
            f'{path}: expected one key as tsig-keygen writes it: key "name" '
            '{ algorithm hmac-sha256; secret "base64"; };'
        )
    body, fields = m.group("body"), dict[str, str]()
    pos = 0
    while pos < len(body):
        s = _STATEMENT.match(body, pos)
        if s is None or s.group("k") in fields:
            raise TsigKeyError(f"{path}: key {m.group('name')!r}: expected algorithm and secret")
        fields[s.group("k")] = s.group("v")
        pos = s.end()
    if fields.get("algorithm", "").lower() != "hmac-sha256":
        raise TsigKeyError(f"{path}: algorithm must be hmac-sha256 (got {fields.get('algorithm')})")
    try:
        secret = base64.b64decode(fields.get("secret", ""), validate=True)
    except (binascii.Error, ValueError):
        raise TsigKeyError(f"{path}: the secret is not base64") from None
    if len(secret) < 16:
        raise TsigKeyError(f"{path}: the secret is {len(secret)} bytes; at least 16 are needed")
    return TsigKey(m.group("name").lower().rstrip("."), "hmac-sha256", secret)
