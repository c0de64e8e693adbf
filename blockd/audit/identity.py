"""A log's names never change: its origin, and the name of the key that signs it.

Both are in every checkpoint a regulator holds (the origin is its first line, the key name
is in its signature line and key hash), so a log kept under one name and signed under
another would break every verifier. The origin is recorded in the log when it is first
opened; a log from before that records it through its last checkpoint. The key name is
the one in the key file, fixed when the key was made.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from blockd.audit import note


def kept_origin(db: sqlite3.Connection) -> str | None:
    """Return the origin the log in db keeps, or None before anything names it."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()
        if row is not None:
            return bytes(row[0]).decode("utf-8", "replace")
    if "checkpoints" in tables:
        row = db.execute("SELECT note FROM checkpoints ORDER BY rowid DESC LIMIT 1").fetchone()
        if row is not None:
            return str(row[0]).split("\n", 1)[0]
    return None


def origin_changed(path: Path, kept: str, configured: str) -> str:
    """Say that the log at path keeps another origin than the configured one."""
    return (
        f"audit.origin: the log {path} is named {kept!r}, not {configured!r}: a log's origin "
        "never changes (set audit.origin back, or keep a new log in another audit.dir)"
    )


def key_renamed(path: Path, kept: str, configured: str) -> str:
    """Say that the log key at path has another name than the configured one."""
    return (
        f"audit.key_name: the log key {path} is named {kept!r}, not {configured!r}: a log's "
        "key name never changes (set audit.key_name to it, or keep a new log in another "
        "audit.dir)"
    )


def name_changes(directory: Path, origin: str, key_name: str) -> list[str]:
    """Say, one line each, where origin and key_name differ from the log kept in directory.

    Reads only: nothing is created, so a check run as another user (root) leaves no file
    behind that the daemon could not write.
    """
    out: list[str] = []
    db_path, key_path = directory / "log.db", directory / "log.key"
    if db_path.exists():
        try:
            kept = _read_origin(db_path)
        except sqlite3.Error as e:
            out.append(f"audit.dir: cannot read the log {db_path}: {e}")
        else:
            if kept is not None and kept != origin:
                out.append(origin_changed(db_path, kept, origin))
    if key_path.exists():
        try:
            name = note.Signer.from_skey(key_path.read_text("ascii").strip()).name
        except (OSError, UnicodeDecodeError, note.NoteError) as e:
            out.append(f"audit.dir: {key_path} is not a usable log key: {e}")
        else:
            if name != key_name:
                out.append(key_renamed(key_path, name, key_name))
    return out


def _read_origin(path: Path) -> str | None:
    """Read the origin of the log at path without writing anything next to it."""
    wal_open = all(path.with_name(path.name + s).exists() for s in ("-wal", "-shm"))
    # A log closed cleanly has no -wal: read the file as it is. One in use (or not closed
    # cleanly) has both, and a read-only connection uses them without creating any.
    mode = "mode=ro" if wal_open else "immutable=1"
    db = sqlite3.connect(f"{path.as_uri()}?{mode}", uri=True)
    try:
        return kept_origin(db)
    finally:
        db.close()
