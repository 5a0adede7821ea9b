"""Wake-ups for long-polls: a waiting lease or log follower answers the moment there is news.

A long-poll must not miss a notification that arrives between "look in the catalog, find nothing"
and "start waiting". So a waiter first takes a :class:`Ticket` (the topic's current generation), then
looks, then waits on the ticket: a notification after the ticket was taken makes the wait return at
once. The interface is small on purpose: a PostgreSQL implementation for several masters only has to
turn ``notify`` into ``NOTIFY`` and call :meth:`LocalWakeups.notify` from its ``LISTEN`` task.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

#: New tasks may be ready: an execution was created, the sweep requeued a lease, one was canceled,
#: or a worker's standing changed (its long-poll must re-check its authorization).
TASKS = "tasks"
#: Event messages arrived, or an execution ended or was canceled (``logs --follow``, ``run --wait``).
EVENTS = "events"


def worker_topic(agent_id: str) -> str:
    """One worker's own news (a rotation step waits on its heartbeat): wakes its long-poll alone.

    A fleet-wide topic would wake every worker's long-poll for each worker's step, each re-checking
    the catalog: N workers times N steps, minutes for a thousand workers.
    """
    return f"worker:{agent_id}"


class Ticket:
    """A topic's generation at one moment; waiting on it returns once a later notification happened."""

    __slots__ = ("_event", "topic")

    def __init__(self, topic: str, event: asyncio.Event) -> None:
        self.topic = topic
        self._event = event

    @property
    def notified(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; return whether a notification came."""
        if timeout > 0 and not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        return self._event.is_set()


async def wait_any(tickets: tuple[Ticket, ...], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for a notification of any of ``tickets``; return whether one came."""
    if any(ticket.notified for ticket in tickets):
        return True
    if timeout <= 0:
        return False
    waiters = [asyncio.ensure_future(ticket._event.wait()) for ticket in tickets]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return any(ticket.notified for ticket in tickets)


class Wakeups(Protocol):
    """What the master's long-polls need from a wake-up channel."""

    def ticket(self, topic: str) -> Ticket: ...

    def notify(self, topic: str) -> None: ...

    def notify_all(self) -> None: ...


class LocalWakeups:
    """Wake-ups within one master process (enough for SQLite, and for one master on PostgreSQL).

    One :class:`asyncio.Event` per topic and generation: ``notify`` sets the current event and the
    next ``ticket`` gets a fresh one, so every waiter holding an older ticket wakes exactly once.
    Must be used from the event loop's thread.
    """

    def __init__(self) -> None:
        self._current: dict[str, asyncio.Event] = {}

    def ticket(self, topic: str) -> Ticket:
        event = self._current.get(topic)
        if event is None:
            event = self._current[topic] = asyncio.Event()
        return Ticket(topic, event)

    def notify(self, topic: str) -> None:
        event = self._current.pop(topic, None)
        if event is not None:
            event.set()

    def notify_all(self) -> None:
        """Wake every waiter (used at shutdown so long-polls answer at once instead of holding it up)."""
        for topic in list(self._current):
            self.notify(topic)
