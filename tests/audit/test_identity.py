"""A log's origin and key name never change: a real log on disk refuses another one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from blockd.audit import identity
from blockd.audit.log import AuditError, open_log
from tests.audit.test_bundle import entry

ORIGIN, KEY = "isp.test/blockd/resolver-1", "isp.test-resolver-1"


def kept_log(directory: Path) -> None:
    """Keep a log in directory: entries and a signed checkpoint, closed cleanly."""
    log = open_log(directory, ORIGIN, KEY)
    try:
        log.append([entry(0), entry(1)])
        log.sign_checkpoint("2026-11-23T12:00:00Z")
    finally:
        log.close()


def test_the_same_names_open_the_log_again(tmp_path: Path) -> None:
    kept_log(tmp_path)
    log = open_log(tmp_path, ORIGIN, KEY)
    try:
        assert log.head().size == 2
    finally:
        log.close()
    assert identity.name_changes(tmp_path, ORIGIN, KEY) == []


def test_another_origin_is_refused_naming_both(tmp_path: Path) -> None:
    kept_log(tmp_path)
    with pytest.raises(AuditError) as caught:
        open_log(tmp_path, "isp.test/blockd/renamed", KEY)
    message = str(caught.value)
    assert message.startswith("audit.origin: the log ")
    assert f"is named {ORIGIN!r}, not 'isp.test/blockd/renamed'" in message
    assert "\n" not in message
    log = open_log(tmp_path, ORIGIN, KEY)  # nothing was changed by the refusal
    log.close()


def test_another_key_name_is_refused_naming_both(tmp_path: Path) -> None:
    kept_log(tmp_path)
    with pytest.raises(AuditError, match=f"audit.key_name: .* is named {KEY!r}, not 'other'"):
        open_log(tmp_path, ORIGIN, "other")


def test_both_changes_are_named_on_one_line(tmp_path: Path) -> None:
    kept_log(tmp_path)
    with pytest.raises(AuditError) as caught:
        open_log(tmp_path, "isp.test/new", "new")
    message = str(caught.value)
    assert "audit.origin:" in message and "; audit.key_name:" in message
    assert "\n" not in message


def test_a_log_that_predates_the_record_is_named_by_its_last_checkpoint(tmp_path: Path) -> None:
    kept_log(tmp_path)
    db = sqlite3.connect(tmp_path / "log.db")
    db.execute("DELETE FROM meta WHERE key = 'origin'")  # as an earlier blockd kept it
    db.commit()
    db.close()
    with pytest.raises(AuditError, match=f"is named {ORIGIN!r}, not 'isp.test/new'"):
        open_log(tmp_path, "isp.test/new", KEY)
    open_log(tmp_path, ORIGIN, KEY).close()  # and records it from then on
    db = sqlite3.connect(tmp_path / "log.db")
    assert db.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone() == (
        ORIGIN.encode(),
    )
    db.close()


def test_a_log_with_entries_but_no_checkpoint_keeps_its_origin(tmp_path: Path) -> None:
    log = open_log(tmp_path, ORIGIN, KEY)
    log.append([entry(0)])
    log.close()
    with pytest.raises(AuditError, match=r"audit\.origin"):
        open_log(tmp_path, "isp.test/new", KEY)


def test_checking_the_names_writes_nothing(tmp_path: Path) -> None:
    kept_log(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert identity.name_changes(tmp_path, "isp.test/new", KEY) != []
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert identity.name_changes(tmp_path / "none", "isp.test/new", KEY) == []  # no log yet
    assert not (tmp_path / "none").exists()


def test_a_damaged_log_or_key_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "log.db").write_bytes(b"not a database" * 100)
    (tmp_path / "log.key").write_text("not a key")
    found = identity.name_changes(tmp_path, ORIGIN, KEY)
    assert [p.split(":")[0] for p in found] == ["audit.dir", "audit.dir"]
    assert "cannot read the log" in found[0] and "not a usable log key" in found[1]
