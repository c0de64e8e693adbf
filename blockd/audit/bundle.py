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

from blockd.audit import anomalies, canonical, cosignature, merkle, note
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
    log: MerkleLog,
    begin: int,
    end: int,
    *,
    previous: note.Checkpoint | None = None,
    witnessed: int = 0,
) -> dict[str, object]:
    """Return a bundle of entries [begin, end) proven against the latest checkpoint.

    With witnessed=N, the bundle ends at the newest checkpoint that carries N cosignatures,
    if one does: a checkpoint signed since (the log keeps signing) has none yet, and a
    bundle ending there would fail its regulator's --witness-key check.
    """
    notes = log.checkpoints()
    if not notes:
        raise ValueError("the log has no signed checkpoint yet")
    texts = [note.open_note(n, [log.signer.verifier])[0] for n in notes]
    cosigned = _cosignatures(log, texts)
    if witnessed:
        last = max((i for i, c in enumerate(cosigned) if len(c) >= witnessed), default=None)
        if last is not None:
            notes, texts, cosigned = notes[: last + 1], texts[: last + 1], cosigned[: last + 1]
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
        "cosignatures": cosigned,
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
    warnings: list[str] = field(default_factory=list)  # true of a bundle that verified
    anomalies: list[anomalies.Anomaly] = field(default_factory=list)
    unshown: tuple[int, int] | None = None  # entries [a, b) never shown to the regulator


def _fail(message: str, index: int | None = None) -> Verdict:
    return Verdict(False, message, index)


class Malformed(ValueError):
    """A bundle field is missing or not what the format says."""


def load(text: str | bytes) -> object:
    """Parse bundle JSON; refuse duplicate keys, NaN and the infinities, and deep nesting."""

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        obj = dict(items)
        if len(obj) != len(items):
            keys = [k for k, _ in items]
            raise Malformed(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
        return obj

    def constant(name: str) -> object:
        raise Malformed(f"{name} is not a JSON number")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except RecursionError:
        raise Malformed("nested too deeply") from None
    except UnicodeDecodeError as e:
        raise Malformed(f"not UTF-8: {e}") from None


def _field(bundle: dict[str, object], key: str) -> object:
    if key not in bundle:
        raise Malformed(f"no {key!r}")
    return bundle[key]


def _index(value: object, what: str) -> int:
    """Return a non-negative integer below 2**63 (a bool is not one)."""
    if type(value) is not int or not 0 <= value < 1 << 63:
        raise Malformed(f"{what} must be an integer in [0, 2**63), got {str(value)[:40]!r}")
    return value


def _hashes(value: object, what: str) -> list[bytes]:
    """Return a list of base64 SHA-256 hashes as bytes."""
    if not isinstance(value, list):
        raise Malformed(f"{what} must be a list of base64 hashes")
    out = []
    for i, text in enumerate(value):
        try:
            h = _unb64(text)
        except (ValueError, TypeError):
            raise Malformed(f"{what}[{i}] is not base64") from None
        if len(h) != merkle.HASH_SIZE:
            raise Malformed(f"{what}[{i}] is {len(h)} bytes, not {merkle.HASH_SIZE}")
        out.append(h)
    return out


def verify(
    bundle: object,
    verifier: note.Verifier,
    previous: str | None = None,
    *,
    witnesses: Sequence[cosignature.CosignatureVerifier] = (),
    threshold: int | None = None,
    origin: str | None = None,
    allow_gap: bool = False,
) -> Verdict:
    """Check a bundle with only the operator's key; previous is a checkpoint note seen before.

    Given witness keys, the latest checkpoint must carry valid cosignatures from threshold of
    them (default: all). origin, if given, is the log the bundle must be of. Entries between
    the previous checkpoint (or the log's start) and the bundle's first entry were never
    shown: that fails unless allow_gap, and is then a warning. Duplicate and backdated
    entries are reported in `anomalies`; they do not fail verification here.
    """
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        return _fail(f"not a {FORMAT} file")
    try:
        notes, consistency = _field(bundle, "checkpoints"), _field(bundle, "consistency")
        begin, end = _index(_field(bundle, "begin"), "begin"), _index(_field(bundle, "end"), "end")
        entries = _field(bundle, "entries")
        hint_hashes = _hashes(_field(bundle, "leaf_hints"), "leaf_hints")
        range_proof = _field(bundle, "range_proof")
        if not isinstance(range_proof, dict):
            raise Malformed("range_proof must be an object")
        left = _hashes(_field(range_proof, "left"), "range_proof.left")
        right = _hashes(_field(range_proof, "right"), "range_proof.right")
        if not isinstance(consistency, list):
            raise Malformed("consistency must be a list")
        proofs = [_hashes(p, f"consistency[{i}]") for i, p in enumerate(consistency)]
        logged_origin = _field(bundle, "origin")
    except Malformed as e:
        return _fail(f"malformed bundle: {e}")
    if not (isinstance(notes, list) and notes and all(isinstance(n, str) for n in notes)):
        return _fail("malformed bundle: no checkpoints")
    if not isinstance(entries, list):
        return _fail("malformed bundle: entries must be a list")
    if not isinstance(logged_origin, str):
        return _fail("malformed bundle: origin must be text")
    if origin is not None and logged_origin != origin:
        return _fail(f"the bundle is of log {logged_origin!r}, not the expected {origin!r}")
    # 1. Every checkpoint is signed by the operator's key and names this log.
    cps: list[note.Checkpoint] = []
    for i, signed in enumerate(notes):
        try:
            text, _ = note.open_note(signed, [verifier])
            cp = note.Checkpoint.parse(text)
        except note.NoteError as e:
            return _fail(f"checkpoint {i}: {e}")
        if cp.origin != logged_origin:
            return _fail(f"checkpoint {i}: names log {cp.origin!r}, not {logged_origin!r}")
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
    seen = 0
    if previous is not None:
        problem, seen = _check_previous(previous, verifier, bundle, cps, latest, origin)
        if problem:
            return _fail(problem)
    # 5. Entries: canonical, hashing to what the log stored, and to the signed root.
    if begin > end:
        return _fail(f"malformed bundle: begin {begin} is after end {end}")
    if end > latest.size:
        return _fail(
            f"entries up to {end} claimed, but the latest checkpoint has size {latest.size}"
        )
    if end - begin != len(entries):
        missing = begin + min(len(entries), end - begin)
        return _fail(f"{entry_span(begin, end)} expected, {len(entries)} present", missing)
    decoded: list[dict[str, object]] = []
    hashes: list[bytes] = []
    datas: list[bytes] = []
    first_bad: int | None = None
    for i, text in enumerate(entries):
        if not isinstance(text, str):
            return _fail(f"entry {begin + i} is not text", begin + i)
        data = text.encode("utf-8", "surrogatepass")
        try:
            value = canonical.parse_canonical(data)
        except ValueError as e:
            return _fail(f"entry {begin + i} is not canonical JSON: {e}", begin + i)
        if not isinstance(value, dict):
            return _fail(f"entry {begin + i} is not an object", begin + i)
        decoded.append(dict(value))
        datas.append(data)
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
    # 6. Every entry since the previous checkpoint was shown, unless the regulator allows a gap.
    warnings: list[str] = []
    unshown = (seen, begin) if begin > seen else None
    if unshown is not None:
        since = (
            f"your previous checkpoint has size {seen}"
            if previous is not None
            else "no previous checkpoint was given"
        )
        gap = f"{entry_span(*unshown)} not shown: {since}, the bundle starts at entry {begin}"
        if not allow_gap:
            return _fail(f"{gap}; ask for an export from entry {seen}, or pass --allow-gap", seen)
        warnings.append(f"{gap} (allowed by --allow-gap)")
    if end < latest.size:
        warnings.append(
            f"{entry_span(end, latest.size)} after this bundle's range not shown: "
            f"next time, ask for an export from entry {end}"
        )
    found = anomalies.find(
        begin,
        datas,
        [e.get("time") for e in decoded],
        [(cp.size, anomalies.checkpoint_time(cp.extensions)) for cp in cps],
    )
    return Verdict(
        True,
        f"OK: {entry_span(begin, end)} verified against checkpoint {latest.origin} size "
        f"{latest.size}, {len(cps)} checkpoints consistent{witnessed}",
        checkpoint=latest,
        entries=decoded,
        begin=begin,
        warnings=warnings,
        anomalies=found,
        unshown=unshown,
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
    origin: str | None,
) -> tuple[str | None, int]:
    """Return what is wrong with growth from the regulator's previous checkpoint, and its size."""
    try:
        old = note.Checkpoint.parse(note.open_note(previous, [verifier])[0])
    except note.NoteError as e:
        return f"previous checkpoint: {e}", 0
    if origin is not None and old.origin != origin:
        return f"the previous checkpoint is of log {old.origin!r}, not the expected {origin!r}", 0
    if old.origin != latest.origin:
        return (
            f"the previous checkpoint is of log {old.origin!r}, the bundle of {latest.origin!r}",
            0,
        )
    if old.size > latest.size:
        return f"the log shrank: previous size {old.size}, now {latest.size}", 0
    for cp in cps:
        if cp.size == old.size:
            if cp.root != old.root:
                return f"fork: two different signed trees of size {old.size}", 0
            return None, old.size
    extra = bundle.get("previous")
    # An integer, as §2 says: True == 1 and 1.0 == 1 in Python, but neither is a size.
    if isinstance(extra, dict) and type(extra.get("size")) is int and extra["size"] == old.size:
        try:
            proof = _hashes(extra.get("proof"), "previous.proof")
        except Malformed as e:
            return f"malformed proof from the previous checkpoint: {e}", 0
        if merkle.verify_consistency(old.size, latest.size, old.root, latest.root, proof):
            return None, old.size
        return f"fork: the log does not extend the previous checkpoint (size {old.size})", 0
    return f"no proof from previous size {old.size}; export with --previous", 0


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
