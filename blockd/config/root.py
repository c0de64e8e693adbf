"""The whole configuration: its sections together, read from TOML, and its JSON schema."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any, Self

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from blockd.config.admin import AdminConfig, SelfTestConfig
from blockd.config.audit import (
    RECORDS_NEED_THE_LOG,
    AuditConfig,
    RecordsConfig,
    retention_problem,
)
from blockd.config.base import ConfigError, _Section, duplicate_lists
from blockd.config.daemon import DaemonConfig
from blockd.config.demo import required_outside_demo, with_demo_values
from blockd.config.dns import DnsConfig
from blockd.config.feeds import GuardsConfig, ListConfig, StateConfig, TrustConfig
from blockd.config.fleet import FleetConfig
from blockd.config.http import HttpConfig
from blockd.config.rpz import RpzConfig

RECORDS_NEED_ONE_PROCESS = (
    "audit.records (subscriber records) needs workers = 1: a record names a subscriber, and "
    "nothing about a subscriber leaves the process that answered"
)


class Config(_Section):
    """The whole configuration."""

    demo: bool = Field(
        default=False,
        description="This configuration is the demo (make run): DNS forwards from the "
        "start, and the demo's values fill in the operator's settings it leaves out "
        "(dns.operator, http.notice operator_*, helpline_* and hotline_*, audit.origin and "
        "key_name), which are required otherwise. Never set it in production.",
    )
    trust: TrustConfig
    state: StateConfig = StateConfig()
    lists: list[ListConfig] = Field(default_factory=list)
    guards: GuardsConfig = GuardsConfig()
    # These tables hold settings only the demo may leave out; when absent they are created
    # before validation (_demo_values), so each missing setting is named by its own path.
    dns: DnsConfig
    http: HttpConfig
    audit: AuditConfig
    selftest: SelfTestConfig = SelfTestConfig()
    admin: AdminConfig = AdminConfig()
    daemon: DaemonConfig = DaemonConfig()
    fleet: FleetConfig | None = Field(
        default=None,
        description="Run as one node of a fleet sharing list versions over Redis; without "
        "it blockd runs alone.",
    )
    rpz: RpzConfig = RpzConfig()
    # SHA-256 of the file (or TOML text) this was read from; copies keep it.
    _source_sha256: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _demo_values(cls, data: object) -> object:
        return with_demo_values(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _unique_lists(self) -> Self:
        problem = duplicate_lists([c.ref for c in self.lists])
        if problem:
            raise ValueError(problem)
        e = self.dns.encrypted
        if e.enabled and not self.demo and (e.certificate is None or e.private_key is None):
            raise ValueError(
                "dns.encrypted: certificate and private_key are required with dot_listen or "
                "doh_listen (only the demo generates a certificate)"
            )
        if self.daemon.workers != 1 and self.audit.records.enabled:
            raise ValueError(f"daemon.workers: {RECORDS_NEED_ONE_PROCESS}")
        configured = [c.ref for c in self.lists]
        for i, ref in enumerate(self.rpz.lists):
            if ref not in configured:
                raise ValueError(
                    f"rpz.lists.{i}: {ref!r} is not a configured list "
                    f"(configured: {', '.join(configured) or 'none'})"
                )
        return self

    def digest(self) -> str:
        """Return the SHA-256 (hex) of the configuration file this was read from.

        This is what audited operator actions record, so that `sha256sum` of the file in
        force gives the same digest. A configuration that was never text (built in code)
        gets the digest of its JSON form.
        """
        return self._source_sha256 or hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def publishes_policy(self) -> bool:
        """Say whether each new policy snapshot is written as a file (workers map it)."""
        return self.state.publish_policy or self.daemon.worker_count() > 1

    def dns_start(self) -> str:
        """Return the DNS start strategy in force: fail-closed unless chosen or the demo."""
        return self.dns.start or ("forward" if self.demo else "fail-closed")

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
                "state": self.state.model_copy(update={"dir": fix(self.state.dir)}),
                "dns": self.dns.model_copy(
                    update={
                        "encrypted": self.dns.encrypted.model_copy(
                            update={
                                "certificate": fix(c)
                                if (c := self.dns.encrypted.certificate)
                                else None,
                                "private_key": fix(k)
                                if (k := self.dns.encrypted.private_key)
                                else None,
                            }
                        )
                    }
                ),
                "admin": self.admin.model_copy(
                    update={
                        "token_file": fix(self.admin.token_file) if self.admin.token_file else None,
                        "control_socket": fix(self.admin.control_socket)
                        if self.admin.control_socket
                        else None,
                    }
                ),
                "rpz": self.rpz.model_copy(
                    update={
                        "tsig_key_file": fix(self.rpz.tsig_key_file)
                        if self.rpz.tsig_key_file
                        else None
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
                "fleet": self.fleet.model_copy(
                    update={
                        "password_file": fix(self.fleet.password_file)
                        if self.fleet.password_file
                        else None
                    }
                )
                if self.fleet
                else None,
                "lists": [
                    c.model_copy(
                        update={
                            "source": fix_url(c.source),
                            "ca_file": fix(c.ca_file) if c.ca_file else None,
                            "manifest": fix_url(c.manifest) if c.manifest else None,
                            "tsig_key_file": fix(c.tsig_key_file) if c.tsig_key_file else None,
                        }
                    )
                    for c in self.lists
                ],
            }
        )


def parse(text: str, base: Path, origin: str = "config", *, data: bytes | None = None) -> Config:
    """Parse TOML text; paths resolve against base; data: the file's bytes, if read from one."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{origin}: not valid TOML: {e}") from None
    try:
        config = Config.model_validate(doc).resolved(base)
    except ValidationError as e:
        problems = [_problem(err) for err in e.errors(include_url=False)]
    else:
        source = text.encode("utf-8", "surrogatepass") if data is None else data
        config._source_sha256 = hashlib.sha256(source).hexdigest()
        return config
    # Checks across fields run only once every field is valid; run them on the raw
    # document too, so every problem is reported at once.
    problems += [p for p in cross_field_problems(doc) if p not in problems]
    raise ConfigError(
        f"{origin}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems)
    )


def _problem(err: Any) -> str:
    """Return one validation error as 'path: message (got value)': never a dump."""
    path = ".".join(str(p) for p in err["loc"]) or "(top)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if err["type"] == "missing" and (required := required_outside_demo(path)):
        return required
    if err["type"] == "missing" or isinstance(value, dict | list):
        return f"{path}: {msg}"
    shown = repr(_without_userinfo(value))
    return f"{path}: {msg} (got {shown[:60] + '...' if len(shown) > 60 else shown})"


def _without_userinfo(value: object) -> object:
    """Return value with any URL's user and password masked: a refused value is echoed."""
    if isinstance(value, str) and "://" in value and "@" in value:
        return re.sub(r"://[^/@]*@", "://***@", value)
    return value


def cross_field_problems(doc: object) -> list[str]:
    """Return the cross-field problems of a raw configuration document, one line each."""
    if not isinstance(doc, dict):
        return []
    out: list[str] = []
    lists = doc.get("lists")
    if isinstance(lists, list):
        refs = [
            f"{c.get('authority')}/{c.get('list')}"
            for c in lists
            if isinstance(c, dict) and isinstance(c.get("authority"), str)
        ]
        if problem := duplicate_lists(refs):
            out.append(f"lists: {problem}")
    audit = doc.get("audit")
    records = audit.get("records") if isinstance(audit, dict) else None
    if isinstance(audit, dict) and isinstance(records, dict):
        fields = RecordsConfig.model_fields
        low = records.get("keep_min_days", fields["keep_min_days"].default)
        high = records.get("keep_max_days", fields["keep_max_days"].default)
        numbers = isinstance(low, int | float) and isinstance(high, int | float)
        if numbers and (problem := retention_problem(low, high)):
            out.append(f"audit.records: {problem}")
        if records.get("enabled") is True and audit.get("enabled") is False:
            out.append(f"audit: {RECORDS_NEED_THE_LOG}")
    return out


def load(path: Path) -> Config:
    """Read and validate a configuration file."""
    try:
        data = path.read_bytes()
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as read_text
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    return parse(text, path.parent.resolve(), str(path), data=data)


def json_schema() -> dict[str, object]:
    """Return the JSON schema of the configuration."""
    return Config.model_json_schema()
