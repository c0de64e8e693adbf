"""Last-known-good: accepted envelopes and per-list state on disk, written atomically.

Layout under the state directory::

    lists/<authority>/<list>/<version>.dsse   accepted (or quarantined) envelopes
    lists/<authority>/<list>/<version>.body   their body files, when delivered beside
    lists/<authority>/<list>/state.json       which version is active, history, sync state
    trust/<version>.dsse                      accepted trust policy updates

Every file is written to a temporary name, fsynced, renamed over the old one, and the
directory fsynced, so a crash at any point leaves either the old or the new file whole.
An envelope is written before the state that names it: a crash between the two leaves an
unreferenced file, never a reference to a missing one. Nothing here is trusted on load:
envelopes are verified again against the pinned trust policy.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from blockd.files import atomic_write

HISTORY = 3  # previous versions kept for operator rollback
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


@dataclass
class ListState:
    """What the store remembers about one list between runs."""

    active: int | None = None  # version in force
    highest: int | None = None  # highest version ever accepted: the anti-rollback mark
    previous: list[int] = field(default_factory=list)  # older accepted versions, newest last
    held_at_or_below: int | None = None  # after an operator rollback, ignore versions <= this
    quarantined: int | None = None  # verified version waiting for operator approval
    etag: str | None = None
    last_modified: str | None = None
    last_attempt: float | None = None  # unix seconds
    last_success: float | None = None
    last_error: str | None = None
    last_error_reason: str | None = None

    @classmethod
    def from_json(cls, data: bytes) -> ListState:
        """Parse state.json; unknown keys are ignored so older blockd can read newer state."""
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("state.json is not an object")
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_json(self) -> bytes:
        """Serialise."""
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode() + b"\n"


@dataclass(frozen=True)
class ListStatus:
    """What an operator sees for one configured list."""

    ref: str
    version: int | None
    entries: int
    issued_at: datetime | None
    expires: datetime | None
    state: ListState

    def fresh(self, now: datetime) -> bool:
        """Say whether the enforced version has not expired."""
        return self.expires is not None and now < self.expires


class ListStore:
    """Files of one state directory."""

    def __init__(self, root: Path) -> None:
        """Use root (created on first write)."""
        self.root = root

    def _dir(self, authority: str, list_id: str) -> Path:
        if not (_NAME.fullmatch(authority) and _NAME.fullmatch(list_id)):
            raise ValueError(f"bad list name {authority}/{list_id}")
        return self.root / "lists" / authority / list_id

    def state(self, authority: str, list_id: str) -> ListState:
        """Read a list's state; a missing or unreadable file gives an empty state."""
        path = self._dir(authority, list_id) / "state.json"
        try:
            return ListState.from_json(path.read_bytes())
        except FileNotFoundError:
            return ListState()
        except (OSError, ValueError, TypeError):
            return ListState()

    def save_state(self, authority: str, list_id: str, state: ListState) -> None:
        """Write a list's state atomically."""
        atomic_write(self._dir(authority, list_id) / "state.json", state.to_json())

    def save_version(
        self, authority: str, list_id: str, version: int, envelope: bytes, body: bytes | None
    ) -> None:
        """Store an accepted envelope (and body) before any state refers to it."""
        d = self._dir(authority, list_id)
        if body is not None:
            atomic_write(d / f"{version}.body", body)
        atomic_write(d / f"{version}.dsse", envelope)

    def version_paths(self, authority: str, list_id: str, version: int) -> tuple[Path, Path]:
        """Return where a version's envelope and body file are (or would be) stored."""
        d = self._dir(authority, list_id)
        return d / f"{version}.dsse", d / f"{version}.body"

    def load_version(
        self, authority: str, list_id: str, version: int
    ) -> tuple[bytes, bytes | None]:
        """Read a stored envelope and its body (None when it has none)."""
        d = self._dir(authority, list_id)
        envelope = (d / f"{version}.dsse").read_bytes()
        body_path = d / f"{version}.body"
        return envelope, body_path.read_bytes() if body_path.exists() else None

    def prune(self, authority: str, list_id: str, state: ListState) -> None:
        """Delete stored versions the state no longer refers to, and stray temp files."""
        keep = {v for v in [state.active, state.quarantined, *state.previous] if v is not None}
        d = self._dir(authority, list_id)
        if not d.is_dir():
            return
        for path in d.iterdir():
            stem = path.name.split(".", 1)[0]
            if path.name.startswith(".") or (stem.isdigit() and int(stem) not in keep):
                path.unlink(missing_ok=True)

    def trust_updates(self) -> list[bytes]:
        """Return stored trust policy updates in version order."""
        d = self.root / "trust"
        if not d.is_dir():
            return []
        files = sorted((p for p in d.glob("*.dsse") if p.stem.isdigit()), key=lambda p: int(p.stem))
        return [p.read_bytes() for p in files]

    def save_trust(self, version: int, envelope: bytes) -> None:
        """Store an accepted trust policy update."""
        atomic_write(self.root / "trust" / f"{version}.dsse", envelope)

    def ref_key(self) -> bytes:
        """Return the secret for opaque entry references, creating it (mode 0600) once."""
        path = self.root / "ref.key"
        try:
            data = path.read_bytes()
            if len(data) == 32:
                return data
        except FileNotFoundError:
            pass
        data = os.urandom(32)
        atomic_write(path, data, mode=0o600)
        return data
