"""What every configuration section shares: strictness, and validated address types."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only spaces")
    return value


Text = Annotated[str, AfterValidator(_not_blank)]
Seconds = Annotated[float, Field(gt=0, le=7 * 86400)]
Port = Annotated[int, Field(ge=1, le=65535)]


def _endpoint(value: str) -> str:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            "must be ADDRESS:PORT with a literal IP, e.g. 127.0.0.1:5300 or [::1]:53"
        ) from None
    if not (sep and port.isascii() and port.isdigit() and int(port) < 65536):
        raise ValueError("the port must be a number from 0 to 65535 (0: any free port)")
    return value


def duplicate_lists(refs: list[str]) -> str | None:
    """Say which lists are configured more than once, if any."""
    dupes = sorted({r for r in refs if refs.count(r) > 1})
    return f"lists configured twice: {', '.join(dupes)}" if dupes else None


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


Origin = Annotated[str, AfterValidator(_origin)]


def split_endpoint(value: str) -> tuple[str, int]:
    """Return (address, port) of a validated ADDRESS:PORT."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class ListenError(OSError):
    """A listener could not be opened; the message names it: `dns udp 127.0.0.1:5300: ...`."""

    def __str__(self) -> str:
        """Return the message alone, without the errno prefix."""
        return str(self.strerror)


@contextlib.contextmanager
def binding(kind: str, host: str, port: int) -> Iterator[None]:
    """Name the listener (kind, ADDRESS:PORT) in the error if opening it fails."""
    try:
        yield
    except ListenError:
        raise
    except OSError as e:
        reason = os.strerror(e.errno).lower() if e.errno else str(e)
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ListenError(e.errno, f"{kind} {where}: {reason}") from None
