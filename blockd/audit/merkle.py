"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and compact ranges.

Leaves are addressed by index; a tree of size n covers leaves [0, n). Node (level k, index i)
covers leaves [i << k, min((i + 1) << k, n)): when that range is short of 2**k leaves the node
is on the right border and, as in RFC 6962, a lone node is promoted to the next level unhashed.
Building levels bottom-up this way gives exactly MTH from RFC 9162 section 2.1.1.

Producers (`root`, `TreeLevels`, the `*_proof` functions) trust their inputs to be 32-byte leaf
hashes and are written for speed. Verifiers (`verify_*`) treat everything as hostile: a wrong
proof, index, size or hash length yields False, never an exception. ValueError is raised only
for negative sizes or indices, which no proof can make sense of.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 6962 hash of a leaf: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def leaf_hashes(datas: Iterable[bytes]) -> list[bytes]:
    """Return the leaf hash of each entry: leaf_hash, without a call per entry."""
    sha = _sha256
    return [sha(b"\x00" + data).digest() for data in datas]


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 hash of an interior node: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def _next_level(level: bytes) -> bytes:
    """Hash one packed level (32-byte hashes back to back) into the level above it."""
    # Hot path: siblings are adjacent in the packed level, so a parent is one slice away.
    pairs_end = (len(level) // 64) * 64
    sha = _sha256
    parents = b"".join([sha(b"\x01" + level[i : i + 64]).digest() for i in range(0, pairs_end, 64)])
    if pairs_end != len(level):
        parents += level[pairs_end:]  # the lone last node is promoted unchanged
    return parents


def root(hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle tree hash (MTH) of the given leaf hashes; EMPTY_ROOT if none."""
    if not hashes:
        return EMPTY_ROOT
    level = b"".join(hashes)
    while len(level) > HASH_SIZE:
        level = _next_level(level)
    return level


def _check_size(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _well_formed(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def _equal(a: bytes, b: bytes) -> bool:
    return isinstance(a, bytes) and isinstance(b, bytes) and hmac.compare_digest(a, b)


class CompactRange:
    """The hashes of the maximal perfect subtrees covering leaves [begin, end).

    For begin == 0 this is the log's frontier: at most log2(n) + 1 hashes from which the root
    is recomputed, and to which a leaf is appended, without rereading earlier leaves.
    """

    def __init__(self, begin: int = 0, end: int | None = None, nodes: Iterable[bytes] = ()) -> None:
        end = begin if end is None else end
        _check_size("begin", begin)
        if end < begin:
            raise ValueError(f"end {end} is before begin {begin}")
        self._begin, self._end = begin, end
        self._nodes = list(nodes)
        expected = _range_node_count(begin, end)
        if len(self._nodes) != expected:
            raise ValueError(
                f"[{begin}, {end}) takes {expected} compact range hashes, got {len(self._nodes)}"
            )
        if not _well_formed(*self._nodes):
            raise ValueError(f"compact range hashes must be {HASH_SIZE} bytes each")

    @property
    def begin(self) -> int:
        """Return the index of the first leaf covered."""
        return self._begin

    @property
    def end(self) -> int:
        """Return the index one past the last leaf covered (the tree size when begin is 0)."""
        return self._end

    @property
    def size(self) -> int:
        """Return the number of leaves covered."""
        return self._end - self._begin

    @property
    def nodes(self) -> tuple[bytes, ...]:
        """Return the subtree hashes, left to right."""
        return tuple(self._nodes)

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf, merging completed subtrees."""
        if not _well_formed(leaf_hash):
            raise ValueError(f"a leaf hash must be {HASH_SIZE} bytes")
        h, index, nodes = leaf_hash, self._end, self._nodes
        # A binary counter: merge while the new node is a right child whose left sibling is
        # wholly inside the range (and therefore the last hash held).
        level = 0
        while (index >> level) & 1 and ((index >> level) - 1) << level >= self._begin:
            h = node_hash(nodes.pop(), h)
            level += 1
        nodes.append(h)
        self._end += 1

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Add leaves in order, hashing the new nodes a level at a time."""
        if not _well_formed(*leaf_hashes):
            raise ValueError(f"a leaf hash must be {HASH_SIZE} bytes")
        # Hot path (every audit entry written): what `append` does leaf by leaf, done level
        # by level over packed hashes, so each parent is one slice and one hash.
        nodes, begin, sha = self._nodes, self._begin, _sha256
        level, index, new = 0, self._end, b"".join(leaf_hashes)  # new: nodes from `index` on
        right: list[bytes] = []  # lone last nodes of each level: the new right border
        while new:
            if index & 1:  # the first new node is a right child
                if (index - 1) << level >= begin:  # its sibling is held: the last hash
                    new, index = nodes.pop() + new, index - 1
                else:  # its sibling is outside the range: it stays, on the left border
                    nodes.append(new[:32])
                    new, index = new[32:], index + 1
            pairs = len(new) // 64 * 64
            if pairs != len(new):
                right.append(new[pairs:])
            new = b"".join([sha(b"\x01" + new[i : i + 64]).digest() for i in range(0, pairs, 64)])
            level, index = level + 1, index >> 1
        nodes.extend(reversed(right))
        self._end += len(leaf_hashes)

    def root(self) -> bytes:
        """Return the root of the tree of size end; only a range from 0 has one."""
        if self._begin != 0:
            raise ValueError("only a compact range starting at leaf 0 has a root")
        if not self._nodes:
            return EMPTY_ROOT
        r = self._nodes[-1]
        for node in reversed(self._nodes[:-1]):
            r = node_hash(node, r)
        return r


def _range_node_count(begin: int, end: int) -> int:
    """Return how many maximal perfect subtrees cover [begin, end)."""
    count = 0
    while begin < end:
        level = (end - begin).bit_length() - 1
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)
        begin += 1 << level
        count += 1
    return count


class TreeLevels:
    """All levels of one tree, built once, to cut many proofs in O(log n) each.

    Proofs may be asked for any tree size up to the size built: nodes wholly inside a smaller
    tree are shared with it, and its right border is recomputed (and kept for the last size)
    in O(log n). Levels are kept packed (32 bytes per node), about 64 bytes per leaf in all.
    """

    def __init__(self, hashes: Sequence[bytes]) -> None:
        self._size = len(hashes)
        level = b"".join(hashes)
        self._levels = [level]
        while len(level) > HASH_SIZE:
            level = _next_level(level)
            self._levels.append(level)
        self._borders: tuple[int, list[bytes]] = (-1, [])

    @property
    def size(self) -> int:
        """Return the number of leaves the levels were built from."""
        return self._size

    def _size_or_default(self, size: int | None) -> int:
        if size is None:
            return self._size
        _check_size("size", size)
        if size > self._size:
            raise ValueError(f"size {size} exceeds the {self._size} leaves built")
        return size

    def _perfect(self, level: int, index: int) -> bytes:
        start = index * HASH_SIZE
        return self._levels[level][start : start + HASH_SIZE]

    def _border(self, size: int) -> list[bytes]:
        """Return, per level, the hash of the last node of the tree of this size."""
        if self._borders[0] == size:
            return self._borders[1]
        if size == self._size:  # the built levels already end in this tree's border
            borders = [level[-HASH_SIZE:] for level in self._levels]
            self._borders = (size, borders)
            return borders
        last = size - 1
        border = self._perfect(0, last)
        borders = [border]
        level = 0
        while last > 0:
            if last & 1:
                border = node_hash(self._perfect(level, last - 1), border)
            last >>= 1
            level += 1
            borders.append(border)
        self._borders = (size, borders)
        return borders

    def _node(self, level: int, index: int, size: int) -> bytes:
        """Return node (level, index) of the tree of this size."""
        if index == (size - 1) >> level:
            return self._border(size)[level]
        return self._perfect(level, index)

    def root(self, size: int | None = None) -> bytes:
        """Return the root of the tree of this size (default: all leaves)."""
        size = self._size_or_default(size)
        if size == 0:
            return EMPTY_ROOT
        return self._border(size)[-1]

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Return the RFC 9162 inclusion proof (audit path) of a leaf, bottom-up."""
        size = self._size_or_default(size)
        _check_size("index", index)
        if index >= size:
            raise ValueError(f"leaf index {index} outside a tree of size {size}")
        proof = []
        fn, sn, level = index, size - 1, 0
        while sn > 0:
            sibling = fn ^ 1
            if sibling <= sn:  # else the node is the lone last one: promoted, no sibling
                proof.append(self._node(level, sibling, size))
            fn, sn, level = fn >> 1, sn >> 1, level + 1
        return proof

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Return the RFC 9162 consistency proof from old_size to new_size."""
        new_size = self._size_or_default(new_size)
        _check_size("old_size", old_size)
        if old_size > new_size:
            raise ValueError(f"old_size {old_size} exceeds new_size {new_size}")
        if old_size == 0 or old_size == new_size:
            return []
        # SUBPROOF(m, D[start:start+n], b) of RFC 9162 section 2.1.4.1, unrolled: each step
        # records the sibling subtree it leaves behind; those come out deepest first.
        siblings: list[bytes] = []
        m, start, n, complete = old_size, 0, new_size, True
        while m != n:
            k = 1 << ((n - 1).bit_length() - 1)  # largest power of two < n
            if m <= k:
                siblings.append(self._range(start + k, n - k, new_size))
                n = k
            else:
                siblings.append(self._range(start, k, new_size))
                m, start, n, complete = m - k, start + k, n - k, False
        head = [] if complete else [self._range(start, n, new_size)]
        return head + siblings[::-1]

    def _range(self, start: int, count: int, size: int) -> bytes:
        """Return MTH of leaves [start, start + count), a node of the tree of this size."""
        level = (count - 1).bit_length()
        return self._node(level, start >> level, size)

    def range_proof(
        self, begin: int, end: int, size: int | None = None
    ) -> tuple[list[bytes], list[bytes]]:
        """Return (left, right) proving leaves [begin, end) in the tree of this size.

        left is the compact range of [0, begin). right is the minimal set of nodes of the
        tree of this size that covers [end, size): the right-hand siblings on the path of
        leaf end - 1, bottom-up (or, for end == 0, the root alone).
        """
        size = self._size_or_default(size)
        _check_size("begin", begin)
        if not begin <= end <= size:
            raise ValueError(f"range [{begin}, {end}) not within a tree of size {size}")
        levels = [k for k in range(begin.bit_length() - 1, -1, -1) if begin >> k & 1]
        left = [self._perfect(k, (begin >> k) - 1) for k in levels]
        if end == 0:
            return left, [self.root(size)] if size else []
        right = []
        fn, sn, level = end - 1, size - 1, 0
        while sn > 0:
            if not fn & 1 and fn < sn:
                right.append(self._node(level, fn + 1, size))
            fn, sn, level = fn >> 1, sn >> 1, level + 1
        return left, right


def inclusion_proof(index: int, size: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Return the inclusion proof of leaf index in the tree of the first size hashes."""
    return TreeLevels(hashes[:size]).inclusion_proof(index, size)


def consistency_proof(old_size: int, new_size: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Return the consistency proof between the trees of the first old_size and new_size."""
    _check_size("new_size", new_size)
    return TreeLevels(hashes[:new_size]).consistency_proof(old_size, new_size)


def range_proof(
    begin: int, end: int, size: int, hashes: Sequence[bytes]
) -> tuple[list[bytes], list[bytes]]:
    """Return (left, right) proving leaves [begin, end) in the tree of the first size hashes."""
    _check_size("size", size)
    return TreeLevels(hashes[:size]).range_proof(begin, end, size)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Check an inclusion proof as in RFC 9162 section 2.1.3.2.

    A root does not commit to its tree size (the proof for a leaf of a tree of size 3 also
    passes as one for size 4 against the same root); take both from one signed checkpoint.
    """
    _check_size("index", index)
    _check_size("size", size)
    if index >= size or not _well_formed(leaf_hash, root, *proof):
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False  # proof too long
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and _equal(r, root)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Check a consistency proof as in RFC 9162 section 2.1.4.2.

    A tree of size 0 is consistent with any later tree, but only if old_root is EMPTY_ROOT
    and the proof is empty (stricter than transparency-dev, which ignores old_root there).
    """
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if old_size > new_size or not _well_formed(old_root, new_root, *proof):
        return False
    if old_size == 0:
        empty_new = new_size > 0 or _equal(new_root, EMPTY_ROOT)
        return not proof and _equal(old_root, EMPTY_ROOT) and empty_new
    if old_size == new_size:
        return not proof and _equal(old_root, new_root)
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # old tree is a complete subtree of the new one
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False  # proof too long
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and _equal(fr, old_root) and _equal(sr, new_root)


def verify_range(
    begin: int,
    size: int,
    leaf_hashes: Sequence[bytes],
    left: Sequence[bytes],
    right: Sequence[bytes],
    root: bytes,
) -> bool:
    """Check that leaf_hashes are leaves [begin, begin + len) of the tree with this root.

    left is the compact range of [0, begin) and right the nodes from `range_proof`; both
    must have exactly the expected length.
    """
    _check_size("begin", begin)
    _check_size("size", size)
    end = begin + len(leaf_hashes)
    if end > size or not _well_formed(root, *leaf_hashes, *left, *right):
        return False
    if len(left) != begin.bit_count():
        return False
    if end == 0:  # nothing to place: right is the root itself, or nothing for an empty tree
        if size == 0:
            return not right and _equal(root, EMPTY_ROOT)
        return len(right) == 1 and _equal(right[0], root)
    frontier = CompactRange(0, begin, left)
    for h in leaf_hashes:
        frontier.append(h)
    stack = list(frontier.nodes)
    # Walk up from the last node of the compact range of [0, end): a node of the big tree.
    level = (end & -end).bit_length() - 1
    fn, sn = (end >> level) - 1, (size - 1) >> level
    cur = stack.pop()
    taken = 0
    while sn > 0:
        if fn & 1:
            cur = node_hash(stack.pop(), cur)
        elif fn < sn:
            if taken == len(right):
                return False  # right too short
            cur = node_hash(cur, right[taken])
            taken += 1
        fn, sn = fn >> 1, sn >> 1
    return taken == len(right) and not stack and _equal(cur, root)
