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


def make_private_folder(folder: Path) -> None:
    """Create a task's folder, private as every node file; one system call when its parent exists."""
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)


class TaskLog:
    """Appends the events of one task attempt whose level the mask keeps; a no-op when disabled.

    The file, and the task's folder if need be, are created by the first line the mask keeps, not
    before: the worker hands a pooled task to its process first, and that process creates the
    folder it works in when it is not there yet (whichever comes first makes it). Creating both
    ahead held each launch back by two file creations, which under disk load wait on the file
    system's journal; and a task that logs nothing locally gets no file at all.
    """

    _FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC

    def __init__(self, path: Path, *, enabled: bool, mask: int) -> None:
        self.path = path
        self.mask = mask
        self._keep = mask if enabled else 0
        # One write(2) per line, nothing buffered in the worker: a worker killed with kill -9 (or by
        # the OOM killer) leaves every line of the task so far in the file. A bare descriptor, not
        # a text file object: one is opened per task, and building the object cost more than the
        # open(2) itself.
        self._fd: int | None = None

    def write(self, time: datetime, level: int, source: str, message: str) -> None:
        if not self._keep & ssis_level_bit(level):
            return
        fd = self._fd if self._fd is not None else self._open()
        name = logging.getLevelName(level)
        head = f"{time.isoformat(timespec='milliseconds')} {name:<8} {source:<6} "
        text = "".join(f"{head}{line}\n" for line in message.splitlines() or [""])
        data = text.encode("utf-8", "replace")
        while data:
            data = data[os.write(fd, data) :]

    def _open(self) -> int:
        try:
            self._fd = os.open(self.path, self._FLAGS, 0o666)
        except FileNotFoundError:  # the package's process has not made the folder (yet)
            make_private_folder(self.path.parent)
            self._fd = os.open(self.path, self._FLAGS, 0o666)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
