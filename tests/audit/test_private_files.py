"""Every audit file is 0600 in a 0700 directory, whatever the umask blockd runs under."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from blockd.audit.log import open_log

# Runs in its own process: the umask is process-wide. It lists the modes while the log is
# open (SQLite removes the WAL and SHM files when the last connection closes).
SCRIPT = """
import asyncio, json, os, sys
from pathlib import Path

os.umask(int(sys.argv[2], 8))
from blockd.audit.log import open_log
from blockd.audit.records import DAY, RecordKeeper
from blockd.audit.writer import LogWriter

root = Path(sys.argv[1])
directory = root / "state" / "audit"
log = open_log(directory, "isp.example/blockd/test", "test-operator")
log.append([{"time": "2026-11-01T00:00:00Z", "type": "t", "n": 0}])
log.sign_checkpoint("2026-11-01T00:00:01Z")
records = RecordKeeper(directory / "records", period=DAY, keep_min=DAY, keep_max=2 * DAY)
records._key(0, create=True)

async def helper() -> None:
    writer = LogWriter(directory, "isp.example/blockd/test", "test-operator", idle=False)
    try:
        await writer.append([{"time": "2026-11-01T00:00:02Z", "type": "t", "n": 1}])
    finally:
        writer.close()

asyncio.run(helper())
modes = {
    str(p.relative_to(directory)): [p.stat().st_mode & 0o777, p.is_dir()]
    for p in [directory, *directory.rglob("*")]
}
print(json.dumps(modes))
log.close()
"""


def modes_under(tmp_path: Path, umask: int) -> dict[str, tuple[int, bool]]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), f"{umask:o}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {name: (mode, is_dir) for name, (mode, is_dir) in json.loads(out).items()}


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_every_audit_file_is_private_under_a_permissive_umask(tmp_path: Path, umask: int) -> None:
    modes = modes_under(tmp_path, umask)
    assert {"log.db", "log.db-wal", "log.db-shm", "log.key"} <= modes.keys(), modes
    files = {name: oct(mode) for name, (mode, is_dir) in modes.items() if not is_dir}
    dirs = {name: oct(mode) for name, (mode, is_dir) in modes.items() if is_dir}
    assert set(files.values()) == {oct(0o600)}, files
    assert set(dirs.values()) == {oct(0o700)}, dirs
    assert {".", "records", "records/keys", "records/data"} <= dirs.keys()


def test_files_an_older_blockd_left_readable_are_narrowed(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    log = open_log(directory, "isp.example/blockd/test", "test-operator")
    log.append([{"time": "2026-11-01T00:00:00Z", "type": "t"}])
    keep = sqlite3.connect(directory / "log.db")  # holds the WAL and SHM files in place
    keep.execute("SELECT 1 FROM batches").fetchall()
    log.close()
    for path in [directory, *directory.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    again = open_log(directory, "isp.example/blockd/test", "test-operator")
    try:
        assert directory.stat().st_mode & 0o777 == 0o700
        for path in directory.iterdir():
            assert path.stat().st_mode & 0o777 == 0o600, path.name
        assert {p.name for p in directory.iterdir()} >= {"log.db-wal", "log.db-shm"}
    finally:
        again.close()
        keep.close()
