"""The README's commands work as written for someone who follows it from the top."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")


def shell_lines() -> list[tuple[int, str]]:
    """Return (offset, line) of every line inside the README's ```sh blocks."""
    out = []
    for block in re.finditer(r"```sh\n(.*?)```", README, re.S):
        offset = block.start(1)
        for line in block.group(1).splitlines(keepends=True):
            out.append((offset, line.strip()))
            offset += len(line)
    return out


def test_dig_and_curl_are_installed_before_they_are_used() -> None:
    first_use = min(o for o, line in shell_lines() if line.startswith(("dig ", "curl ")))
    assert 0 <= README.find("apt-get install dnsutils curl") < first_use


def test_blockd_runs_as_written_after_make_venv() -> None:
    lines = shell_lines()
    venv = next(o for o, line in lines if line.startswith("make venv"))
    path = next(o for o, line in lines if line.startswith('export PATH="$PWD/.venv/bin:$PATH"'))
    assert venv < path
    for offset, line in lines:
        if re.match(r"blockd\b", line):
            assert offset > path, f"{line!r} comes before .venv/bin is on PATH"
