"""The worker protocol end to end over real HTTPS: long-poll lease, task heartbeat, events, completion."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from master.support import (
    FakeClock,
    MasterHome,
    context_for,
    heartbeat_body,
    new_agent_id,
    project_archive,
    raw,
)
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer, _worker_api
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.protocol import EventPage, Execution, routes
from packfleet.transport import MasterClient

Connect = Callable[[Credential | None], MasterClient]


async def enabled_worker(
    mh: MasterHome, manager: ManagerClient, connect: Connect
) -> tuple[MasterClient, str]:
    agent = new_agent_id()
    worker = connect(mh.worker)
    await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    await manager.enable_worker(agent)
    beat = await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    assert beat["state"] == "enabled"
    return worker, agent


def lease_body(
    agent: str, *, wait: float = 0.0, capacity: int = 2, lease_seconds: float = 60
) -> dict[str, Any]:
    return {"agent_id": agent, "capacity": capacity, "wait_seconds": wait, "lease_seconds": lease_seconds}


async def test_a_waiting_lease_answers_as_soon_as_an_execution_is_created(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    answered: list[float] = []

    async def wait_for_task() -> Any:
        reply = await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, wait=20))
        answered.append(time.monotonic())
        return reply

    waiting = asyncio.create_task(wait_for_task())
    await asyncio.sleep(0.3)  # the lease is parked in its long-poll by now
    assert not waiting.done()
    execution = await manager.run("default", "etl", "load", {"rows": "5", "password": "s3cret"})
    created = time.monotonic()
    reply = await asyncio.wait_for(waiting, 5)
    assert answered[0] - created < 0.1
    [task] = reply["tasks"]
    assert task["execution_id"] == execution["execution_id"] and task["attempt"] == 1
    assert task["parameters"] == {"rows": 5, "password": "s3cret"}  # typed, and clear for the worker
    assert execution["parameters"]["password"] == "********"  # masked for people


async def test_an_empty_lease_waits_its_wait_seconds_then_answers_empty(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    started = time.monotonic()
    assert await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, wait=0.3)) == {
        "tasks": []
    }
    assert 0.25 < time.monotonic() - started < 2


async def test_the_whole_task_protocol_with_idempotent_retries(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    archive = project_archive(tmp_path)
    deployed = await manager.deploy("default", archive)
    execution = await manager.run("default", "etl", "load")
    [task] = (await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent)))["tasks"]
    lease = {"task_id": task["task_id"], "attempt": task["attempt"]}

    sha = task["project_sha256"]
    assert sha == deployed["sha256"] == hashlib.sha256(archive).hexdigest()
    downloaded = await worker.request("GET", routes.WORKER_PROJECT.format(sha256=sha), raw=True)
    assert downloaded == archive

    beat = {"agent_id": agent, "leases": [lease], "lease_seconds": 60}
    assert await worker.request("POST", routes.WORKER_TASK_HEARTBEAT, json_body=beat) == {
        "extended": [lease],
        "cancel": [],
        "lost": [],
    }

    events = {
        "agent_id": agent,
        "events": [
            {
                **lease,
                "execution_id": task["execution_id"],
                "seq": seq,
                "time": "2024-06-01T12:00:00+00:00",
                "level": 20,
                "source": "stdout",
                "message": f"line {seq}",
            }
            for seq in (1, 2)
        ],
    }
    assert await worker.request("POST", routes.WORKER_EVENTS, json_body=events) == {
        "acknowledged": 2,
        "stored": 2,
    }
    # A resend after a lost answer: acknowledged again, stored once.
    assert await worker.request("POST", routes.WORKER_EVENTS, json_body=events) == {
        "acknowledged": 2,
        "stored": 0,
    }

    done = {
        "agent_id": agent,
        "reports": [{**lease, "outcome": "succeeded", "exit_code": 0, "message": "ok"}],
    }
    first = await worker.request("POST", routes.WORKER_COMPLETE, json_body=done)
    again = await worker.request("POST", routes.WORKER_COMPLETE, json_body=done)
    expected = {"results": [{"task_id": task["task_id"], "accepted": True, "stale": False}]}
    assert first == again == expected

    shown = await manager.get_execution(execution["execution_id"])
    assert shown["status_name"] == "succeeded"
    log = await manager.events(execution["execution_id"])
    assert [(e["seq"], e["message"], e["message_source"]) for e in log["events"]] == [
        (1, "line 1", "stdout"),
        (2, "line 2", "stdout"),
    ]
    assert log["finished"] is True


async def _leased_and_followed(
    mh: MasterHome, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> tuple[MasterClient, str, Execution, Any, asyncio.Task[EventPage]]:
    """An execution whose task a worker leased, and a follow long-poll waiting for its news."""
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    execution = await manager.run("default", "etl", "load")
    [task] = (await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent)))["tasks"]
    first = await manager.events(execution["execution_id"])
    follow = asyncio.create_task(
        manager.events(execution["execution_id"], after_id=first["last_id"], wait=20)
    )
    await asyncio.sleep(0.3)
    assert not follow.done()
    return worker, agent, execution, task, follow


async def test_following_events_answers_when_the_worker_sends_some(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    worker, agent, execution, task, follow = await _leased_and_followed(mh, manager, connect, tmp_path)
    event = {
        "execution_id": task["execution_id"],
        "task_id": task["task_id"],
        "attempt": task["attempt"],
        "seq": 1,
        "time": "2024-06-01T12:00:00+00:00",
        "level": 40,
        "source": "stderr",
        "message": "disk almost full",
    }
    await worker.request("POST", routes.WORKER_EVENTS, json_body={"agent_id": agent, "events": [event]})
    news = await asyncio.wait_for(follow, 5)
    assert [e["message"] for e in news["events"]] == ["disk almost full"]
    assert news["finished"] is False


async def test_a_stale_completion_is_marked_stale(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    await manager.run("default", "etl", "load", retry_count=1)
    [task] = (
        await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, lease_seconds=5))
    )["tasks"]
    clock.advance(60)
    await server.sweep_once()  # the lease expired: requeued for attempt 2
    [again] = (await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent)))["tasks"]
    assert (again["task_id"], again["attempt"]) == (task["task_id"], 2)
    old = {"task_id": task["task_id"], "attempt": 1, "outcome": "succeeded"}
    reply = await worker.request(
        "POST", routes.WORKER_COMPLETE, json_body={"agent_id": agent, "reports": [old]}
    )
    assert reply == {"results": [{"task_id": task["task_id"], "accepted": False, "stale": True}]}


@pytest.mark.parametrize("wait", [0.0, 20.0])
async def test_the_sweep_wakes_a_waiting_lease_when_it_requeues(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
    clock: FakeClock,
    wait: float,
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    await manager.run("default", "etl", "load", retry_count=1)
    await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, lease_seconds=5))
    waiting = asyncio.create_task(
        worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, wait=wait))
    )
    await asyncio.sleep(0.2)
    clock.advance(60)
    await server.sweep_once()
    reply = await asyncio.wait_for(waiting, 5)
    assert [t["attempt"] for t in reply["tasks"]] == ([] if wait == 0 else [2])


async def test_a_long_poll_held_by_a_worker_gone_silent_gets_no_task(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    poll = asyncio.create_task(
        worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, wait=20, lease_seconds=5))
    )
    await asyncio.sleep(0.3)
    clock.advance(30)  # no heartbeat for longer than its lease: paused or cut off
    await manager.run("default", "etl", "load")
    reply = await asyncio.wait_for(poll, 10)
    assert reply["tasks"] == []
    # Its next request (it is back) is answered with the task at once.
    await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    fresh = await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, lease_seconds=5))
    assert len(fresh["tasks"]) == 1


async def test_a_resent_submit_with_its_key_returns_the_same_execution(
    server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    await manager.deploy("default", project_archive(tmp_path))
    first = await manager.run("default", "etl", "load", idempotency_key="resend-1")
    again = await manager.run("default", "etl", "load", idempotency_key="resend-1")
    other = await manager.run("default", "etl", "load", idempotency_key="resend-2")
    assert again["execution_id"] == first["execution_id"] != other["execution_id"]
    assert first["idempotency_key"] == "resend-1"
    listed = await manager.list_executions()
    assert sorted(e["execution_id"] for e in listed) == sorted({first["execution_id"], other["execution_id"]})


def report_events(task: dict[str, Any], seqs: tuple[int, ...]) -> list[dict[str, Any]]:
    return [
        {
            "execution_id": task["execution_id"],
            "task_id": task["task_id"],
            "attempt": task["attempt"],
            "seq": seq,
            "time": "2024-06-01T12:00:00+00:00",
            "level": 20,
            "source": "stdout",
            "message": f"line {seq}",
        }
        for seq in seqs
    ]


async def test_one_report_carries_the_last_lines_and_the_end_to_a_follower_at_once(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    worker, agent, execution, task, follow = await _leased_and_followed(mh, manager, connect, tmp_path)
    report = {"task_id": task["task_id"], "attempt": task["attempt"], "outcome": "succeeded", "exit_code": 0}
    body = {"agent_id": agent, "events": report_events(task, (1, 2)), "reports": [report]}
    reply = await worker.request("POST", routes.WORKER_REPORT, json_body=body)
    assert reply == {
        "acknowledged": 2,
        "stored": 2,
        "results": [{"task_id": task["task_id"], "accepted": True, "stale": False}],
    }
    news = await asyncio.wait_for(follow, 5)
    # One wake-up shows both: with the events and completion routes the follower woke on the
    # lines, found the execution running, and had to ask again.
    assert [e["message"] for e in news["events"]] == ["line 1", "line 2"]
    assert news["finished"] is True
    assert (await manager.get_execution(execution["execution_id"]))["status_name"] == "succeeded"


async def test_a_report_that_asks_for_tasks_gets_them_leased_in_its_answer(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    first, second, third = [await manager.run("default", "etl", "load") for _ in range(3)]
    [task] = (await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, capacity=1)))[
        "tasks"
    ]
    assert task["execution_id"] == first["execution_id"]
    report = {"task_id": task["task_id"], "attempt": task["attempt"], "outcome": "succeeded", "exit_code": 0}
    body = {"agent_id": agent, "events": [], "reports": [report], "lease_capacity": 5, "lease_seconds": 60}
    reply = await worker.request("POST", routes.WORKER_REPORT, json_body=body)
    assert reply["results"] == [{"task_id": task["task_id"], "accepted": True, "stale": False}]
    assert [t["execution_id"] for t in reply["tasks"]] == [second["execution_id"], third["execution_id"]]
    assert "heartbeat_now" not in reply
    assert (await manager.get_execution(first["execution_id"]))["status_name"] == "succeeded"
    assert (await manager.get_execution(third["execution_id"]))["status_name"] == "running"
    # A report that does not ask gets no "tasks": workers before the ask refuse unknown fields.
    plain = await worker.request(
        "POST", routes.WORKER_REPORT, json_body={"agent_id": agent, "events": [], "reports": [report]}
    )
    assert plain == {"acknowledged": 0, "stored": 0, "results": reply["results"]}
    # Asking with nothing to report, and nothing ready: no tasks, an answer at once (no wait).
    empty = await asyncio.wait_for(
        worker.request("POST", routes.WORKER_REPORT, json_body=dict(body, reports=[])), 5
    )
    assert empty == {"acknowledged": 0, "stored": 0, "results": [], "tasks": []}


async def test_a_report_that_asks_during_a_rotation_step_gets_a_heartbeat_hint_not_tasks(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    execution = await manager.run("default", "etl", "load")
    await manager.rotate_master_cert("start")
    body = {"agent_id": agent, "lease_capacity": 2, "lease_seconds": 60}
    reply = await worker.request("POST", routes.WORKER_REPORT, json_body=body)
    assert reply == {"acknowledged": 0, "stored": 0, "results": [], "tasks": [], "heartbeat_now": True}
    assert (await manager.get_execution(execution["execution_id"]))["status_name"] == "pending"


async def test_a_resent_report_is_stored_once_and_an_old_attempts_report_is_stale(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    execution = await manager.run("default", "etl", "load")
    [task] = (await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent)))["tasks"]
    events = report_events(task, (1,))
    assert await worker.request(
        "POST", routes.WORKER_REPORT, json_body={"agent_id": agent, "events": events}
    ) == {"acknowledged": 1, "stored": 1, "results": []}
    report = {"task_id": task["task_id"], "attempt": task["attempt"], "outcome": "failed", "message": "boom"}
    old = dict(report, attempt=task["attempt"] - 1)
    body = {"agent_id": agent, "events": events, "reports": [report, old]}
    first = await worker.request("POST", routes.WORKER_REPORT, json_body=body)
    again = await worker.request("POST", routes.WORKER_REPORT, json_body=body)
    results = [
        {"task_id": task["task_id"], "accepted": True, "stale": False},
        {"task_id": task["task_id"], "accepted": False, "stale": True},
    ]
    assert first == again == {"acknowledged": 1, "stored": 0, "results": results}
    log = await manager.events(execution["execution_id"])
    assert [e["seq"] for e in log["events"] if e["message_source"] == "stdout"] == [1]
    assert log["finished"] is True
    assert (await manager.get_execution(execution["execution_id"]))["status_name"] == "failed"


async def test_the_report_route_admits_exactly_whom_the_events_route_admits(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    agent = new_agent_id()
    bodies = {
        routes.WORKER_EVENTS: {"agent_id": agent, "events": []},
        routes.WORKER_REPORT: {"agent_id": agent, "events": [], "reports": []},
    }
    worker_ctx = context_for(mh.worker, mh, tmp_path)
    for route, body in bodies.items():
        nobody = await raw(context_for(None, mh, tmp_path), server, "POST", route, body=body)
        assert nobody.status == 403 and "presented none" in nobody.body["detail"]
        admin = await raw(context_for(mh.admin, mh, tmp_path), server, "POST", route, body=body)
        assert admin.status == 403 and "is for workers" in admin.body["detail"], route
        unbound = await raw(worker_ctx, server, "POST", route, body=body)
        assert unbound.status == 403 and "belongs to no worker" in unbound.body["detail"]
    await connect(mh.worker).request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    for route, body in bodies.items():
        disabled = await raw(worker_ctx, server, "POST", route, body=body)
        assert disabled.status == 403 and "disabled" in disabled.body["detail"], route
    await manager.enable_worker(agent)
    await connect(mh.worker).request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    for route, body in bodies.items():
        assert (await raw(worker_ctx, server, "POST", route, body=body)).status == 200, route
        other = await raw(worker_ctx, server, "POST", route, body=dict(body, agent_id=new_agent_id()))
        assert other.status == 403 and "may not act for agent" in other.body["detail"], route


async def _two_enabled_workers(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> list[tuple[MasterClient, str]]:
    second = create_self_signed(["worker2", "127.0.0.1"])
    CertStore(mh.home, "Root").add(Credential(second.certificate))
    await server.reload()
    workers = []
    for cred, name in ((mh.worker, "worker1"), (second, "worker2")):
        agent, client = new_agent_id(), connect(cred)
        await client.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent, name))
        await manager.enable_worker(agent)
        await client.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent, name))
        workers.append((client, agent))
    return workers


def _count_looks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The agent id of each look a lease long-poll makes in the catalog, in order."""
    looks: list[str] = []
    real = _worker_api._lease_if_alive

    def counted(catalog: Any, agent_id: str, *args: Any, **kwargs: Any) -> Any:
        looks.append(agent_id)
        return real(catalog, agent_id, *args, **kwargs)

    monkeypatch.setattr(_worker_api, "_lease_if_alive", counted)
    return looks


async def _park(worker: MasterClient, agent: str) -> asyncio.Task[Any]:
    poll = asyncio.create_task(
        worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, wait=20, capacity=1))
    )
    await asyncio.sleep(0.3)  # in its long-poll by now
    assert not poll.done()
    return poll


async def test_a_new_task_wakes_one_waiting_long_poll_not_every_one(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (first, first_agent), (second, second_agent) = await _two_enabled_workers(mh, server, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    looks = _count_looks(monkeypatch)
    polls = [await _park(first, first_agent), await _park(second, second_agent)]
    assert len(looks) == 2
    execution = await manager.run("default", "etl", "load")
    done, waiting = await asyncio.wait(polls, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    [task] = done.pop().result()["tasks"]
    assert task["execution_id"] == execution["execution_id"]
    await asyncio.sleep(0.3)
    # Leased for the first in the submit's own transaction, so no look either; the other long-poll
    # slept through it ...
    assert len(waiting) == 1 and len(looks) == 2
    # ... and is still there for the next task.
    again = await manager.run("default", "etl", "load")
    [task] = (await asyncio.wait_for(waiting.pop(), 5))["tasks"]
    assert task["execution_id"] == again["execution_id"] and len(looks) == 2


async def test_a_long_poll_woken_for_a_task_it_may_not_run_passes_the_wake_up_on(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (first, first_agent), (second, second_agent) = await _two_enabled_workers(mh, server, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    looks = _count_looks(monkeypatch)
    # The first waits longest, so the wake-up goes to it first; only the second may run the task.
    polls = [await _park(first, first_agent), await _park(second, second_agent)]
    execution = await manager.run("default", "etl", "load", workers=[second_agent])
    [task] = (await asyncio.wait_for(polls[1], 5))["tasks"]  # not after its 20 seconds
    assert task["execution_id"] == execution["execution_id"]
    assert looks == [first_agent, second_agent, first_agent, second_agent]
    await asyncio.sleep(0.3)
    assert not polls[0].done()  # it looked once, found nothing of its own, and waits on
    polls[0].cancel()


async def test_a_long_poll_woken_alone_that_leases_nothing_asks_whether_others_are_ready(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    """Only then do the other long-polls wake: a task another long-poll (or master) took is no news."""
    (_, first_agent), (_, second_agent) = await _two_enabled_workers(mh, server, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    catalog = server.state.catalog

    def look(*, handed: bool) -> Any:
        return _worker_api._lease_if_alive(catalog, first_agent, 1, 60, check_alive=False, handed=handed)

    assert look(handed=True) == _worker_api._Look([], others_ready=False)
    await manager.run("default", "etl", "load", workers=[second_agent])
    assert look(handed=True) == _worker_api._Look([], others_ready=True)
    assert look(handed=False) == _worker_api._Look([], others_ready=False)  # not asked


async def test_a_workers_next_long_poll_after_a_look_that_left_nothing_waits_without_looking(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    looks = _count_looks(monkeypatch)
    first = await manager.run("default", "etl", "load")
    reply = await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, capacity=2))
    assert [t["execution_id"] for t in reply["tasks"]] == [first["execution_id"]]
    assert looks == [agent]  # it took fewer tasks than it asked for: nothing else was ready
    poll = await _park(worker, agent)
    assert looks == [agent]  # nothing became ready since: no look before waiting
    second = await manager.run("default", "etl", "load")
    [task] = (await asyncio.wait_for(poll, 5))["tasks"]
    assert task["execution_id"] == second["execution_id"] and looks == [agent]  # leased by the submit


async def test_a_task_made_ready_between_two_long_polls_is_looked_for_at_once(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    looks = _count_looks(monkeypatch)
    assert (await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent)))["tasks"] == []
    # No long-poll waits: the new task's wake-up goes to every ticket, the one kept for this worker too.
    execution = await manager.run("default", "etl", "load")
    started = time.monotonic()
    reply = await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, wait=20))
    assert [t["execution_id"] for t in reply["tasks"]] == [execution["execution_id"]]
    assert time.monotonic() - started < 5 and looks == [agent, agent]


async def test_a_long_poll_that_waits_without_looking_passes_on_a_task_it_may_not_run(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (first, first_agent), (second, second_agent) = await _two_enabled_workers(mh, server, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    looks = _count_looks(monkeypatch)
    await first.request("POST", routes.WORKER_LEASE, json_body=lease_body(first_agent, capacity=1))
    # The first waits longest, without looking (its last look left nothing); only the second may
    # run the task, so the first, handed the wake-up, must look and pass it on.
    polls = [await _park(first, first_agent), await _park(second, second_agent)]
    assert looks == [first_agent, second_agent]
    execution = await manager.run("default", "etl", "load", workers=[second_agent])
    [task] = (await asyncio.wait_for(polls[1], 5))["tasks"]  # not after its 20 seconds
    assert task["execution_id"] == execution["execution_id"]
    assert looks == [first_agent, second_agent, first_agent, second_agent]
    polls[0].cancel()


async def test_a_rotation_step_answers_a_long_poll_that_goes_back_to_waiting_without_a_look(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    looks = _count_looks(monkeypatch)
    poll = await _park(worker, agent)
    assert looks == [agent]
    await manager.rotate_master_cert("start")
    reply = await asyncio.wait_for(poll, 5)  # the step is news for the worker, not for its tasks
    assert reply == {"tasks": [], "heartbeat_now": True} and looks == [agent]
    poll = await _park(worker, agent)
    assert looks == [agent]  # no task became ready: its next long-poll waits without a look
    execution = await manager.run("default", "etl", "load")
    [task] = (await asyncio.wait_for(poll, 5))["tasks"]
    assert task["execution_id"] == execution["execution_id"] and looks == [agent]


async def test_a_long_poll_whose_wait_ends_while_a_submit_leases_for_it_answers_with_the_task(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    catalog = server.state.catalog
    real = catalog.submit_leasing

    wait = 3.0  # long enough for the submit to reach the catalog on a loaded machine
    ends = time.monotonic() + wait

    def slow(*args: Any, **kwargs: Any) -> Any:
        # On the catalog's thread: hold the lease until the long-poll's wait has surely ended.
        assert time.monotonic() < ends, "the submit reached the catalog after the wait ended"
        time.sleep(ends + 0.5 - time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(catalog, "submit_leasing", slow)
    poll = asyncio.create_task(
        worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, wait=wait, capacity=1))
    )
    await asyncio.sleep(0.3)  # in its long-poll by now
    assert not poll.done()
    execution = await manager.run("default", "etl", "load")
    [task] = (await asyncio.wait_for(poll, 5))["tasks"]
    assert task["execution_id"] == execution["execution_id"]


async def test_a_submit_that_creates_nothing_leaves_the_long_poll_waiting_for_the_next(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    body = {"folder": "default", "project": "etl", "package": "load", "idempotency_key": "once"}
    first = await manager.client.request("POST", routes.ADMIN_EXECUTIONS, json_body=body)
    reply = await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, capacity=1))
    assert [t["execution_id"] for t in reply["tasks"]] == [first["execution_id"]]
    poll = await _park(worker, agent)
    again = await manager.client.request("POST", routes.ADMIN_EXECUTIONS, json_body=body)
    assert again["execution_id"] == first["execution_id"]
    await asyncio.sleep(0.3)
    assert not poll.done()  # the repeat created nothing: no answer, no task
    execution = await manager.run("default", "etl", "load")
    [task] = (await asyncio.wait_for(poll, 5))["tasks"]
    assert task["execution_id"] == execution["execution_id"]
