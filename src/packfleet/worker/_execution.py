"""One attempt of one task on this worker: its folder, its task log, its events and its package run.

Every event the package emits is written to the log cache before anything else happens to it
(write-ahead: the sender reads the cache, never memory), then to the local task log. The attempt
ends with a completion report in the cache, or with none when the lease is no longer this
worker's to report on (see :data:`~packfleet.worker._taskbeat.GIVE_UP_REASONS`).
"""

from __future__ import annotations

import logging
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
from packfleet.worker._tasklog import TaskLog

log = logging.getLogger("packfleet.worker")

_SOURCES: frozenset[str] = frozenset(get_args(EventSource))


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
        home: Path,
        settings: WorkerSettings,
        worker: str,
        cache: LogCache,
        runner: PackageRunner,
        fetch_project: Callable[[str], Awaitable[Path]],
        kill: Callable[[Running], None],
        notify: Callable[[], None],
        clock: Callable[[], float],
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
        self.task_dir = settings.tasks_root(home) / f"{a.execution_id}-{a.attempt}"
        self.where = f"execution {a.execution_id} task {a.task_id} attempt {a.attempt}"
        self._task_log: TaskLog | None = None

    async def run(self) -> CompletionReport | None:
        a = self.assignment
        self.cache.open_attempt(a.execution_id, a.task_id, a.attempt)
        self.task_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # private, as every node file
        self._task_log = TaskLog(
            self.task_dir / "task.log",
            enabled=self.settings.task_log_enabled,
            mask=self.settings.task_log_level,
        )
        report: CompletionReport | None = None
        try:
            report = await self._run()
        finally:
            if self.running.cancel_reason in GIVE_UP_REASONS:
                report = None
            self._task_log.close()
            self.cache.finish(a.task_id, a.attempt, report)
            self._notify()
        return report

    def on_event(self, event: PackageEvent) -> None:
        """Cache one event; called from the runner's pipe readers, which must not see an exception."""
        a = self.assignment
        source = event.source if event.source in _SOURCES else "log"
        try:
            self.cache.append(
                a.task_id,
                a.attempt,
                time=iso(event.time),
                level=event.level,
                source=source,
                message=event.message,
            )
            if self._task_log is not None:
                self._task_log.write(event.time, event.level, source, event.message)
        except (PackfleetError, OSError) as exc:
            log.error("%s: an event message is lost: %s", self.where, exc)
        self._notify()

    def _system(self, level: int, message: str) -> None:
        self.on_event(PackageEvent(datetime.fromtimestamp(self._clock(), UTC), "system", level, message))

    def _report(self, outcome: Any, exit_code: int | None, message: str) -> CompletionReport:
        return CompletionReport(self.assignment.task_id, self.assignment.attempt, outcome, exit_code, message)

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
        try:
            spec = RunSpec(
                execution_id=a.execution_id,
                task_id=a.task_id,
                attempt=a.attempt,
                project_dir=project_dir,
                package=PackageSpec.from_dict(a.package_spec),
                parameters=dict(a.parameters),
                task_dir=self.task_dir,
            )
            handle: TaskHandle = await self.runner.launch(spec, self.on_event)
        except PackageError as exc:
            self._system(logging.ERROR, f"worker {self.worker} could not start the package: {exc}")
            log.error("%s: %s", self.where, exc)
            return self._report("failed", None, exc.message)
        running.handle = handle
        # Per-task lines are DEBUG: at hundreds of tasks per second INFO lines cost the worker CPU
        # (make bench) and drown the lines an operator needs; the task's own events say the same.
        log.debug("%s: %s/%s runs as process %s", self.where, a.project, a.package, handle.pid)
        if running.cancel_reason is not None:  # a cancel arrived while the package was starting
            self._kill(running)
        result = await handle.wait()
        log.debug("%s: %s (exit code %s)", self.where, result.outcome, result.exit_code)
        return self._report(result.outcome, result.exit_code, result.message)
