"""Bounded waiting for the worker tests: poll a condition, never sleep a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from packfleet.worker._logcache import RESERVE_NAME


async def eventually(condition: Callable[[], object], *, timeout: float = 15.0, what: str = "") -> None:
    """Wait until ``condition()`` is true, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await asyncio.sleep(0.01)


class FakeClock:
    """A wall clock the test moves forward by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def journal(folder: Path) -> list[Path]:
    """What a log cache folder holds besides its reserved space: the journal segments."""
    return sorted(p for p in folder.iterdir() if p.name != RESERVE_NAME)
