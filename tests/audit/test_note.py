"""Signed notes and checkpoints against golang.org/x/mod/sumdb/note and the C2SP examples."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from blockd.audit.merkle import leaf_hash
from blockd.audit.note import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    generate_key,
    key_id,
    open_note,
    sign_note,
)

DATA = Path(__file__).parent / "data"
EXAMPLE: dict[str, Any] = json.loads((DATA / "signed_note_example.json").read_text())
CHECKPOINTS: dict[str, Any] = json.loads((DATA / "checkpoint_examples.json").read_text())
TEXT: str = EXAMPLE["text"]
PETER_SIG: str = EXAMPLE["peter"]["signature_line"]
ENOCH_SIG: str = EXAMPLE["enoch"]["signature_line"]
PETER = Verifier.from_vkey(EXAMPLE["peter"]["vkey"])
ENOCH = Verifier.from_vkey(EXAMPLE["enoch"]["vkey"])


def reason(excinfo: pytest.ExceptionInfo[NoteError]) -> str:
    return excinfo.value.reason


# --- The published PeterNeumann example -------------------------------------------------------


def test_signer_reproduces_the_published_signature() -> None:
    signer = Signer.from_skey(EXAMPLE["peter"]["skey"])
    assert signer.skey == EXAMPLE["peter"]["skey"]
    assert signer.verifier.vkey == EXAMPLE["peter"]["vkey"]
    assert signer.key_id == PETER.key_id == 0xC74F20A3
    assert sign_note(TEXT, signer) == EXAMPLE["signed_note"]  # Ed25519 is deterministic


def test_key_id_is_computed_as_the_spec_says() -> None:
    raw = base64.b64decode(EXAMPLE["peter"]["vkey"].split("+")[2])[1:]
    assert key_id("PeterNeumann", raw) == 0xC74F20A3


@pytest.mark.parametrize("encode", [False, True])
def test_open_verifies_the_published_note(encode: bool) -> None:
    note: str = EXAMPLE["signed_note"]
    assert open_note(note.encode() if encode else note, [PETER]) == (TEXT, ("PeterNeumann",))


def test_open_reports_each_known_signer_and_ignores_unknown_ones() -> None:
    both = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_note(both, [PETER]) == (TEXT, ("PeterNeumann",))
    assert open_note(both, [ENOCH]) == (TEXT, ("EnochRoot",))
    assert open_note(both, [PETER, ENOCH, ENOCH]) == (TEXT, ("PeterNeumann", "EnochRoot"))
    with pytest.raises(NoteError) as excinfo:
        open_note(both, [])
    assert reason(excinfo) == "unknown-key"


def corrupt(line: str) -> str:
    """Insert ABCD into a signature, as Go's TestOpen does (at byte 60)."""
    raw = line.encode()
    return (raw[:60] + b"ABCD" + raw[60:]).decode()


def test_repeated_and_unknown_signatures_are_tolerated() -> None:
    note = TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + corrupt(ENOCH_SIG)
    assert open_note(note, [PETER]) == (TEXT, ("PeterNeumann",))


def test_a_bad_signature_from_a_known_key_rejects_the_note() -> None:
    with pytest.raises(NoteError) as excinfo:
        open_note(TEXT + "\n" + corrupt(PETER_SIG), [PETER])
    assert reason(excinfo) == "bad-signature"
    with pytest.raises(NoteError) as excinfo:
        open_note(TEXT + "\n" + PETER_SIG + corrupt(PETER_SIG), [PETER])
    assert reason(excinfo) == "bad-signature"


def test_too_many_signatures() -> None:
    for verifiers in ([PETER], []):
        with pytest.raises(NoteError) as excinfo:
            open_note(TEXT + "\n" + PETER_SIG * 101, verifiers)
        assert reason(excinfo) == "too-many-signatures"
    assert open_note(TEXT + "\n" + PETER_SIG * 100, [PETER])[1] == ("PeterNeumann",)


@pytest.mark.parametrize(
    ("note", "why"),
    [
        (TEXT, "malformed-note"),
        (TEXT + "\n", "malformed-note"),
        (TEXT + "\n" + PETER_SIG[:-1], "malformed-note"),
        ("\x01" + TEXT + "\n" + PETER_SIG, "control-character"),
        (b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), "invalid-utf8"),
        (TEXT + "\n" + "— Bad Name" + PETER_SIG[14:-1], "malformed-note"),
        (TEXT + "\n" + "— Bad Name" + PETER_SIG[14:], "malformed-note"),
        (TEXT + "\n" + PETER_SIG + "Unexpected line.\n", "malformed-note"),
        (TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter+Neumann"), "invalid-key-name"),
        (TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter\u00a0Neumann"), "invalid-key-name"),
        (TEXT + "\n" + "— PeterNeumann \n", "malformed-note"),
        (TEXT + "\n" + "— PeterNeumann AAAAAA==\n", "malformed-note"),  # under 5 bytes
        (TEXT + "\n" + PETER_SIG.replace("AM=", "AN="), "malformed-note"),  # non-canonical
        (TEXT + "\n" + PETER_SIG.replace("— ", "- "), "malformed-note"),
    ],
)
def test_malformed_notes_are_refused(note: str | bytes, why: str) -> None:
    with pytest.raises(NoteError) as excinfo:
        open_note(note, [PETER])
    assert reason(excinfo) == why


def test_keys_sharing_only_a_name_or_an_id_are_unknown() -> None:
    other = Signer.from_seed("PeterNeumann", bytes(32))
    assert other.key_id != PETER.key_id
    forged = sign_note(TEXT, other)
    with pytest.raises(NoteError) as excinfo:
        open_note(forged, [PETER])
    assert reason(excinfo) == "unknown-key"
    renamed = EXAMPLE["signed_note"].replace("— PeterNeumann", "— CarmenSandiego")
    with pytest.raises(NoteError) as excinfo:
        open_note(renamed, [PETER])
    assert reason(excinfo) == "unknown-key"


def test_two_keys_with_one_name_and_id_are_ambiguous() -> None:
    impostor = Verifier("EnochRoot", ENOCH.key_id, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(NoteError) as excinfo:
        open_note(TEXT + "\n" + PETER_SIG, [ENOCH, PETER, impostor])
    assert reason(excinfo) == "ambiguous-key"


# --- Keys ------------------------------------------------------------------------------------


def mangled(key: str) -> list[str]:
    """Return every proper substring of key and every one-character increment (Go's tests)."""
    out = {key[i:j] for i in range(len(key) + 1) for j in range(i, len(key) + 1)}
    out |= {key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))}
    out.discard(key)
    return sorted(out)


def test_mangled_verifier_keys_are_refused() -> None:
    for vkey in mangled(EXAMPLE["peter"]["vkey"]):
        with pytest.raises(NoteError):
            Verifier.from_vkey(vkey)
    wrong_length, unknown_alg = EXAMPLE["bad_vkeys"]
    with pytest.raises(NoteError) as excinfo:
        Verifier.from_vkey(wrong_length)
    assert reason(excinfo) == "malformed-key"
    with pytest.raises(NoteError) as excinfo:
        Verifier.from_vkey(unknown_alg)
    assert reason(excinfo) == "unsupported-algorithm"


def test_mangled_signer_keys_are_refused() -> None:
    for skey in mangled(EXAMPLE["peter"]["skey"]):
        with pytest.raises(NoteError):
            Signer.from_skey(skey)


def test_a_key_id_that_does_not_match_is_refused() -> None:
    vkey = EXAMPLE["peter"]["vkey"].replace("c74f20a3", "c74f20a4")
    with pytest.raises(NoteError) as excinfo:
        Verifier.from_vkey(vkey)
    assert reason(excinfo) == "key-id-mismatch"


@pytest.mark.parametrize("hex_id", ["C74F20A3", "c74F20a3", "C74f20A3"])
def test_a_key_id_in_any_case_is_accepted_as_go_does(hex_id: str) -> None:
    # golang.org/x/mod/sumdb/note parses the ID with strconv.ParseUint(id, 16, 32) after
    # checking len(id) == 8: hex digits of either case. It prints keys in lowercase (%08x).
    vkey = EXAMPLE["peter"]["vkey"].replace("c74f20a3", hex_id)
    verifier = Verifier.from_vkey(vkey)
    assert verifier.key_id == PETER.key_id == 0xC74F20A3
    assert verifier.vkey == EXAMPLE["peter"]["vkey"]
    assert open_note(EXAMPLE["signed_note"], [verifier]) == (TEXT, ("PeterNeumann",))
    signer = Signer.from_skey(EXAMPLE["peter"]["skey"].replace("c74f20a3", hex_id))
    assert signer.key_id == 0xC74F20A3 and signer.skey == EXAMPLE["peter"]["skey"]


@pytest.mark.parametrize(
    "hex_id",
    [
        "c74f20a",  # 7 digits
        "0c74f20a3",  # 9 digits: Go checks the length before the value
        "0xc74f20",  # a prefix Go refuses in base 16
        "c74f_20a",  # an underscore Go allows only in base 0
        " c74f20a",  # space
        "-c74f20a",  # sign
        "c74f20a\N{FULLWIDTH DIGIT THREE}",  # Python's int() takes Unicode digits; Go does not
        "c74f20g3",
    ],
)
def test_a_key_id_go_refuses_is_refused(hex_id: str) -> None:
    with pytest.raises(NoteError) as excinfo:
        Verifier.from_vkey(EXAMPLE["peter"]["vkey"].replace("c74f20a3", hex_id))
    assert reason(excinfo) == "malformed-key"
    with pytest.raises(NoteError) as excinfo:
        Signer.from_skey(EXAMPLE["peter"]["skey"].replace("c74f20a3", hex_id))
    assert reason(excinfo) == "malformed-key"


def test_generated_keys_sign_and_verify() -> None:
    skey, vkey = generate_key("blockd.example/audit")
    assert skey.startswith("PRIVATE+KEY+blockd.example/audit+")
    signer, verifier = Signer.from_skey(skey), Verifier.from_vkey(vkey)
    assert signer.verifier.vkey == vkey
    note = sign_note("hello\n\nworld\n", signer)
    assert open_note(note, [verifier]) == ("hello\n\nworld\n", ("blockd.example/audit",))
    assert generate_key("blockd.example/audit") != (skey, vkey)


@pytest.mark.parametrize("name", ["", "a+b", "a b", "a\u2003b", "a\u0085b", "a\tb", "a\x7fb"])
def test_invalid_key_names_are_refused(name: str) -> None:
    with pytest.raises(NoteError) as excinfo:
        generate_key(name)
    assert reason(excinfo) == "invalid-key-name"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("no newline", "text-not-newline-terminated"),
        ("", "text-not-newline-terminated"),
        ("bell \x07\n", "control-character"),
        ("lone \ud800 surrogate\n", "invalid-utf8"),
    ],
)
def test_sign_refuses_bad_text(text: str, why: str) -> None:
    with pytest.raises(NoteError) as excinfo:
        sign_note(text, Signer.from_skey(EXAMPLE["peter"]["skey"]))
    assert reason(excinfo) == why


# --- Checkpoints ----------------------------------------------------------------------------


def test_checkpoint_matches_the_go_sum_tree_format() -> None:
    tree = CHECKPOINTS["go_sum_tree"]
    cp = Checkpoint("go.sum database tree", tree["size"], leaf_hash(tree["record"].encode()))
    assert cp.to_text() == tree["text"]
    assert Checkpoint.parse(tree["text"]) == cp
    for bad in tree["bad_texts"]:
        with pytest.raises(NoteError) as excinfo:
            Checkpoint.parse(bad)
        assert reason(excinfo) == "malformed-checkpoint"


def test_the_c2sp_examples_parse_but_their_keys_are_unknown() -> None:
    note = CHECKPOINTS["c2sp_checkpoint_note"]
    with pytest.raises(NoteError) as excinfo:
        open_note(note, [PETER])
    assert reason(excinfo) == "unknown-key"
    cp = Checkpoint.parse(note[: note.rindex("\n\n") + 1])
    assert (cp.origin, cp.size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, ())
    with pytest.raises(NoteError) as excinfo:
        open_note(CHECKPOINTS["c2sp_signed_note"], [PETER])
    assert reason(excinfo) == "unknown-key"


def test_signed_checkpoint_round_trip() -> None:
    signer = Signer.from_skey(EXAMPLE["peter"]["skey"])
    cp = Checkpoint("blockd.example/audit", 7, leaf_hash(b"x"), ("time 2025-01-01T00:00:00Z",))
    text, names = open_note(sign_note(cp.to_text(), signer), [PETER])
    assert Checkpoint.parse(text) == cp and names == ("PeterNeumann",)


ROOT64 = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"origin\n0123\n{ROOT64}\n",  # leading zero
        f"origin\n+5\n{ROOT64}\n",
        f"origin\n 5\n{ROOT64}\n",
        f"origin\n\u0665\n{ROOT64}\n",  # a non-ASCII digit
        f"origin\n18446744073709551616\n{ROOT64}\n",  # 2**64
        f"origin\n5\n{base64.b64encode(bytes(31)).decode()}\n",
        f"origin\n5\n{ROOT64[:-1]}\n",
        f"origin\n5\n{ROOT64}",  # no final newline
        f"origin\n5\n{ROOT64}\n\next\n",  # empty extension line
        f"\n5\n{ROOT64}\n",  # empty origin
        "origin\n5\n",
        f"origin\n5\n{ROOT64}\nbell\x07\n",
    ],
)
def test_checkpoint_parse_is_strict(text: str) -> None:
    with pytest.raises(NoteError) as excinfo:
        Checkpoint.parse(text)
    assert reason(excinfo) == "malformed-checkpoint"


def test_checkpoint_keeps_zero_and_extensions() -> None:
    cp = Checkpoint.parse(f"o\n0\n{ROOT64}\na b\nc\n")
    assert cp == Checkpoint("o", 0, bytes(32), ("a b", "c"))


@pytest.mark.parametrize(
    "args",
    [
        ("", 1, bytes(32), ()),
        ("o", -1, bytes(32), ()),
        ("o", 1, bytes(31), ()),
        ("o", 1, bytes(32), ("",)),
    ],
)
def test_checkpoint_refuses_impossible_values(
    args: tuple[str, int, bytes, tuple[str, ...]],
) -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        Checkpoint(*args)


# --- Hostile input ----------------------------------------------------------------------------


@given(st.text())
def test_open_note_raises_only_note_errors(text: str) -> None:
    with pytest.raises(NoteError):
        open_note(text, [PETER])


@given(st.text())
def test_checkpoint_parse_raises_only_note_errors(text: str) -> None:
    try:
        cp = Checkpoint.parse(text)
    except NoteError:
        return
    assert cp.to_text() == text


lines = st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1)


@given(lines, st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32), st.lists(lines))
def test_checkpoint_round_trips(origin: str, size: int, root: bytes, ext: list[str]) -> None:
    cp = Checkpoint(origin, size, root, tuple(ext))
    assert Checkpoint.parse(cp.to_text()) == cp
