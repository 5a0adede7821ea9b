"""The Scale Out Worker agent: a set of verbs, and two loops made of them.

The verbs are what SSIS's worker service does, one step each (rq's ``Worker`` and arq are the
model): :meth:`WorkerAgent.heartbeat`, :meth:`~WorkerAgent.lease`, :meth:`~WorkerAgent.fetch_project`,
:meth:`~WorkerAgent.execute`, :meth:`~WorkerAgent.task_heartbeat` and :meth:`~WorkerAgent.report`.
:meth:`~WorkerAgent.run` repeats them as concurrent asyncio tasks until it is stopped, so a lease
long-poll never delays a heartbeat or an event batch; :meth:`~WorkerAgent.run_burst` drains the
work there is and returns, which makes tests deterministic. Time comes from ``clock`` and ``sleep``,
both injectable, so no test waits on a real heartbeat interval.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packfleet import __version__
from packfleet.config import WorkerSettings
from packfleet.errors import (
    AgentFailed,
    ApiError,
    CertificateExpired,
    PackfleetError,
    TlsError,
    TransportError,
)
from packfleet.packages import PackageRunner
from packfleet.protocol import (
    CompletionReport,
    Heartbeat,
    HeartbeatReply,
    LeaseReply,
    LeaseRequest,
    TaskAssignment,
    TaskHeartbeatReply,
    decode,
    encode,
    routes,
)
from packfleet.transport import MasterClient
from packfleet.worker._attempts import MasterClock, lease_deadline, master_clock, supersede
from packfleet.worker._execution import TaskExecution
from packfleet.worker._expiry import watch_expiry
from packfleet.worker._identity import WorkerIdentity, load_identity
from packfleet.worker._logcache import LogCache
from packfleet.worker._machine import MachineProbe, PsutilProbe
from packfleet.worker._projects import ProjectCache
from packfleet.worker._renewal import (
    Pending,
    check_not_expired,
    read_pending,
    register_next_certificate,
    remove_pid_file,
    renewal_due,
    resume_rotation,
    retire_previous,
    write_pid_file,
)
from packfleet.worker._reporter import MAX_BATCH, Reporter
from packfleet.worker._rotation import accept_next_master, follow_master
from packfleet.worker._taskbeat import LeaseKey, Running, TaskBeat, lease_key
from packfleet.worker._timing import AgentTiming

log = logging.getLogger("packfleet.worker")

# A refused request (403) or an unreachable master is retried no faster than this, and no slower
# than the cap, so a disabled worker neither hammers the master nor takes minutes to notice it.
_BACKOFF_START, _BACKOFF_CAP = 1.0, 60.0


class WorkerAgent:
    """One worker: its identity, its connection to the master, its running tasks and its log cache.

    >>> agent = WorkerAgent(Path("/var/lib/packfleet"))      # doctest: +SKIP
    >>> await agent.run_burst()                              # doctest: +SKIP
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
        self.identity: WorkerIdentity = load_identity(self.home)
        settings = self.identity.settings
        self.client = self.identity.connect()
        self._retired_clients: list[MasterClient] = []
        self.runner = runner or PackageRunner(pool_size=settings.max_task_count)
        self._own_runner = runner is None
        self.probe = probe or PsutilProbe()
        self.clock = clock
        self._sleep = sleep
        self.timing = timing or AgentTiming()
        self.cache = LogCache(settings.log_cache(self.home))
        self.reporter = Reporter(
            self.cache,
            self._post,
            agent_id=settings.agent_id,
            max_buffer=settings.execution_log_max_buffer_log_count,
            retry_count=settings.execution_log_retry_count,
            retry_timeout=settings.execution_log_retry_timeout.total_seconds(),
            clock=clock,
        )
        self.projects = ProjectCache(self.home / "projects", self._download)
        #: Leases held, by (task id, attempt): never by task id alone (see :data:`LeaseKey`).
        self.running: dict[LeaseKey, Running] = {}
        self.taskbeat = TaskBeat(
            self.running,
            self._post,
            lambda: self.identity.settings,
            spawn=self._spawn,
            cancel_grace=self.timing.cancel_grace,
            clock=clock,
        )
        #: The master's last word on this worker: a WorkerState, "refused" after a 403, None before.
        self.state: str | None = None
        self._gate_cause: str | None = None
        #: The master's clock offset, from the last heartbeat: how a lease's expiry reads here.
        self._master_clock: MasterClock | None = None
        self._started = False
        self._stopping = asyncio.Event()
        self._wake_lease = asyncio.Event()
        #: Set when the master's lease answer asks for a heartbeat now (a rotation step awaits it).
        self._wake_heartbeat = asyncio.Event()
        self._wake_report = asyncio.Event()
        self._master_away = False
        self._master_back = asyncio.Event()
        self._executions: dict[LeaseKey, asyncio.Task[CompletionReport | None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        #: Why :meth:`run` stopped on its own, if one of its loops failed.
        self.failure: BaseException | None = None
        self._rotating: asyncio.Task[None] | None = None

    @property
    def settings(self) -> WorkerSettings:
        return self.identity.settings

    @property
    def name(self) -> str:
        return f"{self.settings.agent_id} ({self.settings.display_name})"

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
        for task in [*self._background, *self._executions.values()]:
            task.cancel()
        await asyncio.gather(*self._background, *self._executions.values(), return_exceptions=True)
        self._background.clear()
        self.cache.close()
        if self._own_runner and self._started:
            await self.runner.close()
        for client in [*self._retired_clients, self.client]:
            await client.close()
        self._started = False

    async def __aenter__(self) -> WorkerAgent:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to stop: no more leases, running tasks get ``stop_grace`` to finish."""
        if not self._stopping.is_set():
            log.info("worker %s is stopping: no new tasks, %d running", self.name, len(self.running))
        self._stopping.set()
        self._wake_lease.set()

    def reload(self) -> bool:
        """Re-read settings and certificates (SIGHUP); on any error keep the last good ones.

        The new identity is checked completely (stores, pins, endpoint host, a TLS context built
        from it) before anything is swapped, so a half-edited settings file never takes a running
        worker down. ``ExecutionLogCacheFolder`` and ``TasksRootFolder`` are read at start only.
        """
        try:
            identity = load_identity(self.home)
            context = identity.ssl_context()
        except PackfleetError as exc:
            log.error("reload refused, keeping the settings and certificates in use: %s", exc)
            return False
        self._install(identity, context)
        log.info("reloaded WorkerSettings.config and certificates (pins %s)", ", ".join(identity.pins))
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return True
        self._rotate_certificate()  # `worker rotate-cert` switched the certificate: retire the old one
        return True

    def _install(self, identity: WorkerIdentity, context: ssl.SSLContext) -> None:
        if self.client.serves(identity.settings.master_endpoint):
            self.client.replace_context(
                context, pins=identity.pins, own_thumbprint=identity.certificate.thumbprint
            )
        else:
            self._retired_clients.append(self.client)
            self.client = identity.connect()
        self.identity = identity
        settings = identity.settings
        self.reporter.agent_id = settings.agent_id
        self.reporter.batch_size = max(1, min(MAX_BATCH, settings.execution_log_max_buffer_log_count))
        self.reporter.retry_count = settings.execution_log_retry_count
        self.reporter.retry_timeout = settings.execution_log_retry_timeout.total_seconds()
        self._wake_lease.set()

    # -- talking to the master --------------------------------------------------------------------

    async def _post(self, path: str, body: Any, *, timeout: float | None = None) -> Any:
        try:
            result = await self.client.request("POST", path, json_body=body, timeout=timeout)
        except ApiError as exc:
            self._reached()
            if exc.status == 403:
                self._set_state("refused", str(exc))
            raise
        except TransportError:
            self._master_away = True
            raise
        self._reached()
        return result

    def _reached(self) -> None:
        """The master answered: if it had been away, wake the reporter out of its backoff.

        Without this, events cached during an outage would wait for the reporter's next backoff
        step (up to a minute) although a heartbeat just showed the master is back.
        """
        if self._master_away:
            self._master_away = False
            self._master_back.set()

    async def _download(self, sha256: str) -> bytes:
        path = routes.WORKER_PROJECT.format(sha256=sha256)
        data: bytes = await self.client.request("GET", path, raw=True, timeout=300.0)
        return data

    def _set_state(self, state: str, message: str) -> None:
        if state == self.state:
            return
        self.state = state
        self._wake_lease.set()
        if state == "enabled":
            log.info("worker %s is enabled: asking the master for tasks", self.name)
        elif state == "disabled":
            log.warning(
                "worker %s is registered and waits to be enabled: packfleet manager worker enable %s",
                self.name,
                self.settings.agent_id,
            )
        else:
            log.error("the master refuses worker %s (%s): %s", self.name, state, message)

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
            running_tasks=len(self.running),
            max_tasks=settings.max_task_count,
            version=__version__,
            cert_not_after=self.identity.certificate.not_after.isoformat(),
            accepted_master_thumbprints=list(self.identity.pins),
            lease_gate=self._own_gate(),
            time=self._now().isoformat(),
        )
        sent = self.clock()
        reply = decode(HeartbeatReply, await self._post(routes.WORKER_HEARTBEAT, encode(beat)))
        self._master_clock = master_clock(sent, self.clock(), reply.master_time) or self._master_clock
        self._set_state(reply.state, reply.message)
        if reply.clock_warning:
            log.warning("%s", reply.clock_warning)
        if reply.next_master_cert_pem:
            self._accept_next_master(reply.next_master_cert_pem)
        elif reply.master_cert_thumbprint:
            self._follow_master(reply.master_cert_thumbprint)
        self._rotate_certificate()
        return reply

    def _follow_master(self, serving: str) -> None:
        try:
            identity = follow_master(self.home, self.identity, serving)
            if identity is not None:
                self._install(identity, identity.ssl_context())
        except PackfleetError as exc:
            log.error("cannot follow the master's certificate %s; the pins stay: %s", serving, exc)

    # -- own certificate rotation -----------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _rotate_certificate(self) -> None:
        """Retire a certificate a rotation left behind, or renew one that is two thirds through its life."""
        if self._rotating is not None and not self._rotating.done():
            return
        if self.state != "enabled":
            return
        pending = read_pending(self.home)
        thumbprint = self.identity.certificate.thumbprint
        if pending is not None and pending.new == thumbprint:
            self._rotating = self._spawn(self._retire_previous())
        elif pending is not None:
            self._rotating = self._spawn(self._resume_rotation(pending))
        elif renewal_due(self.identity.certificate, self._now()):
            self._rotating = self._spawn(self._renew())

    async def _resume_rotation(self, pending: Pending) -> None:
        log.warning(
            "a certificate rotation stopped half-way: %s was registered to replace %s, but this agent "
            "uses %s; finishing it",
            pending.new,
            pending.retire,
            self.identity.certificate.thumbprint,
        )
        try:
            applied = resume_rotation(self.home, pending)
        except PackfleetError as exc:
            log.error("cannot finish the certificate rotation; trying again at the next heartbeat: %s", exc)
            return
        if not applied:
            log.warning(
                "certificate %s is gone from this node: the rotation starts over when due", pending.new
            )
        elif self.reload():
            await self._retire_previous()

    async def _renew(self) -> None:
        log.info(
            "the worker certificate %s is two thirds through its lifetime (it expires %s): renewing it",
            self.identity.certificate.thumbprint,
            self.identity.certificate.not_after.isoformat(),
        )
        try:
            await register_next_certificate(self.home, self.identity, self.client, now=self._now())
        except PackfleetError as exc:
            log.error("cannot renew the worker certificate; trying again at the next heartbeat: %s", exc)
            return
        if self.reload():
            await self._retire_previous()

    async def _retire_previous(self) -> None:
        try:
            await retire_previous(self.home, self.identity, self.client)
        except PackfleetError as exc:
            log.error("cannot retire the old worker certificate yet; trying again later: %s", exc)

    def _explain_expired(self) -> None:
        try:
            check_not_expired(self.identity.certificate, self._now())
        except CertificateExpired as exc:
            log.error("%s; %s", exc.message, exc.fix)

    def _accept_next_master(self, pem: str) -> None:
        try:
            identity = accept_next_master(self.home, self.identity, pem)
            if identity is not None:
                self._install(identity, identity.ssl_context())
        except PackfleetError as exc:
            log.error("cannot accept the master's next certificate; the current pin stays: %s", exc)

    def lease_gate(self) -> str | None:
        """Why this worker may not ask for tasks now, or None when it may.

        SSIS's worker asks only when it is enabled, has a free slot (MaxTaskCount), its CPU use is
        below TaskRequestMaxCPU and its free memory above TaskRequestMinMemory. TaskRequestMaxCPU
        100 lifts the CPU limit: no reading is below 100% on a saturated machine, and a threshold
        that can never be met would stop the worker for good.
        """
        closed = self._gate()
        return None if closed is None else closed[1]

    def _gate(self) -> tuple[str, str] | None:
        """``(what closes the gate, why in words)``, or None when it is open."""
        settings = self.settings
        if self._stopping.is_set():
            return "stopping", "stopping"
        if self.state != "enabled":
            return "state", f"the master reports this worker as {self.state or 'unknown'}"
        if self.capacity <= 0:
            return "MaxTaskCount", f"all {settings.max_task_count} slots (MaxTaskCount) are busy"
        cpu = self.probe.cpu_percent()
        if settings.task_request_max_cpu < 100.0 and cpu >= settings.task_request_max_cpu:
            return (
                "TaskRequestMaxCPU",
                f"CPU use {cpu:.0f}% is not below TaskRequestMaxCPU {settings.task_request_max_cpu:.0f}%",
            )
        memory = self.probe.memory_free_mb()
        if memory <= settings.task_request_min_memory:
            return (
                "TaskRequestMinMemory",
                f"free memory {memory:.0f} MB is not above TaskRequestMinMemory "
                f"{settings.task_request_min_memory:.0f} MB",
            )
        return None

    def _own_gate(self) -> str:
        """The gate's reason when this worker closes it itself (slots, CPU, memory), for the master."""
        closed = self._gate()
        return "" if closed is None or closed[0] in ("state", "stopping") else closed[1]

    def _check_gate(self) -> str | None:
        """:meth:`lease_gate`, logged when what closes it changes (not each time a reading moves)."""
        closed = self._gate()
        cause = None if closed is None else closed[0]
        if cause != self._gate_cause:
            if closed is not None and cause not in ("state", "stopping"):
                log.info("not asking for tasks: %s", closed[1])
            self._gate_cause = cause
        return None if closed is None else closed[1]

    @property
    def capacity(self) -> int:
        return self.settings.max_task_count - len(self.running)

    async def lease(self, wait_seconds: float | None = None) -> list[TaskAssignment]:
        """Ask for up to the free capacity in tasks, waiting up to ``wait_seconds`` for one (long-poll).

        Returns the tasks leased, already counted against the capacity; nothing when
        :meth:`lease_gate` is closed (the reason is logged when it changes).
        """
        if self._check_gate() is not None:
            return []
        wait = self.timing.lease_wait if wait_seconds is None else wait_seconds
        capacity = self.capacity
        request = LeaseRequest(
            agent_id=self.settings.agent_id,
            capacity=capacity,
            wait_seconds=wait,
            lease_seconds=self.settings.lease_interval.total_seconds(),
        )
        # The lease runs from some moment after this one: counting it from here never overstates it.
        sent = self.clock()
        # The master may hold the request for `wait` seconds: allow that plus a normal answer time.
        raw = await self._post(routes.WORKER_LEASE, encode(request), timeout=wait + 30.0)
        reply = decode(LeaseReply, raw)
        if reply.heartbeat_now:
            self._wake_heartbeat.set()
        tasks = []
        for task in reply.tasks:
            if lease_key(task) in self.running:
                # The same lease twice (a repeated answer): running it again would run it twice.
                log.warning("task %s attempt %s is already running here", task.task_id, task.attempt)
            else:
                tasks.append(task)
        if len(tasks) > capacity:
            log.error(
                "the master leased %d tasks for %d free slots; running %d, the others' leases expire",
                len(tasks),
                capacity,
                capacity,
            )
            tasks = tasks[:capacity]
        for task in tasks:
            deadline = lease_deadline(task, sent, request.lease_seconds, self._master_clock)
            self.running[lease_key(task)] = Running(task, deadline=deadline)
        return tasks

    async def fetch_project(self, sha256: str) -> Path:
        """The extracted project whose archive has this SHA-256, downloaded on first use only."""
        return await self.projects.get(sha256)

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
            execution = TaskExecution(
                running,
                home=self.home,
                settings=self.settings,
                worker=self.name,
                cache=self.cache,
                runner=self.runner,
                fetch_project=self.fetch_project,
                kill=self.taskbeat.kill,
                notify=self._wake_report.set,
                clock=self.clock,
                sleep=self._sleep,
                stall_limit=self.timing.log_stall_limit,
                stall_poll=self.timing.log_stall_poll,
            )
            return await execution.run()
        finally:
            self.running.pop(key, None)
            self._wake_lease.set()

    async def _supersede(self, running: Running) -> bool:
        """Stop any other attempt of this task first; False when this one must not run."""
        return await supersede(
            running,
            self.running,
            self._executions,
            stop=self.taskbeat.stop,
            grace=self.timing.cancel_grace + 15.0,  # SIGTERM, SIGKILL after cancel_grace, the clean-up
        )

    async def task_heartbeat(self) -> TaskHeartbeatReply | None:
        """Extend the leases of running tasks; cancel what the master cancelled or gave to another."""
        return await self.taskbeat.beat()

    async def report(self) -> bool:
        """Send cached events, then completion reports; True when everything has been delivered."""
        return await self.reporter.report()

    # -- loops ------------------------------------------------------------------------------------

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

    def _start_execution(self, assignment: TaskAssignment) -> None:
        key = lease_key(assignment)
        task = asyncio.ensure_future(self._execute_logged(assignment))
        self._executions[key] = task
        task.add_done_callback(lambda _t: self._executions.pop(key, None))

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

    async def _pause(self, seconds: float, *events: asyncio.Event) -> None:
        """Sleep ``seconds`` (through the injected ``sleep``), or less if stopping or an event is set."""
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._sleep(seconds))]
        waiters += [asyncio.ensure_future(event.wait()) for event in (self._stopping, *events)]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _heartbeat_loop(self) -> None:
        backoff = _BACKOFF_START
        while not self._stopping.is_set():
            self._wake_heartbeat.clear()
            try:
                await self.heartbeat()
                backoff = _BACKOFF_START
                delay = self.settings.agent_heartbeat_interval.total_seconds()
            except TransportError as exc:
                log.error("heartbeat to %s failed: %s", self.client.endpoint, exc)
                self._explain_expired()
                delay = min(backoff, self.settings.agent_heartbeat_interval.total_seconds())
                backoff = min(backoff * 2, _BACKOFF_CAP)
            await self._pause(delay, self._wake_heartbeat)

    async def _lease_loop(self) -> None:
        backoff = _BACKOFF_START
        while not self._stopping.is_set():
            self._wake_lease.clear()
            if self._check_gate() is not None:
                await self._pause(self.timing.gate_poll, self._wake_lease)
                continue
            await self._gather_slots()
            try:
                tasks = await self.lease()
            except TransportError as exc:
                log.error("lease request failed: %s", exc)
                await self._pause(backoff)
                backoff = min(backoff * 2, _BACKOFF_CAP)
                continue
            backoff = _BACKOFF_START
            for task in tasks:
                self._start_execution(task)

    async def _gather_slots(self) -> None:
        """While tasks run, give other slots up to ``lease_linger`` to free before leasing.

        Stops waiting once half the slots (MaxTaskCount) are free, so one lease asks for several
        tasks; each finished task wakes it (``_wake_lease``) to count again.
        """
        if not self.running or self.timing.lease_linger <= 0:
            return
        want = max(1, self.settings.max_task_count // 2)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timing.lease_linger
        for _ in range(want):  # each pass waits for one finished task at most
            remaining = deadline - loop.time()
            if self.capacity >= want or remaining <= 0 or self._stopping.is_set():
                return
            self._wake_lease.clear()
            await self._pause(remaining, self._wake_lease)

    async def _task_heartbeat_loop(self) -> None:
        while True:
            await self._pause(self.settings.task_heartbeat_interval.total_seconds())
            if self._stopping.is_set() and not self.running:
                return
            await self.taskbeat.beat()

    async def _report_loop(self) -> None:
        backoff = _BACKOFF_START
        while True:
            self._wake_report.clear()
            if await self.report():
                backoff = _BACKOFF_START
                await self._pause(self.timing.gate_poll, self._wake_report)
                await self._sleep(self.timing.report_linger)
            else:
                delay = _BACKOFF_CAP if self.reporter.refused else backoff
                self._master_back.clear()
                await self._pause(delay, self._master_back)
                backoff = _BACKOFF_START if self._master_back.is_set() else min(backoff * 2, _BACKOFF_CAP)

    async def run(self, *, install_signals: bool = True) -> None:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT); SIGHUP reloads settings and certificates."""
        await self.start()
        loop = asyncio.get_running_loop()
        signals: list[signal.Signals] = []
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
                signals.append(signum)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            signals.append(signal.SIGHUP)
        log.info("worker %s serves master %s", self.name, self.client.endpoint)
        self._explain_expired()
        write_pid_file(self.home)  # how `worker rotate-cert` finds this process to send it SIGHUP
        try:
            self._spawn(self._report_loop())
            self._spawn(self._task_heartbeat_loop())
            self._spawn(watch_expiry(lambda: self.identity, self._pause, self._stopping, self.clock))
            beats = self._spawn(self._heartbeat_loop())
            leases = self._spawn(self._lease_loop())
            await self._stopping.wait()
            for task in (beats, leases):
                task.cancel()
            await self._finish_running()
            await self._flush()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            remove_pid_file(self.home)
            await self.close()
        if self.failure is not None:
            raise AgentFailed(
                f"worker {self.name} stopped because one of its loops failed: {self.failure!r}",
                fix="see the traceback above in this worker's log; the service manager restarts it",
            ) from self.failure

    async def _finish_running(self) -> None:
        """Let running tasks end within ``stop_grace``, then cancel them (no report: they are requeued)."""
        pending = set(self._executions.values())
        if pending:
            log.info("waiting up to %.0f s for %d running task(s)", self.timing.stop_grace, len(pending))
            await self._wait_for(pending, self.timing.stop_grace)
        if self.running:
            for running in list(self.running.values()):
                self.taskbeat.stop(running, "stopping")
            await self._wait_for(set(self._executions.values()), self.timing.cancel_grace + 5.0)

    async def _wait_for(self, tasks: set[asyncio.Task[Any]], seconds: float) -> None:
        if not tasks:
            return
        timer = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({*tasks, timer}, return_when=asyncio.FIRST_COMPLETED)
            while not timer.done() and any(not t.done() for t in tasks):
                await asyncio.wait({*tasks, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)

    async def _flush(self) -> None:
        """Deliver what can be delivered within ``flush_timeout``; the rest waits in the cache."""
        if not await self._deliver(self.timing.flush_timeout):
            log.warning(
                "%d event message(s) stay in the log cache for the next start", self.cache.waiting_events
            )

    async def _deliver(self, seconds: float) -> bool:
        """Call :meth:`report` with backoff until it succeeds or ``seconds`` have passed."""
        deadline = self.clock() + seconds
        backoff = _BACKOFF_START
        while not await self.report():
            if self.clock() >= deadline:
                return False
            await self._sleep(min(backoff, max(0.0, deadline - self.clock())))
            backoff = min(backoff * 2, _BACKOFF_CAP)
        return True

    async def run_burst(self) -> None:
        """Heartbeat, lease and run until no task is left, deliver everything, and return.

        A heartbeat that fails raises (a burst run is a script or a test: it should fail loudly); a
        lease that fails is retried with backoff while tasks still run. Delivery is retried until it
        succeeds or fails for HeartbeatErrorTolerance, after which the rest waits in the cache.
        """
        await self.start()
        self._spawn(self._task_heartbeat_loop())
        reporting = self._spawn(self._report_loop())
        try:
            await self.heartbeat()
            failures = 0
            while True:
                try:
                    tasks = await self.lease(wait_seconds=0.0)
                    failures = 0
                except TransportError as exc:
                    failures += 1
                    if isinstance(exc, TlsError) or failures > 5:
                        raise
                    log.error("lease request failed (%d): %s", failures, exc)
                    await self._pause(min(_BACKOFF_START * 2**failures, _BACKOFF_CAP))
                    continue
                for task in tasks:
                    self._start_execution(task)
                if not tasks and not self._executions:
                    break
                if not tasks or self.capacity <= 0:
                    await asyncio.wait(set(self._executions.values()), return_when=asyncio.FIRST_COMPLETED)
            reporting.cancel()
            await asyncio.gather(reporting, return_exceptions=True)
            if not await self._deliver(self.settings.heartbeat_error_tolerance.total_seconds()):
                log.warning(
                    "the master took no event messages for HeartbeatErrorTolerance; %d stay in the log "
                    "cache for the next run",
                    self.cache.waiting_events,
                )
        finally:
            self._stopping.set()


async def run_worker(home: Path, *, burst: bool = False) -> None:
    """Run the worker of ``home`` until it is stopped (or, with ``burst``, until the work is done)."""
    agent = WorkerAgent(home)
    if burst:
        async with agent:
            await agent.run_burst()
    else:
        await agent.run()
