"""MaxTaskCount's slots: taken in the order asked, handed on when freed or when a waiter is
cancelled, sized by the settings of the moment; and how many tasks to lease ahead of them."""

from __future__ import annotations

import asyncio

import pytest

from packfleet.worker._slots import RECENT, LeaseAhead, Slots


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_slots_are_taken_in_the_order_asked_and_handed_on_when_freed() -> None:
    slots = Slots(lambda: 2)
    await slots.take()
    await slots.take()
    order: list[str] = []

    async def wait(name: str) -> None:
        await slots.take()
        order.append(name)

    waiters = [asyncio.ensure_future(wait(name)) for name in ("first", "second", "third")]
    await _settle()
    assert order == [] and slots.taken == 2

    slots.give_back()
    await _settle()
    assert order == ["first"] and slots.taken == 2
    slots.give_back()
    slots.give_back()
    await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert order == ["first", "second", "third"] and slots.taken == 2


async def test_a_cancelled_wait_gives_up_its_place_and_a_slot_handed_to_it() -> None:
    slots = Slots(lambda: 1)
    await slots.take()
    gone = asyncio.ensure_future(slots.take())
    after = asyncio.ensure_future(slots.take())
    await _settle()
    gone.cancel()
    await _settle()
    slots.give_back()  # to `after`, the cancelled wait having left the line
    await asyncio.wait_for(after, 5)
    assert slots.taken == 1

    handed = asyncio.ensure_future(slots.take())
    await _settle()
    slots.give_back()  # handed to `handed`, which is cancelled before it runs again
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert slots.taken == 0  # the slot it was handed went back
    await asyncio.wait_for(slots.take(), 5)


async def test_a_larger_size_read_at_the_next_take_serves_those_waiting_first() -> None:
    size = 1
    slots = Slots(lambda: size)
    await slots.take()
    waiting = asyncio.ensure_future(slots.take())
    await _settle()
    assert not waiting.done()
    size = 3  # a reload raised MaxTaskCount
    await asyncio.wait_for(slots.take(), 5)
    await asyncio.wait_for(waiting, 5)
    assert slots.taken == 3


def test_as_many_tasks_ahead_as_the_slots_end_during_a_round_trip_within_the_bound() -> None:
    ahead = LeaseAhead(per_slot=3)
    for _ in range(RECENT - 1):
        ahead.attempt(0.020)
    ahead.trip(0.008)
    assert ahead.tasks(10) == 0  # too few attempts to tell
    ahead.attempt(0.020)
    assert ahead.tasks(10) == 4  # ten slots end 4 tasks of 20 ms in 8 ms
    for _ in range(RECENT):
        ahead.attempt(0.001)
    assert ahead.tasks(10) == 30  # 80, at most three times the slots
    for _ in range(RECENT):
        ahead.attempt(0.5)
    assert ahead.tasks(10) == 0  # tasks this long keep the slots busy through a round trip
    for _ in range(RECENT):
        ahead.trip(1.0)  # a slow master: the slots end 20 tasks meanwhile
    assert ahead.tasks(10) == 20


def test_no_tasks_ahead_before_a_round_trip_is_known_or_when_turned_off() -> None:
    ahead = LeaseAhead(per_slot=3)
    for _ in range(RECENT):
        ahead.attempt(0.001)
    assert ahead.tasks(10) == 0  # no report has asked yet
    off = LeaseAhead(per_slot=0)
    for _ in range(RECENT):
        off.attempt(0.001)
    off.trip(0.01)
    assert off.tasks(10) == 0
