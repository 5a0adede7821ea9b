"""Task execution: the leases this worker holds, the runs of their packages, and their task heartbeats.

Each leased task runs as its own asyncio task (:meth:`TaskRunner.start`), keyed by ``(task_id,
attempt)`` (:data:`~packfleet.worker._taskbeat.LeaseKey`), never by task id alone. One attempt
(:class:`~packfleet.worker._execution.TaskExecution`) fetches the project, runs the package and
leaves its events and completion report in the log cache for the reporter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from packfleet.config import WorkerSettings
from packfleet.errors import PackfleetError
from packfleet.packages import PackageRunner
from packfleet.protocol import CompletionReport, TaskAssignment
from packfleet.worker._attempts import supersede
from packfleet.worker._execution import TaskExecution
from packfleet.worker._link import MasterLink
from packfleet.worker._logcache import LogCache
from packfleet.worker._pacing import AgentEvents, Pause
from packfleet.worker._projects import ProjectCache
from packfleet.worker._slots import LeaseAhead, Slots
from packfleet.worker._taskbeat import LeaseKey, Running, TaskBeat, lease_key
from packfleet.worker._taskfolders import TaskFolders
from packfleet.worker._timing import AgentTiming

log = logging.getLogger("packfleet.worker")


class TaskRunner:
    """Runs leased tasks, keeps their leases with task heartbeats, and stops them when told."""

    def __init__(
        self,
        home: Path,
        *,
        link: MasterLink,
        settings: Callable[[], WorkerSettings],
        worker_name: Callable[[], str],
        cache: LogCache,
        runner: PackageRunner,
        projects: ProjectCache,
        events: AgentEvents,
        pause: Pause,
        timing: AgentTiming,
        clock: Callable[[], float],
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
    ) -> None:
        self.home = home
        self._settings = settings
        self._worker_name = worker_name
        self.cache = cache
        self.runner = runner
        self.projects = projects
        self._events = events
        self._pause = pause
        self.timing = timing
        self._clock = clock
        #: Leases held, by (task id, attempt): never by task id alone (see :data:`LeaseKey`).
        self.running: dict[LeaseKey, Running] = {}
        #: The asyncio task of each attempt this runner started, by lease.
        self.executions: dict[LeaseKey, asyncio.Task[CompletionReport | None]] = {}
        self._spawn = spawn
        #: At most MaxTaskCount attempts run; a task leased ahead waits here for a slot.
        self.slots = Slots(lambda: self._settings().max_task_count)
        self.ahead = LeaseAhead(timing.lease_ahead_per_slot)
        self._folders: TaskFolders | None = None
        self._folders = self._task_folders(settings())
        self.taskbeat = TaskBeat(
            self.running,
            link.post,
            settings,
            spawn=spawn,
            cancel_grace=timing.cancel_grace,
            clock=clock,
        )

    def _task_folders(self, settings: WorkerSettings) -> TaskFolders:
        """The task folders of the current ``TasksRootFolder`` (a reload may move it)."""
        root = settings.tasks_root(self.home)
        folders = self._folders
        if folders is None or folders.root != root:
            folders = TaskFolders(
                root,
                keep=settings.task_folder_keep_count,
                spares=settings.max_task_count,
                spawn=self._spawn,
            )
        folders.keep = settings.task_folder_keep_count
        folders.spares_wanted = settings.max_task_count
        return folders

    @property
    def capacity(self) -> int:
        """Free slots: MaxTaskCount less the leases held."""
        return self._settings().max_task_count - len(self.running)

    def room(self, *, ahead: bool) -> int:
        """How many tasks to ask for: the free slots, and with ``ahead`` the tasks to lease ahead of
        them (:class:`LeaseAhead`)."""
        extra = self.ahead.tasks(self._settings().max_task_count) if ahead else 0
        return self.capacity + extra

    def hold(self, task: TaskAssignment, deadline: float) -> None:
        """Count a just-leased task against the capacity until its attempt ends."""
        self.running[lease_key(task)] = Running(task, deadline=deadline)

    async def execute(self, assignment: TaskAssignment) -> CompletionReport | None:
        """Run one leased task to its end; return the completion report now waiting in the cache.

        Returns None when no report is due: the lease was lost to another worker, the master could
        not be reached for HeartbeatErrorTolerance, the worker stopped, or the project could not be
        fetched. In each case the master requeues the task when its lease expires.
        """
        key = lease_key(assignment)
        running = self.running.setdefault(key, Running(assignment))
        try:
            if not await self._supersede(running):
                return None
            await self.slots.take()
            try:
                return await self._attempt(running)
            finally:
                self.slots.give_back()
        finally:
            self.running.pop(key, None)
            self._events.wake_lease.set()
            if not self.running:
                self._events.tasks_idle.set()

    async def _attempt(self, running: Running) -> CompletionReport | None:
        """One attempt in its slot; its length counts towards :attr:`ahead`."""
        began = self._clock()
        try:
            settings = self._settings()
            self._folders = self._task_folders(settings)
            execution = TaskExecution(
                running,
                settings=settings,
                folders=self._folders,
                worker=self._worker_name(),
                cache=self.cache,
                runner=self.runner,
                fetch_project=self.projects.get,
                kill=self.taskbeat.kill,
                notify=self._events.wake_report.set,
                clock=self._clock,
                sleep=self._pause.sleep,
                stall_limit=self.timing.log_stall_limit,
                stall_poll=self.timing.log_stall_poll,
            )
            return await execution.run()
        finally:
            self.ahead.attempt(self._clock() - began)

    async def _supersede(self, running: Running) -> bool:
        """Stop any other attempt of this task first; False when this one must not run."""
        return await supersede(
            running,
            self.running,
            self.executions,
            stop=self.taskbeat.stop,
            grace=self.timing.cancel_grace + 15.0,  # SIGTERM, SIGKILL after cancel_grace, the clean-up
        )

    def start(self, assignment: TaskAssignment) -> None:
        """Run a leased task in the background (:meth:`execute`), its failures logged, never raised."""
        key = lease_key(assignment)
        task = asyncio.ensure_future(self._execute_logged(assignment))
        self.executions[key] = task
        task.add_done_callback(lambda _t: self.executions.pop(key, None))

    async def _execute_logged(self, assignment: TaskAssignment) -> CompletionReport | None:
        try:
            return await self.execute(assignment)
        except PackfleetError as exc:
            log.error("task %s attempt %s: %s", assignment.task_id, assignment.attempt, exc)
            return None
        except Exception:
            # One task's unexpected failure (a full disk, a folder it cannot create) must not pass
            # unseen: the lease lapses and the master requeues the task.
            log.exception("task %s attempt %s failed in the worker", assignment.task_id, assignment.attempt)
            return None

    async def wait_one(self) -> None:
        """Until one started attempt ends (at once when none runs)."""
        if self.executions:
            await asyncio.wait(set(self.executions.values()), return_when=asyncio.FIRST_COMPLETED)

    async def heartbeat_loop(self) -> None:
        """A task heartbeat every TaskHeartbeatInterval, until stopping with no lease left."""
        while True:
            await self._pause(self._settings().task_heartbeat_interval.total_seconds())
            if self._events.stopping.is_set() and not self.running:
                return
            await self.taskbeat.beat()

    async def finish(self) -> None:
        """Let running tasks end within ``stop_grace``, then cancel them (no report: they are requeued)."""
        pending = set(self.executions.values())
        if pending:
            log.info("waiting up to %.0f s for %d running task(s)", self.timing.stop_grace, len(pending))
            await self._pause.until_done(pending, self.timing.stop_grace)
        if self.running:
            for running in list(self.running.values()):
                self.taskbeat.stop(running, "stopping")
            await self._pause.until_done(set(self.executions.values()), self.timing.cancel_grace + 5.0)

    async def cancel(self) -> None:
        """Cancel every attempt's asyncio task (closing the agent): their leases lapse at the master."""
        tasks = list(self.executions.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
