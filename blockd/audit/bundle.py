"""Audit bundles: what an operator exports and a regulator verifies offline.

A bundle is one JSON file holding a range of entries (canonical JSON, as logged), every
checkpoint the log has signed with the consistency proofs between successive ones, and a
range proof tying the entries to the latest checkpoint. The verifier needs nothing else
but the operator's public key (vkey): it checks every signature, every consistency proof,
that each entry is canonical and that the entries hash to the signed root; given the
checkpoint the regulator saw last time, it checks the log only grew. The leaf hashes the
log stored are included as hints, only to say *where* a tampered log first differs.
Witness cosignatures (C2SP tlog-cosignature) of each checkpoint travel beside it, so a
regulator given witness keys needs no earlier checkpoint to detect a fork or rollback.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from blockd.audit import canonical, cosignature, merkle, note
from blockd.audit.cosigned import CosignatureStore
from blockd.audit.log import MerkleLog
from blockd.audit.span import entry_span

FORMAT = "blockd-audit-bundle/1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(text, validate=True)


def export(
    log: MerkleLog, begin: int, end: int, *, previous: note.Checkpoint | None = None
) -> dict[str, object]:
    """Return a bundle of entries [begin, end) proven against the latest checkpoint."""
    notes = log.checkpoints()
    if not notes:
        raise ValueError("the log has no signed checkpoint yet")
    texts = [note.open_note(n, [log.signer.verifier])[0] for n in notes]
    cps = [note.Checkpoint.parse(text) for text in texts]
    size = cps[-1].size
    end = min(end, size)
    begin = min(begin, end)
    hashes = log.leaf_hashes(0, size)
    levels = merkle.TreeLevels(hashes)
    consistency = [
        [_b64(h) for h in levels.consistency_proof(a.size, b.size)]
        for a, b in itertools.pairwise(cps)
    ]
    left, right = levels.range_proof(begin, end, size)
    bundle: dict[str, object] = {
        "format": FORMAT,
        "origin": log.origin,
        "checkpoints": notes,
        "consistency": consistency,
        "begin": begin,
        "end": end,
        "entries": [data.decode() for _, data in log.entries(begin, end)],
        "leaf_hints": [_b64(h) for h in hashes[begin:end]],
        "range_proof": {"left": [_b64(h) for h in left], "right": [_b64(h) for h in right]},
        "cosignatures": _cosignatures(log, texts),
    }
    if previous is not None and previous.size <= size:
        bundle["previous"] = {
            "size": previous.size,
            "proof": [_b64(h) for h in levels.consistency_proof(previous.size, size)],
        }
    return bundle


def _cosignatures(log: MerkleLog, texts: Sequence[str]) -> list[list[str]]:
    """Return the witness cosignature lines kept for each checkpoint body, in order."""
    store = CosignatureStore(log.path)
    try:
        return [store.lines(text) for text in texts]
    finally:
        store.close()


@dataclass
class Verdict:
    """The outcome of verifying a bundle."""

    ok: bool
    message: str
    first_bad_index: int | None = None
    checkpoint: note.Checkpoint | None = None
    entries: list[dict[str, object]] = field(default_factory=list)
    begin: int = 0


def _fail(message: str, index: int | None = None) -> Verdict:
    return Verdict(False, message, index)


def verify(
    bundle: object,
    verifier: note.Verifier,
    previous: str | None = None,
    *,
    witnesses: Sequence[cosignature.CosignatureVerifier] = (),
    threshold: int | None = None,
) -> Verdict:
    """Check a bundle with only the operator's key; previous is a checkpoint note seen before.

    Given witness keys, the latest checkpoint must carry valid cosignatures from threshold of
    them (default: all).
    """
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        return _fail(f"not a {FORMAT} file")
    try:
        notes, consistency = bundle["checkpoints"], bundle["consistency"]
        begin, end = bundle["begin"], bundle["end"]
        entries, hints = bundle["entries"], bundle["leaf_hints"]
        left = [_unb64(h) for h in bundle["range_proof"]["left"]]
        right = [_unb64(h) for h in bundle["range_proof"]["right"]]
        proofs = [[_unb64(h) for h in p] for p in consistency]
        hint_hashes = [_unb64(h) for h in hints]
    except (KeyError, TypeError, ValueError) as e:
        return _fail(f"malformed bundle: {e}")
    if not (isinstance(notes, list) and notes and all(isinstance(n, str) for n in notes)):
        return _fail("malformed bundle: no checkpoints")
    if not (isinstance(begin, int) and isinstance(end, int) and isinstance(entries, list)):
        return _fail("malformed bundle: begin, end or entries")
    # 1. Every checkpoint is signed by the operator's key and names this log.
    cps: list[note.Checkpoint] = []
    for i, signed in enumerate(notes):
        try:
            text, _ = note.open_note(signed, [verifier])
            cp = note.Checkpoint.parse(text)
        except note.NoteError as e:
            return _fail(f"checkpoint {i}: {e}")
        if cp.origin != bundle.get("origin"):
            return _fail(f"checkpoint {i}: names log {cp.origin!r}, not {bundle.get('origin')!r}")
        cps.append(cp)
    # 2. Each checkpoint extends the one before it.
    if len(proofs) != len(cps) - 1:
        return _fail("malformed bundle: one consistency proof per pair of checkpoints needed")
    for i, (a, b) in enumerate(itertools.pairwise(cps)):
        if not merkle.verify_consistency(a.size, b.size, a.root, b.root, proofs[i]):
            return _fail(
                f"checkpoint {i + 1} (size {b.size}) does not extend checkpoint {i} "
                f"(size {a.size}): the log was rewritten"
            )
    latest = cps[-1]
    # 3. Witnesses saw this history: the latest checkpoint carries enough cosignatures.
    quorum = None
    if witnesses:
        quorum = _witnessed(bundle, notes[-1], len(notes), witnesses, threshold)
        if not quorum.ok:
            return _fail(
                f"latest checkpoint (size {latest.size}) not witnessed: {quorum.describe()}"
            )
    # 4. The checkpoint the regulator saw before is part of this history.
    if previous is not None:
        problem = _check_previous(previous, verifier, bundle, cps, latest)
        if problem:
            return _fail(problem)
    # 5. Entries: canonical, hashing to what the log stored, and to the signed root.
    if end - begin != len(entries) or end > latest.size or begin < 0:
        missing = begin + min(len(entries), max(end - begin, 0))
        return _fail(f"{entry_span(begin, end)} expected, {len(entries)} present", missing)
    decoded: list[dict[str, object]] = []
    hashes: list[bytes] = []
    first_bad: int | None = None
    for i, text in enumerate(entries):
        if not isinstance(text, str):
            return _fail(f"entry {begin + i} is not text", begin + i)
        data = text.encode()
        try:
            value = canonical.parse_canonical(data)
        except ValueError as e:
            return _fail(f"entry {begin + i} is not canonical JSON: {e}", begin + i)
        if not isinstance(value, dict):
            return _fail(f"entry {begin + i} is not an object", begin + i)
        decoded.append(dict(value))
        h = merkle.leaf_hash(data)
        hashes.append(h)
        if first_bad is None and (i >= len(hint_hashes) or hint_hashes[i] != h):
            first_bad = begin + i
    if not merkle.verify_range(begin, latest.size, hashes, left, right, latest.root):
        problem = f"entries do not hash to the signed root of checkpoint size {latest.size}"
        if first_bad is not None:
            return _fail(f"{problem}; first entry that differs: {first_bad}", first_bad)
        span = _locate(begin, hashes, cps)
        if span is None:
            return _fail(problem)
        return _fail(
            f"{problem}; the first difference lies in {entry_span(span[0], span[1])}", span[0]
        )
    witnessed = f"; cosigned by {', '.join(n for n, _ in quorum.valid)}" if quorum else ""
    return Verdict(
        True,
        f"OK: {entry_span(begin, end)} verified against checkpoint {latest.origin} size "
        f"{latest.size}, {len(cps)} checkpoints consistent{witnessed}",
        checkpoint=latest,
        entries=decoded,
        begin=begin,
    )


def _witnessed(
    bundle: dict[str, object],
    signed: str,
    count: int,
    witnesses: Sequence[cosignature.CosignatureVerifier],
    threshold: int | None,
) -> cosignature.Quorum:
    """Check the cosignatures the bundle carries for its latest checkpoint."""
    body = signed[: signed.rfind("\n\n") + 1]
    lines: list[str] = []
    carried = bundle.get("cosignatures")
    if isinstance(carried, list) and len(carried) == count and isinstance(carried[-1], list):
        lines = [line for line in carried[-1] if isinstance(line, str)]
    return cosignature.quorum(body, lines, witnesses, threshold)


def _check_previous(
    previous: str,
    verifier: note.Verifier,
    bundle: dict[str, object],
    cps: Sequence[note.Checkpoint],
    latest: note.Checkpoint,
) -> str | None:
    """Return what is wrong with the growth from the regulator's previous checkpoint."""
    try:
        old = note.Checkpoint.parse(note.open_note(previous, [verifier])[0])
    except note.NoteError as e:
        return f"previous checkpoint: {e}"
    if old.origin != latest.origin:
        return f"previous checkpoint is of log {old.origin!r}"
    if old.size > latest.size:
        return f"the log shrank: previous size {old.size}, now {latest.size}"
    for cp in cps:
        if cp.size == old.size:
            if cp.root != old.root:
                return f"fork: two different signed trees of size {old.size}"
            return None
    extra = bundle.get("previous")
    if isinstance(extra, dict) and extra.get("size") == old.size:
        try:
            proof = [_unb64(h) for h in extra["proof"]]
        except (TypeError, ValueError, KeyError):
            return "malformed proof from the previous checkpoint"
        if merkle.verify_consistency(old.size, latest.size, old.root, latest.root, proof):
            return None
        return f"fork: the log does not extend the previous checkpoint (size {old.size})"
    return f"no proof from previous size {old.size}; export with --previous"


def _locate(
    begin: int, hashes: Sequence[bytes], cps: Sequence[note.Checkpoint]
) -> tuple[int, int] | None:
    """Bound the first bad entry by the first checkpoint the entries fail to reproduce."""
    if begin != 0:
        return None
    frontier = merkle.CompactRange()
    previous = 0
    for cp in cps:
        while frontier.end < min(cp.size, len(hashes)):
            frontier.append(hashes[frontier.end])
        if cp.size <= len(hashes) and frontier.root() != cp.root:
            return previous, cp.size
        previous = cp.size
    return None


def dumps(bundle: dict[str, object]) -> str:
    """Return a bundle as JSON text."""
    return json.dumps(bundle, indent=1) + "\n"
