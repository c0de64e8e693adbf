"""The whole configuration: its sections together, read from TOML, and its JSON schema."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Self

from pydantic import Field, ValidationError, model_validator

from blockd.config.admin import AdminConfig, SelfTestConfig
from blockd.config.audit import AuditConfig
from blockd.config.base import ConfigError, _Section
from blockd.config.dns import DnsConfig
from blockd.config.feeds import GuardsConfig, ListConfig, StateConfig, TrustConfig
from blockd.config.http import HttpConfig


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
