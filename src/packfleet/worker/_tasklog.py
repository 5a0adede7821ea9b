"""The local task log: ``<task folder>/task.log``, as SSIS's worker keeps one per task.

``TaskLogEnabled`` switches it on; ``TaskLogLevel`` is SSIS's bit mask of the levels to keep
(Verbose 0x01, Information 0x02, Warning 0x04, Error 0x08, Progress 0x10, CriticalError 0x20,
Audit 0x40; the default 126 keeps all but Verbose). Event levels are :mod:`logging` levels, mapped
onto those bits. The master receives every event regardless: this file is for whoever logs into
the worker machine.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TextIO

VERBOSE, INFORMATION, WARNING, ERROR, CRITICAL_ERROR = 0x01, 0x02, 0x04, 0x08, 0x20


def ssis_level_bit(level: int) -> int:
    """The TaskLogLevel bit of a :mod:`logging` level: DEBUG is Verbose, CRITICAL is CriticalError."""
    if level <= logging.DEBUG:
        return VERBOSE
    if level <= logging.INFO:
        return INFORMATION
    if level <= logging.WARNING:
        return WARNING
    if level <= logging.ERROR:
        return ERROR
    return CRITICAL_ERROR


class TaskLog:
    """Appends the events of one task attempt whose level the mask keeps; a no-op when disabled."""

    def __init__(self, path: Path, *, enabled: bool, mask: int) -> None:
        self.path = path
        self.mask = mask
        # Line-buffered: each line reaches the kernel as it is written, so a worker killed with
        # kill -9 (or by the OOM killer) leaves every line of the task so far in the file.
        self._file: TextIO | None = (
            open(path, "a", encoding="utf-8", buffering=1) if enabled else None  # noqa: SIM115
        )

    def write(self, time: datetime, level: int, source: str, message: str) -> None:
        if self._file is None or not self.mask & ssis_level_bit(level):
            return
        name = logging.getLevelName(level)
        for line in message.splitlines() or [""]:
            self._file.write(f"{time.isoformat(timespec='milliseconds')} {name:<8} {source:<6} {line}\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
