"""C2SP tlog-cosignature/v1 (Ed25519): keys, the signed message, lines, quorums."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blockd.audit import cosignature, note
from blockd.audit.cosignature import CosignatureVerifier, Cosigner

NAME = "witness.example/w1"
SEED = bytes(range(32))  # a test key
# The checkpoint body of the spec's example (c2sp.org/tlog-cosignature).
BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
TIME = 1679315147
# Computed once with this implementation, and checked below against the spec's description.
VKEY = "witness.example/w1+e75f6532+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
LINE = (
    "— witness.example/w1 519lMgAAAABkGFDLBuRDazBLVac2NE+Y+IjbjQOcXLfF9CSDZVUIoS83rE1nFZsVE8Y"
    "iWV6Ngr7lV8H6bdoBQGP/l73euDMQ9k+bBQ==\n"
)


def test_the_fixed_vector_is_what_the_spec_describes() -> None:
    w = Cosigner.from_seed(NAME, SEED)
    assert w.verifier.vkey == VKEY
    assert w.cosign(BODY, TIME) == LINE
    # Rebuild every part from the spec's words, with no blockd code.
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes_raw()
    key_id = hashlib.sha256(NAME.encode() + b"\n" + b"\x04" + public).digest()[:4]
    encoded = base64.b64encode(bytes([4]) + public).decode()
    assert f"{NAME}+{key_id.hex()}+{encoded}" == VKEY
    assert LINE.startswith("\u2014 " + NAME + " ") and LINE.endswith("\n")
    blob = base64.b64decode(LINE.removesuffix("\n").split(" ")[2], validate=True)
    assert len(blob) == 4 + 8 + 64
    assert blob[:4] == key_id
    assert blob[4:12] == TIME.to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1679315147\n" + BODY.encode()
    assert cosignature.signed_message(BODY, TIME) == message
    Ed25519PrivateKey.from_private_bytes(SEED).public_key().verify(blob[12:], message)
    # The spec's own example line carries the same timestamp in the same place.
    spec_line = (
        "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0"
        "xUe+mbIUBkBIfZ+qnA=="
    )
    assert base64.b64decode(spec_line)[4:12] == blob[4:12]


def test_a_cosignature_verifies_and_names_its_time() -> None:
    w = Cosigner.from_seed(NAME, SEED)
    v = CosignatureVerifier.from_vkey(VKEY)
    assert v.timestamp(LINE, BODY) == TIME
    assert v.timestamp(LINE, BODY.replace("20852163", "20852164")) is None
    assert v.timestamp(w.cosign(BODY, 0), BODY) == 0
    assert v.timestamp(w.cosign(BODY, (1 << 63) - 1), BODY) == (1 << 63) - 1
    with pytest.raises(ValueError, match="2\\^63"):
        w.cosign(BODY, 1 << 63)


def test_a_log_signature_is_not_a_cosignature() -> None:
    # The same seed and name as a plain note key (type 0x01) has another key ID.
    plain = note.Signer.from_seed(NAME, SEED)
    signed = note.sign_note(BODY, plain)
    line = signed[signed.rfind("\n\n") + 2 :]
    v = CosignatureVerifier.from_vkey(VKEY)
    assert v.timestamp(line, BODY) is None and not v.is_mine(line)
    with pytest.raises(note.NoteError, match="0x04"):
        CosignatureVerifier.from_vkey(plain.verifier.vkey)


def test_keys_round_trip_and_mismatches_are_refused() -> None:
    w = Cosigner.from_seed(NAME, SEED)
    assert Cosigner.from_skey(w.skey).verifier == w.verifier
    name, kid, key = VKEY.split("+", 2)
    with pytest.raises(note.NoteError, match="key-id-mismatch"):
        CosignatureVerifier.from_vkey(f"other.example/w+{kid}+{key}")
    with pytest.raises(note.NoteError):
        CosignatureVerifier.from_vkey(f"{name}+{kid}")
    with pytest.raises(note.NoteError):
        CosignatureVerifier.from_vkey(f"{name}+{kid}+{key[:-4]}")


def test_a_quorum_names_missing_and_invalid_witnesses() -> None:
    a = Cosigner.from_seed("a.example/w", bytes(32))
    b = Cosigner.from_seed("b.example/w", bytes([1]) * 32)
    c = Cosigner.from_seed("c.example/w", bytes([2]) * 32)
    good = a.cosign(BODY, TIME)
    forged = b.cosign(BODY.replace("20852163", "1"), TIME)  # b's line, for another tree
    keys = [a.verifier, b.verifier, c.verifier]
    q = cosignature.quorum(BODY, [good, forged, "garbage\n"], keys)
    assert not q.ok
    assert [n for n, _ in q.valid] == [f"a.example/w+{a.key_id:08x}"]
    assert q.invalid == (f"b.example/w+{b.key_id:08x}",)
    assert q.missing == (f"c.example/w+{c.key_id:08x}",)
    assert "missing from c.example/w" in q.describe() and "invalid from b.example/w" in q.describe()
    assert cosignature.quorum(BODY, [good, good], keys, threshold=1).ok
    assert not cosignature.quorum(BODY, [good, good], keys, threshold=2).ok
