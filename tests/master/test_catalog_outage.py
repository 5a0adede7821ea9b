"""The master measures a catalog outage from the last call that reached the database."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from packfleet.errors import CatalogUnavailable, NotFound
from packfleet.master._state import MasterState


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(tmp_path: Path, clock: Clock) -> Iterator[MasterState]:
    executor = ThreadPoolExecutor(max_workers=1)
    parts: Any = None  # only the executor and the clock take part in MasterState.db
    yield MasterState(tmp_path, parts, executor, parts, parts, parts, clock, parts)
    executor.shutdown(wait=True)


def _down() -> None:
    raise CatalogUnavailable("cannot use the catalog database")


def _missing() -> None:
    raise NotFound("no execution 7")


async def test_an_outage_counts_from_the_last_call_that_reached_the_catalog(
    state: MasterState, clock: Clock
) -> None:
    assert await state.db(lambda: 1) == 1
    last_ok = clock.now
    clock.now += timedelta(seconds=5)
    for _ in range(3):
        with pytest.raises(CatalogUnavailable):
            await state.db(_down)
        clock.now += timedelta(seconds=10)
    await state.db(lambda: 2)  # back
    assert state.take_catalog_outage() == clock.now - last_ok
    assert state.take_catalog_outage() is None  # made up for once


async def test_a_refusal_of_the_catalog_is_not_an_outage(state: MasterState) -> None:
    await state.db(lambda: 1)
    with pytest.raises(NotFound):
        await state.db(_missing)
    assert state.take_catalog_outage() is None


async def test_a_master_that_does_not_sweep_forgets_an_ended_outage_but_not_a_running_one(
    state: MasterState, clock: Clock
) -> None:
    await state.db(lambda: 1)
    with pytest.raises(CatalogUnavailable):
        await state.db(_down)
    state.forget_ended_outage()
    assert state.catalog_lost_since is not None  # still down: kept
    clock.now += timedelta(seconds=1)
    await state.db(lambda: 1)
    state.forget_ended_outage()
    assert state.take_catalog_outage() is None
