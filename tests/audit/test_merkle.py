"""Merkle hashing and proofs against RFC 6962 vectors and the RFC's own recursive definitions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockd.audit import merkle
from blockd.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    TreeLevels,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
    verify_range,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "rfc6962_vectors.json").read_text()
)
LEAVES = [leaf_hash(bytes.fromhex(d)) for d in VECTORS["leaves"]]
ROOTS = [bytes.fromhex(r) for r in VECTORS["roots"]]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

# A long synthetic log; the reference functions below address it by leaf range.
H = [leaf_hash(i.to_bytes(4, "big")) for i in range(128)]


def _split(n: int) -> int:
    """Return the largest power of two smaller than n (RFC 9162's k)."""
    return 1 << ((n - 1).bit_length() - 1)


@cache
def mth(a: int, b: int) -> bytes:
    """Return MTH(H[a:b]) straight from RFC 9162 section 2.1.1."""
    if b - a == 1:
        return H[a]
    k = _split(b - a)
    return node_hash(mth(a, a + k), mth(a + k, b))


def ref_path(m: int, a: int, b: int) -> list[bytes]:
    """Return PATH(m, H[a:b]) from RFC 9162 section 2.1.3.1."""
    if b - a == 1:
        return []
    k = _split(b - a)
    if m < k:
        return [*ref_path(m, a, a + k), mth(a + k, b)]
    return [*ref_path(m - k, a + k, b), mth(a, a + k)]


def ref_subproof(m: int, a: int, b: int, complete: bool) -> list[bytes]:
    """Return SUBPROOF(m, H[a:b], complete) from RFC 9162 section 2.1.4.1."""
    if m == b - a:
        return [] if complete else [mth(a, b)]
    k = _split(b - a)
    if m <= k:
        return [*ref_subproof(m, a, a + k, complete), mth(a + k, b)]
    return [*ref_subproof(m - k, a + k, b, False), mth(a, a + k)]


def ref_cover(a: int, b: int, lo: int, hi: int) -> list[bytes]:
    """Return the nodes of the tree over H[a:b] lying wholly in [lo, hi), each maximal."""
    if b <= lo or hi <= a:
        return []
    if lo <= a and b <= hi:
        return [mth(a, b)]
    k = _split(b - a)
    return ref_cover(a, a + k, lo, hi) + ref_cover(a + k, b, lo, hi)


def ref_compact(begin: int, end: int) -> list[bytes]:
    """Return the maximal aligned perfect subtrees covering [begin, end), left to right."""
    nodes, p = [], begin
    while p < end:
        size = 1 << ((end - p).bit_length() - 1)
        while p % size:
            size //= 2
        nodes.append(mth(p, p + size))
        p += size
    return nodes


def flipped(proof: Sequence[bytes], i: int) -> list[bytes]:
    """Return a copy of proof with one bit of element i flipped."""
    out = list(proof)
    out[i] = bytes([out[i][0] ^ 8]) + out[i][1:]
    return out


# --- RFC 6962 vectors (transparency-dev/merkle) -------------------------------------------


def test_hasher_vectors() -> None:
    hasher = VECTORS["hasher"]
    assert bytes.fromhex(hasher["empty_root"]) == EMPTY_ROOT == merkle.root([])
    assert leaf_hash(b"").hex() == hasher["empty_leaf_hash"]
    assert leaf_hash(hasher["leaf"]["data_ascii"].encode()).hex() == hasher["leaf"]["hash"]
    datas = [b"", hasher["leaf"]["data_ascii"].encode()]
    assert merkle.leaf_hashes(datas) == [leaf_hash(d) for d in datas]
    left, right = hasher["node"]["left_ascii"].encode(), hasher["node"]["right_ascii"].encode()
    assert node_hash(left, right).hex() == hasher["node"]["hash"]


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_of_the_eight_leaf_tree(size: int) -> None:
    assert merkle.root(LEAVES[:size]) == ROOTS[size - 1]
    assert TreeLevels(LEAVES[:size]).root() == ROOTS[size - 1]
    assert TreeLevels(LEAVES).root(size) == ROOTS[size - 1]
    frontier = CompactRange()
    for h in LEAVES[:size]:
        frontier.append(h)
    assert frontier.root() == ROOTS[size - 1]


def inclusion_probes(index: int, size: int, proof: list[bytes], root: bytes) -> list[Any]:
    """Return (leaf, index, size, proof, root) variants that must not verify (Go's probes)."""
    leaf = LEAVES[index]
    n = len(proof)
    probes = [
        (leaf, index + 1, size, proof, root),
        (leaf, index ^ 2, size, proof, root),
        (leaf, index, size * 2, proof, root),
        (leaf, index, size // 2, proof, root),
        (b"WrongLeaf", index, size, proof, root),
        (leaf, index, size, proof, EMPTY_ROOT),
        (leaf, index, size, proof, SOME_HASH),
        (leaf, index, size, [*proof, b""], root),
        (leaf, index, size, [*proof, root], root),
        (leaf, index, size, [b"", *proof], root),
        (leaf, index, size, [root, *proof], root),
    ]
    if index:
        probes.append((leaf, index - 1, size, proof, root))
    probes += [(leaf, index, size, flipped(proof, i), root) for i in range(n)]
    if n:
        probes.append((leaf, index, size, proof[:-1], root))
    if n > 1:
        probes.append((leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root))
    return probes


@pytest.mark.parametrize("vector", VECTORS["inclusion_proofs"], ids=str)
def test_inclusion_vectors(vector: dict[str, Any]) -> None:
    index, size = vector["index"], vector["size"]
    proof = [bytes.fromhex(p) for p in vector["proof"]]
    root = ROOTS[size - 1]
    assert merkle.inclusion_proof(index, size, LEAVES) == proof
    assert TreeLevels(LEAVES).inclusion_proof(index, size) == proof
    assert verify_inclusion(LEAVES[index], index, size, proof, root)
    for probe in inclusion_probes(index, size, proof, root):
        assert not verify_inclusion(*probe), probe


def test_inclusion_of_a_single_entry() -> None:
    h = leaf_hash(b"data")
    assert verify_inclusion(h, 0, 1, [], h)
    assert not verify_inclusion(b"", 0, 1, [], h)
    assert not verify_inclusion(h, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], b"")


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_rejects_roots_that_do_not_match(index: int, size: int) -> None:
    assert not verify_inclusion(SOME_HASH, index, size, [], b"")
    assert not verify_inclusion(b"", index, size, [], EMPTY_ROOT)
    assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)


def consistency_probes(old: int, new: int, proof: list[bytes]) -> list[Any]:
    """Return (old, new, old_root, new_root, proof) variants that must not verify."""
    r1, r2 = ROOTS[old - 1], ROOTS[new - 1]
    probes = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new // 2, r1, r2, proof),
        (old, new, b"WrongRoot", r2, proof),
        (old, new, r1, b"WrongRoot", proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, b""]),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [*proof, r2]),
        (old, new, r1, r2, [b"", *proof]),
        (old, new, r1, r2, [r1, *proof]),
        (old, new, r1, r2, [r2, *proof]),
        (old, new, r1, r2, [proof[0], *proof]),
        (old, new, r1, r2, proof[:-1]),
    ]
    return probes + [(old, new, r1, r2, flipped(proof, i)) for i in range(len(proof))]


@pytest.mark.parametrize("vector", VECTORS["consistency_proofs"], ids=str)
def test_consistency_vectors(vector: dict[str, Any]) -> None:
    old, new = vector["old_size"], vector["new_size"]
    proof = [bytes.fromhex(p) for p in vector["proof"]]
    assert merkle.consistency_proof(old, new, LEAVES) == proof
    assert verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof)
    if proof:
        for probe in consistency_probes(old, new, proof):
            assert not verify_consistency(*probe), probe


R1, R2 = hashlib.sha256(b"don't care 1").digest(), hashlib.sha256(b"don't care 2").digest()


# Go's TestVerifyConsistency table, with 32-byte stand-ins for its short "don't care" roots
# (short hashes are refused here) and EMPTY_ROOT required for size 0 (Go ignores that root).
@pytest.mark.parametrize(
    ("old", "new", "root1", "root2", "proof", "ok"),
    [
        (0, 0, R1, R2, [], False),
        (1, 1, R1, R2, [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [], True),
        (0, 1, EMPTY_ROOT, R2, [], True),
        (0, 1, R1, R2, [], False),  # stricter than Go: size 0 has exactly one root
        (1, 1, R2, R2, [], True),
        (1, 0, R1, R2, [], False),
        (2, 1, R1, R2, [], False),
        (1, 2, R1, R2, [], False),
        (0, 0, EMPTY_ROOT, R2, [], False),
        (1, 1, EMPTY_ROOT, R2, [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
    ],
)
def test_consistency_edge_cases(
    old: int, new: int, root1: bytes, root2: bytes, proof: list[bytes], ok: bool
) -> None:
    assert verify_consistency(old, new, root1, root2, proof) is ok


def node_of(spec: Any) -> bytes:
    """Return the hash of a [level, index] node, or fold a rehashed group of them."""
    if isinstance(spec[0], int):
        level, index = spec
        return mth(index << level, (index + 1) << level)
    acc = node_of(spec[0])
    for part in spec[1:]:
        acc = node_hash(node_of(part), acc)
    return acc


@pytest.mark.parametrize("vector", VECTORS["inclusion_proof_nodes"], ids=str)
def test_inclusion_proof_nodes(vector: dict[str, Any]) -> None:
    tree = TreeLevels(H[:96])
    want = [node_of(spec) for spec in vector["nodes"]]
    assert tree.inclusion_proof(vector["index"], vector["size"]) == want


@pytest.mark.parametrize("vector", VECTORS["consistency_proof_nodes"], ids=str)
def test_consistency_proof_nodes(vector: dict[str, Any]) -> None:
    tree = TreeLevels(H[:96])
    want = [node_of(spec) for spec in vector["nodes"]]
    assert tree.consistency_proof(vector["old_size"], vector["new_size"]) == want


def test_proofs_refuse_impossible_parameters() -> None:
    tree = TreeLevels(H[:96])
    for size, index in VECTORS["inclusion_proof_errors"]:
        with pytest.raises(ValueError, match="outside"):
            tree.inclusion_proof(index, size)
    for old, new in VECTORS["consistency_proof_errors"]:
        with pytest.raises(ValueError, match="exceeds"):
            tree.consistency_proof(old, new)
    with pytest.raises(ValueError, match="exceeds the 96 leaves"):
        tree.root(97)


# --- Exhaustive checks against the RFC's recursive definitions -----------------------------


BIG = TreeLevels(H[:70])


@pytest.mark.parametrize("size", range(70))
def test_roots_and_inclusion_proofs_for_every_leaf(size: int) -> None:
    root = mth(0, size) if size else EMPTY_ROOT
    assert merkle.root(H[:size]) == root == BIG.root(size) == TreeLevels(H[:size]).root()
    for index in range(size):
        proof = BIG.inclusion_proof(index, size)
        assert proof == ref_path(index, 0, size)
        assert verify_inclusion(H[index], index, size, proof, root)
        assert not verify_inclusion(H[index ^ 1], index, size, proof, root) or size == 1


@pytest.mark.parametrize("new", range(1, 65))
def test_consistency_proofs_for_every_pair(new: int) -> None:
    for old in range(1, new + 1):
        proof = BIG.consistency_proof(old, new)
        assert proof == ref_subproof(old, 0, new, True)
        r1, r2 = mth(0, old), mth(0, new)
        assert verify_consistency(old, new, r1, r2, proof)
        if old == new:
            continue
        assert not verify_consistency(old, new, r1, r2, proof[:-1])
        assert not verify_consistency(old, new, r1, r2, [*proof, r2])
        assert not verify_consistency(old - 1, new, r1, r2, proof)
        for i in range(len(proof)):
            assert not verify_consistency(old, new, r1, r2, flipped(proof, i))


@pytest.mark.parametrize("size", range(65))
def test_range_proofs_for_every_range(size: int) -> None:
    tree = TreeLevels(H[:size])
    root = tree.root()
    for begin in range(size + 1):
        for end in range(begin, size + 1):
            left, right = tree.range_proof(begin, end)
            assert left == ref_compact(0, begin)
            assert right == (ref_cover(0, size, end, size) if size else [])  # minimal
            assert verify_range(begin, size, H[begin:end], left, right, root), (begin, end)


@pytest.mark.parametrize("size", range(1, 21))
def test_range_proofs_refuse_any_tampering(size: int) -> None:
    root = mth(0, size)
    for begin in range(size + 1):
        for end in range(begin, size + 1):
            left, right = merkle.range_proof(begin, end, size, H)
            leaves = H[begin:end]
            bad = [
                (begin, size, leaves, left, right, SOME_HASH),
                (begin, size, leaves, left, [*right, root], root),
                (begin, size, leaves, [*left, root], right, root),
                (begin, size, [*leaves, H[end]], left, right, root),
            ]
            if begin:
                bad.append((begin - 1, size, leaves, left, right, root))
            if right:
                bad.append((begin, size, leaves, left, right[:-1], root))
            bad += [(begin, size, leaves, flipped(left, i), right, root) for i in range(len(left))]
            bad += [(begin, size, leaves, left, flipped(right, i), root) for i in range(len(right))]
            bad += [
                (begin, size, flipped(leaves, i), left, right, root) for i in range(len(leaves))
            ]
            for probe in bad:
                assert not verify_range(*probe), (begin, end, size)


def test_range_of_an_empty_tree() -> None:
    assert merkle.range_proof(0, 0, 0, []) == ([], [])
    assert verify_range(0, 0, [], [], [], EMPTY_ROOT)
    assert not verify_range(0, 0, [], [], [EMPTY_ROOT], EMPTY_ROOT)


# --- Compact ranges ------------------------------------------------------------------------


@pytest.mark.parametrize("begin", range(0, 40, 3))
def test_compact_range_appends_from_any_start(begin: int) -> None:
    compact = CompactRange(begin)
    for end in range(begin, 70):
        assert list(compact.nodes) == ref_compact(begin, end)
        assert (compact.begin, compact.end, compact.size) == (begin, end, end - begin)
        compact.append(H[end])
    if begin:
        with pytest.raises(ValueError, match="starting at leaf 0"):
            compact.root()


@pytest.mark.parametrize("begin", [0, 1, 2, 3, 5, 8, 13, 32, 33])
def test_compact_range_extends_in_batches_as_it_appends(begin: int) -> None:
    # Batches of every size from every end: extend hashes level by level, append leaf by leaf.
    for end in range(begin, begin + 40):
        for count in (0, 1, 2, 3, 7, 8, 9, 31):
            compact = CompactRange(begin, end, ref_compact(begin, end))
            compact.extend(H[end : end + count])
            assert list(compact.nodes) == ref_compact(begin, end + count), (begin, end, count)
            assert compact.end == end + count
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange().extend([H[0], b"short"])


def test_compact_range_resumes_from_stored_nodes() -> None:
    stored = CompactRange(0, 44, ref_compact(0, 44))
    assert len(stored.nodes) == 3  # one per set bit of 44
    for h in H[44:70]:
        stored.append(h)
    assert stored.root() == mth(0, 70)
    assert CompactRange().root() == EMPTY_ROOT


def test_compact_range_refuses_inconsistent_nodes() -> None:
    with pytest.raises(ValueError, match=r"\[0, 45\) takes 4 compact range hashes, got 3"):
        CompactRange(0, 45, ref_compact(0, 44))
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange(0, 1, [b"short"])
    with pytest.raises(ValueError, match="before begin"):
        CompactRange(5, 4, [])
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange().append(b"short")


# --- Hostile input ---------------------------------------------------------------------------


def test_negative_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="index must be >= 0"):
        verify_inclusion(H[0], -1, 4, [], SOME_HASH)
    with pytest.raises(ValueError, match="old_size must be >= 0"):
        verify_consistency(-1, 4, SOME_HASH, SOME_HASH, [])
    with pytest.raises(ValueError, match="begin must be >= 0"):
        verify_range(-1, 4, [], [], [], SOME_HASH)
    with pytest.raises(ValueError, match="size must be >= 0"):
        merkle.inclusion_proof(0, -1, H)


hashes = st.lists(st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)))
sizes = st.integers(min_value=0, max_value=2**64)


@given(st.binary(max_size=40), sizes, sizes, hashes, st.binary(max_size=40))
def test_verify_inclusion_never_raises(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> None:
    assert isinstance(verify_inclusion(leaf, index, size, proof, root), bool)


@given(sizes, sizes, hashes, st.sampled_from([EMPTY_ROOT, SOME_HASH, b""]))
def test_verify_consistency_never_raises(
    old: int, new: int, proof: list[bytes], root: bytes
) -> None:
    assert isinstance(verify_consistency(old, new, root, SOME_HASH, proof), bool)


@given(st.integers(0, 80), st.integers(0, 100), hashes, hashes, hashes)
def test_verify_range_never_raises(
    begin: int, size: int, leaves: list[bytes], left: list[bytes], right: list[bytes]
) -> None:
    assert isinstance(verify_range(begin, size, leaves, left, right, SOME_HASH), bool)


def test_a_large_tree_agrees_across_builders() -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range((1 << 16) + 5)]
    compact = CompactRange()
    for h in leaves:
        compact.append(h)
    batched = CompactRange()
    for start in range(0, len(leaves), 10_000):
        batched.extend(leaves[start : start + 10_000])
    tree = TreeLevels(leaves)
    assert merkle.root(leaves) == compact.root() == batched.root() == tree.root()
    index = 40_000
    assert verify_inclusion(
        leaves[index], index, len(leaves), tree.inclusion_proof(index), tree.root()
    )
