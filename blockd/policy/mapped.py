"""Snapshot files: one compiled policy, written once, mapped read-only by every worker.

`publish` writes a PolicySnapshot as one file and points `current` at it; `open_mapped`
maps a file read-only and returns a snapshot whose key arrays are views of the mapping, so
N processes share one copy in the page cache. A file that is damaged, truncated, foreign or
inconsistent is refused with SnapshotFileError, before any question is answered from it.

Layout (little-endian; every section starts on a 64-byte boundary):

    offset  size    field
    0       8       magic b"BLKDPOL\\0"
    8       4       format version (1)
    12      4       section count (13)
    16      8       generation
    24      8       file length
    32      32      SHA-256 of the whole file, these 32 bytes taken as zero
    64      24 × 13 section table: kind u32, reserved u32, offset u64, length u64
    ...             meta (JSON: lists, ref_key, never-block, probe keys, set numbers), then
                    for hosts, routes, urls: digests u64, owners u16, bucket starts u32, filter

A set's filter is addressed by Python's per-process keyed string hash; the file records
the hashes of a few fixed strings, and a process whose hashes differ (another hash seed)
ignores the filters and confirms every lookup by SHA-256: slower, never a different answer.
Workers forked from the publisher (or started with its PYTHONHASHSEED) keep the fast path.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from blockd.files import make_dirs
from blockd.policy import suffixes
from blockd.policy.guards import NeverBlock
from blockd.policy.index import KeySet, KeySetParts
from blockd.policy.mapped_meta import (
    MetaError,
    SetNumbers,
    hash_check,
    meta_from_json,
    meta_to_json,
)
from blockd.policy.snapshot import PolicySnapshot

MAGIC = b"BLKDPOL\0"
VERSION = 1
QUESTIONS = ("hosts", "routes", "urls")
ARRAYS = (("digests", "Q", 8), ("owners", "H", 2), ("starts", "I", 4), ("filter", "B", 1))
SECTIONS = 1 + len(QUESTIONS) * len(ARRAYS)
KIND_META = 1  # then 16 + 4 * question + array, in the order above
ALIGN = 64
CURRENT = "current"

HEADER = struct.Struct("<8sIIQQ32s")
ENTRY = struct.Struct("<IIQQ")
TABLE_END = HEADER.size + SECTIONS * ENTRY.size
_MAX_BUCKET_BITS = 32
Refuse = Callable[[str], "SnapshotFileError"]


class SnapshotFileError(ValueError):
    """A snapshot file cannot be used: says which file and what is wrong with it."""


def _kind(question: int, array: int) -> int:
    return 16 + 4 * question + array


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# -- writing -----------------------------------------------------------------------------


def encode(snapshot: PolicySnapshot) -> list[bytes | memoryview]:
    """Return the file's bytes as pieces (header and table first), arrays not copied."""
    if sys.byteorder != "little":
        raise SnapshotFileError("snapshot files are little-endian; this host is not")
    sets = [getattr(snapshot, q).parts() for q in QUESTIONS]
    numbers = {
        q: SetNumbers(len(p.digests), p.mask, p.shift, p.needs_sha)
        for q, p in zip(QUESTIONS, sets, strict=True)
    }
    bodies: list[bytes | memoryview] = [meta_to_json(snapshot, numbers)]
    for p in sets:
        bodies += [memoryview(p.digests), memoryview(p.owners), memoryview(p.starts)]
        bodies.append(memoryview(p.filter))
    table, pieces, offset = [], [], _padded(TABLE_END)
    for i, body in enumerate(bodies):
        kind = KIND_META if i == 0 else _kind((i - 1) // 4, (i - 1) % 4)
        length = memoryview(body).nbytes
        table.append(ENTRY.pack(kind, 0, offset, length))
        pieces.append(body)
        pad = _padded(length) - length
        if pad:
            pieces.append(bytes(pad))
        offset += length + pad
    head = b"".join(table) + bytes(_padded(TABLE_END) - TABLE_END)
    header = HEADER.pack(MAGIC, VERSION, SECTIONS, snapshot.generation, offset, bytes(32))
    sha = hashlib.sha256(header)
    sha.update(head)
    for piece in pieces:
        sha.update(piece)
    header = header[:32] + sha.digest()
    return [header, head, *pieces]


def publish(snapshot: PolicySnapshot, directory: Path) -> Path:
    """Write snapshot to directory atomically, make it `current`; return its path.

    The file appears whole or not at all (temporary file, fsync, rename, fsync of the
    directory); then `current` is replaced by a symlink to it, and every other snapshot
    file is removed (a process that mapped one keeps it until it lets go).
    """
    pieces = encode(snapshot)
    digest = bytes(pieces[0][32:64]).hex()
    make_dirs(directory, 0o700)
    path = directory / f"snapshot-{snapshot.generation:010d}-{digest[:12]}.bps"
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"
    # The file carries ref_key (the key of every entry reference): owner only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            for piece in pieces:
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        link = directory / f".{CURRENT}.{os.getpid()}.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(path.name)
        os.replace(link, directory / CURRENT)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    _clean(directory, keep=path)
    return path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clean(directory: Path, keep: Path) -> None:
    """Remove every snapshot file but keep, and temporary files a crash left behind."""
    for old in [*directory.glob("snapshot-*.bps"), *directory.glob(".*.tmp")]:
        if old.name != keep.name:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()


# -- reading -----------------------------------------------------------------------------


def current(directory: Path) -> Path | None:
    """Return the snapshot file in force in directory, or None if none was published."""
    try:
        return directory / os.readlink(directory / CURRENT)
    except FileNotFoundError:
        return None


def open_current(directory: Path) -> PolicySnapshot | None:
    """Map the snapshot in force in directory (None if none was published)."""
    for _ in range(3):  # a publish may replace it between readlink and open
        path = current(directory)
        if path is None:
            return None
        try:
            return open_mapped(path)
        except FileNotFoundError:
            continue
    raise SnapshotFileError(f"{directory}: the current snapshot kept changing while opened")


def open_mapped(path: Path) -> PolicySnapshot:
    """Map a snapshot file read-only and return it as a PolicySnapshot (arrays not copied)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < TABLE_END:
            raise SnapshotFileError(
                f"{path}: {size} bytes is shorter than a snapshot header ({TABLE_END})"
            )
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _read(path, mapping)
    except (SnapshotFileError, MetaError) as e:
        _close(mapping)
        if isinstance(e, SnapshotFileError):
            raise
        raise SnapshotFileError(f"{path}: metadata: {e}") from None


def _close(mapping: mmap.mmap) -> None:
    with contextlib.suppress(BufferError):  # a view still held: the mapping goes with it
        mapping.close()


def _read(path: Path, mapping: mmap.mmap) -> PolicySnapshot:
    def refuse(what: str) -> SnapshotFileError:
        return SnapshotFileError(f"{path}: {what}")

    if sys.byteorder != "little":
        raise refuse("snapshot files are little-endian; this host is not")
    view = memoryview(mapping)
    magic, version, count, generation, length, digest = HEADER.unpack_from(view)
    if magic != MAGIC:
        raise refuse("not a blockd snapshot file (wrong magic)")
    if version != VERSION:
        raise refuse(f"format version {version}; this blockd reads version {VERSION}")
    if length != len(view):
        raise refuse(f"header says {length} bytes, the file has {len(view)}: truncated?")
    if count != SECTIONS:
        raise refuse(f"{count} sections; version {VERSION} has {SECTIONS}")
    sha = hashlib.sha256(view[:32])
    sha.update(bytes(32))
    sha.update(view[64:])
    if sha.digest() != digest:
        raise refuse("checksum mismatch: the file is damaged")
    sections = _sections(view, refuse)
    meta = meta_from_json(view[sections[0][0] : sections[0][0] + sections[0][1]])
    if meta.generation != generation:
        raise refuse(f"header generation {generation}, metadata {meta.generation}")
    if meta.suffixes != suffixes.fingerprint():
        raise refuse("made with another Public Suffix List than this blockd's")
    fast = meta.hash_check == hash_check()
    keysets = []
    for q, name in enumerate(QUESTIONS):
        digests, owners, starts, bits = (
            view[o : o + n] for o, n in sections[1 + 4 * q : 5 + 4 * q]
        )
        numbers = meta.sets[name]
        parts = KeySetParts(
            digests.cast("Q"), owners.cast("H"), starts.cast("I"), bits, *numbers.fields(fast)
        )
        _check_set(parts, numbers, len(meta.lists), _prefixed(refuse, name))
        keysets.append(KeySet.from_parts(parts))
    try:
        never_block = NeverBlock(meta.never_block)
    except ValueError as e:
        raise refuse(f"never-block: {e}") from None
    return PolicySnapshot(
        generation=generation,
        created_at=meta.created_at,
        lists=meta.lists,
        hosts=keysets[0],
        routes=keysets[1],
        urls=keysets[2],
        ref_key=meta.ref_key,
        never_block=never_block,
        _probes=meta.probe_keys,
    )


def _prefixed(refuse: Refuse, prefix: str) -> Refuse:
    return lambda what: refuse(f"{prefix}: {what}")


def _sections(view: memoryview, refuse: Refuse) -> list[tuple[int, int]]:
    """Return (offset, length) of every section, checked against the layout and the file."""
    out = []
    end = TABLE_END
    for i in range(SECTIONS):
        kind, reserved, offset, length = ENTRY.unpack_from(view, HEADER.size + i * ENTRY.size)
        expected = KIND_META if i == 0 else _kind((i - 1) // 4, (i - 1) % 4)
        if kind != expected or reserved:
            raise refuse(f"section {i} has kind {kind}; expected {expected}")
        if offset % ALIGN or offset < end or length > len(view) - offset:
            raise refuse(f"section {i} at {offset}+{length} lies outside its place in the file")
        itemsize = ARRAYS[(i - 1) % 4][2] if i else 1
        if length % itemsize:
            raise refuse(f"section {i}: {length} bytes is not a whole number of items")
        out.append((offset, length))
        end = offset + length
    return out


def _check_set(parts: KeySetParts, numbers: SetNumbers, lists: int, refuse: Refuse) -> None:
    """Check the invariants lookups rely on: sorted unique digests, owners, bucket table."""
    digests = np.frombuffer(parts.digests, dtype="<u8")  # views of the mapping, no copy
    owners = np.frombuffer(parts.owners, dtype="<u2")
    starts = np.frombuffer(parts.starts, dtype="<u4")
    size = len(digests)
    if numbers.size != size or len(owners) != size:
        raise refuse(f"{len(owners)} owners for {size} digests")
    bits = 64 - parts.shift
    if not 1 <= bits <= _MAX_BUCKET_BITS or len(starts) != (1 << bits) + 1:
        raise refuse(f"{len(starts)} bucket starts do not fit {bits} bucket bits")
    if len(parts.filter) != parts.mask + 1 or parts.mask & (parts.mask + 1):
        raise refuse(f"filter of {len(parts.filter)} bytes does not fit mask {parts.mask}")
    if size and not bool(np.all(digests[1:] > digests[:-1])):
        raise refuse("digests are not sorted and unique")
    if size and int(owners.max()) >= lists:
        raise refuse(f"an owner beyond the {lists} lists")
    bounds = np.arange(1 << bits, dtype=np.uint64) << np.uint64(parts.shift)
    if not np.array_equal(starts[:-1], np.searchsorted(digests, bounds)) or starts[-1] != size:
        raise refuse("bucket starts do not match the digests")
