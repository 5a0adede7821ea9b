"""Wake-up tickets never miss a notification that lands between "look" and "wait"."""

from __future__ import annotations

import asyncio

from packfleet.master import LocalWakeups


async def test_a_notification_after_the_ticket_wakes_the_wait_at_once() -> None:
    wakeups = LocalWakeups()
    ticket = wakeups.ticket("tasks")
    wakeups.notify("tasks")  # arrives before the waiter starts waiting
    assert await asyncio.wait_for(ticket.wait(30), 1) is True


async def test_a_later_ticket_waits_for_the_next_notification() -> None:
    wakeups = LocalWakeups()
    wakeups.ticket("tasks")
    wakeups.notify("tasks")
    fresh = wakeups.ticket("tasks")
    assert await fresh.wait(0.05) is False
    other_topic = wakeups.ticket("events")
    wakeups.notify("tasks")
    assert fresh.notified and not other_topic.notified


async def test_notify_all_wakes_every_topic() -> None:
    wakeups = LocalWakeups()
    tickets = [wakeups.ticket(topic) for topic in ("tasks", "events")]
    waiting = [asyncio.create_task(t.wait(30)) for t in tickets]
    await asyncio.sleep(0)
    wakeups.notify_all()
    assert await asyncio.wait_for(asyncio.gather(*waiting), 1) == [True, True]
