"""What a task run is made of on the runner's side: its spec, its events, its result, its pipes.

Event levels are :mod:`logging` levels: raw and ``print()`` stdout lines are INFO, stderr lines
WARNING, an unhandled exception's traceback ERROR, ``ctx.log`` records keep their own level, and
the runner's own ``system`` events (start, end) are INFO, or ERROR for a failure.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from packfleet.packages._manifest import PackageSpec

EventSource = Literal["stdout", "stderr", "log", "system"]
Outcome = Literal["succeeded", "failed", "canceled"]

STDOUT_LEVEL = logging.INFO
STDERR_LEVEL = logging.WARNING
_READ_SIZE = 64 * 1024
# Longest line kept whole; a longer run of bytes without a newline is cut into several events.
MAX_LINE_BYTES = 64 * 1024
_SOURCES = frozenset({"stdout", "stderr", "log"})


@dataclass(frozen=True)
class RunSpec:
    """One attempt of one task: which package, with which parameters, in which folders."""

    execution_id: int
    task_id: int
    attempt: int
    project_dir: Path
    package: PackageSpec
    parameters: dict[str, Any]
    task_dir: Path
    log_level: int = logging.INFO

    def request(self) -> dict[str, Any]:
        """The JSON document the package process receives (its folders as absolute real paths)."""
        return {**self._fields(), "package": self.package.to_dict()}

    def request_json(self) -> str:
        """:meth:`request` encoded; raises TypeError or ValueError for parameters that are not JSON.

        The package's part is :attr:`PackageSpec.json_text`, encoded once per spec object.
        """
        fields = json.dumps(self._fields())
        return f'{fields[:-1]},"package":{self.package.json_text}}}'

    def _fields(self) -> dict[str, Any]:
        task_dir = os.fspath(self.task_dir)
        return {
            "execution_id": self.execution_id,
            "task_id": self.task_id,
            "attempt": self.attempt,
            "project_dir": _real(os.fspath(self.project_dir)),
            "task_dir": os.path.join(_real(os.path.dirname(task_dir)), os.path.basename(task_dir)),
            "parameters": self.parameters,
            "log_level": self.log_level,
        }


def _real(folder: str) -> str:
    """``folder`` as an absolute path without symbolic links; remembered when it is absolute.

    A task's folder is a new one in the same tasks folder each time, and a project version's folder
    never changes: resolving them component by component (an ``lstat`` each) for every task cost
    the worker more than the rest of building the request.
    """
    return _real_absolute(folder) if os.path.isabs(folder) else os.path.realpath(folder)


@functools.lru_cache(maxsize=256)
def _real_absolute(folder: str) -> str:
    return os.path.realpath(folder)


@dataclass(frozen=True)
class PackageEvent:
    """One line of output, one log record or one runner notice of a task (an SSIS event message)."""

    time: datetime
    source: EventSource
    level: int
    message: str


@dataclass(frozen=True)
class TaskResult:
    """How a task ended; ``exit_code`` is negative for a signal (-9: SIGKILL), None when unknown."""

    outcome: Outcome
    exit_code: int | None
    message: str


def now() -> datetime:
    return datetime.now(UTC)


class PipeReader:
    """Reads one pipe of a task on the event loop and turns each line into a :class:`PackageEvent`.

    ``kind`` is ``stdout``/``stderr`` for the raw descriptors 1 and 2, or ``events`` for the event
    pipe, which carries JSON lines (see ``_child``). ``on_result`` receives the package's one-line
    failure summary when the event pipe carries it.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        kind: Literal["stdout", "stderr", "events"],
        emit: Callable[[PackageEvent], None],
        on_result: Callable[[str], None],
        on_close: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._fd = fd
        self._kind = kind
        self._emit = emit
        self._on_result = on_result
        self._on_close = on_close
        self._buffer = b""
        self._end: bytes | None = None
        self.closed = False
        self.paused = False
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_readable)

    def expect_end(self, end: bytes) -> None:
        """Treat a line ending in ``end`` as the end of this task's output (a pooled process's pipe).

        What precedes the mark on its line is the task's last, unfinished line, delivered as the
        end of the pipe would deliver it; then ``on_close`` is called, and the pipe stays open.
        """
        self._end = end

    def pause(self) -> None:
        """Stop reading: once the pipe buffer is full, the package blocks on its next write."""
        if not self.closed and not self.paused:
            self.paused = True
            self._loop.remove_reader(self._fd)

    def resume(self) -> None:
        if not self.closed and self.paused:
            self.paused = False
            self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self._buffer += data
        lines = self._buffer.split(b"\n")
        self._buffer = lines.pop()
        for line in lines:
            end = self._end
            if end is not None and line.endswith(end):
                self._end = None
                if len(line) > len(end):
                    self._line(line[: -len(end)])
                self._on_close()
                continue
            self._line(line)
        while len(self._buffer) > MAX_LINE_BYTES:
            self._line(self._buffer[:MAX_LINE_BYTES])
            self._buffer = self._buffer[MAX_LINE_BYTES:]

    def _line(self, raw: bytes) -> None:
        if self._kind == "events":
            self._record(raw)
            return
        text = raw.decode("utf-8", "replace").removesuffix("\r")
        level = STDOUT_LEVEL if self._kind == "stdout" else STDERR_LEVEL
        self._emit(PackageEvent(now(), self._kind, level, text))

    def _record(self, raw: bytes) -> None:
        try:
            record = json.loads(raw)
            source, message = record["s"], record["m"]
            if not isinstance(message, str):
                raise TypeError(message)
            if source == "result":
                self._on_result(message)
                return
            level = record["l"]
            if source not in _SOURCES or not isinstance(level, int):
                raise ValueError(source)
            when = datetime.fromtimestamp(float(record["t"]), UTC)
        except (ValueError, TypeError, KeyError, OverflowError):
            # Not ours: a package wrote straight to descriptor 3. Keep the text, as stdout.
            text = raw.decode("utf-8", "replace")
            self._emit(PackageEvent(now(), "stdout", STDOUT_LEVEL, text))
            return
        self._emit(PackageEvent(when, source, level, message))

    def close(self) -> None:
        """Stop reading (at end of file, or when the drain period ran out) and close the pipe."""
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        if self._buffer:
            self._line(self._buffer)
            self._buffer = b""
        self._on_close()
