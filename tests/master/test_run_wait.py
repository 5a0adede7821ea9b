"""A run request with ``wait``: the submit answered as the first page of the execution's events.

``run --wait`` in one request: held until the execution has events or has ended, or the wait ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from master.support import MasterHome, context_for, project_archive, raw
from master.test_worker_routes import Connect, enabled_worker, lease_body, report_events
from packfleet.catalog import EventRecord
from packfleet.errors import CatalogUnavailable
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.master._services._executions import _later
from packfleet.protocol import EventPage, ExecutionStatus, MessageType, routes
from packfleet.transport import MasterClient


def _report(agent: str, task: dict[str, Any], outcome: str = "succeeded") -> dict[str, Any]:
    """Two lines and the end of ``task``, in one report as a worker sends them."""
    events = report_events(task, (1, 2))
    end = {"task_id": task["task_id"], "attempt": task["attempt"], "outcome": outcome, "exit_code": 0}
    return {"agent_id": agent, "events": events, "reports": [end]}


async def _run_to_the_end(worker: MasterClient, agent: str) -> dict[str, Any]:
    """Lease the next task (waiting for it) and report it done; the task."""
    reply = await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, wait=10))
    [task] = reply["tasks"]
    await worker.request("POST", routes.WORKER_REPORT, json_body=_report(agent, task))
    return dict(task)


def _count_looks(server: MasterServer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The executions of every follower's own catalog read from now on, in order."""
    looks: list[int] = []
    read = server.state.catalog.execution_events

    def counted(execution_id: int, **kwargs: Any) -> Any:
        looks.append(execution_id)
        return read(execution_id, **kwargs)

    monkeypatch.setattr(server.state.catalog, "execution_events", counted)
    return looks


async def test_a_run_with_wait_answers_its_events_and_its_end_once_the_worker_reports(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    looks = _count_looks(server, monkeypatch)
    running = asyncio.create_task(_run_to_the_end(worker, agent))
    started = time.monotonic()
    page = await manager.run_waiting("default", "etl", "load", {"password": "s3cret"}, wait=20)
    task = await asyncio.wait_for(running, 5)
    assert time.monotonic() - started < 5
    assert page.execution.execution_id == task["execution_id"]
    assert [e.message for e in page.events] == ["line 1", "line 2"]
    assert page.last_id == page.events[-1].id
    assert page.finished is True and page.complete
    assert page.execution.status_name == "succeeded"
    assert page.execution.parameters["password"] == "********"  # shown as every answer shows it
    # It never looked itself: the execution it had just created had nothing to show, and the
    # report's own transaction read what it answers with.
    assert looks == []


async def test_a_follower_gets_the_lines_a_report_brought_and_one_of_another_run_looks_itself(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``executions logs --follow`` of a run still going: the report's lines, read in its transaction.
    A follower the report did not concern is woken all the same and looks for itself."""
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    mine = (await manager.run("default", "etl", "load")).execution_id
    other = (await manager.run("default", "etl", "load")).execution_id
    reply = await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, capacity=1))
    [task] = reply["tasks"]
    assert task["execution_id"] == mine
    looks = _count_looks(server, monkeypatch)
    assert server.services is not None
    executions = server.services.executions
    following = asyncio.create_task(manager.events(mine, after_id=0, wait=20))
    waiting_other = asyncio.create_task(manager.events(other, after_id=0, wait=20))
    try:
        await _within(5, lambda: executions.followers() == 2)  # both looked, found nothing and wait
        assert sorted(looks) == sorted([mine, other])
        events = report_events(task, (1,))
        await worker.request("POST", routes.WORKER_REPORT, json_body={"agent_id": agent, "events": events})
        page = await asyncio.wait_for(following, 5)
        assert [e.message for e in page.events] == ["line 1"] and not page.finished
        assert looks.count(mine) == 1  # the first look only: the report read the line for it
        # Woken by the report (its own wait is far from over), it looked again and waits on.
        await _within(5, lambda: looks.count(other) == 2 and executions.followers() == 1)
        assert not waiting_other.done()
    finally:
        waiting_other.cancel()
        await asyncio.gather(following, waiting_other, return_exceptions=True)


async def test_of_two_views_of_an_execution_a_follower_keeps_the_later(
    server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    """On PostgreSQL two reports' transactions can return out of order: the earlier view must not
    replace the later one a follower already holds."""
    await manager.deploy("default", project_archive(tmp_path))
    running = server.state.catalog.get_execution((await manager.run("default", "etl", "load")).execution_id)
    ended = dataclasses.replace(running, status=ExecutionStatus.SUCCEEDED)

    def line(event_id: int) -> EventRecord:
        now = datetime.now(UTC)
        return EventRecord(
            event_id, running.execution_id, 1, 1, event_id, now, MessageType.INFORMATION, "stdout", ""
        )

    assert _later((running, []), None)
    assert _later((ended, []), (running, [line(1), line(2)]))
    assert not _later((running, [line(1), line(2)]), (ended, []))
    assert _later((running, [line(1), line(2)]), (running, [line(1)]))
    assert not _later((running, [line(1)]), (running, [line(1), line(2)]))
    assert not _later((running, [line(1)]), (running, [line(1)]))


async def _within(seconds: float, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


async def test_a_run_with_wait_whose_wait_runs_out_answers_finished_false(
    server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    await manager.deploy("default", project_archive(tmp_path))
    started = time.monotonic()
    page = await manager.run_waiting("default", "etl", "load", wait=0.3)
    assert 0.25 < time.monotonic() - started < 3
    assert page.finished is False and not page.complete
    assert page.events == [] and page.last_id == 0
    assert page.execution.status_name in ("created", "pending")
    # The execution was created all the same; it is the one listed.
    [listed] = await manager.list_executions()
    assert listed.execution_id == page.execution.execution_id


async def test_a_run_with_wait_whose_look_fails_is_answered_as_created_not_as_an_error(
    server: MasterServer, manager: ManagerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The execution exists: an error answer would have a client without a key submit it again."""
    await manager.deploy("default", project_archive(tmp_path))

    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise CatalogUnavailable("the catalog database does not answer")

    monkeypatch.setattr(server.state.catalog, "execution_events", unavailable)
    page = await manager.run_waiting("default", "etl", "load", wait=0.3)  # looks once the wait ends
    assert page.finished is False and page.events == [] and not page.complete
    monkeypatch.undo()
    [listed] = await manager.list_executions()
    assert listed.execution_id == page.execution.execution_id


async def test_a_resent_run_with_wait_answers_the_first_runs_events_200_not_201(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    admin = context_for(mh.admin, mh, tmp_path)
    body = {"folder": "default", "project": "etl", "package": "load", "idempotency_key": "resend-w"}
    first = await raw(admin, server, "POST", f"{routes.ADMIN_EXECUTIONS}?wait=0", body=body)
    assert first.status == 201
    assert first.body["finished"] is False and first.body["events"] == []
    await _run_to_the_end(worker, agent)
    again = await raw(admin, server, "POST", f"{routes.ADMIN_EXECUTIONS}?wait=5", body=body)
    # The first submit's execution, already ended: its events at once (no wait for news).
    assert again.status == 200
    resent = EventPage.from_wire(again.body)
    assert resent.execution.execution_id == first.body["execution"]["execution_id"]
    assert resent.finished and [e.message for e in resent.events] == ["line 1", "line 2"]
    assert resent.execution.idempotency_key == "resend-w"
    assert len(await manager.list_executions()) == 1


async def test_without_wait_a_run_still_answers_the_execution(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    await manager.deploy("default", project_archive(tmp_path))
    admin = context_for(mh.admin, mh, tmp_path)
    body = {"folder": "default", "project": "etl", "package": "load"}
    answer = await raw(admin, server, "POST", routes.ADMIN_EXECUTIONS, body=body)
    assert answer.status == 201 and answer.body["status_name"] in ("created", "pending")
    assert "events" not in answer.body


@pytest.mark.parametrize("wait", ["soon", "1s", "0x10"])
async def test_a_wait_that_is_not_a_number_is_refused_before_anything_is_created(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path, wait: str
) -> None:
    await manager.deploy("default", project_archive(tmp_path))
    admin = context_for(mh.admin, mh, tmp_path)
    body = {"folder": "default", "project": "etl", "package": "load"}
    answer = await raw(admin, server, "POST", f"{routes.ADMIN_EXECUTIONS}?wait={wait}", body=body)
    assert answer.status == 400
    assert answer.body["detail"] == f"query parameter wait={wait!r} is not a number"
    assert await manager.list_executions() == []


async def test_a_run_with_wait_is_answered_at_once_when_the_master_stops(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    await manager.deploy("default", project_archive(tmp_path))
    waiting = asyncio.create_task(manager.run_waiting("default", "etl", "load", wait=20))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    started = time.monotonic()
    await server.stop()
    page = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 5
    assert page.finished is False


async def test_from_a_master_that_ignores_wait_the_client_gets_a_page_to_follow_from(
    server: MasterServer, manager: ManagerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await manager.deploy("default", project_archive(tmp_path))
    call = manager._call

    async def older_master(method: str, path: str, **kwargs: Any) -> Any:
        # A master before wait ignores the parameter and answers the execution it created.
        params = {k: v for k, v in (kwargs.pop("params", None) or {}).items() if k != "wait"}
        return await call(method, path, params=params or None, **kwargs)

    monkeypatch.setattr(manager, "_call", older_master)
    page = await manager.run_waiting("default", "etl", "load", idempotency_key="old-1", wait=20)
    assert page.events == [] and page.last_id == 0
    # Not finished, even had it ended: its events are still to be read with the follow.
    assert page.finished is False and not page.complete
    assert page.execution.idempotency_key == "old-1"
