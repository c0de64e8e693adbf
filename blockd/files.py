"""Files written so that a crash leaves the old or the new one whole, never half."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def make_dirs(path: Path, mode: int) -> None:
    """Create path and its missing parents with exactly mode, whatever the umask."""
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            d.mkdir(mode=mode)
        os.chmod(d, mode)  # mkdir's mode is filtered by the umask


def atomic_write(path: Path, data: bytes, mode: int = 0o644, dir_mode: int | None = None) -> None:
    """Replace path with data so that readers see the old or the new file, whole.

    The file gets exactly mode, whatever the umask; missing directories are made with
    exactly dir_mode when given (else as mkdir does, under the umask).
    """
    if dir_mode is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        make_dirs(path.parent, dir_mode)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # a left-over temporary file keeps its old mode
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
