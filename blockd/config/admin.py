"""The operator's sections: the admin listener and the self-tests."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from blockd.config.base import Endpoint, _Section


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
    control_socket: Path | None = Field(
        default=None,
        description="The control channel: a Unix socket (mode 0600) through which `blockd "
        "sync`, `approve`, `rollback`, `reload`, `selftest`, `status` and `check` reach the "
        "running daemon; whoever may open it (root, blockd's user) may operate blockd. "
        "Default: <state dir>/control.sock.",
    )
    ready_needs_upstream: bool = Field(
        default=True,
        description="/readyz answers 503 while no upstream resolver answers (each down after "
        "3 failed attempts in a row), so a load balancer moves clients to another resolver; "
        "false: readiness is about the lists alone.",
    )

    def control_path(self, state_dir: Path) -> Path:
        """Return the control socket's path (the configured one, or in the state directory)."""
        return self.control_socket or state_dir / "control.sock"
