"""One attempt of a task at a time on a worker, and until when a lease surely holds.

A lease is (task, attempt). After a short partition the master may requeue a task and give its next
attempt back to the worker that still runs the old one: the worker must then stop the old attempt
before it starts the new one, and must never start an attempt whose lease has already run out,
since the master may have given the task to another worker by then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from packfleet.protocol import TaskAssignment
from packfleet.worker._taskbeat import LeaseKey, Running, lease_key

log = logging.getLogger("packfleet.worker")

#: How far the master's clock is ahead of this worker's, and how uncertain that is (seconds): half
#: the round trip of the heartbeat that measured it (the master read its clock somewhere in it).
MasterClock = tuple[float, float]


def master_clock(sent: float, received: float, master_time: str) -> MasterClock | None:
    """The master's clock offset, measured by one heartbeat (NTP's estimate); None if unreadable."""
    try:
        master = datetime.fromisoformat(master_time).timestamp()
    except ValueError:
        return None
    return master - (sent + received) / 2, (received - sent) / 2


def lease_deadline(task: TaskAssignment, sent: float, seconds: float, clock: MasterClock | None) -> float:
    """Until when, on this worker's clock, a lease asked for at ``sent`` surely holds.

    Two lower bounds, the later one wins: the master grants the lease after the request was sent
    (for ``seconds``), and it says when the lease expires on its own clock, which the heartbeat's
    offset translates, less its uncertainty. The second matters for a long-poll: the lease starts
    when the master answers, up to a long-poll wait after ``sent``.
    """
    floor = sent + seconds
    if clock is None:
        return floor
    try:
        expires = datetime.fromisoformat(task.lease_expires_at).timestamp()
    except ValueError:
        return floor
    offset, error = clock
    return max(floor, expires - offset - error)


async def supersede(
    running: Running,
    held: Mapping[LeaseKey, Running],
    executions: Mapping[LeaseKey, asyncio.Task[Any]],
    *,
    stop: Callable[[Running, str], None],
    grace: float,
) -> bool:
    """Make sure no other attempt of this task runs here; False when this one must not run.

    The master gives a task again only once the old lease expired, so an older attempt still
    running here (a partition hid its heartbeats) is stale: it is stopped, without a report,
    and the new attempt starts once it has ended. A newer attempt already here makes this
    one stale instead. A worker never runs two attempts of one task at once.

    The old attempt ends when its package process has, and ``stop`` ends that process on real
    time (SIGTERM, then SIGKILL after the cancel grace): so the wait for it is bounded in real
    seconds, ``grace``, never through the agent's injected sleep. Tests shrink that sleep to
    milliseconds, and a bound shrunk with it gave up on an old attempt still being killed.
    """
    new = running.assignment
    others = [r for k, r in held.items() if k[0] == new.task_id and r is not running]
    if any(other.assignment.attempt > new.attempt for other in others):
        log.warning(
            "task %s attempt %s arrived after a newer attempt: not starting it", new.task_id, new.attempt
        )
        running.cancel_reason = "lost"
        return False
    waits: set[asyncio.Task[Any]] = set()
    for other in others:
        log.warning(
            "task %s attempt %s replaces attempt %s still running here (its lease expired): "
            "stopping the old one first",
            new.task_id,
            new.attempt,
            other.assignment.attempt,
        )
        stop(other, "lost")
        old = executions.get(lease_key(other.assignment))
        if old is not None:
            waits.add(old)
    if waits:
        await asyncio.wait(waits, timeout=grace)
        if not all(task.done() for task in waits):
            log.error(
                "task %s: an older attempt did not end; attempt %s is not started (its lease lapses)",
                new.task_id,
                new.attempt,
            )
            running.cancel_reason = "expired"
            return False
    return True
