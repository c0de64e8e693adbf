"""The add-checkpoint request and the witness's judgement of it, without sockets or files.

C2SP tlog-witness: the body is `old <size>\\n`, up to 63 base64 consistency proof lines, an
empty line and a signed checkpoint. The witness answers 404 for an origin it does not know,
403 when no known log key signed, 400 for a malformed body or an old size above the new,
409 (with its own size) when the old size is not the one it holds or the same size has
another root, 422 when the consistency proof fails, and 200 with a cosignature otherwise.
A fork (409 at equal size, or 422) is evidence of a log showing two histories.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from blockd.audit import merkle, note

MAX_BODY = 64 * 1024  # a checkpoint with a few signatures and 63 proof lines is ~4 KB
MAX_PROOF_LINES = 63
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


class Refused(Exception):
    """The witness refuses a submission: HTTP status, a one-line reason, maybe evidence."""

    def __init__(self, status: int, message: str, *, size: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.size = size  # 409: the size the witness holds
        self.evidence = ""  # a slug when the refusal proves misbehaviour: fork, inconsistent


@dataclass(frozen=True)
class Submission:
    """A parsed add-checkpoint body."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str  # the signed checkpoint as sent
    origin: str  # its first line, not yet verified


@dataclass(frozen=True)
class Held:
    """The latest checkpoint a witness cosigned for one log."""

    checkpoint: note.Checkpoint
    note: str


def parse(body: bytes) -> Submission:
    """Parse a request body strictly; raise Refused(400) when it is malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8") from None
    head, sep, signed = text.partition("\n\n")
    if not sep:
        raise Refused(400, "no empty line between the old size and proof, and the checkpoint")
    lines = head.split("\n")
    old, proof_lines = lines[0], lines[1:]
    size = old.removeprefix("old ")
    if size == old or not _SIZE.fullmatch(size):
        raise Refused(400, "the first line must be 'old <decimal size>'")
    if len(proof_lines) > MAX_PROOF_LINES:
        raise Refused(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for i, line in enumerate(proof_lines):
        try:
            digest = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if len(digest) != 32 or base64.b64encode(digest).decode() != line:
            raise Refused(400, f"proof line {i + 1} is not a base64 SHA-256 hash")
        proof.append(digest)
    origin = signed.partition("\n")[0]
    if not origin:
        raise Refused(400, "the checkpoint has no origin line")
    return Submission(int(size), tuple(proof), signed, origin)


def judge(
    sub: Submission, keys: Sequence[note.Verifier], held: Held | None
) -> tuple[note.Checkpoint, str]:
    """Return the checkpoint to cosign and its body, or raise Refused saying why not."""
    try:
        text, _ = note.open_note(sub.note, keys)
    except note.NoteError as e:
        if e.reason in ("unknown-key", "bad-signature"):
            raise Refused(403, f"not signed by a key of log {sub.origin!r}: {e}") from None
        raise Refused(400, f"not a signed note: {e}") from None
    try:
        cp = note.Checkpoint.parse(text)
    except note.NoteError as e:
        raise Refused(400, str(e)) from None
    if sub.old_size > cp.size:
        raise Refused(400, f"old size {sub.old_size} is above the checkpoint size {cp.size}")
    size = held.checkpoint.size if held else 0
    if sub.old_size != size:
        raise Refused(409, f"the witness holds size {size}, not {sub.old_size}", size=size)
    if held is None:
        if sub.proof:
            raise Refused(422, "the proof from size 0 must be empty")
        return cp, text
    if cp.size == size:
        if cp.root != held.checkpoint.root:
            refused = Refused(409, f"fork: another root for size {size}", size=size)
            refused.evidence = "fork"
            raise refused
        if sub.proof:
            raise Refused(422, "the proof between equal sizes must be empty")
        return cp, text
    if not merkle.verify_consistency(size, cp.size, held.checkpoint.root, cp.root, sub.proof):
        refused = Refused(422, f"the consistency proof from size {size} to {cp.size} fails")
        refused.evidence = "inconsistent"
        raise refused
    return cp, text
