"""MaxTaskCount's slots: taken in the order asked, handed on when freed or when a waiter is
cancelled, sized by the settings of the moment; and what counts as a run of short attempts."""

from __future__ import annotations

import asyncio

import pytest

from packfleet.worker._slots import RECENT_ATTEMPTS, AttemptLengths, Slots


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


async def test_a_larger_size_read_at_the_next_take() -> None:
    size = 1
    slots = Slots(lambda: size)
    await slots.take()
    size = 2  # a reload raised MaxTaskCount
    await asyncio.wait_for(slots.take(), 5)
    assert slots.taken == 2


def test_attempts_are_short_when_the_median_of_the_last_ones_is_under_the_bound() -> None:
    lengths = AttemptLengths(short_below=0.1)
    for _ in range(RECENT_ATTEMPTS - 1):
        lengths.add(0.001)
    assert not lengths.short  # too few to tell
    lengths.add(0.001)
    assert lengths.short
    for _ in range(RECENT_ATTEMPTS // 2 - 1):
        lengths.add(5.0)
    assert lengths.short  # a few long ones among short ones
    lengths.add(5.0)
    assert not lengths.short  # half of the last ones long: the median is long
    assert not AttemptLengths(short_below=0.0).short  # off
