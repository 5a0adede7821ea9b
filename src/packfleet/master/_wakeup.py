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

A submit goes one step further (:meth:`~LocalWakeups.reserve`): it sets the lease long-poll waiting
longest aside, leases for its worker in the submit's own transaction, and wakes it with the tasks
(:class:`Reservation`), so an idle worker's task needs no second transaction (``catalog._handoff``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from packfleet.catalog import LeaseAsk, TaskAssignment

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

    __slots__ = ("_generation", "_owner", "ask", "handed", "handoff", "topic")

    def __init__(self, topic: str, generation: _Generation, owner: LocalWakeups) -> None:
        self.topic = topic
        self._generation = generation
        self._owner = owner
        #: A :meth:`LocalWakeups.notify_one` chose this ticket's holder: it looks for the task, and
        #: passes the wake-up on if it does not take one.
        self.handed = False
        #: What the holder, a lease long-poll, would lease once woken: a submit may lease it on its
        #: behalf (:meth:`LocalWakeups.reserve`).
        self.ask: LeaseAsk | None = None
        #: Set while a submit leases for the holder: the tasks it leased for it ([]: none, so it
        #: looks as if handed a wake-up), or None (the submit created nothing: it goes on waiting).
        self.handoff: asyncio.Future[list[TaskAssignment] | None] | None = None

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

    def reserve(self, topic: str) -> Reservation | None: ...


class Reservation:
    """A waiting lease long-poll set aside for one submit, which leases for it in its transaction.

    Out of its topic's queue meanwhile, so that no other wake-up is handed to it. Exactly one of
    :meth:`hand` or :meth:`cancel` must follow.
    """

    __slots__ = ("_owner", "_waiter", "ask")

    def __init__(self, waiter: _Waiter, ask: LeaseAsk, owner: LocalWakeups) -> None:
        self._waiter = waiter
        self._owner = owner
        self.ask = ask

    def hand(self, tasks: list[TaskAssignment]) -> None:
        """Wake the long-poll with ``tasks`` leased for it; with none, as :meth:`LocalWakeups.notify_one`
        would: it looks for the task, and passes the wake-up on if it may not take it."""
        ticket = self._waiter.ticket
        if not tasks:
            ticket.handed = True
        _settle(ticket, tasks)
        self._waiter.wake()

    def cancel(self) -> None:
        """Nothing was created: the long-poll waits on as before (woken if its ticket fired meanwhile)."""
        ticket = self._waiter.ticket
        _settle(ticket, None)
        if ticket.notified:
            self._waiter.wake()
        elif not self._waiter.woken.done():
            self._owner._queue(self._waiter)


def _settle(ticket: Ticket, tasks: list[TaskAssignment] | None) -> None:
    if ticket.handoff is not None and not ticket.handoff.done():
        ticket.handoff.set_result(tasks)


async def handed_over(ticket: Ticket) -> list[TaskAssignment] | None:
    """After a wait: the tasks a submit leased for ``ticket``'s holder, awaited if it is still at
    it (None: no submit reserved it, or it created nothing)."""
    handoff = ticket.handoff
    if handoff is None:
        return None
    try:
        # Shielded: a long-poll cancelled meanwhile must not cancel what the submit will settle.
        return await asyncio.shield(handoff)
    finally:
        ticket.handoff = None


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

    def reserve(self, topic: str) -> Reservation | None:
        """Set aside the lease long-poll of ``topic`` waiting longest (one that said what it would
        lease), for a submit to lease on its behalf; None when none waits."""
        waiting = self._waiting.get(topic)
        for waiter in waiting or ():
            ticket = waiter.ticket
            if ticket.ask is None or ticket.notified or ticket.handoff is not None or waiter.woken.done():
                continue
            self._unqueue(waiter)
            ticket.handoff = asyncio.get_running_loop().create_future()
            return Reservation(waiter, ticket.ask, self)
        return None

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
