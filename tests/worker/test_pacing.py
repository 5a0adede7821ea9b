"""The agent's one backoff and one pause: bounded, jittered, reset by success, cut short by events."""

from __future__ import annotations

import asyncio
import random

import pytest

from packfleet.worker._pacing import BACKOFF_CAP, BACKOFF_START, Backoff, Pause


def test_each_delay_lies_in_the_upper_half_of_its_exponential_step() -> None:
    backoff = Backoff(rng=random.Random(7))
    steps = [min(BACKOFF_CAP, BACKOFF_START * 2**n) for n in range(12)]
    for step in steps:
        delay = backoff.next()
        assert step / 2 <= delay <= step
    assert backoff.failures == len(steps)
    assert steps[-1] == BACKOFF_CAP  # bounded: a minute at most however long the master is away


def test_a_success_starts_over_from_the_first_step() -> None:
    backoff = Backoff(start=0.5, cap=4.0, rng=random.Random(1))
    for _ in range(5):
        backoff.next()
    assert backoff.step() == 4.0
    backoff.reset()
    assert backoff.failures == 0 and backoff.step() == 0.5
    assert 0.25 <= backoff.next() <= 0.5


def test_workers_that_fail_together_do_not_retry_in_step() -> None:
    # A fleet that lost its master at one moment: without jitter each would retry at the same instants.
    delays = {round(Backoff().next(), 6) for _ in range(20)}
    assert len(delays) > 1


def test_a_backoff_that_could_not_be_bounded_is_refused() -> None:
    with pytest.raises(ValueError, match="0 < start <= cap"):
        Backoff(start=5.0, cap=1.0)
    with pytest.raises(ValueError, match="0 < start <= cap"):
        Backoff(start=0.0)


async def test_a_pause_ends_at_the_first_event_or_when_stopping() -> None:
    stopping, woken = asyncio.Event(), asyncio.Event()
    pause = Pause(asyncio.sleep, stopping)
    waiting = asyncio.ensure_future(pause(3600.0, woken))
    await asyncio.sleep(0)
    assert not waiting.done()
    woken.set()
    await asyncio.wait_for(waiting, 5)

    stopping.set()
    await asyncio.wait_for(pause(3600.0), 5)  # stopping cuts every pause short


async def test_until_done_returns_when_the_tasks_end_or_the_time_is_up() -> None:
    pause = Pause(asyncio.sleep, asyncio.Event())
    gate = asyncio.Event()
    task = asyncio.ensure_future(gate.wait())
    timing_out = asyncio.ensure_future(pause.until_done({task}, 0.05))
    await asyncio.wait_for(timing_out, 5)
    assert not task.done()  # the time was up first
    gate.set()
    await asyncio.wait_for(pause.until_done({task}, 3600.0), 5)
    assert task.done()
