"""How the agent waits: one backoff for every retry, one pause that events cut short.

Every loop of the agent (heartbeat, lease, report, delivery on stop) retries a master that is away or
refuses it. They all back off the same way, :class:`Backoff`: exponential from one second, capped at
a minute, with jitter so a fleet that lost its master at the same moment does not come back in step
(the thundering herd a restarted master would otherwise meet). Time comes from the injected
``sleep`` so no test waits on a real interval.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

#: A refused request (403) or an unreachable master is retried no faster than this, and no slower
#: than the cap, so a disabled worker neither hammers the master nor takes minutes to notice it.
BACKOFF_START, BACKOFF_CAP = 1.0, 60.0

Sleep = Callable[[float], Awaitable[None]]


class Backoff:
    """Jittered, bounded exponential backoff: ``start``, ``2 * start``, ... up to ``cap``.

    Each delay is drawn from the upper half of its step (``[step / 2, step]``, "equal jitter"): never
    longer than the plain exponential, never shorter than half of it.

    >>> backoff = Backoff(start=1.0, cap=8.0, rng=random.Random(1))
    >>> [round(backoff.next(), 2) for _ in range(6)]
    [0.57, 1.85, 3.53, 5.02, 5.98, 5.8]
    >>> backoff.failures, backoff.reset(), backoff.failures
    (6, None, 0)
    """

    def __init__(
        self, *, start: float = BACKOFF_START, cap: float = BACKOFF_CAP, rng: random.Random | None = None
    ) -> None:
        if not 0 < start <= cap:
            raise ValueError(f"backoff needs 0 < start <= cap, not start={start} cap={cap}")
        self.start = start
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret

    def step(self) -> float:
        """The un-jittered delay the next failure earns (the exponential, capped)."""
        return min(self.cap, self.start * 2.0 ** min(self.failures, 64))

    def next(self) -> float:
        """Count one failure and return how long to wait before trying again."""
        step = self.step()
        self.failures += 1
        return self._rng.uniform(step / 2, step)

    def reset(self) -> None:
        """A success: the next failure starts again from ``start``."""
        self.failures = 0


@dataclass
class AgentEvents:
    """What one part of the agent sets to wake another, instead of each waiting out its interval."""

    #: Set once by :meth:`WorkerAgent.stop`: every loop ends (what is leased still runs to its grace).
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: A slot freed, the state or settings changed, or stopping: the lease loop looks again.
    wake_lease: asyncio.Event = field(default_factory=asyncio.Event)
    #: The master's lease answer asks for a heartbeat now (a rotation step awaits it).
    wake_heartbeat: asyncio.Event = field(default_factory=asyncio.Event)
    #: A task wrote events or finished: the reporter sends them after its linger.
    wake_report: asyncio.Event = field(default_factory=asyncio.Event)
    #: The last running attempt ended: nothing more is coming soon, so the reporter's linger ends.
    tasks_idle: asyncio.Event = field(default_factory=asyncio.Event)
    #: The master answered after being away: the reporter leaves its backoff at once.
    master_back: asyncio.Event = field(default_factory=asyncio.Event)
    #: A report pass delivered everything it covered: a lease request held back for it goes out.
    reported: asyncio.Event = field(default_factory=asyncio.Event)


class Pause:
    """Sleep through the injected ``sleep``, cut short by stopping or by any event given."""

    def __init__(self, sleep: Sleep, stopping: asyncio.Event) -> None:
        self.sleep = sleep
        self._stopping = stopping

    async def __call__(self, seconds: float, *events: asyncio.Event) -> None:
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.sleep(seconds))]
        waiters += [asyncio.ensure_future(event.wait()) for event in (self._stopping, *events)]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def until_done(self, tasks: set[asyncio.Task[Any]], seconds: float) -> None:
        """Wait until every task in ``tasks`` is done or ``seconds`` (of ``sleep``) have passed."""
        if not tasks:
            return
        timer = asyncio.ensure_future(self.sleep(seconds))
        try:
            await asyncio.wait({*tasks, timer}, return_when=asyncio.FIRST_COMPLETED)
            while not timer.done() and any(not t.done() for t in tasks):
                await asyncio.wait({*tasks, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)
