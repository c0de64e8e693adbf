"""Configuration: TOML, validated strictly, every error reported at once with its path.

Relative paths are resolved against the configuration file's directory. The JSON schema
in config/blockd.schema.json is generated from these models (`blockd config-schema`).

`root` holds the whole `Config` and reads it; each other module holds the sections of one
part of blockd, and `base` what they share.
"""

from blockd.config.admin import AdminConfig, SelfTestConfig
from blockd.config.audit import AuditConfig, RecordsConfig
from blockd.config.base import (
    ConfigError,
    Endpoint,
    IPv4,
    IPv6,
    ListenError,
    Network,
    Port,
    Seconds,
    binding,
    split_endpoint,
)
from blockd.config.dns import DnsConfig
from blockd.config.feeds import (
    GuardsConfig,
    ListConfig,
    ProtectedName,
    StateConfig,
    TrustConfig,
    rpz_endpoint,
)
from blockd.config.fleet import FleetConfig
from blockd.config.http import HttpConfig
from blockd.config.root import Config, json_schema, load, parse
from blockd.config.rpz import RpzConfig, TsigKey, TsigKeyError, read_tsig_key

__all__ = [
    "AdminConfig",
    "AuditConfig",
    "Config",
    "ConfigError",
    "DnsConfig",
    "Endpoint",
    "FleetConfig",
    "GuardsConfig",
    "HttpConfig",
    "IPv4",
    "IPv6",
    "ListConfig",
    "ListenError",
    "Network",
    "Port",
    "ProtectedName",
    "RecordsConfig",
    "RpzConfig",
    "Seconds",
    "SelfTestConfig",
    "StateConfig",
    "TrustConfig",
    "TsigKey",
    "TsigKeyError",
    "binding",
    "json_schema",
    "load",
    "parse",
    "read_tsig_key",
    "rpz_endpoint",
    "split_endpoint",
]
