"""One request per report pass: events and the completion reports they unblock go together, and a
master older than that route gets them apart, events first."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from packfleet.errors import ApiError
from packfleet.protocol import CompletionReport, routes
from packfleet.worker import AgentTiming, LogCache
from packfleet.worker._pacing import AgentEvents, Pause
from packfleet.worker._reporter import REPROBE_SECONDS, Reporter
from packfleet.worker._reporting import LINGER_CAP, ReportLoop

from .conftest import DemoProject, MakeAgent
from .helpers import FakeClock
from .stubmaster import StubMaster

TIME = "2024-01-01T00:00:00+00:00"


def _cache(tmp_path: Path) -> LogCache:
    cache = LogCache(tmp_path)
    cache.load()
    return cache


def _run(cache: LogCache, task_id: int, lines: int, *, outcome: str = "succeeded") -> None:
    cache.open_attempt(execution_id=100 + task_id, task_id=task_id, attempt=1)
    for i in range(lines):
        cache.append(task_id, 1, time=TIME, level=20, source="stdout", message=f"{task_id}: line {i}")
    cache.finish(task_id, 1, CompletionReport(task_id=task_id, attempt=1, outcome=outcome))  # type: ignore[arg-type]


class Master:
    """A fake ``send``: keeps each request's path and body, answers as a master that stores all."""

    def __init__(self, *, knows_report: bool = True, stale: bool = False) -> None:
        self.knows_report = knows_report
        self.stale = stale
        self.requests: list[tuple[str, dict[str, Any]]] = []
        #: What the master holds, in arrival order: ("event", task, seq) and ("end", task).
        self.stored: list[tuple[Any, ...]] = []

    async def __call__(self, path: str, body: Any) -> Any:
        self.requests.append((path, body))
        if path == routes.WORKER_REPORT and not self.knows_report:
            raise ApiError("not found", status=404)
        events = body.get("events", [])
        reports = body.get("reports", [])
        self.stored += [("event", e["task_id"], e["seq"]) for e in events]
        self.stored += [("end", r["task_id"]) for r in reports]
        results = [
            {"task_id": r["task_id"], "accepted": not self.stale, "stale": self.stale} for r in reports
        ]
        if path == routes.WORKER_EVENTS:
            return {"acknowledged": len(events), "stored": len(events)}
        if path == routes.WORKER_COMPLETE:
            return {"results": results}
        return {"acknowledged": len(events), "stored": len(events), "results": results}

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


def _reporter(cache: LogCache, send: Master, *, max_buffer: int = 100, clock: Any = None) -> Reporter:
    return Reporter(
        cache,
        send,
        agent_id="a",
        max_buffer=max_buffer,
        retry_count=3,
        retry_timeout=3600.0,
        clock=clock or (lambda: 0.0),
    )


def _ends_after_its_events(stored: list[tuple[Any, ...]]) -> None:
    """Each task's end is stored after every one of its events."""
    for at, item in enumerate(stored):
        if item[0] == "end":
            assert all(later[:2] != ("event", item[1]) for later in stored[at:]), stored


async def test_a_pass_sends_the_events_and_the_reports_they_unblock_in_one_request(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    _run(cache, 1, 3)
    _run(cache, 2, 2, outcome="failed")
    master = Master()
    assert await _reporter(cache, master).report()
    assert master.paths == [routes.WORKER_REPORT]
    [(_, body)] = master.requests
    assert [(e["task_id"], e["seq"]) for e in body["events"]] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
    assert [(r["task_id"], r["outcome"]) for r in body["reports"]] == [(1, "succeeded"), (2, "failed")]
    assert cache.idle


async def test_a_report_waits_for_the_request_that_carries_its_last_event(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    _run(cache, 1, 5)
    _run(cache, 2, 1)
    master = Master()
    assert await _reporter(cache, master, max_buffer=2).report()
    carried = [
        ([(e["task_id"], e["seq"]) for e in body["events"]], [r["task_id"] for r in body["reports"]])
        for _, body in master.requests
    ]
    assert carried == [
        ([(1, 1), (1, 2)], []),
        ([(1, 3), (1, 4)], []),
        ([(1, 5), (2, 1)], [1, 2]),
    ]
    _ends_after_its_events(master.stored)
    assert cache.idle


async def test_a_report_whose_events_were_all_acknowledged_goes_alone(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    cache.open_attempt(execution_id=101, task_id=1, attempt=1)
    cache.append(1, 1, time=TIME, level=20, source="stdout", message="running")
    master = Master()
    reporter = _reporter(cache, master)
    assert await reporter.report()
    cache.finish(1, 1, CompletionReport(task_id=1, attempt=1, outcome="succeeded"))
    assert await reporter.report()
    assert [(len(b["events"]), len(b["reports"])) for _, b in master.requests] == [(1, 0), (0, 1)]
    assert cache.idle


def test_completions_with_needs_every_unacknowledged_event_of_the_attempt(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    _run(cache, 1, 4)
    cache.sync()
    batch = cache.pending_events(10)
    assert cache.pending_completions() == []  # nothing acknowledged yet
    assert [r.task_id for r in cache.completions_with(batch)] == [1]
    assert cache.completions_with(batch[:3]) == []  # the last event is not carried
    assert cache.completions_with([batch[0], batch[1], batch[3]]) == []  # nor is the third
    cache.acknowledge(batch[:2])
    assert [r.task_id for r in cache.completions_with(batch[2:])] == [1]


async def test_an_older_master_gets_events_then_reports_apart_and_is_not_asked_every_pass(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = _cache(tmp_path)
    clock = FakeClock()
    master = Master(knows_report=False)
    reporter = _reporter(cache, master, clock=clock)
    _run(cache, 1, 2)
    with caplog.at_level(logging.INFO, logger="packfleet.worker"):
        assert await reporter.report()
    assert master.paths == [routes.WORKER_REPORT, routes.WORKER_EVENTS, routes.WORKER_COMPLETE]
    assert "does not know /api/v1/worker/report" in caplog.text
    assert cache.idle

    _run(cache, 2, 1)
    clock.now += REPROBE_SECONDS - 1
    assert await reporter.report()
    assert master.paths[3:] == [routes.WORKER_EVENTS, routes.WORKER_COMPLETE]  # no probe

    master.knows_report = True  # upgraded meanwhile
    _run(cache, 3, 1)
    clock.now += 2
    assert await reporter.report()
    assert master.paths[5:] == [routes.WORKER_REPORT]
    _ends_after_its_events(master.stored)
    assert cache.idle


async def test_a_stale_report_sent_with_its_events_is_settled_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = _cache(tmp_path)
    _run(cache, 1, 1)
    master = Master(stale=True)
    with caplog.at_level(logging.INFO, logger="packfleet.worker"):
        assert await _reporter(cache, master).report()
    assert "report of task 1 attempt 1 stale" in caplog.text
    assert cache.idle


async def test_a_503_keeps_both_for_the_next_pass(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    _run(cache, 1, 2)
    failing = True

    async def send(path: str, body: Any) -> Any:
        if failing:
            raise ApiError("the master is restarting", status=503)
        return await master(path, body)

    master = Master()
    reporter = _reporter(cache, send)  # type: ignore[arg-type]
    assert not await reporter.report()
    assert reporter.failures == 1 and cache.waiting_events == 2 and not cache.idle
    failing = False
    assert await reporter.report()
    assert master.paths == [routes.WORKER_REPORT]
    assert cache.idle and reporter.failures == 0


@pytest.mark.parametrize("knows_report", [True, False], ids=["together", "older-master"])
async def test_a_worker_delivers_through_either_route(
    home: Path,
    stub: StubMaster,
    demo: DemoProject,
    make_agent: MakeAgent,
    knows_report: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="packfleet.worker")
    stub.knows_report = knows_report
    stub.add(*(demo.task(i, "hello", lines=20) for i in (1, 2, 3)))
    agent = await make_agent(home)
    await agent.run(burst=True)
    for task_id in (1, 2, 3):
        assert [e.seq for e in stub.lines(task_id)] == list(range(1, len(stub.lines(task_id)) + 1))
        assert stub.completion(task_id).outcome == "succeeded"
    if knows_report:
        assert stub.report_posts >= 1 and stub.event_posts == stub.completion_posts == 0
    else:
        # Counted by the reporter's fallbacks, not by the stub's requests: a loaded machine can
        # make the HTTP client send a request again on a fresh connection, which the stub counts.
        fallbacks = [r for r in caplog.records if "does not know" in r.getMessage()]
        assert len(fallbacks) == 1 and stub.report_posts >= 1, "an older master is asked once, not every pass"
        assert stub.event_posts >= 1 and stub.completion_posts >= 1
    assert agent.cache.idle


@pytest.mark.parametrize(
    ("busy", "last_pass", "waited"),
    [(True, 0.001, [0.005]), (True, 0.02, [0.02]), (True, 3.0, [LINGER_CAP]), (False, 0.02, [])],
    ids=["short-pass", "pass-length", "capped", "idle"],
)
async def test_a_busy_workers_linger_follows_the_last_pass(
    tmp_path: Path, busy: bool, last_pass: float, waited: list[float]
) -> None:
    """Shorter passes must not just mean more passes of fewer tasks each (make bench, throughput)."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    events = AgentEvents()
    loop = ReportLoop(
        _reporter(_cache(tmp_path), Master()),
        events=events,
        pause=Pause(sleep, events.stopping),
        timing=AgentTiming(report_linger=0.005),
        clock=lambda: 0.0,
        busy=lambda: busy,
    )
    loop.last_pass = last_pass
    await loop.linger()
    assert slept == waited
