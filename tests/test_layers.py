"""The import layering in pyproject.toml holds, and a back-arrow breaks `make lint`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_the_code_keeps_every_contract() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_back_arrow_is_caught(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "blockd", tmp_path / "blockd", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    # policy reaching up into the servers, and the query path into the audit log
    (tmp_path / "blockd" / "policy" / "bad.py").write_text("import blockd.dns.pipeline\n")
    (tmp_path / "blockd" / "dns" / "bad.py").write_text("from blockd.audit import log\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "blockd.policy.bad -> blockd.dns.pipeline" in done.stdout
    assert "blockd.dns.bad -> blockd.audit.log" in done.stdout
