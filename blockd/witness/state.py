"""What a witness keeps on disk: the latest cosigned checkpoint per log, and evidence.

`checkpoints/<origin, percent-encoded>` holds the signed checkpoint note last cosigned for
that log, replaced atomically (write, fsync, rename, fsync the directory) before the
cosignature is returned. `evidence/` holds one JSON file per refused fork: the checkpoint
held, the checkpoint submitted (with the log's signature) and the proof, which together
show the log signed two histories.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from blockd.audit import note
from blockd.files import atomic_write
from blockd.witness.protocol import Held


class WitnessState:
    """The state directory of one witness."""

    def __init__(self, directory: Path) -> None:
        """Use directory (created, mode 0700, on first use)."""
        self.directory = directory
        self.checkpoints = directory / "checkpoints"
        self.evidence = directory / "evidence"
        for d in (directory, self.checkpoints, self.evidence):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, origin: str) -> Path:
        return self.checkpoints / quote(origin, safe="")

    def held(self, origin: str) -> Held | None:
        """Return the checkpoint last cosigned for origin, if any."""
        try:
            signed = self._path(origin).read_text("utf-8")
        except FileNotFoundError:
            return None
        split = signed.rfind("\n\n")
        return Held(note.Checkpoint.parse(signed[: split + 1]), signed)

    def hold(self, origin: str, signed: str) -> None:
        """Record signed as the latest cosigned checkpoint of origin, durably."""
        atomic_write(self._path(origin), signed.encode(), mode=0o600)

    def keep_evidence(
        self, kind: str, held: Held | None, submitted: str, old_size: int, proof: Sequence[bytes]
    ) -> Path:
        """Write one evidence file for a refused submission; return its path."""
        now = datetime.now(UTC)
        record = {
            "kind": kind,
            "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "held": held.note if held else None,
            "submitted": submitted,
            "old_size": old_size,
            "proof": [base64.b64encode(h).decode() for h in proof],
        }
        origin = submitted.partition("\n")[0]
        stem = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{kind}-{quote(origin, safe='')}"
        data = (json.dumps(record, indent=1) + "\n").encode()
        for n in range(1000):
            path = self.evidence / f"{stem}-{n}.json"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return path
        raise OSError(f"too many evidence files named {stem} in one second ({time.time():.0f})")
