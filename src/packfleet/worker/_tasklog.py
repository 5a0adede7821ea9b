"""The local task log: ``<task folder>/task.log``, as SSIS's worker keeps one per task.

``TaskLogEnabled`` switches it on; ``TaskLogLevel`` is SSIS's bit mask of the levels to keep
(Verbose 0x01, Information 0x02, Warning 0x04, Error 0x08, Progress 0x10, CriticalError 0x20,
Audit 0x40; the default 126 keeps all but Verbose). Event levels are :mod:`logging` levels, mapped
onto those bits. The master receives every event regardless: this file is for whoever logs into
the worker machine.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path

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
        # One write(2) per line, nothing buffered in the worker: a worker killed with kill -9 (or by
        # the OOM killer) leaves every line of the task so far in the file. A bare descriptor, not
        # a text file object: one is opened per task, and building the object cost more than the
        # open(2) itself.
        self._fd: int | None = (
            os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666) if enabled else None
        )

    def write(self, time: datetime, level: int, source: str, message: str) -> None:
        if self._fd is None or not self.mask & ssis_level_bit(level):
            return
        name = logging.getLevelName(level)
        head = f"{time.isoformat(timespec='milliseconds')} {name:<8} {source:<6} "
        text = "".join(f"{head}{line}\n" for line in message.splitlines() or [""])
        data = text.encode("utf-8", "replace")
        while data:
            data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
