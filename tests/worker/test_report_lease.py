"""Under load a report asks for the slots its pass frees: the next tasks come in its answer, one
ask is out at a time, an idle worker's report asks nothing, and an older master that refuses the
ask gets the same report again without it. Under load a busy worker also leases tasks ahead of its
slots, as many as they end during a report's round trip; they wait for a slot, so never more than
MaxTaskCount attempts run at once."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from packfleet.errors import ApiError
from packfleet.protocol import CompletionReport, TaskAssignment, encode, routes
from packfleet.worker import LogCache, WorkerAgent
from packfleet.worker._leasing import ReportAsk
from packfleet.worker._reporter import Reporter
from packfleet.worker._slots import RECENT

from .conftest import FAST, DemoProject, MakeAgent
from .helpers import eventually
from .stubmaster import StubMaster

TIME = "2024-01-01T00:00:00+00:00"


@asynccontextmanager
async def _serving(agent: WorkerAgent) -> AsyncIterator[None]:
    """The agent serves (as ``worker run``) inside the block, and has stopped after it."""
    serving = asyncio.ensure_future(agent.run(install_signals=False))
    try:
        yield
    finally:
        agent.stop()
        await asyncio.wait_for(serving, 20)


async def _serve_until_done(agent: WorkerAgent, stub: StubMaster, count: int) -> tuple[int, int]:
    """Serve until ``count`` tasks completed; the most leases held and attempts run at once."""
    held = ran = 0
    hold, take = agent.tasks.hold, agent.tasks.slots.take

    def counted(task: TaskAssignment, deadline: float) -> None:
        nonlocal held
        hold(task, deadline)
        held = max(held, len(agent.tasks.running))

    async def taken() -> None:
        nonlocal ran
        await take()
        ran = max(ran, agent.tasks.slots.taken)

    agent.tasks.hold = counted  # type: ignore[method-assign]
    agent.tasks.slots.take = taken  # type: ignore[method-assign]
    async with _serving(agent):
        await eventually(lambda: len(stub.completions) == count, timeout=60, what=f"{count} completions")
    return held, ran


async def _all_succeed(
    agent: WorkerAgent, stub: StubMaster, demo: DemoProject, caplog: pytest.LogCaptureFixture, count: int
) -> tuple[int, int]:
    """Serve ``count`` quick tasks, all of which succeed, no lease given up (:func:`_serve_until_done`)."""
    stub.add(*(demo.task(task_id, "hello", lines=1) for task_id in range(1, count + 1)))
    with caplog.at_level(logging.INFO, logger="packfleet.worker"):
        held, ran = await _serve_until_done(agent, stub, count)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no lease given up
    assert sorted(c.task_id for c in stub.completions) == list(range(1, count + 1))
    assert all(c.outcome == "succeeded" for c in stub.completions)
    return held, ran


#: Leasing ahead off.
NOT_AHEAD = dataclasses.replace(FAST, lease_ahead_per_slot=0)


async def test_a_busy_worker_takes_its_next_tasks_with_its_reports_never_more_than_its_slots(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    agent = await make_agent(home, sleep=asyncio.sleep, timing=NOT_AHEAD)
    held, ran = await _all_succeed(agent, stub, demo, caplog, 40)
    assert stub.report_asks and stub.report_leased > 0  # reports carried some of the tasks
    assert held == ran == agent.settings.max_task_count  # the loop's ask and a report's never overlap
    assert all(0 < asked <= agent.settings.max_task_count for asked in stub.report_asks)
    assert stub.duplicates == 0


async def test_a_busy_worker_with_short_tasks_leases_ahead_and_still_runs_no_more_than_its_slots(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    agent = await make_agent(home, sleep=asyncio.sleep)
    slots = agent.settings.max_task_count
    # As many as the estimate allows, whatever this machine's speed makes of the tasks' length.
    agent.tasks.ahead.tasks = lambda slots: slots  # type: ignore[method-assign]
    held, ran = await _all_succeed(agent, stub, demo, caplog, 80)
    assert ran == slots  # the tasks leased ahead waited for a slot
    assert slots < held <= 2 * slots  # the first ask already asked for tasks ahead
    assert all(0 < asked <= 2 * slots for asked in stub.report_asks)
    assert stub.duplicates == 0


async def test_a_worker_leases_ahead_only_while_the_master_has_more_and_its_tasks_are_short(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    agent = await make_agent(home, timing=dataclasses.replace(FAST, lease_ahead_per_slot=1))
    slots = agent.settings.max_task_count
    leases, ahead = agent.leases, agent.tasks.ahead
    leases._serving = True  # as `worker run` does
    for _ in range(RECENT):
        ahead.attempt(0.001)
    assert leases._room() == slots  # no report has asked yet: no round trip known
    ahead.trip(0.05)
    assert leases._room() == 2 * slots  # 500 tasks end during a round trip: at most MaxTaskCount
    leases.drained = True  # the master's queue emptied: the next task is not held from another worker
    assert leases._room() == slots
    leases.drained = False
    for _ in range(9):
        ahead.attempt(2.0)  # tasks turned long: the slots stay busy through a round trip
    assert leases._room() == slots
    leases._serving = False  # a burst asks for its free slots only
    for _ in range(RECENT):
        ahead.attempt(0.001)
    assert leases._room() == slots


async def test_a_reports_answered_ask_is_a_round_trip_the_estimate_uses(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    agent = await make_agent(home, timing=dataclasses.replace(FAST, lease_ahead_per_slot=1))
    await agent.heartbeat()  # the master says it is enabled: the gate opens
    leases = agent.leases
    leases._serving = True
    for _ in range(RECENT):
        agent.tasks.ahead.attempt(1e-9)  # so short that any round trip covers MaxTaskCount of them
    ask = await leases.ask_in_report()
    assert ask is not None and ask.capacity == agent.settings.max_task_count  # none known yet
    assert agent.tasks.ahead.tasks(ask.capacity) == 0
    leases.answered(ask, [], heartbeat_now=False)
    assert agent.tasks.ahead.tasks(ask.capacity) == ask.capacity  # its round trip is known now


async def test_an_idle_workers_report_asks_for_nothing_nor_while_its_long_poll_is_out(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    agent = await make_agent(home, sleep=asyncio.sleep)
    async with _serving(agent):
        await eventually(lambda: stub.leases, what="a long-poll waiting at the master")
        # Not after the long-poll's answer: at once, and nothing.
        assert await asyncio.wait_for(agent.leases.ask_in_report(), 0.05) is None
        stub.add(demo.task(1, "hello", lines=2))  # one task, to a waiting long-poll: nothing more ready
        await eventually(lambda: stub.completions, what="its completion")
        await eventually(lambda: len(stub.leases) >= 2, what="the next long-poll")
    assert stub.report_asks == []  # its round trip carries no lease
    assert await agent.leases.ask_in_report() is None  # stopped: not serving


async def test_a_master_that_refuses_the_ask_gets_the_report_without_it_and_leases_still_come(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    stub.knows_report_lease = False  # a master before ReportBatch.lease_capacity
    agent = await make_agent(home, sleep=asyncio.sleep)
    stub.add(*(demo.task(task_id, "hello", lines=2) for task_id in range(1, 21)))
    with caplog.at_level(logging.INFO, logger="packfleet.worker"):
        held, ran = await _serve_until_done(agent, stub, 20)
    assert len(stub.report_asks) == 1  # refused once, then not asked again for a while
    assert "refused a report that asked for tasks" in caplog.text
    for task_id in range(1, 21):  # nothing lost to the refusal
        assert [e.message for e in stub.lines(task_id) if e.source == "stdout"] == ["line 0", "line 1"]
    assert ran <= agent.settings.max_task_count and held <= 2 * agent.settings.max_task_count


class Asks:
    """The lease loop's side, recorded: one ask, then what the reporter said of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.leased: list[TaskAssignment] = []

    async def ask_in_report(self) -> ReportAsk | None:
        self.calls.append("ask")
        return ReportAsk(capacity=3, lease_seconds=60.0, sent=0.0) if self.calls.count("ask") == 1 else None

    def answered(self, ask: ReportAsk, leased: list[TaskAssignment], heartbeat_now: bool) -> None:
        self.calls.append("answered")
        self.leased = leased
        ask.settled = True

    def refused(self, ask: ReportAsk) -> None:
        self.calls.append("refused")
        ask.settled = True

    def settle(self, ask: ReportAsk) -> None:
        self.calls.append("settle" if ask.settled else "unanswered")
        ask.settled = True


def _reporter(tmp_path: Path, send: Any) -> tuple[Reporter, Asks]:
    cache = LogCache(tmp_path)
    cache.load()
    cache.open_attempt(execution_id=101, task_id=1, attempt=1)
    cache.append(1, 1, time=TIME, level=20, source="stdout", message="line")
    cache.finish(1, 1, CompletionReport(task_id=1, attempt=1, outcome="succeeded"))
    asks = Asks()
    reporter = Reporter(
        cache,
        send,
        agent_id="a",
        max_buffer=100,
        retry_count=3,
        retry_timeout=3600.0,
        clock=lambda: 0.0,
        asks=asks,
    )
    return reporter, asks


async def test_a_report_that_fails_gives_its_ask_back_unanswered(tmp_path: Path) -> None:
    async def send(path: str, body: Any) -> Any:
        raise ApiError("the master is restarting", status=503)

    reporter, asks = _reporter(tmp_path, send)
    assert not await reporter.report()
    assert asks.calls == ["ask", "unanswered"]  # the lease loop asks on its own meanwhile
    assert reporter.cache.pending_completions() or not reporter.cache.idle  # kept for the next pass


async def test_a_400_to_a_report_that_asked_sends_it_again_without_the_ask(tmp_path: Path) -> None:
    bodies: list[dict[str, Any]] = []

    async def send(path: str, body: Any) -> Any:
        bodies.append(body)
        if "lease_capacity" in body:
            raise ApiError("ReportBatch: unknown field(s) lease_capacity, lease_seconds", status=400)
        results = [{"task_id": r["task_id"], "accepted": True, "stale": False} for r in body["reports"]]
        return {"acknowledged": len(body["events"]), "stored": len(body["events"]), "results": results}

    reporter, asks = _reporter(tmp_path, send)
    assert await reporter.report()
    assert [("lease_capacity" in b, len(b["events"]), len(b["reports"])) for b in bodies] == [
        (True, 1, 1),
        (False, 1, 1),
    ]
    assert bodies[0]["lease_capacity"] == 3 and bodies[0]["lease_seconds"] == 60.0
    assert asks.calls == ["ask", "refused", "settle"]
    assert reporter.cache.idle


async def test_the_tasks_a_report_was_answered_with_go_to_the_lease_loop(
    tmp_path: Path, demo: DemoProject
) -> None:
    task = demo.task(7, "hello")

    async def send(path: str, body: Any) -> Any:
        assert path == routes.WORKER_REPORT
        return {"acknowledged": 1, "stored": 1, "results": [], "tasks": [encode(task)]}

    reporter, asks = _reporter(tmp_path, send)
    await reporter.report()
    assert asks.calls[:2] == ["ask", "answered"] and asks.leased == [task]
    assert asks.calls[2:] == ["settle"]  # answered: nothing more to give back


async def test_the_loop_asks_itself_when_the_report_it_waits_for_does_not_come(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    agent = await make_agent(home, sleep=asyncio.sleep)
    # An attempt left open in the cache with nothing running and nothing to send: the loop would
    # wait for a report that never asks.
    agent.cache.open_attempt(execution_id=1001, task_id=1, attempt=1)
    async with _serving(agent):
        await eventually(lambda: stub.leases, timeout=5, what="a lease request after gate_poll")
        stub.add(demo.task(2, "hello", lines=1))
        await eventually(lambda: stub.completions, what="the task it leased")
