"""Fleet audit bundles: every node's latest signed checkpoint, in one file, checked offline.

`blockd fleet audit` reads each node's heartbeat from Redis and writes one bundle
(`blockd-fleet-audit/1`, JSON) with, per node, its id, its latest signed audit checkpoint
(the exact note), the verifier key (vkey) the node says signs it, the versions it says it
enforces and its heartbeat time. `blockd audit verify-fleet` checks each checkpoint's
signature here, against the bundle's key and against keys the regulator pins.

Only the checkpoints are signed. Everything else, the keys included, is what each node
wrote to Redis, which anyone who can write to Redis can change: a checkpoint verifies
against a key *in the bundle* only proves it matches that key. A regulator pins each node's
key from an independent source (the operator's registration); a node whose key is not
pinned is reported as such.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from blockd.audit import note
from blockd.audit.bundle import load

FORMAT = "blockd-fleet-audit/1"
MAX_NODES = 10_000
NOT_PINNED = (
    "key not pinned: it came from Redis with the checkpoint; pin this node's key from an "
    "independent source (the operator's registration)"
)


def node_record(
    node: str,
    heartbeat: str,
    versions: Mapping[str, int | None],
    checkpoint: str | None,
    audit_key: str | None,
    **more: object,
) -> dict[str, object]:
    """Return one node's entry: what its heartbeat said, the checkpoint note exactly."""
    return {
        "node": node,
        "heartbeat": heartbeat,
        "versions": dict(versions),
        "checkpoint": checkpoint,
        "audit_key": audit_key,
        **more,
    }


def dumps(bundle: Mapping[str, object]) -> str:
    """Return a fleet bundle as JSON text (UTF-8; notes kept byte for byte)."""
    return json.dumps(bundle, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


@dataclass(frozen=True)
class Pins:
    """The keys a regulator trusts: for one node each, or for whichever node they sign."""

    nodes: Mapping[str, note.Verifier] = field(default_factory=dict)
    any: Sequence[note.Verifier] = ()

    @classmethod
    def parse(cls, keys: Sequence[str], lines: Sequence[str] = ()) -> Pins:
        """Read pinned vkeys, and lines 'VKEY' or 'NODE VKEY' ('#' comments); ValueError if bad."""
        nodes: dict[str, note.Verifier] = {}
        anyone = [_vkey(k, "--key") for k in keys]
        for number, raw in enumerate(lines, start=1):
            text = raw.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.split()
            if len(parts) > 2:
                raise ValueError(f"line {number}: give VKEY or NODE VKEY")
            if len(parts) == 1:
                anyone.append(_vkey(parts[0], f"line {number}"))
                continue
            if parts[0] in nodes:
                raise ValueError(f"line {number}: node {parts[0]} is pinned twice")
            nodes[parts[0]] = _vkey(parts[1], f"line {number}")
        return cls(nodes, anyone)

    def __bool__(self) -> bool:
        """Say whether any key is pinned."""
        return bool(self.nodes or self.any)


def _vkey(text: str, where: str) -> note.Verifier:
    try:
        return note.Verifier.from_vkey(text)
    except note.NoteError as e:
        raise ValueError(f"{where}: not a vkey ({e}): {text[:60]!r}") from None


@dataclass(frozen=True)
class NodeVerdict:
    """One node's checkpoint, checked."""

    node: str
    ok: bool
    message: str
    pinned: bool = False


@dataclass
class FleetVerdict:
    """The outcome of checking a fleet bundle."""

    ok: bool  # the bundle itself could be read
    message: str
    nodes: list[NodeVerdict] = field(default_factory=list)
    exported_at: str = ""

    def passed(self, *, strict: bool = False) -> bool:
        """Say whether every node verified (with strict, against a pinned key)."""
        return self.ok and all(n.ok and (n.pinned or not strict) for n in self.nodes)


def verify(data: object, pins: Pins | None = None) -> FleetVerdict:
    """Check every node's checkpoint: signed by the bundle's key, and by a pinned one if any."""
    pins = pins or Pins()
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return FleetVerdict(False, f"not a fleet audit bundle (format {FORMAT})")
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or len(nodes) > MAX_NODES:
        return FleetVerdict(False, f"malformed bundle: 'nodes' is not a list (at most {MAX_NODES})")
    exported = data.get("exported_at")
    verdict = FleetVerdict(True, "", exported_at=exported if isinstance(exported, str) else "")
    seen: set[str] = set()
    for i, entry in enumerate(nodes):
        name = entry.get("node") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name.isprintable() or not 0 < len(name) <= 64:
            verdict.nodes.append(NodeVerdict(f"#{i}", False, "malformed entry: no node id"))
            continue
        if name in seen:
            verdict.nodes.append(NodeVerdict(name, False, "listed twice in the bundle"))
            continue
        seen.add(name)
        assert isinstance(entry, dict)
        verdict.nodes.append(_node(name, entry, pins))
    failed = sum(not n.ok for n in verdict.nodes)
    verdict.message = f"{len(verdict.nodes)} node(s), {failed} failed"
    return verdict


def _node(name: str, entry: Mapping[str, object], pins: Pins) -> NodeVerdict:
    """Check one node's checkpoint against the bundle's key and the regulator's pins."""
    checkpoint, key = entry.get("checkpoint"), entry.get("audit_key")
    if checkpoint is None:
        return NodeVerdict(
            name, False, "no signed checkpoint (its audit log is off or has signed none yet)"
        )
    if not isinstance(checkpoint, str) or (key is not None and not isinstance(key, str)):
        return NodeVerdict(name, False, "malformed entry: checkpoint or audit_key not text")
    bundled: note.Verifier | None = None
    if key is not None:
        try:
            bundled = note.Verifier.from_vkey(key)
        except note.NoteError as e:
            return NodeVerdict(name, False, f"the key in the bundle is not a vkey: {e}")
    pin = pins.nodes.get(name)
    pinned = pin is not None
    try:
        if pin is not None:
            note.open_note(checkpoint, [pin])
        else:
            pin = _pinned_signer(checkpoint, pins.any)
            pinned = pin is not None
    except note.NoteError as e:
        return NodeVerdict(name, False, f"does not verify with the pinned key: {e}", True)
    if bundled is None and pin is None:
        return NodeVerdict(name, False, "no key in the bundle to verify with, and none pinned")
    if bundled is not None:
        if pin is not None and bundled.vkey != pin.vkey:
            return NodeVerdict(
                name, False, f"the key in the bundle ({bundled.vkey}) is not the pinned key", True
            )
        try:
            note.open_note(checkpoint, [bundled])
        except note.NoteError as e:
            return NodeVerdict(name, False, f"does not verify with the key in the bundle: {e}")
    signer = pin or bundled
    assert signer is not None
    text = checkpoint[: checkpoint.rfind("\n\n") + 1]
    try:
        cp = note.Checkpoint.parse(text)
    except note.NoteError as e:
        return NodeVerdict(name, False, f"signed, but not a checkpoint: {e}", pinned)
    said = f"checkpoint {cp.origin} size {cp.size}, signed by {signer.name}+{signer.key_id:08x}"
    return NodeVerdict(name, True, f"{said}; {'key pinned' if pinned else NOT_PINNED}", pinned)


def _pinned_signer(checkpoint: str, pins: Sequence[note.Verifier]) -> note.Verifier | None:
    """Return the pinned key that signed checkpoint; None if none did; NoteError if bad."""
    for pin in pins:  # one at a time: two nodes' keys may share a name
        try:
            note.open_note(checkpoint, [pin])
        except note.NoteError as e:
            if e.reason != "unknown-key":
                raise
            continue
        return pin
    return None


def read(text: str | bytes) -> object:
    """Parse a fleet bundle's JSON strictly (duplicate keys, NaN refused); ValueError if bad."""
    return load(text)
