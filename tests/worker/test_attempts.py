"""Leases are (task, attempt): an old attempt never touches a new one, an expired lease never starts."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from packfleet.config import WorkerSettings
from packfleet.protocol import LeaseRef, TaskHeartbeatReply, encode
from packfleet.worker._attempts import lease_deadline, master_clock
from packfleet.worker._taskbeat import Running, TaskBeat

from .conftest import DemoProject, MakeAgent, Pki, write_home
from .helpers import eventually
from .stubmaster import StubMaster
from .test_tasks import alive


def says(stub: StubMaster, task_id: int, attempt: int, message: str) -> bool:
    return any(e.message == message for e in stub.lines(task_id, attempt))


def pid_of(stub: StubMaster, task_id: int, attempt: int) -> int:
    for event in stub.lines(task_id, attempt):
        if "started in process" in event.message:
            return int(event.message.split("started in process ")[1].split()[0])
    raise AssertionError(f"task {task_id} attempt {attempt} reported no start")


async def test_a_new_attempt_stops_the_old_one_first_and_the_old_ones_end_never_touches_it(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    agent = await make_agent(home)
    serving = asyncio.ensure_future(agent.run(install_signals=False))
    try:
        stub.add(demo.task(1, "sleep", attempt=1, seconds=60))
        await eventually(lambda: says(stub, 1, 1, "sleeping"), what="attempt 1 runs")
        old_pid = pid_of(stub, 1, 1)

        # The master requeued the task (a partition hid attempt 1's heartbeats) and gives it back here.
        stub.add(demo.task(1, "sleep", attempt=2, seconds=2))
        await eventually(lambda: says(stub, 1, 2, "sleeping"), what="attempt 2 runs")
        assert not alive(old_pid), "attempt 1 still runs beside attempt 2"
        # Attempt 1 has ended and cleaned up; attempt 2 is still held and heartbeated.
        assert list(agent.running) == [(1, 2)]
        beats_before = len(stub.task_beats)
        await eventually(lambda: len(stub.task_beats) > beats_before + 2, what="more task heartbeats")
        assert stub.task_beats[-1].leases == [LeaseRef(1, 2)]

        await eventually(lambda: stub.completions, timeout=30, what="attempt 2's report")
    finally:
        agent.stop()
        await asyncio.wait_for(serving, 30)

    assert stub.completions[0].attempt == 2 and stub.completions[0].outcome == "succeeded"
    assert "woke up" in [e.message for e in stub.lines(1, 2)]
    assert "woke up" not in [e.message for e in stub.lines(1, 1)]
    # Never in parallel: attempt 2's package started after attempt 1's had ended.
    ended_1 = max(e.time for e in stub.lines(1, 1))
    started_2 = min(e.time for e in stub.lines(1, 2) if "started in process" in e.message)
    assert started_2 >= ended_1
    # Each attempt ran in its own folder.
    root = agent.settings.tasks_root(home)
    assert (root / "1001-1" / "task.log").exists() and (root / "1001-2" / "task.log").exists()


async def test_a_new_attempt_waits_in_real_time_for_an_old_one_slow_to_stop(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    """The agent's sleep is shrunk to milliseconds here; the old package's half second is not."""
    agent = await make_agent(home)
    serving = asyncio.ensure_future(agent.run(install_signals=False))
    try:
        stub.add(demo.task(1, "slow_stop", attempt=1, linger=0.5))
        await eventually(lambda: says(stub, 1, 1, "sleeping"), what="attempt 1 runs")
        old_pid = pid_of(stub, 1, 1)
        stub.add(demo.task(1, "hello", attempt=2))
        await eventually(lambda: stub.completions, timeout=30, what="attempt 2's report")
        assert not alive(old_pid)
    finally:
        agent.stop()
        await asyncio.wait_for(serving, 30)

    assert [(c.attempt, c.outcome) for c in stub.completions] == [(2, "succeeded")]
    assert says(stub, 1, 1, "stopping")
    ended_1 = max(e.time for e in stub.lines(1, 1))
    started_2 = min(e.time for e in stub.lines(1, 2) if "started in process" in e.message)
    assert started_2 >= ended_1


async def test_an_attempt_older_than_one_held_is_not_started(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    agent = await make_agent(home)
    serving = asyncio.ensure_future(agent.run(install_signals=False))
    try:
        stub.add(demo.task(1, "sleep", attempt=3, seconds=60))
        await eventually(lambda: says(stub, 1, 3, "sleeping"), what="attempt 3 runs")
        stub.add(demo.task(1, "hello", attempt=2))  # a stale assignment arriving late
        await eventually(lambda: not stub.queue and (1, 2) not in agent.running, what="attempt 2 dropped")
        assert stub.lines(1, 2) == [] or all("started in process" not in e.message for e in stub.lines(1, 2))
        assert alive(pid_of(stub, 1, 3))
    finally:
        agent.stop()
        await asyncio.wait_for(serving, 30)


async def test_lost_and_cancel_answers_for_an_old_attempt_leave_the_new_one_alone(demo: DemoProject) -> None:
    new = Running(demo.task(7, "hello", attempt=2))
    running = {(7, 2): new}
    answers = [TaskHeartbeatReply(extended=[], cancel=[LeaseRef(7, 1)], lost=[LeaseRef(7, 1)])]

    async def post(_path: str, _body: Any) -> Any:
        return encode(answers.pop(0))

    beat = TaskBeat(
        running,
        post,
        lambda: WorkerSettings(agent_id="a"),
        spawn=lambda coro: coro.close(),
        cancel_grace=1.0,
        clock=lambda: 100.0,
    )
    await beat.beat()
    assert new.cancel_reason is None
    # And the answer for the attempt held does act on it, extending its local lease deadline.
    answers.append(TaskHeartbeatReply(extended=[LeaseRef(7, 2)], cancel=[], lost=[]))
    new.deadline = 0.0
    await beat.beat()
    assert new.cancel_reason is None and new.deadline == 100.0 + 60.0
    answers.append(TaskHeartbeatReply(extended=[], cancel=[], lost=[LeaseRef(7, 2)]))
    await beat.beat()
    assert new.cancel_reason == "lost"


async def test_an_assignment_whose_lease_expired_in_transit_is_never_started(
    tmp_path: Path,
    pki: Pki,
    stub: StubMaster,
    demo: DemoProject,
    make_agent: MakeAgent,
    caplog: pytest.LogCaptureFixture,
) -> None:
    home = write_home(tmp_path / "w", pki, stub.endpoint, lease_interval=timedelta(seconds=1))
    stub.lease_delay = 1.5  # the answer arrives after the 1 s lease it carries has run out
    stub.task_beat_script = ["503"] * 1000  # and no task heartbeat gets through to renew it
    stub.add(demo.task(1, "hello"))
    agent = await make_agent(home)
    with caplog.at_level(logging.WARNING, logger="packfleet.worker"):
        await asyncio.wait_for(agent.run(burst=True), 30)

    assert stub.completions == []
    assert all("started in process" not in e.message for e in stub.lines(1))
    assert "lease expired before the package started" in caplog.text
    assert agent.cache.idle


def test_a_long_polled_lease_runs_from_the_masters_answer_on_the_workers_clock(
    demo: DemoProject,
) -> None:
    task = dataclasses.replace(demo.task(1, "hello"), lease_expires_at="2030-01-01T01:00:30+00:00")
    master_now = datetime(2030, 1, 1, 1, 0, 0, tzinfo=UTC).timestamp()
    # The worker's clock is an hour behind the master's; the heartbeat took 0.2 s there and back.
    worker_now = master_now - 3600
    clock = master_clock(worker_now - 0.2, worker_now, "2030-01-01T00:59:59.900000+00:00")
    assert clock is not None
    offset, error = clock
    assert offset == pytest.approx(3600.0) and error == pytest.approx(0.1)
    # Sent 20 s ago (a long-poll), for 4 s: the master's expiry, translated, is the later bound.
    deadline = lease_deadline(task, worker_now - 20, 4.0, clock)
    assert deadline == pytest.approx(worker_now + 30 - 0.1)
    # Without a reading of the master's clock, only what the worker knows counts.
    assert lease_deadline(task, worker_now - 20, 4.0, None) == worker_now - 16
    assert master_clock(0, 1, "not a time") is None
