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

import _signal  # type: ignore[import-not-found]  # signal without its enum wrappers
import importlib
import io
import json
import logging
import os
import signal
import sys
import time
import traceback
from json.encoder import encode_basestring as _json_string

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
        # The JSON of {"t", "s", "l", "m"} written out: json.dumps with ensure_ascii=False builds a
        # new encoder per call, several times the cost of escaping the one free-form string.
        record = f'{{"t":{time.time()!r},"s":"{source}","l":{level:d},"m":{_json_string(message)}}}\n'
        self._write(record.encode("utf-8", "replace"))

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


#: Entry functions a warm server imported before forking (``"module:function"`` -> the function).
_PRELOADED: dict[str, Callable[[PackageContext], object]] = {}
#: The event channel, streams and log handler a warm server installed once for all its children.
_INSTALLED: tuple[EventChannel, tuple[LineStream, LineStream], EventHandler] | None = None


def install() -> None:
    """In a warm server: set up once what :func:`run_task` would set up in each fresh child.

    The server's own descriptors 1 to 3 are ``/dev/null``; each child gets its task's pipes there.
    Objects made in the child itself would each cost it page faults; made here, they are shared.
    """
    global _INSTALLED
    channel = EventChannel()
    streams = _streams(channel)
    handler = EventHandler(channel)
    sys.stdout, sys.stderr = streams
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    _INSTALLED = channel, streams, handler


def _streams(channel: EventChannel) -> tuple[LineStream, LineStream]:
    return LineStream(channel, "stdout", STDOUT_LEVEL, 1), LineStream(channel, "stderr", STDERR_LEVEL, 2)


#: In a pooled process: the event channel, streams and log handler all its tasks use in turn.
_POOLED: tuple[EventChannel, tuple[LineStream, LineStream], EventHandler] | None = None


def _pooled_outputs() -> tuple[EventChannel, tuple[LineStream, LineStream], EventHandler]:
    """In a pooled process: its tasks' channel, streams and handler, made once (again if closed).

    A log handler built per task (its lock, its weak reference in :mod:`logging`) cost a pooled
    no-op about a tenth of its CPU. Each task still has them put in place and taken away again.
    """
    global _POOLED
    if _POOLED is None or any(stream.closed for stream in _POOLED[1]):
        channel = EventChannel()
        _POOLED = channel, _streams(channel), EventHandler(channel)
    return _POOLED


def preload(project_dir: str, entries: list[str]) -> str | None:
    """In a warm server: import a project version's entries once; None, or why it could not.

    An entry is ``"module:function"`` (its function is kept for :func:`run_task`) or a plain module
    name (imported only: ``sqlalchemy`` for SQL packages). After a failure nothing of the project
    stays loaded, so each task imports for itself and reports the error as it always did.
    """
    sys.path.insert(0, project_dir)
    try:
        for entry in entries:
            if ":" in entry:
                _PRELOADED[entry] = _load_entry(entry)
            else:
                importlib.import_module(entry)
    except BaseException as exc:
        _PRELOADED.clear()
        _forget_modules(project_dir)
        sys.path.remove(project_dir)
        return "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return None


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


#: In a pooled process: the project version whose modules stay loaded between its tasks.
_LOADED: str | None = None


def _load_version(project_dir: str) -> None:
    """In a pooled process: put ``project_dir`` first on ``sys.path``, unloading any other version.

    Consecutive tasks of one version keep its modules loaded, so module-level state survives
    between them: unloading and importing them again for every task was about half of a pooled
    no-op's CPU (make bench). A task of another version unloads them first, so a process never
    runs another version's code.
    """
    global _LOADED
    if _LOADED is not None and _LOADED != project_dir:
        _unload_version(_LOADED)
    _LOADED = project_dir
    if not sys.path or sys.path[0] != project_dir:  # a task may have put another folder first
        _unload_path(project_dir)
        sys.path.insert(0, project_dir)


def _unload_version(project_dir: str) -> None:
    global _LOADED
    _unload_path(project_dir)
    _forget_modules(project_dir)
    _LOADED = None


def _unload_path(project_dir: str) -> None:
    while project_dir in sys.path:
        sys.path.remove(project_dir)


def _enter(task_dir: str) -> None:
    """Work in the task's folder, creating it (private) here when the caller has not."""
    try:
        os.chdir(task_dir)
    except FileNotFoundError:
        os.makedirs(task_dir, 0o700, exist_ok=True)
        os.chdir(task_dir)


def package_logger(request: dict[str, Any]) -> logging.Logger:
    """The logger of ``request``'s package, ``package.<name>``, made on first use.

    A warm server asks for it before each fork, so its children find it made: a child that makes
    it (a new logger, a placeholder for its parent, an insert into :mod:`logging`'s registry, each
    object written a copy-on-write fault) spent about 0.2 ms of a fresh no-op's 1.5 ms on it.
    """
    name = request["package"]["name"]
    log = _LOGGERS.get(name)
    # Not logging.getLogger each time: its lock and registry walk cost the warm server 15 page
    # faults per fork (logging keeps the registry; this only skips the walk).
    if log is None:
        log = _LOGGERS[name] = logging.getLogger(f"package.{name}")
    return log


#: :func:`package_logger`'s loggers by package name.
_LOGGERS: dict[str, logging.Logger] = {}


def warm_context(request: dict[str, Any]) -> PackageContext | None:
    """In a warm server, before a fork: the context its task process hands to the package.

    Made here, the child finds it made, as it finds the package's logger (see
    :func:`package_logger`): built in the child, its objects and lookups were 18 page faults of a
    fresh no-op. None for a request it cannot be made from: the child tries, and reports why.
    """
    try:
        return _new_context(request)
    except Exception:  # noqa: BLE001 - the child meets the same error and reports it as the task's
        return None


def _new_context(request: dict[str, Any]) -> PackageContext:
    return PackageContext(request, package_logger(request))


def run_task(
    request: dict[str, Any],
    channel: EventChannel | None = None,
    *,
    reused: bool = True,
    context: PackageContext | None = None,
) -> int:
    """Run one package in this process and return its exit code (0 success, 1 exception).

    ``reused=False`` says the process exits right after (a fresh task): nothing is undone then
    (streams, handler, ``sys.path``, the project's modules). Unloading the modules walks every module
    in ``sys.modules``, and in a forked child each object touched is a copy-on-write page fault:
    about 170 faults and 0.45 ms of the fork server's ~2.3 ms per fresh task, spent on a process
    about to end. A reused (pooled) process puts its streams and handler back after each task and
    keeps the project's modules for its next task of the same version (see :func:`_load_version`).
    """
    package = request["package"]
    project_dir = request["project_dir"]
    root = logging.getLogger()
    if _INSTALLED is not None and not reused and channel is None:
        # A warm server's child: streams and handler are in place since before the fork.
        channel, streams, handler = _INSTALLED
        saved = sys.stdout, sys.stderr
        if root.level != request["log_level"]:  # setLevel walks every logger's cache
            root.setLevel(request["log_level"])
    else:
        if reused and channel is None:
            channel, streams, handler = _pooled_outputs()
        else:
            channel = channel or EventChannel()
            streams = _streams(channel)
            handler = EventHandler(channel)
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = streams
        root.addHandler(handler)
        if root.level != request["log_level"]:
            root.setLevel(request["log_level"])
    if reused:
        _load_version(project_dir)
    elif not sys.path or sys.path[0] != project_dir:  # a warm server's child has it first already
        sys.path.insert(0, project_dir)
    # _signal, not signal: its enum conversions cost a forked child dozens of page faults.
    previous_term = _signal.signal(_signal.SIGTERM, _terminate)
    code = 0
    try:
        _enter(request["task_dir"])
        if context is None:
            context = _new_context(request)
        if package["kind"] == "sql":
            _sql.run_sql(context, package["file"], package["connection"])
        else:
            entry = package["entry"]
            (_PRELOADED.get(entry) or _load_entry(entry))(context)
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
        for stream in streams:
            stream.flush()
        if reused:
            _restore(saved, handler, project_dir, code, previous_term)
    return code


def _restore(
    saved: tuple[Any, Any], handler: logging.Handler, project_dir: str, code: int, term: Any
) -> None:
    """Undo what :func:`run_task` set up, for the next task of a pooled process.

    The project's modules stay loaded after a success; after a failure the runner replaces the
    process anyway, and whoever else reuses it must not find a half-imported package.
    """
    _signal.signal(_signal.SIGTERM, term)
    for saved_stream in saved:
        saved_stream.flush()
    sys.stdout, sys.stderr = saved
    logging.getLogger().removeHandler(handler)
    if code != 0:
        _unload_version(project_dir)
