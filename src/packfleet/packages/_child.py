"""What runs inside a package process: the context handed to a package and the task body.

The fork server imports this module once, so each forked child starts with it (and :mod:`logging`)
already loaded; it therefore imports the standard library only. A task process sees:

- fd 1 and fd 2: pipes the runner reads as raw ``stdout``/``stderr`` lines (output of C code and
  subprocesses lands here);
- fd 3: the *event pipe*. ``print()``, ``sys.stderr`` writes and ``ctx.log`` records all travel over
  it as JSON lines, so their relative order survives: three pipes read by one event loop could not
  promise which of two writes came first.

Levels: ``stdout`` lines are INFO, ``stderr`` lines WARNING (SSIS shows stderr of a child process as a
warning, not an error, because tools write progress there), an unhandled exception's traceback ERROR.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import os
import signal
import sys
import time
import traceback

from packfleet.errors import PackageError
from packfleet.packages import _sql
from packfleet.packages._context import PackageContext

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not loaded at run time: the fork server stays lean
    from collections.abc import Callable
    from types import FrameType, TracebackType
    from typing import Any

EVENT_FD = 3
STDOUT_LEVEL = logging.INFO
STDERR_LEVEL = logging.WARNING
# Longer lines are cut into pieces so one runaway print cannot make the runner buffer without end.
MAX_LINE = 64 * 1024
# 128 + SIGTERM, what a shell reports for a process ended by SIGTERM.
TERMINATED_EXIT_CODE = 143


class EventChannel:
    """Writes JSON-line records to the event pipe, unbuffered: a record is on its way once written."""

    def __init__(self, fd: int = EVENT_FD) -> None:
        self.fd = fd

    def send(self, source: str, level: int, message: str) -> None:
        record = {"t": time.time(), "s": source, "l": level, "m": message}
        self._write(json.dumps(record, ensure_ascii=False).encode("utf-8", "replace") + b"\n")

    def result(self, message: str) -> None:
        self._write(json.dumps({"s": "result", "m": message}).encode("utf-8", "replace") + b"\n")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]


class LineStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` for a package: each complete line becomes one event."""

    def __init__(self, channel: EventChannel, source: str, level: int, fd: int) -> None:
        super().__init__()
        self._channel = channel
        self._source = source
        self._level = level
        self._fd = fd
        self._pending = ""

    encoding = "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # Code that needs a real descriptor (subprocess, faulthandler) writes to the raw pipe.
        return self._fd

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._pending += text
        while "\n" in self._pending or len(self._pending) > MAX_LINE:
            line, newline, rest = self._pending.partition("\n")
            if not newline or len(line) > MAX_LINE:
                line, rest = self._pending[:MAX_LINE], self._pending[MAX_LINE:]
            self._channel.send(self._source, self._level, line)
            self._pending = rest
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            self._channel.send(self._source, self._level, line)


class EventHandler(logging.Handler):
    """Sends log records, with their level, over the event pipe (``source="log"``)."""

    def __init__(self, channel: EventChannel) -> None:
        super().__init__(logging.NOTSET)
        self._channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            self._channel.send("log", record.levelno, message)
        except Exception:
            self.handleError(record)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Cancel sends SIGTERM first: turning it into SystemExit runs the package's `finally` blocks and
    # context managers during the grace period. A second SIGTERM ends the process outright.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise SystemExit(TERMINATED_EXIT_CODE)


def _package_frames(tb: TracebackType | None) -> TracebackType | None:
    """Drop this module's frames, so a package's traceback starts in the package."""
    while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, _sql.__file__):
        if tb.tb_next is None:
            break
        tb = tb.tb_next
    return tb


def _load_entry(entry: str) -> Callable[[PackageContext], object]:
    module_name, _, function_name = entry.partition(":")
    module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise PackageError(f"entry {entry!r}: module {module_name!r} has no function {function_name!r}")
    return function  # type: ignore[no-any-return]


def _forget_modules(project_dir: str) -> None:
    """Unload the project's modules so a reused (pooled) process never runs another version's code."""
    prefix = os.path.join(project_dir, "")
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(prefix):
            del sys.modules[name]
    sys.path_importer_cache.pop(project_dir, None)


def run_task(request: dict[str, Any], channel: EventChannel | None = None, *, reused: bool = True) -> int:
    """Run one package in this process and return its exit code (0 success, 1 exception).

    ``reused=False`` says the process exits right after (a fresh task): the project's modules are
    then left loaded. Unloading them walks every module in ``sys.modules``, and in a forked child
    each module object it touches is a copy-on-write page fault: about 170 faults and 0.45 ms of
    the fork server's ~2.3 ms per fresh task, spent on a process about to end.
    """
    channel = channel or EventChannel()
    package = request["package"]
    project_dir = request["project_dir"]
    streams = (
        LineStream(channel, "stdout", STDOUT_LEVEL, 1),
        LineStream(channel, "stderr", STDERR_LEVEL, 2),
    )
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = streams
    handler = EventHandler(channel)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(request["log_level"])
    log = logging.getLogger(f"package.{package['name']}")
    sys.path.insert(0, project_dir)
    previous_term = signal.signal(signal.SIGTERM, _terminate)
    code = 0
    try:
        os.chdir(request["task_dir"])
        context = PackageContext(request, log)
        if package["kind"] == "sql":
            _sql.run_sql(context, package["file"], package["connection"])
        else:
            _load_entry(package["entry"])(context)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            channel.send("stderr", logging.ERROR, str(exc.code))
        channel.result(f"the package exited with code {code}")
    except BaseException as exc:
        code = 1
        tb = "".join(traceback.format_exception(type(exc), exc, _package_frames(exc.__traceback__)))
        channel.send("stderr", logging.ERROR, tb.rstrip())
        channel.result("".join(traceback.format_exception_only(type(exc), exc)).strip())
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        for stream in streams:
            stream.flush()
        for saved_stream in saved:
            saved_stream.flush()
        sys.stdout, sys.stderr = saved
        root.removeHandler(handler)
        sys.path.remove(project_dir)
        if reused:
            _forget_modules(project_dir)
    return code
