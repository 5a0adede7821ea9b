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


async def test_a_long_poll_wakes_for_the_fleet_or_for_its_own_worker_only() -> None:
    from packfleet.master._wakeup import wait_any, worker_topic

    wakeups = LocalWakeups()
    polls = {agent: (wakeups.ticket("tasks"), wakeups.ticket(worker_topic(agent))) for agent in ("a", "b")}
    waiting = {agent: asyncio.create_task(wait_any(tickets, 30)) for agent, tickets in polls.items()}
    await asyncio.sleep(0)
    wakeups.notify(worker_topic("a"))  # news for worker a alone (a rotation step)
    assert await asyncio.wait_for(waiting["a"], 1) is True
    assert not waiting["b"].done()
    assert await wait_any(polls["b"], 0.05) is False  # b's long-poll keeps waiting
    wakeups.notify("tasks")  # news for the whole fleet
    assert await asyncio.wait_for(waiting["b"], 1) is True


async def test_wait_any_returns_at_once_for_a_ticket_already_notified() -> None:
    from packfleet.master._wakeup import wait_any

    wakeups = LocalWakeups()
    tickets = (wakeups.ticket("tasks"), wakeups.ticket("events"))
    wakeups.notify("events")
    assert await asyncio.wait_for(wait_any(tickets, 30), 1) is True
    assert await wait_any((wakeups.ticket("tasks"),), 0) is False
