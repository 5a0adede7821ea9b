"""Batching under load: a busy worker leases several freed slots at once, and the reporter
group-commits what packages write while a request is in flight instead of backing off."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from packfleet.errors import ApiError
from packfleet.protocol import CompletionReport, EventMessage, decode, encode, routes
from packfleet.worker import LogCache
from packfleet.worker._leasing import REPORT_HOLD
from packfleet.worker._reporter import Reporter

from .conftest import FAST, DemoProject, MakeAgent
from .helpers import journal


async def never(_seconds: float) -> None:
    """A sleep that only ends by cancellation: the code under test must be woken by events."""
    await asyncio.Event().wait()


async def test_an_idle_worker_leases_at_once(home: Path, demo: DemoProject, make_agent: MakeAgent) -> None:
    agent = await make_agent(home, sleep=never, timing=dataclasses.replace(FAST, lease_linger=30.0))
    await asyncio.wait_for(agent.leases.gather_slots(), 5)  # no running task: no linger at all


async def test_a_busy_worker_waits_for_half_its_slots_before_leasing(
    home: Path, demo: DemoProject, make_agent: MakeAgent
) -> None:
    agent = await make_agent(home, sleep=never, timing=dataclasses.replace(FAST, lease_linger=30.0))
    slots = agent.settings.max_task_count
    for task_id in range(slots):
        agent.tasks.hold(demo.task(task_id, "hello"), deadline=float("inf"))
    gathering = asyncio.ensure_future(agent.leases.gather_slots())

    agent.running.pop((0, 1))  # one task ends: not yet worth a lease request
    agent.events.wake_lease.set()  # as a finished attempt does
    for _ in range(5):
        await asyncio.sleep(0)
    assert not gathering.done()

    for task_id in range(1, slots // 2):
        agent.running.pop((task_id, 1))
        agent.events.wake_lease.set()
        await asyncio.sleep(0)
    await asyncio.wait_for(gathering, 5)
    assert agent.capacity == slots // 2


async def test_the_linger_is_bounded_when_no_slot_frees(
    home: Path, demo: DemoProject, make_agent: MakeAgent
) -> None:
    waited: list[float] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)

    # The hold after an emptying answer has its own, shorter bound: not this one.
    timing = dataclasses.replace(FAST, lease_linger=0.004, hold_back=0.001)
    agent = await make_agent(home, sleep=record, timing=timing)
    for task_id in range(agent.settings.max_task_count):
        agent.tasks.hold(demo.task(task_id, "hello"), deadline=float("inf"))
    await asyncio.wait_for(agent.leases.gather_slots(), 5)
    assert waited and all(0 < seconds <= 0.004 for seconds in waited)
    assert len(waited) <= agent.settings.max_task_count // 2


async def test_after_starting_a_task_the_next_lease_waits_for_its_end_and_its_report(
    home: Path, demo: DemoProject, make_agent: MakeAgent
) -> None:
    agent = await make_agent(home, sleep=never, timing=dataclasses.replace(FAST, hold_back=30.0))
    agent.leases.drained = True  # the master had no more tasks ready
    agent.tasks.hold(demo.task(1, "hello"), deadline=float("inf"))
    agent.cache.open_attempt(execution_id=101, task_id=1, attempt=1)  # its report is not delivered
    holding = asyncio.ensure_future(agent.leases._hold_back(burst=False))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not holding.done()  # the task runs

    agent.running.pop((1, 1))
    agent.events.wake_lease.set()  # as the attempt's end does
    for _ in range(10):
        await asyncio.sleep(0)
    assert not holding.done()  # its report has not gone out yet

    agent.cache.finish(1, 1, None)  # everything delivered: nothing is left in the cache
    agent.events.reported.set()  # as the report pass that delivered it does
    await asyncio.wait_for(holding, 5)


async def test_a_report_pass_that_delivered_everything_says_so(
    home: Path, demo: DemoProject, make_agent: MakeAgent
) -> None:
    agent = await make_agent(home)
    agent.events.reported.clear()
    reporting = asyncio.ensure_future(agent.reporting.run())
    try:
        await asyncio.wait_for(agent.events.reported.wait(), 5)
    finally:
        reporting.cancel()
        await asyncio.gather(reporting, return_exceptions=True)


async def test_holding_a_lease_back_is_bounded_and_only_when_the_master_has_no_more(
    home: Path, demo: DemoProject, make_agent: MakeAgent
) -> None:
    waited: list[float] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)

    # A busy worker's linger for freed slots is longer; it is not what holds this request back.
    timing = dataclasses.replace(FAST, lease_linger=0.008, hold_back=0.004)
    agent = await make_agent(home, sleep=record, timing=timing)
    agent.tasks.hold(demo.task(1, "hello"), deadline=float("inf"))
    agent.leases.drained = False  # the answer was full: the master may have more ready
    await asyncio.wait_for(agent.leases._hold_back(burst=False), 5)
    assert waited == []
    agent.leases.drained = True
    await asyncio.wait_for(agent.leases._hold_back(burst=True), 5)
    assert waited == []
    await asyncio.wait_for(agent.leases._hold_back(burst=False), 5)
    assert waited == [0.004]


async def test_the_wait_for_an_ended_tasks_report_outlasts_the_linger_and_is_bounded(
    home: Path, demo: DemoProject, make_agent: MakeAgent
) -> None:
    waited: list[float] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)
        await asyncio.sleep(seconds)  # really: the hold's deadline is the loop's clock

    agent = await make_agent(home, sleep=record, timing=dataclasses.replace(FAST, hold_back=0.004))
    agent.leases.drained = True
    agent.cache.open_attempt(execution_id=101, task_id=1, attempt=1)  # ended, its report not delivered
    await asyncio.wait_for(agent.leases._hold_back(burst=False), 5)
    assert waited[0] == 0.004  # for the task's end (it has ended: nothing runs)
    # Then for its report: a report's round trip takes longer than the linger.
    assert waited[1] > 0.004
    assert all(seconds <= REPORT_HOLD for seconds in waited[1:])


async def test_a_lease_answer_with_fewer_tasks_than_asked_says_the_master_is_drained(
    home: Path, demo: DemoProject, make_agent: MakeAgent
) -> None:
    agent = await make_agent(home, sleep=never)
    capacity = agent.capacity
    answers = [[demo.task(task_id, "hello") for task_id in range(capacity)], [demo.task(100, "hello")]]

    async def post(path: str, body: Any, *, timeout: float | None = None) -> Any:
        return {"tasks": [encode(task) for task in answers.pop(0)]}

    agent.link.post = post  # type: ignore[method-assign]
    agent.link.state = "enabled"
    assert len(await agent.leases.lease(wait_seconds=0.0)) == capacity
    assert not agent.leases.drained
    agent.running.clear()
    assert len(await agent.leases.lease(wait_seconds=0.0)) == 1
    assert agent.leases.drained


async def test_records_written_during_a_send_go_in_the_next_pass_not_a_backoff(tmp_path: Path) -> None:
    cache = LogCache(tmp_path)
    cache.load()
    cache.open_attempt(execution_id=101, task_id=1, attempt=1)
    sent: list[list[int]] = []

    def write(message: str) -> None:
        cache.append(1, 1, time="2024-01-01T00:00:00+00:00", level=20, source="stdout", message=message)

    async def send(path: str, body: Any) -> Any:
        assert path == routes.WORKER_REPORT
        events = [decode(EventMessage, e) for e in body["events"]]
        sent.append([e.seq for e in events])
        write("written while the request was in flight")
        return {"acknowledged": len(events), "stored": len(events)}

    reporter = Reporter(
        cache, send, agent_id="a", max_buffer=100, retry_count=3, retry_timeout=3600.0, clock=lambda: 0.0
    )
    write("first")
    assert await reporter.report()  # a success although a new event waits: no backoff
    assert sent == [[1]]
    assert cache.waiting_events == 1
    assert await reporter.report()
    assert sent == [[1], [2]]


@pytest.mark.parametrize("together", [True, False], ids=["together", "apart"])
async def test_an_event_and_a_report_are_in_the_journal_before_they_are_sent(
    tmp_path: Path, together: bool
) -> None:
    cache = LogCache(tmp_path)
    cache.load()
    cache.open_attempt(execution_id=101, task_id=1, attempt=1)
    cache.append(1, 1, time="2024-01-01T00:00:00+00:00", level=20, source="stdout", message="on disk")
    cache.finish(1, 1, CompletionReport(task_id=1, attempt=1, outcome="succeeded", exit_code=0, message=""))
    seen: list[str] = []
    accepted = {"results": [{"task_id": 1, "accepted": True, "stale": False}]}

    async def send(path: str, body: Any) -> Any:
        # What a kill -9 right now would leave for the next agent to replay.
        replay = LogCache(tmp_path)
        replay.load()
        replay.close()
        if path == routes.WORKER_REPORT:
            seen.append("report")
            if not together:
                raise ApiError("no such route", status=404)
            assert [e.message for e in replay.pending_events(10)] == ["on disk"]
            assert [r.task_id for r in replay.completions_with(replay.pending_events(10))] == [1]
            return {"acknowledged": 1, "stored": 1, **accepted}
        if path == routes.WORKER_EVENTS:
            seen.append("events")
            assert [e.message for e in replay.pending_events(10)] == ["on disk"]
            return {"acknowledged": 1, "stored": 1}
        seen.append("completions")
        assert [r.task_id for r in replay.pending_completions()] == [1]
        return accepted

    reporter = Reporter(
        cache, send, agent_id="a", max_buffer=100, retry_count=3, retry_timeout=3600.0, clock=lambda: 0.0
    )
    assert await reporter.report()
    assert seen == (["report"] if together else ["report", "events", "completions"])
    assert cache.idle
    cache.close()  # nothing pending: stopping deletes the journal
    assert journal(tmp_path) == []
