"""The Scale Out Worker agent: a facade over its parts, a set of verbs, and one driver.

The verbs are what SSIS's worker service does, one step each (rq's ``Worker`` and arq are the
model): :meth:`WorkerAgent.heartbeat`, :meth:`~WorkerAgent.lease`, :meth:`~WorkerAgent.fetch_project`,
:meth:`~WorkerAgent.execute`, :meth:`~WorkerAgent.task_heartbeat` and :meth:`~WorkerAgent.report`.
:meth:`~WorkerAgent.run` repeats them as concurrent asyncio tasks until it is stopped, so a lease
long-poll never delays a heartbeat or an event batch; ``run(burst=True)`` (as rq's
``work(burst=True)``) drains the work there is and returns, which makes tests deterministic. Time
comes from ``clock`` and ``sleep``, both injectable, so no test waits on a real heartbeat interval.

Each job lives in its own part, which the agent builds and wires together:

- :class:`~packfleet.worker._link.MasterLink` (``agent.link``): the client, the state the master
  reports, the heartbeat loop;
- :class:`~packfleet.worker._following.CertificateFollower` (``agent.certificates``): the identity
  in use, reloads, following the master's certificate and renewing the worker's own;
- :class:`~packfleet.worker._leasing.LeaseLoop` (``agent.leases``): the gate, lease requests, the loop;
- :class:`~packfleet.worker._tasks.TaskRunner` (``agent.tasks``): running attempts and task heartbeats;
- :class:`~packfleet.worker._reporting.ReportLoop` (``agent.reporting``): delivering the log cache.

They wait through one :class:`~packfleet.worker._pacing.Pause` and back off with one
:class:`~packfleet.worker._pacing.Backoff`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from packfleet import __version__
from packfleet.config import WorkerSettings
from packfleet.errors import AgentFailed, TransportError
from packfleet.packages import PackageRunner
from packfleet.protocol import (
    CompletionReport,
    Heartbeat,
    HeartbeatReply,
    TaskAssignment,
    TaskHeartbeatReply,
    decode,
    encode,
    routes,
)
from packfleet.transport import MasterClient
from packfleet.worker._expiry import watch_expiry
from packfleet.worker._following import CertificateFollower
from packfleet.worker._identity import WorkerIdentity, load_identity
from packfleet.worker._leasing import LeaseLoop
from packfleet.worker._link import MasterLink, heartbeat_loop
from packfleet.worker._logcache import LogCache
from packfleet.worker._machine import MachineProbe, PsutilProbe
from packfleet.worker._pacing import AgentEvents, Pause
from packfleet.worker._projects import ProjectCache
from packfleet.worker._renewal import remove_pid_file, write_pid_file
from packfleet.worker._reporter import MAX_BATCH, Reporter
from packfleet.worker._reporting import ReportLoop
from packfleet.worker._taskbeat import LeaseKey, Running, TaskBeat
from packfleet.worker._tasks import TaskRunner
from packfleet.worker._timing import AgentTiming

log = logging.getLogger("packfleet.worker")


class WorkerAgent:
    """One worker: its identity, its connection to the master, its running tasks and its log cache.

    >>> agent = WorkerAgent(Path("/var/lib/packfleet"))      # doctest: +SKIP
    >>> await agent.run(burst=True)                          # doctest: +SKIP
    """

    def __init__(
        self,
        home: Path,
        *,
        runner: PackageRunner | None = None,
        probe: MachineProbe | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        timing: AgentTiming | None = None,
    ) -> None:
        self.home = Path(home)
        identity = load_identity(self.home)
        settings = identity.settings
        self.runner = runner or PackageRunner(pool_size=settings.max_task_count)
        self._own_runner = runner is None
        self.probe = probe or PsutilProbe()
        self.clock = clock
        self.timing = timing or AgentTiming()
        self.events = AgentEvents()
        self._pause = Pause(sleep, self.events.stopping)
        self._background: set[asyncio.Task[Any]] = set()
        #: Why :meth:`run` stopped on its own, if one of its loops failed.
        self.failure: BaseException | None = None
        self._started = False

        self.link = MasterLink(identity, self.events, describe=lambda: self.name)
        self.certificates = CertificateFollower(
            self.home, self.link, identity, clock=clock, spawn=self._spawn, installed=self._installed
        )
        self.cache = LogCache(settings.log_cache(self.home))
        self.reporter = Reporter(
            self.cache,
            self.link.post,
            agent_id=settings.agent_id,
            max_buffer=settings.execution_log_max_buffer_log_count,
            retry_count=settings.execution_log_retry_count,
            retry_timeout=settings.execution_log_retry_timeout.total_seconds(),
            clock=clock,
        )
        self.reporting = ReportLoop(
            self.reporter,
            events=self.events,
            pause=self._pause,
            timing=self.timing,
            clock=clock,
            busy=lambda: bool(self.tasks.running),
        )
        self.projects = ProjectCache(self.home / "projects", self.link.download)
        self.tasks = TaskRunner(
            self.home,
            link=self.link,
            settings=lambda: self.settings,
            worker_name=lambda: self.name,
            cache=self.cache,
            runner=self.runner,
            projects=self.projects,
            events=self.events,
            pause=self._pause,
            timing=self.timing,
            clock=clock,
            spawn=self._spawn,
        )
        self.leases = LeaseLoop(
            link=self.link,
            tasks=self.tasks,
            settings=lambda: self.settings,
            probe=self.probe,
            events=self.events,
            pause=self._pause,
            timing=self.timing,
            clock=clock,
        )
        self.reporter.asks = self.leases

    # -- what the parts hold, under the names the agent has always had --------------------------

    @property
    def identity(self) -> WorkerIdentity:
        return self.certificates.identity

    @property
    def settings(self) -> WorkerSettings:
        return self.certificates.identity.settings

    @property
    def name(self) -> str:
        return f"{self.settings.agent_id} ({self.settings.display_name})"

    @property
    def client(self) -> MasterClient:
        return self.link.client

    @property
    def state(self) -> str | None:
        """The master's last word on this worker: a WorkerState, "refused" after a 403, None before."""
        return self.link.state

    @property
    def running(self) -> dict[LeaseKey, Running]:
        """Leases held, by (task id, attempt)."""
        return self.tasks.running

    @property
    def taskbeat(self) -> TaskBeat:
        return self.tasks.taskbeat

    @property
    def capacity(self) -> int:
        return self.tasks.capacity

    def lease_gate(self) -> str | None:
        """Why this worker may not ask for tasks now, or None when it may (see :class:`LeaseLoop`)."""
        return self.leases.gate()

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Replay the log cache of a previous run and start the package runner."""
        if self._started:
            return
        waiting = self.cache.load()
        if waiting:
            log.info("the log cache holds %d event message(s) from a previous run; sending them", waiting)
        if self._own_runner:
            await self.runner.start()
        self._started = True

    async def close(self) -> None:
        """Stop background work, close event files (what is unsent stays cached) and connections."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.tasks.cancel()
        self._background.clear()
        self.cache.close()
        if self._own_runner and self._started:
            await self.runner.close()
        await self.link.close()
        self._started = False

    async def __aenter__(self) -> WorkerAgent:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to stop: no more leases, running tasks get ``stop_grace`` to finish."""
        if not self.events.stopping.is_set():
            log.info("worker %s is stopping: no new tasks, %d running", self.name, len(self.running))
        self.events.stopping.set()
        self.events.wake_lease.set()

    def reload(self) -> bool:
        """Re-read settings and certificates (SIGHUP); on any error keep the last good ones."""
        return self.certificates.reload()

    def _installed(self, identity: WorkerIdentity) -> None:
        """A new identity is in use: the reporter sends under its settings, the lease loop looks again."""
        settings = identity.settings
        self.reporter.agent_id = settings.agent_id
        self.reporter.batch_size = max(1, min(MAX_BATCH, settings.execution_log_max_buffer_log_count))
        self.reporter.retry_count = settings.execution_log_retry_count
        self.reporter.retry_timeout = settings.execution_log_retry_timeout.total_seconds()
        self.events.wake_lease.set()

    # -- verbs ------------------------------------------------------------------------------------

    async def heartbeat(self) -> HeartbeatReply:
        """Tell the master who and how loaded this worker is; learn whether it may lease tasks."""
        settings = self.settings
        beat = Heartbeat(
            agent_id=settings.agent_id,
            display_name=settings.display_name,
            machine_name=self.probe.machine_name(),
            user_account=self.probe.user_account(),
            ips=self.probe.ips(),
            cpu_percent=self.probe.cpu_percent(),
            memory_free_mb=self.probe.memory_free_mb(),
            # Tasks leased ahead wait for a slot: at most MaxTaskCount of those held run.
            running_tasks=min(len(self.running), settings.max_task_count),
            max_tasks=settings.max_task_count,
            version=__version__,
            cert_not_after=self.identity.certificate.not_after.isoformat(),
            accepted_master_thumbprints=list(self.identity.pins),
            lease_gate=self.leases.own_gate(),
            time=self.certificates.now().isoformat(),
        )
        sent = self.clock()
        reply = decode(HeartbeatReply, await self.link.post(routes.WORKER_HEARTBEAT, encode(beat)))
        self.link.learn(reply, sent=sent, received=self.clock(), agent_id=settings.agent_id)
        if self.certificates.follow(reply):
            # A master certificate rotation step is done here: say so now, not at the next
            # AgentHeartbeatInterval (the master waits for every worker's report to take the next).
            self.events.wake_heartbeat.set()
        return reply

    async def lease(self, wait_seconds: float | None = None) -> list[TaskAssignment]:
        """Ask for up to the free capacity in tasks, waiting up to ``wait_seconds`` for one (long-poll).

        Returns the tasks leased, already counted against the capacity; nothing when
        :meth:`lease_gate` is closed (the reason is logged when it changes).
        """
        return await self.leases.lease(wait_seconds)

    async def fetch_project(self, sha256: str) -> Path:
        """The extracted project whose archive has this SHA-256, downloaded on first use only."""
        return await self.projects.get(sha256)

    async def execute(self, assignment: TaskAssignment) -> CompletionReport | None:
        """Run one leased task to its end; return the completion report now waiting in the cache.

        Returns None when no report is due (see :meth:`TaskRunner.execute`): the master requeues
        the task when its lease expires.
        """
        return await self.tasks.execute(assignment)

    async def task_heartbeat(self) -> TaskHeartbeatReply | None:
        """Extend the leases of running tasks; cancel what the master cancelled or gave to another."""
        return await self.taskbeat.beat()

    async def report(self) -> bool:
        """Send cached events, then completion reports; True when everything has been delivered."""
        return await self.reporting.report()

    # -- the driver -------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_ended)
        return task

    def _background_ended(self, task: asyncio.Task[Any]) -> None:
        """A loop that dies while the agent serves would leave a process that looks alive but no
        longer heartbeats, leases or reports: log why and stop, so the service manager restarts it
        (``Restart=on-failure``: :meth:`run` then raises :class:`AgentFailed`)."""
        self._background.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if self.failure is None:
            self.failure = exc
            log.error(
                "worker loop %s failed; stopping so the service restarts it",
                task.get_name(),
                exc_info=exc,
            )
        self.stop()

    def _heartbeat_failed(self, exc: TransportError) -> None:
        log.error("heartbeat to %s failed: %s", self.client.endpoint, exc)
        self.certificates.explain_expired()

    async def run(self, *, burst: bool = False, install_signals: bool | None = None) -> None:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT; SIGHUP reloads settings and certificates).

        With ``burst``, heartbeat, lease and run until no task is left, deliver everything, and
        return. A burst heartbeat that fails raises (a burst run is a script or a test: it should
        fail loudly); its lease requests are retried with backoff a few times (see
        :class:`LeaseLoop`). Delivery at the end is retried for HeartbeatErrorTolerance in a burst,
        ``flush_timeout`` when serving; what is left waits in the cache. Signal handlers are
        installed when serving unless ``install_signals`` is False; a burst installs none and leaves
        the agent open (``async with agent`` closes it).
        """
        await self.start()
        loop = asyncio.get_running_loop()
        signals: list[signal.Signals] = []
        if install_signals if install_signals is not None else not burst:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
                signals.append(signum)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            signals.append(signal.SIGHUP)
        if not burst:
            log.info("worker %s serves master %s", self.name, self.client.endpoint)
            self.certificates.explain_expired()
            write_pid_file(self.home)  # how `worker rotate-cert` finds this process to send it SIGHUP
        try:
            reporting = self._spawn(self.reporting.run())
            self._spawn(self.tasks.heartbeat_loop())
            if burst:
                await self.heartbeat()
                await self.leases.run(burst=True)
                # Delivery below backs off on its own; the report loop's backoff would only add to it.
                reporting.cancel()
                await asyncio.gather(reporting, return_exceptions=True)
                await self.reporting.flush(
                    self.settings.heartbeat_error_tolerance.total_seconds(),
                    why="the master took no event messages for HeartbeatErrorTolerance",
                )
            else:
                self._spawn(
                    watch_expiry(lambda: self.identity, self._pause, self.events.stopping, self.clock)
                )
                beats = self._spawn(
                    heartbeat_loop(
                        self.heartbeat,
                        interval=lambda: self.settings.agent_heartbeat_interval.total_seconds(),
                        on_failure=self._heartbeat_failed,
                        events=self.events,
                        pause=self._pause,
                    )
                )
                leases = self._spawn(self.leases.run())
                await self.events.stopping.wait()
                for task in (beats, leases):
                    task.cancel()
                await self.tasks.finish()
                await self.reporting.flush(self.timing.flush_timeout, why="stopping")
        finally:
            self.events.stopping.set()
            for signum in signals:
                loop.remove_signal_handler(signum)
            if not burst:
                remove_pid_file(self.home)
                await self.close()
        if self.failure is not None:
            raise AgentFailed(
                f"worker {self.name} stopped because one of its loops failed: {self.failure!r}",
                fix="see the traceback above in this worker's log; the service manager restarts it",
            ) from self.failure

    async def run_burst(self) -> None:
        """``run(burst=True)``: heartbeat, lease and run until no task is left, deliver, return."""
        await self.run(burst=True)


async def run_worker(home: Path, *, burst: bool = False) -> None:
    """Run the worker of ``home`` until it is stopped (or, with ``burst``, until the work is done)."""
    agent = WorkerAgent(home)
    if burst:
        async with agent:
            await agent.run(burst=True)
    else:
        await agent.run()
