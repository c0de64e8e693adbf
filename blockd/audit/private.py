"""Audit files are the operator's alone: every file 0600, every directory 0700, any umask.

SQLite creates a database's `-wal`, `-shm` and `-journal` files with the database file's
mode, so a database made 0600 before SQLite first opens it keeps its companions 0600 too.
Files an older blockd left with wider modes are narrowed when the log is next opened.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """Create path (and its parents) if needed and make it 0700; return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(PermissionError):  # a directory not ours: its owner decides
        if path.stat().st_mode & 0o777 != 0o700:
            path.chmod(0o700)
    return path


def private_file(path: Path) -> None:
    """Make path 0600 if it exists."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_mode & 0o777 != 0o600:
            path.chmod(0o600)


def private_database(path: Path) -> None:
    """Create the SQLite file at path as 0600 (before SQLite does), and narrow its companions."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for companion in (path, *(path.with_name(path.name + s) for s in SQLITE_COMPANIONS)):
        private_file(companion)
