"""The log on disk, its checkpoints, and bundles against every kind of tampering."""

from __future__ import annotations

import copy
import json
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from blockd.audit import bundle, canonical, merkle, note
from blockd.audit.log import AuditError, MerkleLog, load_or_create_key, open_log

ORIGIN = "isp.example/blockd/test"


def entry(i: int) -> dict[str, object]:
    return {"time": f"2026-11-{1 + i // 100:02d}T00:00:{i % 60:02d}Z", "type": "t", "n": i}


def exported(log: MerkleLog, begin: int = 0, end: int = 40) -> dict[str, Any]:
    return bundle.export(log, begin, end)


def check(log: MerkleLog, b: object, previous: str | None = None, **options: Any) -> bundle.Verdict:
    return bundle.verify(b, log.signer.verifier, previous, **options)


def test_an_untouched_bundle_verifies(log: MerkleLog) -> None:
    verdict = check(log, exported(log))
    assert verdict.ok, verdict.message
    assert verdict.checkpoint is not None and verdict.checkpoint.size == 40
    assert [e["n"] for e in verdict.entries] == list(range(40))
    part = check(log, exported(log, 12, 30), allow_gap=True)
    assert part.ok and [e["n"] for e in part.entries] == list(range(12, 30))
    assert part.unshown == (0, 12)


def test_the_key_file_is_private_and_the_log_reopens(tmp_path: Path, log: MerkleLog) -> None:
    key = tmp_path / "audit/log.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "audit/log.db").stat().st_mode & 0o077 == 0
    again = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    assert again.head() == log.head()
    assert again.signer.verifier.vkey == log.signer.verifier.vkey
    assert again.verify_disk().size == 40


def test_root_matches_a_recomputation_from_the_entries(log: MerkleLog) -> None:
    data = [canonical.canonical(entry(i)) for i in range(40)]
    assert log.head().root == merkle.root([merkle.leaf_hash(d) for d in data])


def _tamper_entry(b: dict[str, Any], i: int) -> None:
    text = b["entries"][i]
    b["entries"][i] = text.replace(f'"n":{i}', f'"n":{i + 1000}')


@pytest.mark.parametrize(
    ("name", "first_bad"),
    [
        ("flipped-byte", 17),
        ("removed", 17),
        ("reordered", 17),
        ("inserted", 17),
        ("truncated", 35),
    ],
)
def test_every_tampering_of_entries_fails_at_its_index(
    log: MerkleLog, name: str, first_bad: int
) -> None:
    b = exported(log)
    entries: list[str] = b["entries"]
    if name == "flipped-byte":
        _tamper_entry(b, 17)
    elif name == "removed":
        del entries[17]
        entries.append(entries[-1])  # keep the count: the gap must still be found
    elif name == "reordered":
        entries[17], entries[18] = entries[18], entries[17]
    elif name == "inserted":
        entries.insert(17, canonical.canonical(entry(999)).decode())
        entries.pop()
    elif name == "truncated":
        del entries[35:]
    verdict = check(log, b)
    assert not verdict.ok
    assert verdict.first_bad_index == first_bad, verdict.message


def test_tampering_with_forged_hints_is_still_caught(log: MerkleLog) -> None:
    b = exported(log)
    _tamper_entry(b, 17)
    forged = merkle.leaf_hash(b["entries"][17].encode())
    b["leaf_hints"][17] = bundle._b64(forged)
    verdict = check(log, b)
    assert not verdict.ok
    assert verdict.first_bad_index == 10  # the last checkpoint the entries still reproduce
    assert "lies in entries 10 to 24 (15 entries)" in verdict.message


def test_a_non_canonical_entry_is_refused(log: MerkleLog) -> None:
    b = exported(log)
    b["entries"][3] = json.dumps(entry(3), indent=1)
    verdict = check(log, b)
    assert not verdict.ok and verdict.first_bad_index == 3


def test_a_checkpoint_from_another_key_fails(tmp_path: Path, log: MerkleLog) -> None:
    other = load_or_create_key(tmp_path / "other.key", "test-operator")
    b = exported(log)
    text = note.open_note(b["checkpoints"][-1], [log.signer.verifier])[0]
    b["checkpoints"][-1] = note.sign_note(text, other)
    verdict = check(log, b)
    assert not verdict.ok and "checkpoint 2" in verdict.message


def test_a_resigned_forked_history_fails(tmp_path: Path, log: MerkleLog) -> None:
    # The operator's key signs a different history of the same log: the consistency
    # proofs between the old and new checkpoints cannot both hold.
    fork = MerkleLog(tmp_path / "fork.db", log.signer, ORIGIN)
    fork.append([entry(i) for i in range(10)])
    fork.sign_checkpoint("2026-11-01T00:00:10Z")
    fork.append([{**entry(i), "n": -i} for i in range(10, 40)])
    fork.sign_checkpoint("2026-11-01T00:00:40Z")
    real_old = log.checkpoints()[1]  # size 25, which the regulator saw last time
    old = note.Checkpoint.parse(note.open_note(real_old, [log.signer.verifier])[0])
    forked = bundle.export(fork, 0, 40, previous=old)
    verdict = check(log, forked, previous=real_old)
    assert not verdict.ok
    assert "does not extend the previous checkpoint" in verdict.message, verdict.message


def test_growth_from_a_previous_checkpoint(tmp_path: Path, log: MerkleLog) -> None:
    assert check(log, exported(log), previous=log.checkpoints()[0]).ok
    # A checkpoint the bundle does not carry needs a proof from its size (export --previous).
    other = MerkleLog(tmp_path / "copy.db", log.signer, ORIGIN)
    other.append([entry(i) for i in range(33)])
    seen = other.sign_checkpoint("2026-11-01T00:00:33Z")  # same entries: part of the history
    cp = note.Checkpoint.parse(note.open_note(seen, [log.signer.verifier])[0])
    assert not check(log, exported(log), previous=seen).ok  # no proof from size 33
    assert check(log, bundle.export(log, 0, 40, previous=cp), previous=seen).ok


def test_a_shrunken_log_fails_against_the_previous_checkpoint(
    tmp_path: Path, log: MerkleLog
) -> None:
    seen = log.checkpoints()[-1]  # size 40
    small = MerkleLog(tmp_path / "small.db", log.signer, ORIGIN)
    small.append([entry(i) for i in range(30)])
    small.sign_checkpoint("2026-11-02T00:00:00Z")
    verdict = check(log, bundle.export(small, 0, 30), previous=seen)
    assert not verdict.ok and "shrank" in verdict.message


def test_a_bundle_missing_a_consistency_proof_or_malformed_fails(log: MerkleLog) -> None:
    b = exported(log)
    broken = copy.deepcopy(b)
    broken["consistency"][0] = broken["consistency"][1]
    assert not check(log, broken).ok
    bads: list[object] = [{}, [], {"format": "x"}, {**b, "entries": "no"}, {**b, "range_proof": {}}]
    for bad in bads:
        assert not check(log, bad).ok


def tamper(path: Path, idx: int, *, data: bytes | None = None, leaf: bytes | None = None) -> None:
    """Change one entry's bytes or leaf hash on disk, as an attacker with the file could."""
    db = sqlite3.connect(path)
    first, count, blob, ends, leaves = db.execute(
        "SELECT first, count, data, ends, leaves FROM batches WHERE first <= ?"
        " ORDER BY first DESC LIMIT 1",
        (idx,),
    ).fetchone()
    offsets = [0, *struct.unpack(f"<{count}I", ends)]
    datas = [blob[offsets[i] : offsets[i + 1]] for i in range(count)]
    hashes = [leaves[i : i + 32] for i in range(0, 32 * count, 32)]
    if data is not None:
        datas[idx - first] = data
    if leaf is not None:
        hashes[idx - first] = leaf
    new_ends = [sum(len(d) for d in datas[: i + 1]) for i in range(count)]
    db.execute(
        "UPDATE batches SET data = ?, ends = ?, leaves = ? WHERE first = ?",
        (b"".join(datas), struct.pack(f"<{count}I", *new_ends), b"".join(hashes), first),
    )
    db.commit()
    db.close()


def test_blockd_never_signs_over_a_changed_history(tmp_path: Path, log: MerkleLog) -> None:
    tamper(tmp_path / "audit/log.db", 3, data=canonical.canonical(entry(99)))
    log.append([entry(40)])
    with pytest.raises(AuditError, match="changed on disk"):
        log.verify_disk()  # as blockd does at start
    with pytest.raises(AuditError, match="refusing to sign"):
        log.sign_checkpoint("2026-11-03T00:00:00Z")


def test_blockd_never_signs_a_tree_that_does_not_extend_the_last(
    tmp_path: Path, log: MerkleLog
) -> None:
    log.append([entry(40)])
    tamper(tmp_path / "audit/log.db", 40, leaf=b"\x00" * 32)
    with pytest.raises(AuditError, match="does not extend the last checkpoint"):
        log.sign_checkpoint("2026-11-03T00:00:00Z")


def test_a_failed_append_leaves_nothing_behind(
    log: MerkleLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = log.head()

    def boom(frontier: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(log, "_put_frontier", boom)
    with pytest.raises(OSError, match="disk full"):
        log.append([entry(40), entry(41)])
    monkeypatch.undo()
    assert log.head() == before
    assert log.verify_disk() == before
    assert log.append([entry(40)]).size == 41


KILLER = """
import sys
from pathlib import Path
from blockd.audit.log import open_log
log = open_log(Path(sys.argv[1]), "isp.example/blockd/test", "test-operator")
n = 0
while True:
    log.append([{"time": "2026-11-01T00:00:00Z", "type": "t", "n": n + i} for i in range(7)])
    n += 7
    if n % 70 == 0:
        log.sign_checkpoint("2026-11-01T00:00:00Z")
    print(n, flush=True)
"""


def test_a_killed_writer_leaves_a_whole_log(tmp_path: Path) -> None:
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLER, str(tmp_path / "audit")],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for _ in range(20):  # let it commit some batches, then kill it mid-flight
            proc.stdout.readline()
        proc.kill()
        proc.wait()
        log = open_log(tmp_path / "audit", ORIGIN, "test-operator")
        head = log.verify_disk()
        assert head.size % 7 == 0  # whole batches only
        log.sign_checkpoint("2026-11-02T00:00:00Z")  # and it extends what was signed
        log.close()


def test_time_ranges_select_entries(log: MerkleLog) -> None:
    assert log.index_range("2026-11-01T00:00:05Z", "2026-11-01T00:00:08Z") == (5, 8)
    assert log.index_range("2027-01-01T00:00:00Z", None) == (0, 0)


def test_a_bundle_for_witnesses_ends_at_their_newest_cosigned_checkpoint(log: MerkleLog) -> None:
    # The log signed size 40 after the witness cosigned size 25 (it keeps signing).
    from blockd.audit.cosigned import CosignatureStore

    body = note.open_note(log.checkpoints()[1], [log.signer.verifier])[0]
    store = CosignatureStore(log.path)
    store.add(body, "w.example/w1+00000000", 25, 1_795_459_200, "— w.example/w1 AAAA\n")
    store.close()
    b: dict[str, Any] = bundle.export(log, 0, 40, witnessed=1)
    assert len(b["checkpoints"]) == 2 and b["end"] == 25
    assert b["cosignatures"] == [[], ["— w.example/w1 AAAA\n"]]
    assert check(log, b).ok
    assert bundle.export(log, 0, 40, witnessed=2)["end"] == 40  # none has two: all of it
    assert bundle.export(log, 0, 40)["end"] == 40
