"""Hashed key sets: the compact, fast structure behind every policy question.

Each key is an expression (a host name, or a Safe Browsing `host/path` expression). A set
holds, for every key, the first 8 bytes of SHA-256(key) in a sorted array (the identity,
shared with lists that arrive pre-hashed) and, for keys known in plaintext, a bit in a
filter addressed by Python's per-process keyed string hash. A lookup first tests the filter
(one string hash and one byte read, ~0.1 µs) and confirms the rare hits against the sorted
digests, so negative answers, which are nearly all of them, never pay for SHA-256. Lists
that arrive pre-hashed have no plaintext: when a set holds any, lookups hash every
candidate with SHA-256 instead.

Memory is about 8 filter bits + 10 bytes per key; plaintext is never kept.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import numpy.typing as npt

FILTER_BITS_PER_KEY = 64  # false-positive rate about 1.5 %; each costs one SHA-256
_EMPTY_U64 = np.zeros(0, dtype=np.uint64)


def digest64(key: str) -> int:
    """Return the first 8 bytes of SHA-256(key) as an integer."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


@dataclass(frozen=True)
class KeyColumn:
    """The keys of one list for one question, before merging."""

    digests: npt.NDArray[np.uint64]  # SHA-256 prefixes of every key
    pyhashes: npt.NDArray[np.int64]  # Python string hashes of the plaintext keys only

    @classmethod
    def from_plain(cls, keys: Sequence[str]) -> KeyColumn:
        """Index plaintext keys."""
        sha = hashlib.sha256
        blob = b"".join([sha(k.encode()).digest()[:8] for k in keys])
        digests = np.frombuffer(blob, dtype=">u8").astype(np.uint64)
        pyhashes = np.fromiter((hash(k) for k in keys), dtype=np.int64, count=len(keys))
        return cls(digests, pyhashes)

    @classmethod
    def from_sha256(cls, digests: Iterable[bytes]) -> KeyColumn:
        """Index keys that arrive as SHA-256 digests."""
        blob = b"".join(d[:8] for d in digests)
        return cls(np.frombuffer(blob, dtype=">u8").astype(np.uint64), np.zeros(0, dtype=np.int64))

    @property
    def hashed_only(self) -> int:
        """Return how many keys have no plaintext."""
        return len(self.digests) - len(self.pyhashes)


@dataclass(frozen=True)
class KeySetParts:
    """The arrays and numbers a KeySet is made of, as a snapshot file carries them.

    The buffers hold native-order items: digests `Q`, owners `H`, starts `I`, filter bytes.
    """

    digests: array[int] | memoryview
    owners: array[int] | memoryview
    starts: array[int] | memoryview
    filter: bytes | memoryview
    mask: int
    shift: int
    needs_sha: bool


class KeySet:
    """Merged keys of all lists for one question; answers `which list holds key`."""

    __slots__ = ("_digests", "_owners", "_shift", "_starts", "filter", "mask", "needs_sha", "size")

    # In memory after a compile (array, bytes) or views of a mapped file (memoryview): the
    # lookups read both alike.
    _digests: array[int] | memoryview
    _owners: array[int] | memoryview
    _starts: array[int] | memoryview
    filter: bytes | memoryview

    def __init__(self, columns: Sequence[KeyColumn]) -> None:
        """Merge columns; where lists share a key, the earlier column owns it."""
        digests = np.concatenate([c.digests for c in columns] or [_EMPTY_U64])
        owners = np.concatenate(
            [np.full(len(c.digests), i, dtype=np.uint16) for i, c in enumerate(columns)]
            or [np.zeros(0, dtype=np.uint16)]
        )
        order = np.argsort(digests, kind="stable")
        digests, owners = digests[order], owners[order]
        first = np.ones(len(digests), dtype=bool)
        first[1:] = digests[1:] != digests[:-1]
        # Plain arrays, not numpy, for the lookups: bisect on an array costs ~0.5 µs where a
        # numpy call on one scalar costs ~2 µs.
        self._digests = array("Q", digests[first].astype("=u8").tobytes())
        self._owners = array("H", owners[first].astype("=u2").tobytes())
        self.size = len(self._digests)
        # Bucket table on the top bits of the digest: a lookup bisects ~16 neighbours in one
        # or two cache lines instead of the whole array.
        bucket_bits = max(1, min(20, self.size.bit_length() - 4))
        self._shift = 64 - bucket_bits
        bounds = np.arange(1 << bucket_bits, dtype=np.uint64) << np.uint64(self._shift)
        starts = np.searchsorted(digests[first], bounds).astype(np.uint32)
        self._starts = array("I", starts.tobytes()) + array("I", [self.size])
        self.needs_sha = any(c.hashed_only for c in columns)
        pyhashes = np.concatenate([c.pyhashes for c in columns] or [np.zeros(0, np.int64)])
        nbits = 1 << max(16, int(max(len(pyhashes), 1) * FILTER_BITS_PER_KEY - 1).bit_length())
        bits = pyhashes & np.int64(nbits - 1)
        table = np.zeros(nbits // 8, dtype=np.uint8)
        np.bitwise_or.at(table, bits >> 3, (1 << (bits & 7)).astype(np.uint8))
        # Read inline on the hot path: bit h & (nbits-1) of the Python hash h of a key.
        self.filter = table.tobytes()
        self.mask = (nbits - 1) >> 3

    @classmethod
    def from_parts(cls, parts: KeySetParts) -> Self:
        """Rebuild a set around existing buffers, without copying them.

        The caller vouches for the parts (`blockd.policy.mapped` checks a file's before).
        """
        keys = cls.__new__(cls)
        keys._digests, keys._owners, keys._starts = parts.digests, parts.owners, parts.starts
        keys.filter, keys.mask, keys._shift = parts.filter, parts.mask, parts.shift
        keys.needs_sha = parts.needs_sha
        keys.size = len(parts.digests)
        return keys

    def parts(self) -> KeySetParts:
        """Return the arrays and numbers of this set (no copy)."""
        return KeySetParts(
            self._digests,
            self._owners,
            self._starts,
            self.filter,
            self.mask,
            self._shift,
            self.needs_sha,
        )

    def owner(self, key: str) -> tuple[int, int] | None:
        """Return (column index, digest) of the list holding key, or None."""
        if not self.size:
            return None
        if not self.needs_sha:
            # Hot path: one keyed string hash and one byte; most lookups stop here.
            h = hash(key)
            if not (self.filter[(h >> 3) & self.mask] >> (h & 7)) & 1:
                return None
        return self.owner_of_digest(digest64(key))

    def owner_of_digest(self, digest: int) -> tuple[int, int] | None:
        """Return (column index, digest) for a SHA-256 prefix, or None."""
        b = digest >> self._shift
        i = bisect_left(self._digests, digest, self._starts[b], self._starts[b + 1])
        if i < self.size and self._digests[i] == digest:
            return self._owners[i], digest
        return None

    def confirm(self, key: str) -> tuple[int, int] | None:
        """Return the owner of a key that passed the filter (or of any key, by SHA-256)."""
        return self.owner_of_digest(digest64(key))

    def nbytes(self) -> int:
        """Return the memory held, in bytes."""
        return (
            len(self.filter)
            + self._digests.itemsize * self.size
            + self._owners.itemsize * self.size
        )
