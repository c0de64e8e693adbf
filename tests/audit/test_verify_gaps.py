"""`blockd audit verify` against what a valid log can still hide: gaps, other logs, repeats."""

from __future__ import annotations

import json
import sqlite3
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest

from blockd.audit import bundle, canonical, merkle, note
from blockd.audit.log import MerkleLog, open_log
from blockd.cli import main
from tests.audit.test_bundle import ORIGIN, entry


def write(tmp_path: Path, name: str, value: object) -> Path:
    path = tmp_path / name
    path.write_text(value if isinstance(value, str) else bundle.dumps(value))  # type: ignore[arg-type]
    return path


def verify(log: MerkleLog, path: Path, *args: str) -> int:
    return main(["audit", "verify", str(path), "--key", log.signer.verifier.vkey, *args])


def test_a_bundle_starting_after_the_previous_checkpoint_fails_naming_the_gap(
    tmp_path: Path, log: MerkleLog, capsys: pytest.CaptureFixture[str]
) -> None:
    previous = write(tmp_path, "seen.txt", log.checkpoints()[0])  # size 10
    gap = write(tmp_path, "gap.json", bundle.export(log, 25, 40))
    assert verify(log, gap, "--previous", str(previous)) == 1
    out = capsys.readouterr().out
    assert "FAILED: entries 10 to 24 (15 entries) not shown" in out, out
    assert "your previous checkpoint has size 10, the bundle starts at entry 25" in out
    assert verify(log, gap, "--previous", str(previous), "--allow-gap") == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: entries 25 to 39 (15 entries) verified")
    assert "WARNING: entries 10 to 24 (15 entries) not shown" in out
    assert "(allowed by --allow-gap)" in out
    whole = write(tmp_path, "whole.json", bundle.export(log, 10, 40))
    assert verify(log, whole, "--previous", str(previous)) == 0
    assert "WARNING" not in capsys.readouterr().out


def test_a_gap_of_one_entry_is_named(log: MerkleLog) -> None:
    seen = log.checkpoints()[1]  # size 25
    verdict = bundle.verify(bundle.export(log, 26, 40), log.signer.verifier, seen)
    assert not verdict.ok and verdict.first_bad_index == 25
    assert verdict.message.startswith("entry 25 not shown"), verdict.message
    assert bundle.verify(bundle.export(log, 25, 40), log.signer.verifier, seen).ok
    overlap = bundle.verify(bundle.export(log, 20, 40), log.signer.verifier, seen)
    assert overlap.ok and not overlap.warnings


def test_without_a_previous_checkpoint_entries_before_the_bundle_are_a_gap(
    log: MerkleLog,
) -> None:
    verdict = bundle.verify(bundle.export(log, 1, 40), log.signer.verifier)
    assert not verdict.ok and "entry 0 not shown: no previous checkpoint was given" in (
        verdict.message
    )


def test_entries_after_the_bundle_are_a_warning_for_next_time(log: MerkleLog) -> None:
    verdict = bundle.verify(bundle.export(log, 0, 30), log.signer.verifier)
    assert verdict.ok
    assert verdict.warnings == [
        "entries 30 to 39 (10 entries) after this bundle's range not shown: "
        "next time, ask for an export from entry 30"
    ]


def test_origin_pins_the_log(
    tmp_path: Path, log: MerkleLog, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "b.json", bundle.export(log, 0, 40))
    assert verify(log, path, "--origin", ORIGIN) == 0
    assert verify(log, path, "--origin", "isp.example/blockd/other") == 1
    out = capsys.readouterr().out
    assert (
        "FAILED: the bundle is of log 'isp.example/blockd/test', not the expected "
        "'isp.example/blockd/other'"
    ) in out
    other = MerkleLog(tmp_path / "other.db", log.signer, "isp.example/blockd/other")
    other.append([entry(0)])
    seen = write(tmp_path, "other.txt", other.sign_checkpoint("2026-11-01T00:00:00Z"))
    assert verify(log, path, "--previous", str(seen)) == 1
    assert (
        "the previous checkpoint is of log 'isp.example/blockd/other', the bundle of "
        "'isp.example/blockd/test'"
    ) in capsys.readouterr().out
    assert verify(log, path, "--previous", str(seen), "--origin", ORIGIN) == 1
    assert "not the expected 'isp.example/blockd/test'" in capsys.readouterr().out


def test_a_truncated_bundle_fails(
    tmp_path: Path, log: MerkleLog, capsys: pytest.CaptureFixture[str]
) -> None:
    text = bundle.dumps(bundle.export(log, 0, 40))
    path = write(tmp_path, "cut.json", text[: len(text) // 2])
    assert verify(log, path) == 1
    assert "FAILED:" in capsys.readouterr().out
    deep = write(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000)
    assert verify(log, deep) == 1
    assert "nested too deeply" in capsys.readouterr().out


def test_duplicate_json_keys_fail(
    tmp_path: Path, log: MerkleLog, capsys: pytest.CaptureFixture[str]
) -> None:
    text = bundle.dumps(bundle.export(log, 0, 40))
    forged = text.replace('\n "begin": 0,', '\n "begin": 0,\n "begin": 39,', 1)
    assert forged != text
    assert verify(log, write(tmp_path, "dup.json", forged)) == 1
    assert "duplicate key 'begin'" in capsys.readouterr().out


HOSTILE: list[tuple[str, Any, str]] = [
    ("begin", "0", "begin must be an integer"),
    ("begin", True, "begin must be an integer"),
    ("begin", 1.0, "begin must be an integer"),
    ("begin", -1, "begin must be an integer"),
    ("begin", 10**30, "begin must be an integer"),
    ("end", 2**64, "end must be an integer"),
    ("end", 2**62, "the latest checkpoint has size 40"),
    ("entries", {"0": "x"}, "entries must be a list"),
    ("leaf_hints", "AAAA", "leaf_hints must be a list"),
    ("origin", 7, "origin must be text"),
    ("consistency", {}, "consistency must be a list"),
    ("range_proof", [], "range_proof must be an object"),
    ("checkpoints", [], "no checkpoints"),
]


@pytest.mark.parametrize(("key", "value", "why"), HOSTILE)
def test_fields_of_the_wrong_type_or_size_fail(
    log: MerkleLog, key: str, value: object, why: str
) -> None:
    b = bundle.export(log, 0, 40)
    b[key] = value
    verdict = bundle.verify(json.loads(json.dumps(b)), log.signer.verifier)
    assert not verdict.ok and why in verdict.message, verdict.message


def test_a_bundle_whose_begin_is_after_its_end_fails(log: MerkleLog) -> None:
    b = bundle.export(log, 0, 0)
    b["begin"], b["end"] = 30, 20
    verdict = bundle.verify(b, log.signer.verifier)
    assert not verdict.ok and verdict.message == "malformed bundle: begin 30 is after end 20"


@pytest.mark.parametrize(
    "damage", ["left-short", "left-long", "right-short", "right-long", "consistency-short"]
)
def test_proofs_of_the_wrong_length_fail(log: MerkleLog, damage: str) -> None:
    b: dict[str, Any] = bundle.export(log, 13, 30)
    spare = bundle._b64(b"\x00" * 32)
    part, _, change = damage.partition("-")
    proof = b["consistency"][1] if part == "consistency" else b["range_proof"][part]
    assert proof
    if change == "short":
        proof.pop()
    else:
        proof.append(spare)
    verdict = bundle.verify(b, log.signer.verifier, allow_gap=True)
    assert not verdict.ok, damage
    b["leaf_hints"][0] = bundle._b64(b"\x01" * 31)
    assert "is 31 bytes, not 32" in bundle.verify(b, log.signer.verifier).message


def append_by_hand(path: Path, entries: list[dict[str, object]]) -> None:
    """Append to the log database as an operator with sqlite3 could, bypassing blockd."""
    db = sqlite3.connect(path)
    size = int(db.execute("SELECT value FROM meta WHERE key = 'size'").fetchone()[0])
    blob = bytes(db.execute("SELECT value FROM meta WHERE key = 'frontier'").fetchone()[0])
    frontier = merkle.CompactRange(0, size, [blob[i : i + 32] for i in range(0, len(blob), 32)])
    datas = [canonical.canonical(e) for e in entries]
    leaves = merkle.leaf_hashes(datas)
    frontier.extend(leaves)
    ends, total = [], 0
    for d in datas:
        total += len(d)
        ends.append(total)
    times = [str(e["time"]) for e in entries]
    db.execute(
        "INSERT INTO batches (first, count, tmin, tmax, times, data, ends, leaves)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (size, len(datas), min(times), max(times), orjson.dumps(times).decode(),
         b"".join(datas), struct.pack(f"<{len(ends)}I", *ends), b"".join(leaves)),
    )  # fmt: skip
    db.execute("UPDATE meta SET value = ? WHERE key = 'frontier'", (b"".join(frontier.nodes),))
    db.execute("UPDATE meta SET value = ? WHERE key = 'size'", (str(frontier.end).encode(),))
    db.commit()
    db.close()


COUNTS: dict[str, object] = {
    "time": "2026-11-01T01:00:00Z",
    "type": "block-counts",
    "blockd": "0",
    "period_start": "2026-11-01T00:00:00Z",
    "period_end": "2026-11-01T01:00:00Z",
    "counts": [
        {"authority": "authority.example", "list": "hosts", "version": 3, "action": "notice",
         "transport": "udp", "count": 127},
    ],
}  # fmt: skip


@pytest.fixture
def doctored(tmp_path: Path) -> tuple[MerkleLog, Path]:
    """A log where a block-counts batch was written twice and an entry was backdated by hand."""
    log = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    log.append([entry(i) for i in range(5)])
    log.append([COUNTS])
    later: dict[str, object] = {
        **COUNTS,
        "time": "2026-11-01T02:00:00Z",
        "period_start": "2026-11-01T01:00:00Z",
        "period_end": "2026-11-01T02:00:00Z",
    }
    log.append([later])  # 127 + 127 = 254 blocks
    log.append([later])  # the same batch again, by a writer with no batch identities
    log.sign_checkpoint("2026-11-01T02:00:01Z")
    log.close()
    backdated = {"time": "2026-10-01T00:00:00Z", "type": "operator-action", "n": 1}
    append_by_hand(tmp_path / "audit/log.db", [backdated])
    log = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    log.sign_checkpoint("2026-11-01T03:00:00Z")  # blockd signs it: the log only grew
    path = tmp_path / "doctored.json"
    path.write_text(bundle.dumps(bundle.export(log, 0, log.head().size)))
    return log, path


def test_duplicate_and_backdated_entries_are_warned_about_or_fail_when_strict(
    doctored: tuple[MerkleLog, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    log, path = doctored
    verdict = bundle.verify(bundle.load(path.read_text()), log.signer.verifier)
    assert verdict.ok
    assert [(a.kind, a.index) for a in verdict.anomalies] == [
        ("duplicate", 7),
        ("backdated", 8),
    ]
    assert str(verdict.anomalies[0]) == "entry 7: repeats entry 6 byte for byte"
    assert verify(log, path) == 0
    out = capsys.readouterr().out
    assert "WARNING: duplicate entry 7: repeats entry 6 byte for byte" in out
    assert (
        "WARNING: backdated entry 8: time 2026-10-01T00:00:00Z is before entry 6's "
        "2026-11-01T02:00:00Z"
    ) in out
    assert verify(log, path, "--strict") == 1
    assert "FAILED: 2 duplicate or backdated entries (--strict)" in capsys.readouterr().out


def test_an_entry_older_than_the_checkpoint_before_it_is_backdated(tmp_path: Path) -> None:
    log = open_log(tmp_path / "audit", ORIGIN, "test-operator")
    log.append([entry(0)])  # 2026-11-01T00:00:00Z
    log.sign_checkpoint("2026-11-05T00:00:00Z")
    log.append([{**entry(1), "time": "2026-11-04T00:00:00Z"}])
    log.append([{**entry(2), "time": "2026-11-04T23:59:58Z"}])  # within the tolerance
    log.sign_checkpoint("2026-11-05T00:00:01Z")
    verdict = bundle.verify(bundle.export(log, 0, 3), log.signer.verifier)
    assert verdict.ok
    assert [str(a) for a in verdict.anomalies] == [
        "entry 1: time 2026-11-04T00:00:00Z is before 2026-11-05T00:00:00Z, when checkpoint 1 "
        "was signed"
    ]


def test_the_report_shows_them_and_counts_a_repeat_once(
    doctored: tuple[MerkleLog, Path], tmp_path: Path
) -> None:
    log, path = doctored
    key = log.signer.verifier.vkey
    args = ["audit", "report", "--bundle", str(path), "--key", key, "--format"]
    assert main([*args, "json", "-o", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["blocks_by_list"]["totals"]["dns-blocked"] == 254  # not 381
    assert report["anomalies"]["duplicates"] == 1 and report["anomalies"]["backdated"] == 1
    assert [a["index"] for a in report["anomalies"]["items"]] == [7, 8]
    assert report["summary"]["anomalies"] == 2
    assert main([*args, "html", "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "Duplicate and backdated entries" in html and "repeats entry 6 byte for byte" in html
    assert main([*args, "csv", "-o", str(tmp_path / "r.csv")]) == 0
    assert "anomalies,7,," in (tmp_path / "r.csv").read_text()


def test_a_checkpoint_time_is_read_from_its_extension_line(log: MerkleLog) -> None:
    cp = note.Checkpoint.parse(note.open_note(log.checkpoints()[0], [log.signer.verifier])[0])
    assert cp.extensions == ("time 2026-11-01T00:00:10Z",)
