"""A master that goes away: nothing is lost, nothing is stored twice, and a restart replays the cache."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from .conftest import DemoProject, MakeAgent, Pki, write_home
from .helpers import FakeClock, eventually, journal
from .stubmaster import StubMaster


def assert_complete_and_once(stub: StubMaster, task_id: int, lines: int) -> None:
    events = stub.lines(task_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.message for e in events if e.source == "stdout"] == [f"line {i}" for i in range(lines)]


async def test_events_survive_503s_and_cut_connections_exactly_once(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    stub.event_script = ["ok", "503", "cut", "503", "cut", "cut", "503", "ok", "cut"]
    stub.completion_script = ["503", "503"]
    stub.add(*(demo.task(i, "hello", lines=400) for i in (1, 2, 3)))
    agent = await make_agent(home)
    await agent.run(burst=True)

    assert not stub.event_script, "every scripted fault was met"
    assert stub.duplicates > 0, "a cut connection made the worker resend what the master had stored"
    for task_id in (1, 2, 3):
        assert_complete_and_once(stub, task_id, 400)
        assert stub.completion(task_id).outcome == "succeeded"
    assert agent.cache.idle


async def test_a_new_agent_replays_what_the_last_one_could_not_send(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    stub.event_script = ["503"] * 10_000
    stub.completion_script = ["503"] * 10_000
    stub.add(demo.task(1, "hello", lines=50), demo.task(2, "fail"))
    first = await make_agent(home)
    await first.heartbeat()
    leased = await first.lease(wait_seconds=0)
    assert [t.task_id for t in leased] == [1, 2]
    await asyncio.gather(*(first.execute(task) for task in leased))
    assert not await first.report()
    await first.close()  # the agent stops with everything unsent
    assert stub.events == {} and stub.completions == []
    assert [p.name for p in journal(first.cache.folder)] == ["journal-0000000001.jsonl"]

    stub.event_script.clear()
    stub.completion_script.clear()
    second = await make_agent(home)
    await second.run(burst=True)

    assert_complete_and_once(stub, 1, 50)
    assert stub.completion(1).outcome == "succeeded"
    assert stub.completion(2).outcome == "failed"
    assert any("boom" in e.message for e in stub.lines(2))
    assert stub.duplicates == 0
    assert second.cache.idle
    await second.close()  # stopping with nothing pending deletes the journal
    assert not journal(second.cache.folder)


async def test_events_still_undelivered_after_the_retry_timeout_are_dropped(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent, pki: Pki
) -> None:
    write_home(
        home,
        pki,
        stub.endpoint,
        execution_log_retry_count=2,
        execution_log_retry_timeout=timedelta(hours=1),
    )
    stub.add(demo.task(1, "hello", lines=3))
    clock = FakeClock()
    agent = await make_agent(home, clock=clock)
    await agent.heartbeat()
    (task,) = await agent.lease(wait_seconds=0)
    await agent.execute(task)
    stub.event_script = ["503"] * 10_000
    clock.now = 4_000_000_000.0  # long after the events were written: past the retry timeout
    assert not await agent.report()  # first failure: below ExecutionLogRetryCount, kept
    assert agent.cache.waiting_events > 0
    assert not await agent.report()  # second failure: both limits passed, dropped
    assert agent.cache.waiting_events == 0
    stub.event_script.clear()
    assert await agent.report()
    assert stub.events == {}
    assert stub.completion(1).outcome == "succeeded"


async def test_tasks_are_given_up_when_task_heartbeats_fail_for_the_tolerance(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    clock = FakeClock()
    stub.add(demo.task(1, "sleep", seconds=60))
    agent = await make_agent(home, clock=clock)
    burst = asyncio.ensure_future(agent.run(burst=True))
    await eventually(lambda: any(e.message == "sleeping" for e in stub.lines(1)), what="the package runs")
    stub.task_beat_script = ["503"] * 10_000
    await eventually(lambda: agent.taskbeat.last_error != "", what="a failed task heartbeat")
    assert agent.running, "one failure within HeartbeatErrorTolerance changes nothing"
    clock.now += timedelta(minutes=10).total_seconds() + 1
    await asyncio.wait_for(burst, 15)

    assert stub.completions == []  # its lease is someone else's by now: no report
    assert any("canceled" in e.message for e in stub.lines(1))
    assert not agent.running
