"""The append-only Merkle log on disk (SQLite) and its signed checkpoints.

Every append is one transaction that reads the tree's frontier, adds the entries and their
leaf hashes as one row, and writes the new frontier: a crash leaves the log as of the last
commit, and several processes (the daemon, an operator's `blockd approve`) can append
safely. A checkpoint is signed only for the tree on disk, after checking that it extends
the last signed one, so blockd never signs two inconsistent checkpoints. A log kept in the
earlier layout (a row per entry) is moved into this one when it is first opened.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from hashlib import sha256
from itertools import accumulate
from pathlib import Path

import orjson

from blockd.audit import canonical, identity, merkle, note
from blockd.audit.private import private_database, private_dir, private_file
from blockd.audit.span import entry_span

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    first  INTEGER PRIMARY KEY,
    count  INTEGER NOT NULL,
    tmin   TEXT NOT NULL,
    tmax   TEXT NOT NULL,
    times  TEXT NOT NULL,
    data   BLOB NOT NULL,
    ends   BLOB NOT NULL,
    leaves BLOB NOT NULL,
    batch  TEXT
);
CREATE INDEX IF NOT EXISTS batches_tmin ON batches (tmin);
CREATE INDEX IF NOT EXISTS batches_tmax ON batches (tmax);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER NOT NULL,
    time TEXT NOT NULL,
    note TEXT NOT NULL,
    frontier BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
# One row per append: entries [first, first + count), their times (a JSON array), their
# canonical bytes back to back, where each ends (uint32 little-endian) and their leaf
# hashes (32 bytes each). A row per entry cost more than encoding and hashing it together.
# batch is the writer's identity of the batch, stored in the same transaction: a batch sent
# again (its writer died after the commit, before saying so) is found and not appended twice.
BATCH_INDEX = (
    "CREATE UNIQUE INDEX IF NOT EXISTS batches_batch ON batches (batch) WHERE batch IS NOT NULL"
)

MIGRATE_BATCH = 10_000  # entries per row when rows of the old one-per-entry table are moved


def _ints(packed: bytes) -> tuple[int, ...]:
    """Unpack unsigned 32-bit little-endian integers (nothing if the length is wrong)."""
    return struct.unpack(f"<{len(packed) // 4}I", packed) if len(packed) % 4 == 0 else ()


class _Chain:
    """The checkpoint this process signed last, and the leaves it appended since.

    While the tree on disk is exactly that checkpoint's extended by those leaves, signing the
    next checkpoint needs no replay of them: comparing one digest of the leaves on disk is
    enough. Any other writer in between breaks the chain, and the next checkpoint replays.
    """

    def __init__(self, signed: str, frontier: merkle.CompactRange) -> None:
        self.note = signed
        self.end, self.nodes = frontier.end, frontier.nodes
        self.leaves = sha256()

    def holds(self, frontier: merkle.CompactRange) -> bool:
        """Say whether frontier is the tree this chain ends with."""
        return frontier.end == self.end and frontier.nodes == self.nodes

    def extend(self, frontier: merkle.CompactRange, leaves: list[bytes]) -> None:
        """Follow an append of leaves by this process that gave frontier."""
        self.end, self.nodes = frontier.end, frontier.nodes
        self.leaves.update(b"".join(leaves))


class AuditError(Exception):
    """The log on disk is inconsistent with what was signed, or cannot be used."""


@dataclass(frozen=True)
class Head:
    """The tree as of the last commit."""

    size: int
    root: bytes


class MerkleLog:
    """One log file: append entries, sign checkpoints, read back for export."""

    def __init__(self, path: Path, signer: note.Signer, origin: str) -> None:
        """Open (creating) the log at path; checkpoints name origin and are signed by signer."""
        # Before SQLite opens it: its WAL and SHM files take its mode (and any an older
        # blockd left 0644 are narrowed).
        private_database(path)
        self.path = path
        self.signer = signer
        self.origin = origin
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(SCHEMA)
        self._add_batch_column()
        self._migrate()
        self._keep_origin()
        self._chain: _Chain | None = None
        self.broken = ""  # why signing is refused, once the disk was found inconsistent

    def _keep_origin(self) -> None:
        """Record the log's origin on first use; refuse to open it under another one."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                kept = identity.kept_origin(self._db)
                if kept is not None and kept != self.origin:
                    raise AuditError(identity.origin_changed(self.path, kept, self.origin))
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('origin', ?)",
                    (self.origin.encode(),),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._db.close()
                raise

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _frontier(self) -> merkle.CompactRange:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'frontier'").fetchone()
        size_row = self._db.execute("SELECT value FROM meta WHERE key = 'size'").fetchone()
        if row is None or size_row is None:
            return merkle.CompactRange()
        blob, size = bytes(row[0]), int(size_row[0])
        nodes = [blob[i : i + 32] for i in range(0, len(blob), 32)]
        return merkle.CompactRange(0, size, nodes)

    def head(self) -> Head:
        """Return the size and root of the tree as committed."""
        with self._lock:
            frontier = self._frontier()
        return Head(frontier.end, frontier.root())

    def append(self, entries: Sequence[dict[str, object]], batch: str | None = None) -> Head:
        """Append entries (each with a 'time' and a 'type') in one transaction."""
        return self.append_encoded(
            [canonical.canonical(entry) for entry in entries],
            [str(entry["time"]) for entry in entries],
            batch,
        )

    def append_encoded(
        self, datas: list[bytes], times: list[str], batch: str | None = None
    ) -> Head:
        """Append entries given as their canonical JSON, with their times, in one transaction.

        datas must be exactly canonical(entry) for each entry: what `append` and
        `entries.encode` give. A batch identity already in the log appends nothing: that
        batch was committed before (a retry after its writer died unheard).
        """
        if len(datas) != len(times):
            raise ValueError(f"{len(datas)} entries but {len(times)} times")
        if not datas:
            return self.head()
        # Hot path: ~10,000 entries/s at most, in a helper process.
        leaves = merkle.leaf_hashes(datas)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                frontier = self._frontier()
                if batch is not None and self._has_batch(batch):
                    db.execute("COMMIT")
                    return Head(frontier.end, frontier.root())
                chain = self._chain
                ours = chain is not None and chain.holds(frontier)
                self._insert(frontier.end, times, datas, leaves, batch)
                frontier.extend(leaves)
                self._put_frontier(frontier)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if chain is not None and ours:
                chain.extend(frontier, leaves)
            else:
                self._chain = None  # someone else appended: the next checkpoint replays
        return Head(frontier.end, frontier.root())

    def _has_batch(self, batch: str) -> bool:
        row = self._db.execute("SELECT 1 FROM batches WHERE batch = ?", (batch,)).fetchone()
        return row is not None

    def _insert(
        self,
        first: int,
        times: list[str],
        datas: list[bytes],
        leaves: list[bytes],
        batch: str | None = None,
    ) -> None:
        """Store entries [first, first + len(datas)) as one row."""
        ends = list(accumulate(map(len, datas)))
        self._db.execute(
            "INSERT INTO batches (first, count, tmin, tmax, times, data, ends, leaves, batch)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                first,
                len(datas),
                min(times),
                max(times),
                orjson.dumps(times).decode(),
                b"".join(datas),
                struct.pack(f"<{len(ends)}I", *ends),
                b"".join(leaves),
                batch,
            ),
        )

    def _add_batch_column(self) -> None:
        """Give a log made before batch identities the column and its index, once."""
        db = self._db
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                columns = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
                if "batch" not in columns:
                    db.execute("ALTER TABLE batches ADD COLUMN batch TEXT")
                db.execute(BATCH_INDEX)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _migrate(self) -> None:
        """Move a log kept in the earlier layout, one row per entry, into batch rows, once."""
        db = self._db
        old = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'entries'"
        if db.execute(old).fetchone() is None:
            return
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute(old).fetchone() is None:
                    db.execute("COMMIT")  # another process moved it meanwhile
                    return
                cursor = db.execute("SELECT idx, time, data, leaf FROM entries ORDER BY idx")
                # An older blockd run after the move (a rollback) appended after the batches.
                expected = db.execute(
                    "SELECT COALESCE(MAX(first + count), 0) FROM batches"
                ).fetchone()[0]
                while rows := cursor.fetchmany(MIGRATE_BATCH):
                    for i, row in enumerate(rows, expected):
                        if row[0] != i:
                            raise AuditError(f"entry {i} is missing: the log cannot be moved")
                    self._insert(
                        expected,
                        [str(r[1]) for r in rows],
                        [bytes(r[2]) for r in rows],
                        [bytes(r[3]) for r in rows],
                    )
                    expected += len(rows)
                db.execute("DROP TABLE entries")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        db.execute("VACUUM")

    def _put_frontier(self, frontier: merkle.CompactRange) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [("frontier", b"".join(frontier.nodes)), ("size", str(frontier.end).encode())],
        )

    def sign_checkpoint(self, time: str) -> str:
        """Sign a checkpoint of the committed tree; refuse if it does not extend the last one."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                frontier = self._frontier()
                size, root = frontier.end, frontier.root()
                if self.broken:
                    raise AuditError(f"refusing to sign: {self.broken}")
                last = db.execute(
                    "SELECT size, note, frontier FROM checkpoints ORDER BY rowid DESC LIMIT 1"
                ).fetchone()
                if last is not None:
                    self._check_extends(int(last[0]), str(last[1]), bytes(last[2]), frontier)
                body = note.Checkpoint(self.origin, size, root, (f"time {time}",)).to_text()
                signed = note.sign_note(body, self.signer)
                db.execute(
                    "INSERT INTO checkpoints (size, time, note, frontier) VALUES (?, ?, ?, ?)",
                    (size, time, signed, b"".join(frontier.nodes)),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._chain = _Chain(signed, frontier)
        return signed

    def _check_extends(
        self, old_size: int, old_note: str, old_frontier: bytes, now: merkle.CompactRange
    ) -> None:
        """Raise AuditError unless the committed tree extends the last signed one.

        The frontier stored with the last checkpoint must give its signed root, and appending
        the leaves committed since must give the tree now on disk: O(new entries), so it is
        cheap enough for every checkpoint. When this process signed the last checkpoint and
        alone appended since (the usual case), one digest of those leaves stands in for the
        replay. Whole-history checks are verify_disk's.
        """
        chain = self._chain
        if (  # only this process appended since it signed old_note, and the disk agrees
            chain is not None
            and chain.note == old_note
            and chain.holds(now)
            and sha256(self._leaf_bytes(old_size, now.end)).digest() == chain.leaves.digest()
        ):
            return
        old = note.Checkpoint.parse(note.open_note(old_note, [self.signer.verifier])[0])
        if now.end < old_size:
            raise AuditError(f"log shrank from {old_size} to {now.end} entries: refusing to sign")
        nodes = [old_frontier[i : i + 32] for i in range(0, len(old_frontier), 32)]
        try:
            replay = merkle.CompactRange(0, old_size, nodes)
        except ValueError:
            raise AuditError(
                "the last checkpoint's frontier is damaged: refusing to sign"
            ) from None
        if replay.root() != old.root:
            raise AuditError("the last checkpoint does not match its frontier: refusing to sign")
        replay.extend(self.leaf_hashes(old_size, now.end))
        if replay.root() != now.root():
            raise AuditError(
                "the log on disk does not extend the last checkpoint: refusing to sign"
            )

    def verify_disk(self) -> Head:
        """Check every stored entry against the tree and the last signed checkpoint.

        On failure, raise AuditError and refuse to sign from now on: what was signed before
        was changed on disk (blockd runs this at start).
        """
        try:
            head = self.head()
            hashes = self.leaf_hashes(0, head.size, recompute=True)
            if merkle.root(hashes) != head.root:
                raise AuditError("entries signed before were changed on disk")
            for signed in self.checkpoints()[-1:]:
                cp = note.Checkpoint.parse(note.open_note(signed, [self.signer.verifier])[0])
                if cp.size > head.size or merkle.root(hashes[: cp.size]) != cp.root:
                    raise AuditError("entries signed before were changed on disk")
        except AuditError as e:
            self.broken = str(e)
            raise
        return head

    def _rows(self, begin: int, end: int) -> list[tuple[int, int, bytes, tuple[int, ...], bytes]]:
        """Return (first, count, data, ends, leaves) of the rows holding entries [begin, end)."""
        if end <= begin:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT first, count, data, ends, leaves FROM batches"
                " WHERE first >= (SELECT COALESCE(MAX(first), 0) FROM batches WHERE first <= ?)"
                " AND first < ? ORDER BY first",
                (begin, end),
            ).fetchall()
        out = []
        expected = rows[0][0] if rows and rows[0][0] <= begin else -1
        for first, count, data, ends, leaves in rows:
            offsets = _ints(bytes(ends))
            if first != expected or len(offsets) != count or len(leaves) != 32 * count:
                break
            expected = first + count
            out.append((first, count, bytes(data), offsets, bytes(leaves)))
        if expected < end:
            raise AuditError(f"{entry_span(begin, end)}: not all on disk")
        return out

    def _leaf_bytes(self, begin: int, end: int) -> bytes:
        """Return the leaf hashes of entries [begin, end) back to back."""
        return b"".join(
            leaves[32 * (max(begin, first) - first) : 32 * (min(end, first + count) - first)]
            for first, count, _, _, leaves in self._rows(begin, end)
        )

    def leaf_hashes(self, begin: int, end: int, *, recompute: bool = False) -> list[bytes]:
        """Return the leaf hashes of entries [begin, end) (recomputed from the data if asked)."""
        if recompute:
            return merkle.leaf_hashes(data for _, data in self.entries(begin, end))
        packed = self._leaf_bytes(begin, end)
        return [packed[i : i + 32] for i in range(0, len(packed), 32)]

    def entries(self, begin: int, end: int) -> Iterator[tuple[int, bytes]]:
        """Yield (index, canonical bytes) of entries [begin, end)."""
        for first, count, data, ends, _ in self._rows(begin, end):
            for i in range(max(begin, first) - first, min(end, first + count) - first):
                yield first + i, data[ends[i - 1] if i else 0 : ends[i]]

    def index_range(self, start: str | None, end: str | None) -> tuple[int, int]:
        """Return [begin, end) of the entries whose time is in [start, end) (ISO 8601 UTC)."""
        start, end = start or "", end or "9999"
        with self._lock:
            low = self._db.execute(
                "SELECT first, times FROM batches WHERE tmax >= ? ORDER BY first LIMIT 1", (start,)
            ).fetchone()
            high = self._db.execute(
                "SELECT first, times FROM batches WHERE tmin < ? ORDER BY first DESC LIMIT 1",
                (end,),
            ).fetchone()
        if low is None or high is None:
            return 0, 0
        try:
            lo = low[0] + next(i for i, t in enumerate(json.loads(low[1])) if t >= start)
            hi = high[0] + max(i for i, t in enumerate(json.loads(high[1])) if t < end)
        except (ValueError, StopIteration, TypeError):  # json.JSONDecodeError is a ValueError
            raise AuditError("the entries' times on disk are damaged") from None
        return (lo, hi + 1) if lo <= hi else (0, 0)

    def checkpoints(self) -> list[str]:
        """Return every signed checkpoint note, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT note FROM checkpoints ORDER BY rowid").fetchall()
        return [str(r[0]) for r in rows]

    def latest_checkpoint(self) -> str | None:
        """Return the latest signed checkpoint note, or None before the first."""
        with self._lock:
            row = self._db.execute(
                "SELECT note FROM checkpoints ORDER BY rowid DESC LIMIT 1"
            ).fetchone()
        return str(row[0]) if row is not None else None


def load_or_create_key(path: Path, name: str) -> note.Signer:
    """Return the operator's log key from path, generating it (mode 0600) on first use."""
    from blockd.files import atomic_write

    private_dir(path.parent)
    if not path.exists():
        skey, _ = note.generate_key(name)
        atomic_write(path, (skey + "\n").encode(), mode=0o600)
    private_file(path)
    try:
        return note.Signer.from_skey(path.read_text("ascii").strip())
    except (OSError, UnicodeDecodeError, note.NoteError) as e:
        raise AuditError(f"{path}: not a usable log key: {e}") from None


def open_log(directory: Path, origin: str, key_name: str) -> MerkleLog:
    """Open the log in directory (log.db, key in log.key), creating both on first use.

    Refuse a log, or a key, kept under another name than origin and key_name.
    """
    if changes := identity.name_changes(directory, origin, key_name):
        raise AuditError("; ".join(changes))
    return MerkleLog(
        directory / "log.db", load_or_create_key(directory / "log.key", key_name), origin
    )
