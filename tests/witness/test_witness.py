"""A real `blockd witness run` process on loopback, with logs and bundles from blockd's log.

The scenario a regulator cares about: the operator rewrites history and signs it again with
its real key. Without a previous checkpoint, the bundle alone verifies; with the witness's
key it does not, because the witness refused to cosign the rewritten tree and kept the
evidence.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from blockd.audit import bundle, merkle, note
from blockd.audit.cosignature import CosignatureVerifier
from blockd.audit.log import MerkleLog, open_log
from blockd.audit.witnessing import Witnessing, WitnessTarget
from blockd.cli import main
from tests.witness.process import Running, witness, witness_key

pytestmark = pytest.mark.slow
ORIGIN = "isp.example/blockd/test"


def entry(i: int, mark: str = "") -> dict[str, object]:
    return {"time": f"2026-11-01T00:00:{i % 60:02d}Z", "type": "t", "n": i, "mark": mark}


def grow(log: MerkleLog, start: int, end: int, mark: str = "") -> str:
    log.append([entry(i, mark) for i in range(start, end)])
    return log.sign_checkpoint(f"2026-11-01T00:01:{end % 60:02d}Z")


@pytest.fixture
def log(tmp_path: Path) -> Iterator[MerkleLog]:
    log = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    grow(log, 0, 10)
    yield log
    log.close()


@pytest.fixture
def running(tmp_path: Path, log: MerkleLog) -> Iterator[tuple[Running, str]]:
    key, vkey = witness_key(tmp_path)
    with witness(key, tmp_path / "witness", {ORIGIN: log.signer.verifier.vkey}) as w:
        yield w, vkey


def witnessing(log: MerkleLog, w: Running, vkey: str) -> Witnessing:
    return Witnessing(log, [WitnessTarget(w.url, CosignatureVerifier.from_vkey(vkey))])


async def cosign(log: MerkleLog, w: Running, vkey: str) -> str:
    witnessing_ = witnessing(log, w, vkey)
    try:
        outcomes = await witnessing_.cosign()
    finally:
        await witnessing_.stop()
    return next(iter(outcomes.values()))


def verify(tmp: Path, log: MerkleLog, vkey: str, *more: str) -> int:
    path = tmp / "bundle.json"
    path.write_text(bundle.dumps(bundle.export(log, 0, log.head().size)))
    key = log.signer.verifier.vkey
    return main(["audit", "verify", str(path), "--key", key, "--witness-key", vkey, *more])


async def test_a_growing_log_is_cosigned_and_its_bundle_verifies(
    tmp_path: Path, log: MerkleLog, running: tuple[Running, str], capsys: pytest.CaptureFixture[str]
) -> None:
    w, vkey = running
    assert await cosign(log, w, vkey) == "cosigned"
    grow(log, 10, 25)
    grow(log, 25, 40)  # the witness skips 25: a proof from 10 to 40
    assert await cosign(log, w, vkey) == "cosigned"
    assert verify(tmp_path, log, vkey) == 0
    out = capsys.readouterr().out
    assert "OK: entries 0 to 39 (40 entries)" in out
    assert "cosigned by regulator.example/witness" in out
    held = (tmp_path / "witness/checkpoints" / ORIGIN.replace("/", "%2F")).read_text()
    assert held == log.checkpoints()[-1]  # the last checkpoint cosigned, as signed


async def test_a_rewritten_history_is_refused_kept_as_evidence_and_fails_verification(
    tmp_path: Path, log: MerkleLog, running: tuple[Running, str], capsys: pytest.CaptureFixture[str]
) -> None:
    w, vkey = running
    grow(log, 10, 20)
    assert await cosign(log, w, vkey) == "cosigned"
    # The operator rewrites entries 5.. and signs the new history with its real key.
    fork = MerkleLog(tmp_path / "rewritten.db", log.signer, ORIGIN)
    fork.append([entry(i) for i in range(5)])
    fork.append([entry(i, "rewritten") for i in range(5, 30)])
    fork.sign_checkpoint("2026-11-02T00:00:00Z")
    # Without witness keys (and without a previous checkpoint) it verifies...
    path = tmp_path / "rewritten.json"
    path.write_text(bundle.dumps(bundle.export(fork, 0, 30)))
    assert main(["audit", "verify", str(path), "--key", log.signer.verifier.vkey]) == 0
    # ...but the witness refuses it: its proof from size 20 cannot hold (422).
    assert await cosign(fork, w, vkey) == "inconsistent"
    evidence = sorted((tmp_path / "witness/evidence").iterdir())
    assert len(evidence) == 1 and "-inconsistent-" in evidence[0].name
    kept = json.loads(evidence[0].read_text())
    assert kept["held"] == log.checkpoints()[-1]
    assert kept["submitted"] == fork.checkpoints()[-1] and kept["old_size"] == 20
    assert kept["proof"] and all(len(base64.b64decode(h)) == 32 for h in kept["proof"])
    capsys.readouterr()
    # A regulator with the witness's key and no earlier checkpoint catches it.
    path.write_text(bundle.dumps(bundle.export(fork, 0, 30)))
    code = main(
        ["audit", "verify", str(path), "--key", log.signer.verifier.vkey, "--witness-key", vkey]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "not witnessed" in out and "missing from regulator.example/witness" in out
    fork.close()


async def test_a_same_size_fork_is_409_with_evidence(
    tmp_path: Path, log: MerkleLog, running: tuple[Running, str]
) -> None:
    w, vkey = running
    assert await cosign(log, w, vkey) == "cosigned"  # size 10
    fork = MerkleLog(tmp_path / "fork.db", log.signer, ORIGIN)
    fork.append([entry(i, "other") for i in range(10)])
    fork.sign_checkpoint("2026-11-02T00:00:00Z")
    assert await cosign(fork, w, vkey) == "fork"
    assert [p.name for p in (tmp_path / "witness/evidence").iterdir() if "-fork-" in p.name]
    fork.close()


async def test_a_rollback_is_refused(
    tmp_path: Path, log: MerkleLog, running: tuple[Running, str]
) -> None:
    w, vkey = running
    old = log.checkpoints()[-1]  # size 10
    grow(log, 10, 20)
    assert await cosign(log, w, vkey) == "cosigned"
    async with aiohttp.ClientSession() as s:
        for size in (20, 10):
            async with s.post(f"{w.url}/add-checkpoint", data=f"old {size}\n\n{old}") as r:
                assert r.status == (400 if size == 20 else 409)
                if r.status == 409:
                    assert r.content_type == "text/x.tlog.size"
                    assert await r.text() == "20\n"
    assert (tmp_path / "witness/checkpoints" / ORIGIN.replace("/", "%2F")).read_text() == (
        log.checkpoints()[-1]
    )


async def test_hostile_inputs_get_the_spec_s_codes_and_the_witness_carries_on(
    tmp_path: Path, log: MerkleLog, running: tuple[Running, str]
) -> None:
    w, vkey = running
    signed = log.checkpoints()[-1]
    other = note.Signer.from_seed("test-operator", bytes([3]) * 32)
    text = signed[: signed.rfind("\n\n") + 1]
    unknown = note.sign_note(text.replace(ORIGIN, "unknown.example/log"), log.signer)
    good = merkle.leaf_hash(b"x")
    cases: list[tuple[bytes, int]] = [
        (b"garbage", 400),
        (b"\x00" * 100, 400),
        (b"old ten\n\n" + signed.encode(), 400),
        (b"old 0\n\n" + note.sign_note(text, other).encode(), 403),
        (b"old 0\n\n" + unknown.encode(), 404),
        (b"old 0\n" + base64.b64encode(good) + b"\n\n" + signed.encode(), 422),
        (b"old 0\n\n" + b"x" * (1 << 20), 413),
    ]
    async with aiohttp.ClientSession() as s:
        for data, expected in cases:
            async with s.post(f"{w.url}/add-checkpoint", data=data) as r:
                assert r.status == expected, (data[:40], await r.text())
        async with s.get(f"{w.url}/add-checkpoint") as r:
            assert r.status == 405
        async with s.post(f"{w.url}/other") as r:
            assert r.status == 404
    assert await cosign(log, w, vkey) == "cosigned"  # still serving, state intact
    grow(log, 10, 12)
    assert await cosign(log, w, vkey) == "cosigned"
    grow(log, 12, 14)
    proof = merkle.consistency_proof(12, 14, log.leaf_hashes(0, 14))
    assert len(proof) >= 2
    short = "old 12\n" + base64.b64encode(proof[0]).decode() + "\n\n" + log.checkpoints()[-1]
    async with aiohttp.ClientSession() as s, s.post(f"{w.url}/add-checkpoint", data=short) as r:
        assert r.status == 422  # a proof one hash short
    assert "Traceback" not in w.stderr()
