"""Last-known-good: accepted envelopes and per-list state on disk, written atomically.

Layout under the state directory::

    lists/<authority>/<list>/<version>.dsse   accepted (or quarantined) envelopes
    lists/<authority>/<list>/<version>.body   their body files, when delivered beside
    lists/<authority>/<list>/state.json       which version is active, history, sync state
    trust/<version>.dsse                      accepted trust policy updates

Every file is written to a temporary name, fsynced, renamed over the old one, and the
directory fsynced, so a crash at any point leaves either the old or the new file whole.
List content is not for other users of the machine: files are mode 0600 and directories
0700 (the state directory itself included), whatever the umask; `secure` tightens a state
directory an older blockd wrote (0644 files) when blockd starts.
An envelope is written before the state that names it: a crash between the two leaves an
unreferenced file, never a reference to a missing one. Nothing here is trusted on load:
envelopes are verified again against the pinned trust policy.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from blockd.files import atomic_write

log = logging.getLogger(__name__)
FILE_MODE = 0o600
DIR_MODE = 0o700
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

    def _write(self, path: Path, data: bytes) -> None:
        atomic_write(path, data, mode=FILE_MODE, dir_mode=DIR_MODE)

    def secure(self) -> None:
        """Make the state directory 0700 and what it holds of lists 0600 (0700 directories).

        Older blockd wrote them 0644 under a 0750 directory; this runs at every start. A
        file that cannot be changed (another owner) is logged, not fatal.
        """
        if not self.root.is_dir():
            return  # made private on the first write
        try:
            os.chmod(self.root, DIR_MODE)
        except OSError as e:
            log.warning("state directory %s: cannot make it private: %s", self.root, e)
            return
        paths = [self.root / "ref.key"]
        for top in (self.root / "lists", self.root / "trust"):
            paths.append(top)
            for dirpath, dirnames, filenames in os.walk(top):
                here = Path(dirpath)
                paths += [here / name for name in (*dirnames, *filenames)]
        for path in paths:
            try:
                if path.is_symlink() or not path.exists():
                    continue
                os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)
            except OSError as e:
                log.warning("%s: cannot make it private: %s", path, e)

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
        self._write(self._dir(authority, list_id) / "state.json", state.to_json())

    def save_version(
        self, authority: str, list_id: str, version: int, envelope: bytes, body: bytes | None
    ) -> None:
        """Store an accepted envelope (and body) before any state refers to it."""
        d = self._dir(authority, list_id)
        if body is not None:
            self._write(d / f"{version}.body", body)
        self._write(d / f"{version}.dsse", envelope)

    def version_paths(self, authority: str, list_id: str, version: int) -> tuple[Path, Path]:
        """Return where a version's envelope and body file are (or would be) stored."""
        d = self._dir(authority, list_id)
        return d / f"{version}.dsse", d / f"{version}.body"

    def zone_path(self, authority: str, list_id: str, version: int) -> Path:
        """Return where the zone a version was transferred as is kept (RPZ lists)."""
        return self._dir(authority, list_id) / f"{version}.zone"

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
        self._write(self.root / "trust" / f"{version}.dsse", envelope)

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
        self._write(path, data)
        return data
