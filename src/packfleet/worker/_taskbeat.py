"""Task heartbeats: keep the leases of running tasks, and give tasks up when the master says so.

Every TaskHeartbeatInterval the worker names the leases it holds; the master extends them and
answers with the tasks to ``cancel`` (an administrator stopped the execution) and those ``lost``
(the lease expired and the task went to another worker, so this run's result would be stale). When
the master cannot be reached for HeartbeatErrorTolerance, SSIS's worker gives its tasks up: by then
their leases have expired and the master is requeueing them elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from packfleet.config import WorkerSettings
from packfleet.errors import PackfleetError, TransportError
from packfleet.packages import TaskHandle
from packfleet.protocol import (
    LeaseRef,
    TaskAssignment,
    TaskHeartbeat,
    TaskHeartbeatReply,
    decode,
    encode,
    routes,
)

log = logging.getLogger("packfleet.worker")

#: Reasons a task is stopped without a completion report: its lease is, or soon will be, someone
#: else's, and the master requeues the task when the lease expires (SSIS retries on worker loss).
#: "expired": the lease ran out before the package started, so it is never started.
GIVE_UP_REASONS = frozenset({"lost", "unreachable", "stopping", "expired"})

#: What a worker keys its running work by: a lease is a task *and* an attempt. After a short
#: partition the master may give this worker the next attempt of a task whose old attempt still
#: runs here; keyed by task id alone, the old attempt's clean-up and the master's "lost" answer
#: for it would hit the new attempt.
LeaseKey = tuple[int, int]


def lease_key(assignment: TaskAssignment) -> LeaseKey:
    return (assignment.task_id, assignment.attempt)


@dataclass
class Running:
    """A leased task on this worker; ``handle`` is set once its package process runs."""

    assignment: TaskAssignment
    #: This worker's clock reading until which the lease surely holds (see ``lease_deadline`` in
    #: ``_attempts``); a task heartbeat that extends it moves it to that heartbeat's *send* time
    #: plus the lease length, a bound no clock difference with the master can stretch.
    deadline: float = float("inf")
    handle: TaskHandle | None = None
    #: None while it runs normally; "canceled" by the master, or one of :data:`GIVE_UP_REASONS`.
    cancel_reason: str | None = None


class TaskBeat:
    """Sends task heartbeats for the ``running`` tasks and acts on the master's answer."""

    def __init__(
        self,
        running: dict[LeaseKey, Running],
        post: Callable[[str, Any], Awaitable[Any]],
        settings: Callable[[], WorkerSettings],
        *,
        spawn: Callable[[Coroutine[Any, Any, Any]], object],
        cancel_grace: float,
        clock: Callable[[], float],
    ) -> None:
        self.running = running
        self._post = post
        self._settings = settings
        self._spawn = spawn
        self.cancel_grace = cancel_grace
        self._clock = clock
        self.last_success = clock()
        self.last_error = ""

    async def beat(self) -> TaskHeartbeatReply | None:
        """One task heartbeat; None when no lease is held or the master could not be reached."""
        held = [r for r in self.running.values() if r.cancel_reason not in GIVE_UP_REASONS]
        if not held:
            self.last_success = self._clock()
            return None
        settings = self._settings()
        sent = self._clock()
        message = TaskHeartbeat(
            agent_id=settings.agent_id,
            leases=[LeaseRef(r.assignment.task_id, r.assignment.attempt) for r in held],
            lease_seconds=settings.lease_interval.total_seconds(),
        )
        try:
            reply = decode(
                TaskHeartbeatReply, await self._post(routes.WORKER_TASK_HEARTBEAT, encode(message))
            )
        except TransportError as exc:
            self._failed(exc, held, settings)
            return None
        self.last_success = self._clock()
        self.last_error = ""
        for ref in reply.extended:
            extended = self.running.get((ref.task_id, ref.attempt))
            if extended is not None:
                extended.deadline = max(extended.deadline, sent + message.lease_seconds)
        for ref in reply.cancel:
            canceled = self.running.get((ref.task_id, ref.attempt))
            if canceled is not None:
                log.info("the master cancels task %s attempt %s: stopping it", ref.task_id, ref.attempt)
                self.stop(canceled, "canceled")
        for ref in reply.lost:
            lost = self.running.get((ref.task_id, ref.attempt))
            if lost is not None:
                log.warning(
                    "the lease of task %s attempt %s is no longer this worker's: killing its package "
                    "here, no report",
                    ref.task_id,
                    ref.attempt,
                )
                self.stop(lost, "lost")
        return reply

    def _failed(self, exc: TransportError, held: list[Running], settings: WorkerSettings) -> None:
        silent = self._clock() - self.last_success
        tolerance = settings.heartbeat_error_tolerance.total_seconds()
        if str(exc) != self.last_error:
            log.error("task heartbeat failed: %s", exc)
            self.last_error = str(exc)
        if silent < tolerance:
            return
        log.error(
            "no task heartbeat reached the master for %.0f s (HeartbeatErrorTolerance %.0f s): giving up "
            "%d task(s), whose leases have expired",
            silent,
            tolerance,
            len(held),
        )
        for running in held:
            self.stop(running, "unreachable")

    def stop(self, running: Running, reason: str) -> None:
        """Cancel a task's package (SIGTERM, then SIGKILL after ``cancel_grace``) for ``reason``."""
        if running.cancel_reason in GIVE_UP_REASONS:
            return  # already given up; a later "canceled" must not bring a report back
        first = running.cancel_reason is None
        running.cancel_reason = reason
        if first:
            self.kill(running)

    def kill(self, running: Running) -> None:
        """Cancel the package process, if it has started (else :meth:`stop` stops it before it does)."""
        if running.handle is not None:
            self._spawn(self._cancel(running.handle))

    async def _cancel(self, handle: TaskHandle) -> None:
        try:
            await handle.cancel(self.cancel_grace)
        except (PackfleetError, OSError) as exc:  # a failed kill must not end the heartbeat loop
            log.error("cannot cancel process %s: %s", handle.pid, exc)
