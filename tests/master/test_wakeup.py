"""Wake-up tickets never miss a notification that lands between "look" and "wait"."""

from __future__ import annotations

import asyncio

from packfleet.master import LocalWakeups, Ticket


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


async def _parked(wakeups: LocalWakeups, count: int) -> tuple[list[Ticket], list[asyncio.Task[bool]]]:
    """``count`` waiters on "tasks", queued in order (the first waits longest)."""
    tickets, waiting = [], []
    for _ in range(count):
        ticket = wakeups.ticket("tasks")
        tickets.append(ticket)
        waiting.append(asyncio.create_task(ticket.wait(30)))
        await asyncio.sleep(0)
    return tickets, waiting


async def test_a_new_task_wakes_the_waiter_waiting_longest_and_no_other() -> None:
    wakeups = LocalWakeups()
    tickets, waiting = await _parked(wakeups, 3)
    wakeups.notify_one("tasks")
    assert await asyncio.wait_for(waiting[0], 1) is True
    assert tickets[0].handed
    await asyncio.sleep(0.05)
    assert not waiting[1].done() and not waiting[2].done()
    wakeups.notify_one("tasks", 2)  # two tasks in one commit: the next two waiters
    assert list(await asyncio.wait_for(asyncio.gather(waiting[1], waiting[2]), 1)) == [True, True]


async def test_a_new_task_with_nobody_waiting_reaches_the_holders_still_looking() -> None:
    """A holder whose look began before the commit must look again rather than wait without it."""
    wakeups = LocalWakeups()
    looking = wakeups.ticket("tasks")  # taken, its look in the catalog under way
    wakeups.notify_one("tasks")
    assert looking.notified and not looking.handed
    assert await asyncio.wait_for(looking.wait(30), 1) is True


async def test_news_for_every_waiter_still_wakes_them_all() -> None:
    wakeups = LocalWakeups()
    _, waiting = await _parked(wakeups, 3)
    wakeups.notify("tasks")  # a worker disabled, a sweep: every long-poll re-checks
    assert await asyncio.wait_for(asyncio.gather(*waiting), 1) == [True, True, True]


async def test_a_waiter_passing_the_news_on_wakes_the_others_not_itself() -> None:
    wakeups = LocalWakeups()
    tickets, waiting = await _parked(wakeups, 2)
    mine = wakeups.ticket("tasks")  # the ticket a woken long-poll took before looking again
    wakeups.notify_others(mine)
    assert await asyncio.wait_for(asyncio.gather(*waiting), 1) == [True, True]
    assert not mine.notified
    assert await mine.wait(0.05) is False
    wakeups.notify("tasks")  # and it still hears what comes next
    assert mine.notified


async def test_a_waiter_notified_while_it_looked_keeps_the_news_when_it_passes_it_on() -> None:
    wakeups = LocalWakeups()
    mine = wakeups.ticket("tasks")
    wakeups.notify("tasks")  # something came during its look
    wakeups.notify_others(mine)
    assert mine.notified


async def test_a_waiter_that_stopped_waiting_is_not_handed_a_task() -> None:
    wakeups = LocalWakeups()
    gone = wakeups.ticket("tasks")
    assert await gone.wait(0.01) is False  # timed out: no longer queued
    tickets, waiting = await _parked(wakeups, 1)
    wakeups.notify_one("tasks")
    assert await asyncio.wait_for(waiting[0], 1) is True
    assert not gone.handed and tickets[0].handed
