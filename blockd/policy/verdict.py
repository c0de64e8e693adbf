"""The reason that travels with every enforcement decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HostAction = Literal["notice", "nxdomain"]
Action = Literal["notice", "nxdomain", "route"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why something was blocked or routed; goes to metrics and audit, never to the client.

    `action` is what the answer does: `notice` (send to the notice page), `nxdomain`, or
    `route` (send the host to the URL proxy). `entry_ref` is opaque: a keyed digest that lets
    the operator, holding the key and the list, find the matched entry for an appeal, and
    tells nobody else anything. `probe` says the matched entry is one of the authority's
    self-test entries (so counts can keep blockd's own self-tests apart from real traffic).
    """

    action: Action
    authority: str
    list: str
    version: int
    entry_ref: str
    probe: bool = False


@dataclass(frozen=True, slots=True)
class ListSource:
    """One enforced list version as the snapshot knows it."""

    authority: str
    list: str
    version: int
    action: HostAction = "notice"

    @property
    def ref(self) -> str:
        """Return 'authority/list'."""
        return f"{self.authority}/{self.list}"
