"""The log's rows on disk: one per append, read back across rows, moved from the old layout."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from blockd.audit import bundle, canonical, merkle
from blockd.audit.log import AuditError, MerkleLog, load_or_create_key, open_log
from tests.audit.test_bundle import ORIGIN, entry

# The earlier layout (the schema as blockd wrote it): one row per entry.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    idx  INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    type TEXT NOT NULL,
    data BLOB NOT NULL,
    leaf BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_time ON entries (time);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER NOT NULL,
    time TEXT NOT NULL,
    note TEXT NOT NULL,
    frontier BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def old_append(db: sqlite3.Connection, indices: range, *, skip: int | None = None) -> None:
    """Append entries as the earlier layout's writer did: a row each, then the frontier."""
    db.executescript(OLD_SCHEMA)
    rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
    blob, size = bytes(rows.get("frontier", b"")), int(rows.get("size", b"0"))
    frontier = merkle.CompactRange(0, size, [blob[i : i + 32] for i in range(0, len(blob), 32)])
    for i in indices:
        data = canonical.canonical(entry(i))
        frontier.append(merkle.leaf_hash(data))
        if i != skip:
            db.execute(
                "INSERT INTO entries VALUES (?, ?, 't', ?, ?)",
                (i, entry(i)["time"], data, merkle.leaf_hash(data)),
            )
    db.executemany(
        "REPLACE INTO meta VALUES (?, ?)",
        [("frontier", b"".join(frontier.nodes)), ("size", str(frontier.end).encode())],
    )
    db.commit()


def old_log(directory: Path, n: int, *, skip: int | None = None) -> None:
    """Write a log of n entries in the earlier layout (no checkpoint)."""
    directory.mkdir(parents=True)
    load_or_create_key(directory / "log.key", "test-operator")
    db = sqlite3.connect(directory / "log.db")
    old_append(db, range(n), skip=skip)
    db.close()


def tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()


def test_each_append_is_one_row_and_reads_cross_rows(tmp_path: Path) -> None:
    log = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    for start, end in ((0, 3), (3, 4), (4, 20)):
        log.append([entry(i) for i in range(start, end)])
    db = sqlite3.connect(tmp_path / "audit/log.db")
    assert db.execute("SELECT first, count FROM batches ORDER BY first").fetchall() == [
        (0, 3),
        (3, 1),
        (4, 16),
    ]
    db.close()
    want = [canonical.canonical(entry(i)) for i in range(20)]
    for begin, end in ((0, 20), (2, 5), (3, 4), (4, 4), (19, 20), (1, 19)):
        assert [d for _, d in log.entries(begin, end)] == want[begin:end]
        assert [i for i, _ in log.entries(begin, end)] == list(range(begin, end))
        assert log.leaf_hashes(begin, end) == [merkle.leaf_hash(d) for d in want[begin:end]]
    with pytest.raises(AuditError, match="not all on disk"):
        log.leaf_hashes(15, 21)


@pytest.mark.parametrize(
    "damage",
    [
        "DELETE FROM batches WHERE first = 3",
        "UPDATE batches SET ends = x'0102' WHERE first = 4",
        "UPDATE batches SET leaves = x'00' WHERE first = 0",
        "UPDATE batches SET first = 5 WHERE first = 4",
    ],
)
def test_a_damaged_row_is_an_error_not_a_wrong_answer(tmp_path: Path, damage: str) -> None:
    log = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    for start, end in ((0, 3), (3, 4), (4, 20)):
        log.append([entry(i) for i in range(start, end)])
    db = sqlite3.connect(tmp_path / "audit/log.db")
    db.execute(damage)
    db.commit()
    db.close()
    with pytest.raises(AuditError, match="not all on disk"):
        log.leaf_hashes(0, 20)
    with pytest.raises(AuditError):
        log.verify_disk()


def test_damaged_times_are_an_error(tmp_path: Path) -> None:
    log = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    log.append([entry(i) for i in range(5)])
    db = sqlite3.connect(tmp_path / "audit/log.db")
    db.execute("UPDATE batches SET times = '[1, 2' WHERE first = 0")
    db.commit()
    db.close()
    with pytest.raises(AuditError, match="times on disk are damaged"):
        log.index_range("2026-11-01T00:00:00Z", None)


def test_an_old_log_is_moved_once_and_verifies(tmp_path: Path) -> None:
    old_log(tmp_path / "audit", 25_003)
    log = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    assert tables(tmp_path / "audit/log.db") == {"batches", "checkpoints", "meta"}
    assert log.verify_disk().size == 25_003
    assert [d for _, d in log.entries(9_999, 10_001)] == [
        canonical.canonical(entry(i)) for i in (9_999, 10_000)
    ]
    log.append([entry(25_003)])
    log.sign_checkpoint("2026-11-30T00:00:00Z")
    verdict = bundle.verify(bundle.export(log, 0, log.head().size), log.signer.verifier)
    assert verdict.ok, verdict.message
    head = log.head()
    log.close()
    again = open_log(tmp_path / "audit", ORIGIN, "test-operator")  # nothing left to move
    assert again.head() == head


def test_entries_an_older_blockd_appended_after_the_move_join_the_log(tmp_path: Path) -> None:
    log = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    log.append([entry(i) for i in range(5)])
    log.sign_checkpoint("2026-11-01T00:00:05Z")
    log.close()
    db = sqlite3.connect(tmp_path / "audit/log.db")  # a rollback: the old layout's writer
    old_append(db, range(5, 7))
    db.close()
    again = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    assert again.verify_disk().size == 7
    again.sign_checkpoint("2026-11-01T00:00:07Z")
    verdict = bundle.verify(bundle.export(again, 0, 7), again.signer.verifier)
    assert verdict.ok, verdict.message


def test_an_old_log_with_a_hole_is_left_as_it_was(tmp_path: Path) -> None:
    old_log(tmp_path / "audit", 30, skip=12)
    with pytest.raises(AuditError, match="entry 12 is missing"):
        MerkleLog(
            tmp_path / "audit/log.db",
            load_or_create_key(tmp_path / "audit/log.key", "test-operator"),
            ORIGIN,
        )
    db = sqlite3.connect(tmp_path / "audit/log.db")
    assert db.execute("SELECT COUNT(*) FROM entries").fetchone() == (29,)
    assert db.execute("SELECT COUNT(*) FROM batches").fetchone() == (0,)
    db.close()


def replays(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record how many leaves each replay read (signing replays through leaf_hashes)."""
    seen: list[int] = []
    real = MerkleLog.leaf_hashes

    def spy(log: MerkleLog, begin: int, end: int, *, recompute: bool = False) -> list[bytes]:
        seen.append(end - begin)
        return real(log, begin, end, recompute=recompute)

    monkeypatch.setattr(MerkleLog, "leaf_hashes", spy)
    return seen


def test_a_checkpoint_after_only_our_appends_needs_no_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    replayed = replays(monkeypatch)
    log.append([entry(i) for i in range(5)])
    log.sign_checkpoint("2026-11-01T00:00:05Z")
    for start in (5, 9, 12):
        log.append([entry(i) for i in range(start, start + 3 if start < 12 else 15)])
        log.sign_checkpoint(f"2026-11-01T00:00:{start:02d}Z")
    assert replayed == []
    other = open_log(tmp_path / "audit", ORIGIN, "test-operator")  # `blockd approve`, say
    other.append([entry(15)])
    log.append([entry(16)])
    log.sign_checkpoint("2026-11-01T00:01:00Z")
    assert replayed == [2]  # another writer broke the chain: the leaves were replayed
    log.append([entry(17)])
    log.sign_checkpoint("2026-11-01T00:01:01Z")
    assert replayed == [2]
    other.sign_checkpoint("2026-11-01T00:01:02Z")  # not its own chain: it replays
    assert replayed == [2, 0]
    verdict = bundle.verify(bundle.export(log, 0, 18), log.signer.verifier)
    assert verdict.ok, verdict.message


def test_the_shortcut_still_refuses_a_changed_leaf(tmp_path: Path) -> None:
    from tests.audit.test_bundle import tamper

    log = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    log.append([entry(i) for i in range(5)])
    log.sign_checkpoint("2026-11-01T00:00:05Z")
    log.append([entry(i) for i in range(5, 9)])
    tamper(tmp_path / "audit/log.db", 7, leaf=merkle.leaf_hash(b"forged"))
    with pytest.raises(AuditError, match="does not extend the last checkpoint"):
        log.sign_checkpoint("2026-11-01T00:00:09Z")
