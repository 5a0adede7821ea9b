"""A batch the master refuses as a whole must not block a worker's reporting forever."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from packfleet.errors import ApiError
from packfleet.protocol import CompletionReport, EventMessage, decode, routes
from packfleet.worker import LogCache
from packfleet.worker._reporter import MAX_BATCH_BYTES, Reporter

POISON = "x" * 5000  # stands for a line the master refuses on its own


def _cache(tmp_path: Path, messages: list[str]) -> LogCache:
    cache = LogCache(tmp_path)
    cache.load()
    cache.open_attempt(execution_id=7, task_id=1, attempt=1)
    for message in messages:
        cache.append(1, 1, time="2026-01-01T00:00:00+00:00", level=20, source="stdout", message=message)
    return cache


@pytest.mark.parametrize("route", [routes.WORKER_REPORT, routes.WORKER_EVENTS], ids=["together", "apart"])
async def test_a_refused_batch_is_split_and_an_undeliverable_event_dropped(
    tmp_path: Path, route: str
) -> None:
    messages = [f"line {i}" for i in range(9)]
    messages.insert(4, POISON)
    cache = _cache(tmp_path, messages)
    delivered: list[str] = []
    requests = 0

    async def send(path: str, body: Any) -> Any:
        nonlocal requests
        if path != route:  # the new route, to a master that predates it
            assert path == routes.WORKER_REPORT
            raise ApiError("no such route", status=404)
        requests += 1
        events = [decode(EventMessage, e) for e in body["events"]]
        if len(events) > 3 or any(e.message == POISON for e in events):
            raise ApiError("request body too large", status=413)
        delivered.extend(e.message for e in events)
        return {"acknowledged": len(events), "stored": len(events)}

    reporter = Reporter(
        cache, send, agent_id="a", max_buffer=100, retry_count=3, retry_timeout=3600.0, clock=lambda: 0.0
    )
    assert await reporter.report()
    assert delivered == [m for m in messages if m != POISON]  # in order, each once
    assert cache.waiting_events == 0
    assert requests < 40


async def test_a_batch_is_cut_to_the_byte_budget_before_it_is_sent(tmp_path: Path) -> None:
    big = "é" * 100_000  # escaped as \\u00e9: six bytes each on the wire
    cache = _cache(tmp_path, [big] * 6)
    sizes: list[int] = []

    async def send(path: str, body: Any) -> Any:
        sizes.append(len(body["events"]))
        return {"acknowledged": len(body["events"]), "stored": len(body["events"])}

    reporter = Reporter(
        cache, send, agent_id="a", max_buffer=100, retry_count=3, retry_timeout=3600.0, clock=lambda: 0.0
    )
    assert await reporter.report()
    assert sum(sizes) == 6
    assert all(n * 6 * len(big) <= MAX_BATCH_BYTES or n == 1 for n in sizes)
    assert max(sizes) < 6


async def test_reports_refused_with_their_events_do_not_cost_the_events(tmp_path: Path) -> None:
    """A 413 may be the reports' doing: the events then go alone, and none is dropped."""
    cache = _cache(tmp_path, ["first", "second"])
    cache.finish(1, 1, CompletionReport(task_id=1, attempt=1, outcome="failed", message="x" * 100))
    sent: list[tuple[int, int]] = []

    async def send(path: str, body: Any) -> Any:
        assert path == routes.WORKER_REPORT
        events, reports = body["events"], body["reports"]
        if events and reports:
            raise ApiError("request body too large", status=413)
        sent.append((len(events), len(reports)))
        results = [{"task_id": r["task_id"], "accepted": True, "stale": False} for r in reports]
        return {"acknowledged": len(events), "stored": len(events), "results": results}

    reporter = Reporter(
        cache, send, agent_id="a", max_buffer=100, retry_count=3, retry_timeout=3600.0, clock=lambda: 0.0
    )
    assert await reporter.report()
    assert sent == [(2, 0), (0, 1)]
    assert cache.idle
