"""Wake-ups for long-polls: a waiting lease or log follower answers the moment there is news.

A long-poll must not miss a notification that arrives between "look in the catalog, find nothing"
and "start waiting". So a waiter first takes a :class:`Ticket` (the topic's current generation), then
looks, then waits on the ticket: a notification after the ticket was taken makes the wait return at
once. The interface is small on purpose: a PostgreSQL implementation for several masters only has to
turn ``notify`` into ``NOTIFY`` and call :meth:`LocalWakeups.notify` from its ``LISTEN`` task.

Two kinds of news. Some every waiter must act on (an execution ended, a worker was disabled): those
are :meth:`~LocalWakeups.notify`, which wakes them all. A task that became ready needs one worker:
:meth:`~LocalWakeups.notify_one` hands the wake-up to one waiting long-poll, so two idle workers do
not both queue a lease on the catalog's single SQLite thread for one task, the loser's delaying the
winner's answer and every request behind it. A long-poll woken alone that cannot take the task
passes the news on (see ``_worker_api.lease``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

#: New tasks may be ready: an execution was created, the sweep requeued a lease, one was canceled,
#: or a worker's standing changed (its long-poll must re-check its authorization). Only the first
#: is news for one waiter (``notify_one``); the others wake every waiter (``notify``).
TASKS = "tasks"
#: Event messages arrived, or an execution ended or was canceled (``logs --follow``, ``run --wait``).
EVENTS = "events"
#: A master certificate rotation took a step: every lease long-poll asks whether its worker has a
#: step left to take (``heartbeat_now``). Not :data:`TASKS`: no task became ready, so a long-poll
#: with nothing to take goes back to waiting without a look in the catalog (a thousand looks per
#: step, make bench rotation).
ROTATION = "rotation"


def worker_topic(agent_id: str) -> str:
    """One worker's own news (a rotation step waits on its heartbeat): wakes its long-poll alone.

    A fleet-wide topic would wake every worker's long-poll for each worker's step, each re-checking
    the catalog: N workers times N steps, minutes for a thousand workers.
    """
    return f"worker:{agent_id}"


class _Generation:
    """Whether a topic was notified since a ticket was taken (shared by the tickets taken meanwhile)."""

    __slots__ = ("fired",)

    def __init__(self) -> None:
        self.fired = False


class Ticket:
    """A topic's generation at one moment; waiting on it returns once a later notification happened,
    or once a wake-up meant for one waiter was handed to this ticket (``handed``)."""

    __slots__ = ("_generation", "_owner", "handed", "topic")

    def __init__(self, topic: str, generation: _Generation, owner: LocalWakeups) -> None:
        self.topic = topic
        self._generation = generation
        self._owner = owner
        #: A :meth:`LocalWakeups.notify_one` chose this ticket's holder: it looks for the task, and
        #: passes the wake-up on if it does not take one.
        self.handed = False

    @property
    def notified(self) -> bool:
        return self.handed or self._generation.fired

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; return whether a notification came."""
        return await wait_any((self,), timeout)


class _Waiter:
    """A ticket in one :func:`wait_any` call, queued on its topic until the call returns."""

    __slots__ = ("ticket", "woken")

    def __init__(self, ticket: Ticket, woken: asyncio.Future[None]) -> None:
        self.ticket = ticket
        self.woken = woken

    def wake(self) -> None:
        if not self.woken.done():
            self.woken.set_result(None)


async def wait_any(tickets: tuple[Ticket, ...], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for a notification of any of ``tickets``; return whether one came.

    The tickets are waiting (and so may be handed a wake-up of :meth:`LocalWakeups.notify_one`) only
    within this call: a holder still looking in the catalog is woken by broadcasts alone.
    """
    if any(ticket.notified for ticket in tickets):
        return True
    if timeout <= 0:
        return False
    woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiters = [_Waiter(ticket, woken) for ticket in tickets]
    for waiter in waiters:
        waiter.ticket._owner._queue(waiter)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken, timeout)
    finally:
        for waiter in waiters:
            waiter.ticket._owner._unqueue(waiter)
    return any(ticket.notified for ticket in tickets)


class Wakeups(Protocol):
    """What the master's long-polls need from a wake-up channel."""

    def ticket(self, topic: str) -> Ticket: ...

    def notify(self, topic: str) -> None: ...

    def notify_one(self, topic: str, count: int = 1) -> None: ...

    def notify_others(self, ticket: Ticket) -> None: ...

    def notify_all(self) -> None: ...


class LocalWakeups:
    """Wake-ups within one master process (enough for SQLite, and for one master on PostgreSQL).

    One generation per topic: ``notify`` fires the current one and the next ``ticket`` gets a fresh
    one, so every waiter holding an older ticket wakes exactly once. Tickets in :func:`wait_any` are
    also queued per topic, oldest first, for ``notify_one``. Must be used from the event loop's thread.
    """

    def __init__(self) -> None:
        self._current: dict[str, _Generation] = {}
        # Insertion-ordered: the waiter waiting longest comes first.
        self._waiting: dict[str, dict[_Waiter, None]] = {}

    def ticket(self, topic: str) -> Ticket:
        generation = self._current.get(topic)
        if generation is None:
            generation = self._current[topic] = _Generation()
        return Ticket(topic, generation, self)

    def notify(self, topic: str) -> None:
        """Wake every holder of a ticket of ``topic``: waiting, or still looking (it looks again)."""
        generation = self._current.pop(topic, None)
        if generation is not None:
            generation.fired = True
        for waiter in self._waiting.pop(topic, {}):
            waiter.wake()

    def notify_one(self, topic: str, count: int = 1) -> None:
        """Wake ``count`` waiters of ``topic`` (the longest waiting), each for one new task.

        With fewer waiting, the rest goes to every holder still looking in the catalog: its look may
        have begun before the task was committed, and it must not then wait without it.
        """
        waiting = self._waiting.get(topic)
        while count > 0 and waiting:
            waiter = next(iter(waiting))
            del waiting[waiter]
            if waiter.ticket.notified:  # the same ticket in two waits, handed through the other
                waiter.wake()
                continue
            waiter.ticket.handed = True
            waiter.wake()
            count -= 1
        if count > 0:
            self.notify(topic)

    def notify_others(self, ticket: Ticket) -> None:
        """Wake every holder of a ticket of ``ticket``'s topic but this one, whose holder has just looked.

        Unless it was notified meanwhile, ``ticket`` moves to the fresh generation: nothing came
        since it was taken, so its holder has nothing to look for again.
        """
        unchanged = not ticket.notified
        self.notify(ticket.topic)
        if unchanged:
            ticket._generation = self.ticket(ticket.topic)._generation

    def notify_all(self) -> None:
        """Wake every waiter (used at shutdown so long-polls answer at once instead of holding it up)."""
        for topic in list(self._current) + list(self._waiting):
            self.notify(topic)

    def _queue(self, waiter: _Waiter) -> None:
        self._waiting.setdefault(waiter.ticket.topic, {})[waiter] = None

    def _unqueue(self, waiter: _Waiter) -> None:
        waiting = self._waiting.get(waiter.ticket.topic)
        if waiting is not None:
            waiting.pop(waiter, None)
            if not waiting:  # a topic per worker: keep no empty queue for each
                del self._waiting[waiter.ticket.topic]
