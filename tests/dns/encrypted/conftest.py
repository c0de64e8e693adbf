"""Test encrypted on asyncio's loop and on uvloop (tests.loops)."""

from tests.loops import pytest_asyncio_loop_factories

__all__ = ["pytest_asyncio_loop_factories"]
