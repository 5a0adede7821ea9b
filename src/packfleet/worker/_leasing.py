"""The lease loop: when this worker may ask for tasks (the gate), how many, and how long it waits.

SSIS's worker asks only when it is enabled, has a free slot (MaxTaskCount), its CPU use is below
TaskRequestMaxCPU and its free memory above TaskRequestMinMemory. Serving, the loop long-polls
(the master answers as soon as a task is ready) and, while tasks run, lets a few slots free before
asking so one request fills several. In a burst it asks without waiting and ends once no task is
left to lease or run.

Under load a report pass asks for the slots it frees (:meth:`LeaseLoop.ask_in_report`): the
master leases them in the report's own transaction, and one request, not a report and a lease,
carries a task's end and the next one's start. The loop then asks on its own only when no report
will (nothing left to report, the master's queue emptied, a report's ask failed, or none came for
``gate_poll``). One ask is out at a time, the loop's or a report's, so no free slot is asked for
twice. Under load an ask also asks for tasks ahead of the free slots, which wait here for a slot
(see ``_slots``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from packfleet.config import WorkerSettings
from packfleet.errors import TlsError, TransportError
from packfleet.protocol import LeaseReply, LeaseRequest, TaskAssignment, decode, encode, routes
from packfleet.worker._attempts import lease_deadline
from packfleet.worker._link import MasterLink
from packfleet.worker._machine import MachineProbe
from packfleet.worker._pacing import AgentEvents, Backoff, Pause
from packfleet.worker._taskbeat import lease_key
from packfleet.worker._tasks import TaskRunner
from packfleet.worker._timing import AgentTiming

log = logging.getLogger("packfleet.worker")

#: A burst (a script, a test) gives up on a master that refused this many lease requests in a row.
BURST_LEASE_ATTEMPTS = 6


#: The longest an idle worker holds its next lease request back for the report of the tasks it
#: just ran, after up to ``hold_back`` for their end (see LeaseLoop._hold_back); a task submitted
#: meanwhile is leased by another worker's waiting request, or by this one at most that much later.
REPORT_HOLD = 0.02

#: Seconds reports do not ask for tasks after a master refused a report that did (400: a master
#: before ``ReportBatch.lease_capacity``); then they ask again, in case it was upgraded.
REPORT_ASK_REPROBE_SECONDS = 600.0


@dataclass
class ReportAsk:
    """The tasks a report pass asks for (``ReportBatch.lease_capacity``): free slots and tasks ahead."""

    capacity: int
    lease_seconds: float
    #: When the report was about to be sent: the leases run from some moment after it.
    sent: float
    #: Answered or given up: the slots are the lease loop's to ask for again.
    settled: bool = False


class LeaseLoop:
    """Asks the master for tasks when the gate is open and hands them to the :class:`TaskRunner`."""

    def __init__(
        self,
        *,
        link: MasterLink,
        tasks: TaskRunner,
        settings: Callable[[], WorkerSettings],
        probe: MachineProbe,
        events: AgentEvents,
        pause: Pause,
        timing: AgentTiming,
        clock: Callable[[], float],
    ) -> None:
        self._link = link
        self._tasks = tasks
        self._settings = settings
        self._probe = probe
        self._events = events
        self._pause = pause
        self.timing = timing
        self._clock = clock
        self._gate_cause: str | None = None
        #: The last lease answer held fewer tasks than asked for: the master had no more ready.
        self.drained = False
        #: Held while an ask is out, the loop's own or a report's (see :meth:`ask_in_report`).
        self._asking = asyncio.Lock()
        #: Serving (not a burst): reports may ask for tasks.
        self._serving = False
        #: The last report that asked got no answer: the loop asks on its own until one does.
        self._report_failed = False
        #: Until when (``clock``) reports do not ask (a master that refused the fields).
        self._report_refused_until = float("-inf")
        #: How many asks reports have made: how the waiting loop sees that one did.
        self._report_asks = 0

    # -- the gate ---------------------------------------------------------------------------------

    def gate(self) -> str | None:
        """Why this worker may not ask for tasks now, or None when it may.

        TaskRequestMaxCPU 100 lifts the CPU limit: no reading is below 100% on a saturated machine,
        and a threshold that can never be met would stop the worker for good.
        """
        closed = self._closed()
        return None if closed is None else closed[1]

    def _closed(self) -> tuple[str, str] | None:
        """``(what closes the gate, why in words)``, or None when it is open."""
        settings = self._settings()
        if self._events.stopping.is_set():
            return "stopping", "stopping"
        if self._link.state != "enabled":
            return "state", f"the master reports this worker as {self._link.state or 'unknown'}"
        if self._room() <= 0:
            return "MaxTaskCount", f"all {settings.max_task_count} slots (MaxTaskCount) are busy"
        cpu = self._probe.cpu_percent()
        if settings.task_request_max_cpu < 100.0 and cpu >= settings.task_request_max_cpu:
            return (
                "TaskRequestMaxCPU",
                f"CPU use {cpu:.0f}% is not below TaskRequestMaxCPU {settings.task_request_max_cpu:.0f}%",
            )
        memory = self._probe.memory_free_mb()
        if memory <= settings.task_request_min_memory:
            return (
                "TaskRequestMinMemory",
                f"free memory {memory:.0f} MB is not above TaskRequestMinMemory "
                f"{settings.task_request_min_memory:.0f} MB",
            )
        return None

    def own_gate(self) -> str:
        """The gate's reason when this worker closes it itself (slots, CPU, memory), for the master."""
        closed = self._closed()
        return "" if closed is None or closed[0] in ("state", "stopping") else closed[1]

    def check_gate(self) -> str | None:
        """:meth:`gate`, logged when what closes it changes (not each time a reading moves)."""
        closed = self._closed()
        cause = None if closed is None else closed[0]
        if cause != self._gate_cause:
            if closed is not None and cause not in ("state", "stopping"):
                log.info("not asking for tasks: %s", closed[1])
            self._gate_cause = cause
        return None if closed is None else closed[1]

    # -- one lease --------------------------------------------------------------------------------

    async def lease(self, wait_seconds: float | None = None) -> list[TaskAssignment]:
        """Ask for up to the free capacity in tasks, waiting up to ``wait_seconds`` for one (long-poll).

        Returns the tasks leased, already counted against the capacity; nothing when the gate is
        closed (the reason is logged when it changes).
        """
        if self.check_gate() is not None:
            return []
        async with self._asking:
            return await self._lease(wait_seconds)

    async def _lease(self, wait_seconds: float | None) -> list[TaskAssignment]:
        settings = self._settings()
        wait = self.timing.lease_wait if wait_seconds is None else wait_seconds
        capacity = self._room()
        request = LeaseRequest(
            agent_id=settings.agent_id,
            capacity=capacity,
            wait_seconds=wait,
            lease_seconds=settings.lease_interval.total_seconds(),
        )
        # The lease runs from some moment after this one: counting it from here never overstates it.
        sent = self._clock()
        # The master may hold the request for `wait` seconds: allow that plus a normal answer time.
        raw = await self._link.post(routes.WORKER_LEASE, encode(request), timeout=wait + 30.0)
        reply = decode(LeaseReply, raw)
        return self._accept(reply.tasks, reply.heartbeat_now, capacity, sent, request.lease_seconds)

    def _accept(
        self,
        leased: list[TaskAssignment],
        heartbeat_now: bool,
        capacity: int,
        sent: float,
        lease_seconds: float,
    ) -> list[TaskAssignment]:
        """Count the tasks of a lease answer against the capacity; return those to start."""
        self.drained = len(leased) < capacity
        if heartbeat_now:
            self._events.wake_heartbeat.set()
        tasks = []
        for task in leased:
            if lease_key(task) in self._tasks.running:
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
            self._tasks.hold(task, lease_deadline(task, sent, lease_seconds, self._link.master_clock))
        return tasks

    # -- asks carried by reports ------------------------------------------------------------------

    async def ask_in_report(self) -> ReportAsk | None:
        """What a report about to go may ask tasks for (:meth:`_room`), or None when it should not ask.

        It asks only while serving under load (the last answer had as many tasks as asked for: the
        master has more), with the gate open and no other ask out; an idle worker's report asks
        nothing, so the round trip of a lone task (``run --wait``) carries no lease. Until the ask
        is settled (:meth:`answered` or :meth:`settle`) the loop asks nothing itself.
        """
        if not self._reports_may_ask() or self._asking.locked() or self.check_gate() is not None:
            return None
        await self._asking.acquire()  # free (checked above): taken at once, no wait
        self._report_asks += 1
        return ReportAsk(
            capacity=self._room(),
            lease_seconds=self._settings().lease_interval.total_seconds(),
            sent=self._clock(),
        )

    def answered(self, ask: ReportAsk, leased: list[TaskAssignment], heartbeat_now: bool) -> None:
        """Start the tasks a report's answer leased, and let the loop ask again."""
        self._report_failed = False
        self._tasks.ahead.trip(self._clock() - ask.sent)
        try:
            for task in self._accept(leased, heartbeat_now, ask.capacity, ask.sent, ask.lease_seconds):
                self._tasks.start(task)
        finally:
            self._settled(ask)

    def refused(self, ask: ReportAsk) -> None:
        """The master refused a report that asked (400): reports ask nothing for a while."""
        if self._clock() >= self._report_refused_until:
            log.info(
                "the master refused a report that asked for tasks (an older master?): asking with "
                "lease requests alone, reports ask again in %.0f s",
                REPORT_ASK_REPROBE_SECONDS,
            )
        self._report_refused_until = self._clock() + REPORT_ASK_REPROBE_SECONDS
        self._settled(ask)

    def settle(self, ask: ReportAsk) -> None:
        """The report's pass is over: an ask still unanswered got nothing (its request failed)."""
        if not ask.settled:
            self._report_failed = True
            self._settled(ask)

    def _settled(self, ask: ReportAsk) -> None:
        ask.settled = True
        self._asking.release()
        self._events.wake_lease.set()

    def _room(self) -> int:
        """How many tasks an ask asks for: the free slots, and while serving under load (the master
        had more) tasks ahead of them as well (see ``_slots``)."""
        return self._tasks.room(ahead=self._serving and not self.drained)

    def _reports_may_ask(self) -> bool:
        """Serving under load (the master had more), with a master that takes a report's ask."""
        return self._serving and not self.drained and self._clock() >= self._report_refused_until

    def _reports_ask(self) -> bool:
        """Whether a report will ask for the free slots soon, so the loop need not."""
        return (
            self._reports_may_ask()
            and not self._report_failed
            and (bool(self._tasks.running) or not self._tasks.cache.idle)
        )

    async def gather_slots(self) -> None:
        """While tasks run, give other slots up to ``lease_linger`` to free before leasing.

        Stops waiting once half the slots (MaxTaskCount) are free, so one lease asks for several
        tasks; each finished task wakes it to count again. An idle worker leases at once.
        """
        if not self._tasks.running or self.timing.lease_linger <= 0:
            return
        want = max(1, self._settings().max_task_count // 2)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timing.lease_linger
        for _ in range(want):  # each pass waits for one finished task at most
            remaining = deadline - loop.time()
            if self._tasks.capacity >= want or remaining <= 0 or self._events.stopping.is_set():
                return
            self._events.wake_lease.clear()
            await self._pause(remaining, self._events.wake_lease)

    async def _hold_back(self, burst: bool) -> None:
        """After starting tasks, let them go first (up to ``hold_back``), then their reports (up to
        :data:`REPORT_HOLD`).

        Only when the master had no more tasks ready (:attr:`drained`): the next request would
        only wait there (long-poll), so it is not urgent, and encoding and writing it costs the
        worker more CPU than a short pooled task costs it. Sent at once, it held back reading the
        task's end, then competed with its report's commit and request (make bench, latency).
        When the master has more, the next request goes at once (through :meth:`gather_slots`), so
        the master prepares the next tasks while these run (make bench, throughput). A burst only
        lets the attempts reach their package.
        """
        if burst or not self.drained or self.timing.hold_back <= 0:
            await asyncio.sleep(0)
            return
        events, loop = self._events, asyncio.get_running_loop()
        await self._pause(self.timing.hold_back, events.wake_lease)
        # When they ended already, their reports go out before this request competes with them: a
        # report's round trip (commit, request, the master's transaction) takes 2-3 ms on an idle
        # machine and more under load, so waiting only hold_back for it often sent the request
        # in the middle of it, and the master's look for tasks queued beside the report's
        # transaction on its catalog thread (make bench, latency).
        deadline = loop.time() + max(self.timing.hold_back, REPORT_HOLD)
        while not self._tasks.running and not self._tasks.cache.idle:
            left = deadline - loop.time()
            if left <= 0:
                return
            events.reported.clear()
            await self._pause(left, events.reported)

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, *, burst: bool = False) -> None:
        """Lease and start tasks until stopping; with ``burst``, until nothing is left to lease or run.

        Serving, a failed lease request is retried with backoff for as long as it takes. A burst
        raises a TLS failure at once and any other failure after :data:`BURST_LEASE_ATTEMPTS` in a
        row: a script should fail loudly rather than wait on a master that will not answer.
        """
        self._serving = not burst
        try:
            await self._run(burst)
        finally:
            self._serving = False

    async def _run(self, burst: bool) -> None:
        backoff = Backoff()
        events = self._events
        while not events.stopping.is_set():
            events.wake_lease.clear()
            if self.check_gate() is not None:
                if not burst:
                    await self._pause(self.timing.gate_poll, events.wake_lease)
                elif self._tasks.executions:
                    await self._tasks.wait_one()
                else:
                    return
                continue
            if not burst and (self._asking.locked() or self._reports_ask()):
                # A report asks for the slots now or will once the tasks running end: wait for
                # its answer, or for the master's queue to empty (then this loop long-polls).
                asks = self._report_asks
                events.reported.clear()
                await self._pause(self.timing.gate_poll, events.wake_lease, events.reported)
                if events.wake_lease.is_set() or self._report_asks != asks or self._asking.locked():
                    continue  # a task ended, or a report asked: look again
                # A report pass went without asking, or none went for gate_poll: the report that
                # was to ask did not come (nothing it could send), so the loop asks itself.
            if not burst:
                await self.gather_slots()
            try:
                tasks = await self.lease(wait_seconds=0.0 if burst else None)
            except TransportError as exc:
                if burst and (isinstance(exc, TlsError) or backoff.failures + 1 >= BURST_LEASE_ATTEMPTS):
                    raise
                log.error("lease request failed (%d): %s", backoff.failures + 1, exc)
                await self._pause(backoff.next())
                continue
            backoff.reset()
            for task in tasks:
                self._tasks.start(task)
            if tasks:
                await self._hold_back(burst)
            if burst and not tasks:
                if not self._tasks.executions:
                    return
                await self._tasks.wait_one()
