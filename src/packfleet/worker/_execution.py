"""One attempt of one task on this worker: its folder, its task log, its events and its package run.

Every event the package emits is written to the log cache before anything else happens to it
(write-ahead: the sender reads the cache, never memory), then to the local task log. The attempt
ends with a completion report in the cache, or with none when the lease is no longer this
worker's to report on (see :data:`~packfleet.worker._taskbeat.GIVE_UP_REASONS`).

When the cache cannot be written (a full disk), the attempt applies back-pressure instead of
dropping lines: it stops reading the package's pipes, so the package blocks on its next write, and
keeps the few events already read in order in memory. It tries again every ``stall_poll`` seconds;
the space usually returns as the master acknowledges events and the journal deletes segments. If it
does not within ``stall_limit``, the package is stopped and the attempt fails with a reason that
says so. Any event that is ever dropped is counted, and the attempt carries a system event
"N events lost" (written into the cache's reserved space if need be): never a silent loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as _time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from packfleet.config import WorkerSettings
from packfleet.errors import PackageError, PackfleetError, TransportError
from packfleet.packages import PackageEvent, PackageRunner, PackageSpec, RunSpec, TaskHandle
from packfleet.protocol import CompletionReport, EventSource
from packfleet.worker._logcache import LogCache
from packfleet.worker._taskbeat import GIVE_UP_REASONS, Running
from packfleet.worker._taskfolders import TaskFolders
from packfleet.worker._tasklog import TaskLog, make_private_folder

log = logging.getLogger("packfleet.worker")

_SOURCES: frozenset[str] = frozenset(get_args(EventSource))

#: Events held in memory while the cache cannot be written. Reading stops at the first failed
#: write, so only the rest of one pipe read (64 KiB per pipe) arrives after it; this bound is
#: never reached in practice and only guards memory if something keeps emitting regardless.
MAX_BACKLOG = 10_000
_CACHE_FIX = (
    "free space in the execution log cache folder, or move it: "
    "packfleet settings set worker ExecutionLogCacheFolder DIR"
)


class _RateLimitedLog:
    """One worker-log line per ``every`` seconds for a recurring problem, counting the lines held back.

    A full disk hits every running attempt at once; a line per attempt (or per event, as before)
    would flood the worker log that the operator needs to read.
    """

    def __init__(self, every: float, level: int = logging.WARNING) -> None:
        self.every = every
        self.level = level
        self._last = -float("inf")
        self._held_back = 0

    def __call__(self, message: str, *args: object) -> None:
        now = _time.monotonic()
        if now - self._last < self.every:
            self._held_back += 1
            return
        if self._held_back:
            message += f" ({self._held_back} similar line(s) held back)"
        self._last, self._held_back = now, 0
        log.log(self.level, message, *args)


def _why(exc: BaseException) -> str:
    """What went wrong, without the fix a PackfleetError carries (the caller names its own)."""
    return exc.message if isinstance(exc, PackfleetError) else str(exc)


_stall_log = _RateLimitedLog(60.0)
_loss_log = _RateLimitedLog(60.0)
_resume_log = _RateLimitedLog(60.0, logging.INFO)


def iso(moment: datetime | float) -> str:
    """A time as the protocol writes it: ISO 8601 in UTC."""
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).isoformat()
    return datetime.fromtimestamp(moment, UTC).isoformat()


class TaskExecution:
    """Runs ``running.assignment`` once; :meth:`run` returns the report it left in the cache."""

    def __init__(
        self,
        running: Running,
        *,
        settings: WorkerSettings,
        folders: TaskFolders,
        worker: str,
        cache: LogCache,
        runner: PackageRunner,
        fetch_project: Callable[[str], Awaitable[Path]],
        kill: Callable[[Running], None],
        notify: Callable[[], None],
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        stall_limit: float = 300.0,
        stall_poll: float = 0.5,
    ) -> None:
        self.running = running
        self.assignment = running.assignment
        self.settings = settings
        self.worker = worker
        self.cache = cache
        self.runner = runner
        self._fetch_project = fetch_project
        self._kill = kill
        self._notify = notify
        self._clock = clock
        a = self.assignment
        self.task_dir = folders.root / f"{a.execution_id}-{a.attempt}"
        self._folders = folders
        #: The folder exists already: a spare was renamed into place (see TaskFolders).
        self._folder_ready = False
        self.where = f"execution {a.execution_id} task {a.task_id} attempt {a.attempt}"
        self._task_log: TaskLog | None = None
        self._sleep = sleep
        self.stall_limit = stall_limit
        self.stall_poll = stall_poll
        #: Events read but not yet in the cache, in order; non-empty means reading is paused.
        self._backlog: deque[PackageEvent] = deque()
        self._unstall: asyncio.Task[None] | None = None
        #: Why the attempt failed because the cache stayed unwritable; events are dropped from then on.
        self._stall_failure: str | None = None
        #: Events dropped (never written to the cache) in this attempt.
        self.lost = 0
        self._task_log_failed = False

    async def run(self) -> CompletionReport | None:
        a = self.assignment
        self.cache.open_attempt(a.execution_id, a.task_id, a.attempt)
        # Before anything is written in it: a spare folder can only be renamed into an absent name.
        self._folder_ready = self._folders.claim(self.task_dir, task_log=self.settings.task_log_enabled)
        # Else task.log (and a pooled task's folder) are made by the first line it keeps (see TaskLog).
        self._task_log = TaskLog(
            self.task_dir / "task.log",
            enabled=self.settings.task_log_enabled,
            mask=self.settings.task_log_level,
        )
        report: CompletionReport | None = None
        try:
            report = await self._run()
        finally:
            if self._unstall is not None and not self._unstall.done():
                self._unstall.cancel()  # the attempt ended otherwise (stopped, cancelled)
            self.lost += len(self._backlog)
            self._backlog.clear()
            if self.running.cancel_reason in GIVE_UP_REASONS:
                report = None
            self._record_loss()
            self._task_log.close()
            self._folders.ended(self.task_dir)
            self.cache.finish(a.task_id, a.attempt, report)
            self._notify()
        return report

    def on_event(self, event: PackageEvent) -> None:
        """Cache one event; called from the runner's pipe readers, which must not see an exception."""
        self._log_locally(event)
        if self._stall_failure is not None:
            self.lost += 1
        elif self._backlog:
            self._hold(event)
        else:
            try:
                self._cache(event)
            except (PackfleetError, OSError) as exc:
                self._hold(event)
                self._stall(exc)
        self._notify()

    def _cache(self, event: PackageEvent, *, critical: bool = False) -> None:
        a = self.assignment
        self.cache.append(
            a.task_id,
            a.attempt,
            time=iso(event.time),
            level=event.level,
            source=event.source if event.source in _SOURCES else "log",
            message=event.message,
            critical=critical,
        )

    def _log_locally(self, event: PackageEvent) -> None:
        if self._task_log is None:
            return
        try:
            self._task_log.write(event.time, event.level, event.source, event.message)
        except OSError as exc:  # the task folder's disk: the master still receives every event
            if not self._task_log_failed:
                self._task_log_failed = True
                log.error(
                    "%s: cannot write its task.log (%s); events still go to the master", self.where, exc
                )

    def _hold(self, event: PackageEvent) -> None:
        if len(self._backlog) < MAX_BACKLOG:
            self._backlog.append(event)
        else:
            self.lost += 1

    def _stall(self, exc: BaseException) -> None:
        """The cache refused a write: stop reading the package's output and try again until it works."""
        handle = self.running.handle
        if handle is not None:
            handle.pause()
        if self._unstall is None or self._unstall.done():
            _stall_log(
                "%s: the execution log cache cannot be written (%s): the package's output is not read "
                "until it can (the package waits on its pipe); %s",
                self.where,
                _why(exc),
                _CACHE_FIX,
            )
            self._unstall = asyncio.ensure_future(self._retry_backlog(self._clock(), exc))

    async def _retry_backlog(self, since: float, exc: BaseException) -> None:
        while True:
            await self._sleep(self.stall_poll)
            try:
                while self._backlog:
                    self._cache(self._backlog[0])
                    self._backlog.popleft()
                    self._notify()
            except (PackfleetError, OSError) as again:
                exc = again
                # Space returns when the master has what the journal holds: have it sent now
                # rather than at the reporter's next idle wake-up.
                self._notify()
                if self._clock() - since >= self.stall_limit:
                    self._give_up(exc)
                    return
                continue
            _resume_log(
                "%s: the log cache takes events again after %.1f s", self.where, self._clock() - since
            )
            if self.running.handle is not None:
                self.running.handle.resume()
            return

    def _give_up(self, exc: BaseException) -> None:
        """The cache stayed unwritable for ``stall_limit``: stop the package, fail with the reason."""
        self._stall_failure = (
            f"the worker's execution log cache {self.cache.folder} could not be written for "
            f"{self.stall_limit:.0f} s ({_why(exc)}), so the package was stopped rather than its "
            f"output lost; {_CACHE_FIX}"
        )
        log.error("%s: %s", self.where, self._stall_failure)
        self.lost += len(self._backlog)
        self._backlog.clear()
        handle = self.running.handle
        if handle is not None:
            handle.resume()  # read on (and count as lost) so the stopped package can end
            self._kill(self.running)

    def _record_loss(self) -> None:
        """Put the failure reason and the count of dropped events in the execution, and say so once."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        marks = []
        if self._stall_failure is not None:
            marks.append(PackageEvent(now, "system", logging.ERROR, self._stall_failure))
        if self.lost:
            _loss_log(
                "%s: %d event message(s) were lost (the execution log cache %s could not take them)",
                self.where,
                self.lost,
                self.cache.folder,
            )
            marks.append(PackageEvent(now, "system", logging.ERROR, f"{self.lost} events lost"))
        for mark in marks:
            try:
                self._cache(mark, critical=True)
            except (PackfleetError, OSError) as exc:
                log.error("%s: cannot record %r in the log cache: %s", self.where, mark.message, exc)

    def _system(self, level: int, message: str) -> None:
        self.on_event(PackageEvent(datetime.fromtimestamp(self._clock(), UTC), "system", level, message))

    def _report(self, outcome: Any, exit_code: int | None, message: str) -> CompletionReport:
        return CompletionReport(self.assignment.task_id, self.assignment.attempt, outcome, exit_code, message)

    def _make_folder(self) -> None:
        """Create the folder of a task about to be forked fresh.

        A pooled process creates its task's folder itself as cheaply as the worker does, so for a
        pooled task the worker does not hold the launch back for it (the task log makes it if the
        package has not). A freshly forked process pays a copy-on-write fault for each object that
        creating it touches: about 0.3 ms more CPU per task than here (a runner loop of fresh no-ops).
        """
        with contextlib.suppress(OSError):  # the task's process tries again, and says why it cannot
            make_private_folder(self.task_dir)

    async def _run(self) -> CompletionReport | None:
        a, running = self.assignment, self.running
        try:
            project_dir = await self._fetch_project(a.project_sha256)
        except TransportError as exc:
            # Not the package's fault: give the task back (its lease expires and the master
            # requeues it) instead of failing an execution because the master blinked.
            self._system(logging.ERROR, f"worker {self.worker} could not download the project: {exc}")
            log.error("%s: cannot download project %s: %s", self.where, a.project_sha256[:12], exc)
            running.cancel_reason = running.cancel_reason or "unreachable"
            return None
        except PackageError as exc:
            self._system(logging.ERROR, f"worker {self.worker} refused the project: {exc}")
            log.error("%s: %s", self.where, exc)
            return self._report("failed", None, exc.message)
        if running.cancel_reason is not None:
            self._system(logging.INFO, f"the task ended before it started ({running.cancel_reason})")
            return self._report("canceled", None, "canceled before the package started")
        if self._clock() >= running.deadline:
            # Started now, the package would run under a lease the master may already have given
            # to another worker: twice in parallel. Not starting it is safe: the master requeues.
            log.warning("%s: its lease expired before the package started; not starting it", self.where)
            running.cancel_reason = "expired"
            return None
        try:
            spec = RunSpec(
                execution_id=a.execution_id,
                task_id=a.task_id,
                attempt=a.attempt,
                project_dir=project_dir,
                package=PackageSpec.from_wire(a.package_spec),
                parameters=dict(a.parameters),
                task_dir=self.task_dir,
            )
            if spec.package.isolation != "pooled" and not self._folder_ready:
                self._make_folder()
            handle: TaskHandle = await self.runner.launch(spec, self.on_event)
        except PackageError as exc:
            self._system(logging.ERROR, f"worker {self.worker} could not start the package: {exc}")
            log.error("%s: %s", self.where, exc)
            return self._report("failed", None, exc.message)
        running.handle = handle
        if self._backlog:  # the cache refused an event while the package was starting
            handle.pause()
        # Per-task lines are DEBUG: at hundreds of tasks per second INFO lines cost the worker CPU
        # (make bench) and drown the lines an operator needs; the task's own events say the same.
        log.debug("%s: %s/%s runs as process %s", self.where, a.project, a.package, handle.pid)
        if running.cancel_reason is not None or self._stall_failure is not None:
            self._kill(running)  # a cancel (or the give-up of a full cache) came while it started
        result = await handle.wait()
        while self._unstall is not None and not self._unstall.done():
            # The last events (the outcome among them) wait for the cache: the report follows them.
            await asyncio.shield(self._unstall)
        log.debug("%s: %s (exit code %s)", self.where, result.outcome, result.exit_code)
        if self._stall_failure is not None:
            return self._report("failed", result.exit_code, self._stall_failure)
        return self._report(result.outcome, result.exit_code, result.message)
