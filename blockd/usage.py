"""What every command shares: a user's mistake, and reading a file the user named."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

# How a room adds its commands to the parser: cli.parser's add(name, fn, config=False).
Add = Callable[..., argparse.ArgumentParser]


class UsageError(Exception):
    """A mistake on the command line or in a file the user named."""


def read(path: Path) -> bytes:
    """Return the bytes of a file the user named, or say in one line why not."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None
