"""Witness cosignatures of the log's checkpoints, kept in the log's own database.

A separate table (`cosignatures`) beside `checkpoints`, keyed by the checkpoint body a
cosignature signs and the witness (name+key ID); its own connection, so the log's writer
never waits for it. Only lines that verified against the configured witness key are stored.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS cosignatures (
    body    TEXT NOT NULL,
    witness TEXT NOT NULL,
    size    INTEGER NOT NULL,
    time    INTEGER NOT NULL,
    line    TEXT NOT NULL,
    PRIMARY KEY (body, witness)
);
"""


class CosignatureStore:
    """Cosignatures by checkpoint body, in the log database at path."""

    def __init__(self, path: Path) -> None:
        """Open (creating the table in) the log database at path."""
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def add(self, body: str, witness: str, size: int, timestamp: int, line: str) -> None:
        """Keep a verified cosignature line of body by witness (the newest one wins)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO cosignatures (body, witness, size, time, line)"
                " VALUES (?, ?, ?, ?, ?)",
                (body, witness, size, timestamp, line),
            )

    def lines(self, body: str) -> list[str]:
        """Return every cosignature line kept for a checkpoint body, by witness."""
        with self._lock:
            rows = self._db.execute(
                "SELECT line FROM cosignatures WHERE body = ? ORDER BY witness", (body,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def latest(self, witness: str) -> tuple[int, int] | None:
        """Return (tree size, cosignature time) of the largest checkpoint witness cosigned."""
        with self._lock:
            row = self._db.execute(
                "SELECT size, time FROM cosignatures WHERE witness = ?"
                " ORDER BY size DESC, time DESC LIMIT 1",
                (witness,),
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))
