"""The witness's judgement of add-checkpoint bodies, without sockets (C2SP tlog-witness)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockd.audit import merkle, note
from blockd.witness.protocol import Held, Refused, judge, parse

ORIGIN = "isp.example/blockd/test"
LOG = note.Signer.from_seed("test-operator", bytes(32))  # a test key
OTHER = note.Signer.from_seed("test-operator", bytes([9]) * 32)
LEAVES = [merkle.leaf_hash(b"entry %d" % i) for i in range(20)]


def signed(size: int, leaves: list[bytes] = LEAVES, signer: note.Signer = LOG) -> str:
    cp = note.Checkpoint(ORIGIN, size, merkle.root(leaves[:size]))
    return note.sign_note(cp.to_text(), signer)


def body(old: int, proof: list[bytes], checkpoint: str) -> bytes:
    lines = [f"old {old}", *(base64.b64encode(h).decode() for h in proof)]
    return ("\n".join(lines) + "\n\n" + checkpoint).encode()


def held(size: int, leaves: list[bytes] = LEAVES) -> Held:
    n = signed(size, leaves)
    return Held(note.Checkpoint.parse(note.open_note(n, [LOG.verifier])[0]), n)


def status(raw: bytes, holding: Held | None) -> int:
    try:
        judge(parse(raw), [LOG.verifier], holding)
    except Refused as r:
        return r.status
    return 200


def test_a_first_checkpoint_and_a_consistent_one_are_cosigned() -> None:
    cp, text = judge(parse(body(0, [], signed(10))), [LOG.verifier], None)
    assert cp.size == 10 and text == signed(10)[: signed(10).rfind("\n\n") + 1]
    proof = merkle.consistency_proof(10, 15, LEAVES)
    assert judge(parse(body(10, proof, signed(15))), [LOG.verifier], held(10))[0].size == 15
    assert status(body(15, [], signed(15)), held(15)) == 200  # the same checkpoint again


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b"\xff\xfe\n\n",
        b"old x\n\n" + signed(10).encode(),
        b"old 010\n\n" + signed(10).encode(),
        b"old -1\n\n" + signed(10).encode(),
        b"old 1 \n\n" + signed(10).encode(),
        b"old 5\nnot-base64\n\n" + signed(10).encode(),
        b"old 5\n" + base64.b64encode(b"short") + b"\n\n" + signed(10).encode(),
        body(5, [LEAVES[0]] * 64, signed(10)),
        b"old 0\n\n\n",
    ],
)
def test_malformed_bodies_are_400(raw: bytes) -> None:
    with pytest.raises(Refused) as e:
        parse(raw)
    assert e.value.status == 400


def test_signatures_and_sizes() -> None:
    assert status(body(0, [], signed(10, signer=OTHER)), None) == 403
    tampered = signed(10).replace(ORIGIN + "\n10\n", ORIGIN + "\n11\n")
    assert status(body(0, [], tampered), None) == 403
    assert status(body(12, [], signed(10)), held(12)) == 400  # old above the new size
    assert status(body(0, [], signed(10)), held(5)) == 409  # not the size held
    with pytest.raises(Refused) as e:
        judge(parse(body(3, [], signed(10))), [LOG.verifier], held(5))
    assert e.value.size == 5 and not e.value.evidence


def test_a_rollback_is_refused() -> None:
    assert status(body(15, [], signed(10)), held(15)) == 400
    assert status(body(10, [], signed(10)), held(15)) == 409


def test_forks_are_refused_with_evidence() -> None:
    other = [merkle.leaf_hash(b"rewritten %d" % i) for i in range(20)]
    with pytest.raises(Refused) as e:  # same size, another root
        judge(parse(body(10, [], signed(10, other))), [LOG.verifier], held(10))
    assert (e.value.status, e.value.evidence, e.value.size) == (409, "fork", 10)
    proof = merkle.consistency_proof(10, 15, other)  # a true proof, of another history
    with pytest.raises(Refused) as e:
        judge(parse(body(10, proof, signed(15, other))), [LOG.verifier], held(10))
    assert (e.value.status, e.value.evidence) == (422, "inconsistent")


def test_proofs_of_the_wrong_length_are_422() -> None:
    proof = merkle.consistency_proof(10, 15, LEAVES)
    assert status(body(10, proof[:-1], signed(15)), held(10)) == 422
    assert status(body(10, [*proof, LEAVES[0]], signed(15)), held(10)) == 422
    assert status(body(0, [LEAVES[0]], signed(15)), None) == 422  # from 0: must be empty


@given(st.binary(max_size=300))
def test_any_bytes_are_parsed_or_refused(raw: bytes) -> None:
    codes = []
    try:
        judge(parse(raw), [LOG.verifier], None)
    except Refused as r:
        codes.append(r.status)
    assert set(codes) <= {400, 403, 404, 409, 422}
