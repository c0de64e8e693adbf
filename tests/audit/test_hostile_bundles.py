"""A hostile corpus against `blockd audit verify`: a real bundle, mutated every way.

Every mutation must be FAILED (exit 1) with no traceback, unless it is semantically harmless:
only `leaf_hints` (untrusted diagnostics: any list of valid hashes will do), `cosignatures`
when no witness key is asked for, and keys the format does not know may change a bundle that
still verifies; each harmless case below says why.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockd.audit import bundle, merkle, note
from blockd.audit.cosignature import Cosigner
from blockd.audit.log import MerkleLog, open_log
from blockd.cli import main

ORIGIN = "isp.example/blockd/hostile"
A = Cosigner.from_seed("regulator.example/a", bytes([1]) * 32)  # test witness keys
B = Cosigner.from_seed("regulator.example/b", bytes([2]) * 32)
C = Cosigner.from_seed("stranger.example/c", bytes([3]) * 32)
Path_ = tuple[str | int, ...]


def entry(i: int) -> dict[str, object]:
    return {"time": f"2026-11-01T00:{i // 60:02d}:{i % 60:02d}Z", "type": "t", "n": i}


def body_of(signed: str) -> str:
    return signed[: signed.rfind("\n\n") + 1]


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MerkleLog]:
    """A log of 40 entries with checkpoints at 10, 25 and 40."""
    log = open_log(tmp_path_factory.mktemp("hostile-log") / "audit", ORIGIN, "hostile-operator")
    for start, end in ((0, 10), (10, 25), (25, 40)):
        log.append([entry(i) for i in range(start, end)])
        log.sign_checkpoint(f"2026-11-01T01:00:{end:02d}Z")
    yield log
    log.close()


@pytest.fixture(scope="module")
def real(log: MerkleLog) -> dict[str, Any]:
    """The whole log's bundle, cosigned by witnesses A and B (latest) and A (older)."""
    b = bundle.export(log, 0, 40)
    bodies = [body_of(n) for n in b["checkpoints"]]  # type: ignore[attr-defined]
    b["cosignatures"] = [
        [A.cosign(bodies[0], 1_790_000_000)],
        [A.cosign(bodies[1], 1_790_000_100)],
        [A.cosign(bodies[2], 1_790_000_200), B.cosign(bodies[2], 1_790_000_201)],
    ]
    return b


def run(
    tmp: Path, log: MerkleLog, data: object, *args: str, raw: bytes | None = None
) -> tuple[int, str]:
    """Run `blockd audit verify` in-process on data; return its status and output."""
    path = tmp / "bundle.json"
    path.write_bytes(raw if raw is not None else json.dumps(data).encode())
    key = log.signer.verifier.vkey
    rc = main(["audit", "verify", str(path), "--key", key, *args])
    return rc, ""


def root(log: MerkleLog, size: int) -> bytes:
    return merkle.root(log.leaf_hashes(0, size))


def verify(b: object, log: MerkleLog, previous: str | None = None, **kw: Any) -> bundle.Verdict:
    return bundle.verify(b, log.signer.verifier, previous, **kw)


def failed(
    tmp: Path, log: MerkleLog, capsys: pytest.CaptureFixture[str], data: object, *args: str
) -> str:
    rc, _ = run(tmp, log, data, *args)
    out = capsys.readouterr()
    assert rc == 1, out
    assert out.out.startswith("FAILED: ") and "Traceback" not in out.out + out.err, out
    return out.out


def ok(
    tmp: Path, log: MerkleLog, capsys: pytest.CaptureFixture[str], data: object, *args: str
) -> str:
    rc, _ = run(tmp, log, data, *args)
    out = capsys.readouterr()
    assert rc == 0, out
    assert out.out.startswith("OK: entries 0 to 39")
    return out.out


def test_the_real_bundle_verifies_with_both_witnesses(
    tmp_path: Path, log: MerkleLog, real: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ok(tmp_path, log, capsys, real)
    out = ok(
        tmp_path,
        log,
        capsys,
        real,
        "--witness-key",
        A.verifier.vkey,
        "--witness-key",
        B.verifier.vkey,
    )
    assert "cosigned by regulator.example/a" in out


# -- every field, every wrong value ------------------------------------------------------------


def paths(value: object, at: Path_ = ()) -> Iterator[Path_]:
    """Every path into a JSON value (not the root)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*at, k)
            yield from paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*at, i)
            yield from paths(v, (*at, i))


def get(value: Any, path: Path_) -> Any:
    for p in path:
        value = value[p]
    return value


REPLACEMENTS: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**63,
    2**64,
    1.0,
    -0.5,
    "",
    "x",
    "A" * 100_000,
    [],
    [None],
    {},
    {"a": 1},
]


def harmless(path: Path_, mutated: dict[str, Any]) -> bool:
    """Mutations that may verify: the field is untrusted and still well-formed."""
    if path[0] == "cosignatures":  # ignored without --witness-key
        return True
    if path[0] == "leaf_hints":  # hints only name a bad entry; any valid hashes will do
        hints = mutated.get("leaf_hints")
        return isinstance(hints, list) and all(
            isinstance(h, str) and len(base64.b64decode(h)) == 32 for h in hints
        )
    return False


def mutations(real: dict[str, Any]) -> Iterator[tuple[str, Path_, dict[str, Any]]]:
    """Remove, retype, null, enlarge and negate every field; reorder, drop, duplicate items."""
    for path in paths(real):
        parent_path, last = path[:-1], path[-1]
        original = get(real, path)
        for value in REPLACEMENTS:
            if value == original and type(value) is type(original):
                continue
            b = copy.deepcopy(real)
            get(b, parent_path)[last] = value
            yield f"{path}={str(value)[:20]}", path, b
        b = copy.deepcopy(real)
        parent = get(b, parent_path)
        if isinstance(parent, dict):
            del parent[last]
            yield f"{path} removed", path, b
        else:
            parent.pop(last)
            yield f"{path} dropped", path, b
            b = copy.deepcopy(real)
            get(b, parent_path).insert(last, copy.deepcopy(original))
            yield f"{path} duplicated", path, b
            if isinstance(last, int) and last + 1 < len(parent):
                b = copy.deepcopy(real)
                items = get(b, parent_path)
                if items[last] != items[last + 1]:
                    items[last], items[last + 1] = items[last + 1], items[last]
                    yield f"{path} swapped with the next", path, b


def test_every_field_removed_retyped_nulled_enlarged_or_reordered_fails(
    log: MerkleLog, real: dict[str, Any]
) -> None:
    wrong: list[str] = []
    count = 0
    for name, path, b in mutations(real):
        count += 1
        verdict = verify(b, log)
        if verdict.ok and not harmless(path, b):
            wrong.append(name)
        if not verdict.ok and path[0] != "cosignatures" and "hint" not in name:
            assert verdict.message, name
    assert count > 2000
    assert not wrong, wrong[:20]


def test_a_sample_of_mutations_fails_through_the_cli_without_a_traceback(
    tmp_path: Path, log: MerkleLog, real: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    for i, (_, path, b) in enumerate(mutations(real)):
        if i % 97 == 0 and not harmless(path, b):
            failed(tmp_path, log, capsys, b)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe{}",
        b"[]",
        b"null",
        b'{"format": "blockd-audit-bundle/1"',
        b'{"format": "blockd-audit-bundle/1", "format": "blockd-audit-bundle/1"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"format": "blockd-audit-bundle/1", "begin": ' + b"9" * 5000 + b"}",
        b'{"format": "blockd-audit-bundle/1", "begin": NaN}',
        b'{"format": "blockd-audit-bundle/1", "begin": 1e309}',
        b'{"format": "blockd-audit-bundle/1", "begin": -Infinity}',
        b'{"format": "blockd-audit-bundle/1", "origin": "\\ud800"}',
    ],
)
def test_files_that_are_not_bundles_fail(
    tmp_path: Path, log: MerkleLog, capsys: pytest.CaptureFixture[str], raw: bytes
) -> None:
    rc, _ = run(tmp_path, log, None, raw=raw)
    out = capsys.readouterr()
    assert rc == 1 and out.out.startswith("FAILED: ") and "Traceback" not in out.err, out


def test_a_duplicate_key_deep_inside_fails(
    tmp_path: Path, log: MerkleLog, real: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    text = json.dumps(real).replace('"left": [', '"left": [], "left": [', 1)
    rc, _ = run(tmp_path, log, None, raw=text.encode())
    assert rc == 1 and "duplicate key 'left'" in capsys.readouterr().out


# -- entries -------------------------------------------------------------------------------------


def with_entries(real: dict[str, Any], entries: list[str]) -> dict[str, Any]:
    b = copy.deepcopy(real)
    b["entries"] = entries
    return b


def test_reordered_duplicated_dropped_or_changed_entries_fail(
    tmp_path: Path, log: MerkleLog, real: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    e: list[str] = real["entries"]
    cases = {
        "swapped": [*e[:3], e[4], e[3], *e[5:]],
        "reversed": e[::-1],
        "one duplicated": [*e[:10], e[10], *e[10:39]],
        "one dropped": [*e[:10], *e[11:], e[0]],
        "last replaced by first": [*e[:39], e[0]],
    }
    for name, entries in cases.items():
        assert not verify(with_entries(real, entries), log).ok, name
    for i in (0, 17, 39):
        text = e[i]
        for j in range(len(text)):
            for new in {text[j].upper(), text[j].lower(), "0", " ", "\\u0041"} - {text[j]}:
                changed = [*e[:i], text[:j] + new + text[j + 1 :], *e[i + 1 :]]
                verdict = verify(with_entries(real, changed), log)
                assert not verdict.ok and verdict.first_bad_index == i, (i, j, new)
    out = failed(tmp_path, log, capsys, with_entries(real, cases["swapped"]))
    assert "first entry that differs: 3" in out


# -- checkpoints and consistency proofs ----------------------------------------------------------


def resigned(signed: str, signer: note.Signer, old: str = "", new: str = "") -> str:
    return note.sign_note(body_of(signed).replace(old, new, 1), signer)


def test_checkpoints_swapped_foreign_or_signed_by_another_key_fail(
    tmp_path: Path, log: MerkleLog, real: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    cps: list[str] = real["checkpoints"]
    op = log.signer
    impostor = note.Signer.from_seed(op.name, bytes([42]) * 32)  # same key name, another key
    forked_root = base64.b64encode(merkle.leaf_hash(b"fork")).decode()
    root = body_of(cps[2]).split("\n")[2]
    cases: dict[str, list[str]] = {
        "swapped": [cps[1], cps[0], cps[2]],
        "latest first": [cps[2], cps[0], cps[1]],
        "another origin": [cps[0], cps[1], resigned(cps[2], op, ORIGIN, "isp.example/other")],
        "another key, same name": [cps[0], cps[1], resigned(cps[2], impostor)],
        "a forged signature under the operator's key ID": [
            cps[0],
            cps[1],
            cps[2] + forged_line(impostor, body_of(cps[2]), op.key_id),
        ],
        "a forked latest": [cps[0], cps[1], resigned(cps[2], op, root, forked_root)],
        "a forked first": [
            resigned(cps[0], op, body_of(cps[0]).split("\n")[2], forked_root),
            cps[1],
            cps[2],
        ],
        "no signature": [cps[0], cps[1], body_of(cps[2])],
        "a larger latest": [cps[0], cps[1], resigned(cps[2], op, "\n40\n", "\n41\n")],
    }
    for name, notes in cases.items():
        b = copy.deepcopy(real)
        b["checkpoints"] = notes
        assert not verify(b, log).ok, name
        failed(tmp_path, log, capsys, b)
    b = copy.deepcopy(real)
    b["origin"] = "isp.example/other"
    b["checkpoints"] = [resigned(n, op, ORIGIN, "isp.example/other") for n in cps]
    failed(tmp_path, log, capsys, b, "--origin", ORIGIN)


def test_a_signature_by_another_key_of_the_same_name_is_ignored(
    log: MerkleLog, real: dict[str, Any]
) -> None:
    """Harmless (C2SP signed-note): a line whose key ID is not the operator's is another key's."""
    impostor = note.Signer.from_seed(log.signer.name, bytes([42]) * 32)
    b = copy.deepcopy(real)
    latest = b["checkpoints"][-1]
    b["checkpoints"][-1] = latest + forged_line(impostor, body_of(latest), impostor.key_id)
    assert verify(b, log).ok


def forged_line(signer: note.Signer, text: str, key_id: int) -> str:
    raw = key_id.to_bytes(4, "big") + signer.sign(text.encode())
    return f"— {signer.name} {base64.b64encode(raw).decode()}\n"


def test_a_checkpoint_repeated_with_an_empty_proof_is_harmless(
    log: MerkleLog, real: dict[str, Any]
) -> None:
    """The same signed statement twice proves nothing new and hides nothing."""
    b = copy.deepcopy(real)
    b["checkpoints"].insert(1, b["checkpoints"][1])
    b["consistency"].insert(1, [])
    b["cosignatures"].insert(1, [])
    verdict = verify(b, log)
    assert verdict.ok and verdict.checkpoint == verify(real, log).checkpoint


def test_consistency_proofs_shuffled_fail(log: MerkleLog, real: dict[str, Any]) -> None:
    proofs: list[list[str]] = real["consistency"]
    cases = [
        proofs[::-1],
        [proofs[0][::-1], proofs[1]],
        [proofs[0], proofs[1][::-1]],
        [proofs[0] + proofs[1][:1], proofs[1]],
        [proofs[0], proofs[1][:-1]],
        [proofs[0], [*proofs[1], proofs[1][-1]]],
        [proofs[0] + proofs[1], []],
        [proofs[0]],
        [*proofs, []],
    ]
    for case in cases:
        b = copy.deepcopy(real)
        b["consistency"] = case
        assert not verify(b, log).ok, case


# -- witness cosignatures ------------------------------------------------------------------------


def keys(*witnesses: Cosigner) -> list[str]:
    return [a for w in witnesses for a in ("--witness-key", w.verifier.vkey)]


def with_cosignatures(real: dict[str, Any], latest: list[str]) -> dict[str, Any]:
    b = copy.deepcopy(real)
    b["cosignatures"][-1] = latest
    return b


def test_forged_replayed_and_duplicated_cosignatures_fail(
    tmp_path: Path, log: MerkleLog, real: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    latest = body_of(real["checkpoints"][-1])
    older = body_of(real["checkpoints"][-2])
    a_line, b_line = real["cosignatures"][-1]
    forged_c_as_a = C.cosign(latest, 1_790_000_300).replace(C.name, A.name)
    cases: dict[str, tuple[list[str], list[str]]] = {
        "another witness": ([C.cosign(latest, 1_790_000_300)], keys(A)),
        "replayed from an older checkpoint": ([A.cosign(older, 1_790_000_300)], keys(A)),
        "the older checkpoint's own line": (real["cosignatures"][-2], keys(A)),
        "A's line twice for a threshold of 2": ([a_line, a_line], keys(A, B)),
        "A's line twice, threshold 2 of 3": (
            [a_line, a_line],
            [*keys(A, B, C), "--witness-threshold", "2"],
        ),
        "C's signature under A's name": ([forged_c_as_a], keys(A)),
        "A's line renamed to B": ([a_line.replace(A.name, B.name)], keys(B)),
        "none": ([], keys(A)),
        "not lines": ([None, 1, {"a": a_line}], keys(A)),  # type: ignore[list-item]
    }
    for name, (lines, args) in cases.items():
        out = failed(tmp_path, log, capsys, with_cosignatures(real, lines), *args)
        assert "not witnessed" in out, name
    values: list[object] = [None, "x", [], [[]], [[a_line]], [[a_line]] * 4]
    for value in values:
        b = copy.deepcopy(real)
        b["cosignatures"] = value
        failed(tmp_path, log, capsys, b, *keys(A))
    b = copy.deepcopy(real)
    del b["cosignatures"]
    failed(tmp_path, log, capsys, b, *keys(A))
    assert b_line  # B's valid line alone satisfies B
    ok(tmp_path, log, capsys, with_cosignatures(real, [b_line]), *keys(B))


def test_the_same_witness_key_given_twice_counts_once(
    tmp_path: Path, log: MerkleLog, real: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two --witness-key flags naming one witness must not make one cosignature a quorum."""
    b = with_cosignatures(real, [real["cosignatures"][-1][0]])  # A's line only
    out = failed(tmp_path, log, capsys, b, *keys(A, A), "--witness-threshold", "2")
    assert "1 of 2 required" in out
    failed(tmp_path, log, capsys, b, *keys(A, B, A), "--witness-threshold", "2")
    ok(tmp_path, log, capsys, b, *keys(A, A))  # every witness asked for (A) cosigned


def test_a_future_or_extreme_cosignature_timestamp_is_still_the_witness_signature(
    tmp_path: Path, log: MerkleLog, real: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Harmless: the timestamp is signed by the witness; it is not a claim about the log."""
    latest = body_of(real["checkpoints"][-1])
    for ts in (4_000_000_000, 2**63 - 1, 0):
        ok(tmp_path, log, capsys, with_cosignatures(real, [A.cosign(latest, ts)]), *keys(A))


# -- --previous -----------------------------------------------------------------------------------


def test_hostile_previous_checkpoints_fail(
    tmp_path: Path, log: MerkleLog, real: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    op = log.signer
    cps: list[str] = real["checkpoints"]
    root25 = body_of(cps[1]).split("\n")[2]
    other_root = base64.b64encode(merkle.leaf_hash(b"fork")).decode()
    cases = {
        "another origin": resigned(cps[1], op, ORIGIN, "isp.example/other"),
        "larger size": resigned(cps[2], op, "\n40\n", "\n41\n"),
        "much larger size": resigned(cps[2], op, "\n40\n", f"\n{2**64 - 1}\n"),
        "same size, another root": resigned(cps[1], op, root25, other_root),
        "latest size, another root": resigned(
            cps[2], op, body_of(cps[2]).split("\n")[2], other_root
        ),
        "a size not in the bundle, no proof": resigned(
            cps[1], op, f"\n25\n{root25}", f"\n30\n{base64.b64encode(root(log, 30)).decode()}"
        ),
        "another key, same name": resigned(cps[1], note.Signer.from_seed(op.name, bytes(32))),
        "not a note": "garbage\n",
        "empty": "",
    }
    for name, previous in cases.items():
        (tmp_path / "previous").write_text(previous)
        out = failed(tmp_path, log, capsys, real, "--previous", str(tmp_path / "previous"))
        assert out, name


def test_a_previous_proof_field_of_the_wrong_type_fails(
    tmp_path: Path, log: MerkleLog, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/AUDIT-BUNDLE.md §2: previous.size is an integer; true and 1.0 MUST be refused."""
    size1 = resigned(
        log.checkpoints()[0],
        log.signer,
        body_of(log.checkpoints()[0]).split("\n", 1)[1],
        f"1\n{base64.b64encode(root(log, 1)).decode()}\ntime 2026-11-01T00:00:00Z\n",
    )
    (tmp_path / "previous").write_text(size1)
    good = bundle.export(log, 1, 40, previous=note.Checkpoint.parse(body_of(size1)))
    ok_out = main(
        [
            "audit",
            "verify",
            *_file(tmp_path, good),
            "--key",
            log.signer.verifier.vkey,
            "--previous",
            str(tmp_path / "previous"),
        ]
    )
    assert ok_out == 0, capsys.readouterr()
    capsys.readouterr()
    for size in (True, 1.0, "1"):
        b = copy.deepcopy(good)
        b["previous"]["size"] = size  # type: ignore[index]
        failed(tmp_path, log, capsys, b, "--previous", str(tmp_path / "previous"))


def _file(tmp: Path, b: object) -> list[str]:
    path = tmp / "good.json"
    path.write_text(json.dumps(b))
    return [str(path)]


# -- random JSON-ish mutations ------------------------------------------------------------------

JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_mutations_never_raise_and_never_verify_changed_entries(
    log: MerkleLog, real: dict[str, Any], data: st.DataObject
) -> None:
    b = copy.deepcopy(real)
    for _ in range(data.draw(st.integers(1, 3))):
        all_paths = list(paths(b))
        path = data.draw(st.sampled_from(all_paths))
        parent = get(b, path[:-1])
        action = data.draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if action == "replace":
            parent[path[-1]] = data.draw(JSONISH)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, list) and isinstance(index := path[-1], int):
            parent.insert(index, copy.deepcopy(parent[index]))
    verdict = verify(bundle.load(json.dumps(b)), log, witnesses=[A.verifier])
    if verdict.ok:
        assert b["entries"] == real["entries"] and b["begin"] == real["begin"]
        assert verdict.checkpoint is not None
        assert verdict.checkpoint.root == root(log, 40) and verdict.checkpoint.size == 40
