"""Real bundles for the independent verifier: a log on disk, exported by blockd.

Kept apart from test_spec_verifier.py so that the verifier's module imports nothing of
blockd.audit: the verifier knows the format only from docs/AUDIT-BUNDLE.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blockd.audit import bundle, note
from blockd.audit.log import open_log

ORIGIN = "isp.example/blockd/spec"
# Strings that exercise every escape rule of canonical JSON, and keys that sort differently
# by UTF-16 code unit than by code point (U+1F600 is a surrogate pair, below U+FF61).
STRINGS = ["plain", 'quote " backslash \\ slash /', "tab\tnew\nline\x01\x1f\x7f", "é€😀"]
BATCHES = (1, 1, 2, 5, 8, 13, 3)  # 33 entries, a checkpoint after each batch


def make_bundles(root: Path) -> dict[str, Any]:
    """Return the operator's vkey, the log's checkpoints and bundles of several ranges."""
    log = open_log(root / "audit", ORIGIN, "spec-operator")
    size, checkpoints = 0, []
    for count in BATCHES:
        log.append(
            [
                {
                    "time": f"2026-11-01T00:{n // 60:02d}:{n % 60:02d}Z",
                    "type": "spec",
                    "n": n,
                    "neg": -n,
                    "text": STRINGS[n % 4],
                    "flag": bool(n % 2),
                    "none": None,
                    "list": [1, [2, {"z": 1, "a": 2}]],
                    "é": 1,
                    "\U0001f600": 2,
                    "\uff61": 3,
                }
                for n in range(size, size + count)
            ]
        )
        size += count
        checkpoints.append(log.sign_checkpoint(f"2026-11-01T01:00:{size:02d}Z"))
    previous = note.Checkpoint.parse(note.open_note(checkpoints[2], [log.signer.verifier])[0])
    out = {
        "vkey": log.signer.verifier.vkey,
        "size": size,
        "checkpoints": checkpoints,
        "whole": bundle.dumps(bundle.export(log, 0, size)),
        "part": bundle.dumps(bundle.export(log, 3, 17)),
        "one": bundle.dumps(bundle.export(log, 16, 17)),
        "empty": bundle.dumps(bundle.export(log, 0, 0)),
        "at-end": bundle.dumps(bundle.export(log, size, size)),
        "from-previous": bundle.dumps(bundle.export(log, 4, size, previous=previous)),
    }
    log.close()
    return out
