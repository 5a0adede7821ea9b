"""Several masters on one PostgreSQL catalog: any NOTIFY wakes long-polls; one master leads sweeps."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from packfleet.catalog import TASKS_CHANNEL
from packfleet.master._coordination import PostgresCoordination, libpq_url
from packfleet.master._wakeup import TASKS, LocalWakeups

pytestmark = pytest.mark.postgres


def test_the_libpq_url_drops_the_sqlalchemy_driver() -> None:
    assert libpq_url("postgresql+psycopg://u:p@127.0.0.1:5432/db") == "postgresql://u:p@127.0.0.1:5432/db"


async def test_a_notify_from_another_master_wakes_this_ones_long_polls(pg_url: str) -> None:
    wakeups = LocalWakeups()
    coordination = PostgresCoordination(pg_url, wakeups)
    await coordination.start()
    try:
        ticket = wakeups.ticket(TASKS)
        assert not await ticket.wait(0.2)  # nothing yet
        async with await psycopg.AsyncConnection.connect(libpq_url(pg_url), autocommit=True) as other:
            await other.execute("SELECT pg_notify(%s, '')", (TASKS_CHANNEL,))
        assert await ticket.wait(5.0)
    finally:
        await coordination.stop()


async def test_one_master_leads_and_another_takes_over_when_it_stops(pg_url: str) -> None:
    first = PostgresCoordination(pg_url, LocalWakeups())
    second = PostgresCoordination(pg_url, LocalWakeups())
    await first.start()
    await second.start()
    try:
        assert await first.lead()
        assert await first.lead()  # still the leader on the next tick
        assert not await second.lead()
        await first.stop()  # its connection ends, PostgreSQL releases the lock
        deadline = asyncio.get_running_loop().time() + 5
        while not await second.lead():
            assert asyncio.get_running_loop().time() < deadline, "the lock was never released"
            await asyncio.sleep(0.1)
    finally:
        await first.stop()
        await second.stop()


async def test_a_master_that_leads_does_not_block_another_ones_schema_upgrade(pg_url: str) -> None:
    from packfleet.catalog import Catalog

    leader = PostgresCoordination(pg_url, LocalWakeups())
    await leader.start()
    try:
        assert await leader.lead()
        # A second master starting (or `master init --from-node`) upgrades the schema under its own
        # advisory lock; it must not wait for the leader's.
        opened = await asyncio.wait_for(asyncio.to_thread(Catalog.open, pg_url, upgrade=True), timeout=30)
        opened.close()
    finally:
        await leader.stop()


async def test_a_task_notification_wakes_as_many_long_polls_as_it_counts_and_none_of_its_own(
    pg_url: str,
) -> None:
    wakeups = LocalWakeups()
    coordination = PostgresCoordination(pg_url, wakeups, origin="this-master")  # not started: no LISTEN

    async def parked() -> list[asyncio.Task[bool]]:
        waiting = []
        for _ in range(3):
            waiting.append(asyncio.create_task(wakeups.ticket(TASKS).wait(30)))
            await asyncio.sleep(0)
        return waiting

    waiting = await parked()
    coordination._notice(TASKS_CHANNEL, "this-master 1")  # this master woke its own already
    coordination._notice(TASKS_CHANNEL, "other-master 2")  # two tasks another master created
    await asyncio.sleep(0.05)
    assert [w.done() for w in waiting] == [True, True, False]
    coordination._notice(TASKS_CHANNEL, "")  # an older master, or a sweep: every long-poll looks
    assert await asyncio.wait_for(waiting[2], 1) is True
    waiting = await parked()
    coordination._notice(TASKS_CHANNEL, "other-master")
    assert await asyncio.wait_for(asyncio.gather(*waiting), 1) == [True, True, True]
