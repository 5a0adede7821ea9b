"""Lease expiry, cancel and cleanup, driven by an injected clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from packfleet.catalog import (
    Catalog,
    CompletionResult,
    EventInput,
    ExecutionStatus,
    SweepResult,
    TaskStatus,
)
from packfleet.catalog._schema import event_messages, tasks
from packfleet.errors import Conflict, NotFound

from .conftest import FakeClock

Register = Callable[..., str]


def _run(catalog: Catalog, retry_count: int = 0) -> int:
    record = catalog.create_execution(
        "default", "etl", "extract", parameters={}, actor="admin", retry_count=retry_count
    )
    return record.execution_id


def _system_messages(catalog: Catalog, execution_id: int) -> list[str]:
    return [e.message for e in catalog.get_events(execution_id) if e.message_source == "system"]


def test_nothing_is_swept_before_the_lease_expires(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent_id = worker()
    _run(deployed)
    deployed.lease_tasks(agent_id, 1, 60)
    clock.advance(60)  # expiry is "lease_expires_at < now": exactly at expiry the lease still holds
    assert deployed.sweep_expired_leases() == SweepResult([], [], [])


def test_expired_lease_is_requeued_while_attempts_remain_then_ends_unexpectedly(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    gone, spare = worker("gone"), worker("spare")
    execution_id = _run(deployed, retry_count=1)  # at most 2 attempts
    [first] = deployed.lease_tasks(gone, 1, 60)
    clock.advance(61)
    assert deployed.sweep_expired_leases() == SweepResult(requeued=[execution_id], ended=[])
    requeued = deployed.get_execution(execution_id)
    assert requeued.status == ExecutionStatus.PENDING
    assert requeued.task is not None and requeued.task.status == TaskStatus.READY
    assert requeued.task.attempt == 1 and requeued.task.agent_id is None
    [message] = _system_messages(deployed, execution_id)
    assert f"worker {gone} stopped renewing the lease of attempt 1" in message
    assert "requeued for attempt 2 of 2" in message

    # The vanished worker's late report names attempt 1: stale, and it changes nothing.
    late = deployed.complete_task(gone, first.task_id, 1, "succeeded")
    assert late == CompletionResult(first.task_id, accepted=False, stale=True)
    assert deployed.extend_leases(gone, [(first.task_id, 1)], 60).lost == [first.task_id]

    [second] = deployed.lease_tasks(spare, 1, 60)
    assert (second.task_id, second.attempt) == (first.task_id, 2)
    assert deployed.complete_task(gone, first.task_id, 1, "failed").stale
    clock.advance(61)
    assert deployed.sweep_expired_leases() == SweepResult(requeued=[], ended=[execution_id])
    ended = deployed.get_execution(execution_id)
    assert ended.status == ExecutionStatus.ENDED_UNEXPECTEDLY and int(ended.status) == 6
    assert ended.ended_at == clock.now
    assert ended.task is not None and ended.task.status == TaskStatus.FAILED
    assert "no attempts left (2), ended unexpectedly" in _system_messages(deployed, execution_id)[-1]
    assert deployed.sweep_expired_leases() == SweepResult([], [], [])


def test_extending_the_lease_keeps_the_sweep_away(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent_id = worker()
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    for _ in range(5):
        clock.advance(45)
        deployed.extend_leases(agent_id, [(task.task_id, task.attempt)], 60)
        assert deployed.sweep_expired_leases() == SweepResult([], [], [])
    assert deployed.get_execution(execution_id).status == ExecutionStatus.RUNNING


def test_a_deleted_workers_leases_are_requeued_by_the_sweep(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    doomed, other = worker("doomed"), worker("other")
    execution_id = _run(deployed, retry_count=3)
    deployed.lease_tasks(doomed, 1, 60)
    deployed.delete_worker(doomed, actor="admin")
    clock.advance(61)
    assert deployed.sweep_expired_leases().requeued == [execution_id]
    assert [t.execution_id for t in deployed.lease_tasks(other, 1, 60)] == [execution_id]


# --- cancel ---------------------------------------------------------------------------------------------


def test_cancel_before_any_worker_picked_it_up(deployed: Catalog, worker: Register, clock: FakeClock) -> None:
    agent_id = worker()
    execution_id = _run(deployed)
    record = deployed.cancel_execution(execution_id, actor="alice")
    assert record.status == ExecutionStatus.CANCELED and record.ended_at == clock.now
    assert record.task is not None and record.task.status == TaskStatus.CANCELED
    assert deployed.lease_tasks(agent_id, 5, 60) == []
    assert "canceled by alice" in _system_messages(deployed, execution_id)[0]
    last = deployed.list_audit()[-1]
    assert (last.actor, last.action, last.target) == ("alice", "execution.cancel", str(execution_id))


def test_cancel_while_running_stops_through_the_task_heartbeat(deployed: Catalog, worker: Register) -> None:
    agent_id = worker()
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    stopping = deployed.cancel_execution(execution_id, actor="alice")
    assert stopping.status == ExecutionStatus.STOPPING and int(stopping.status) == 8
    assert deployed.cancel_execution(execution_id, actor="alice") == stopping  # asking twice is fine
    status = deployed.extend_leases(agent_id, [(task.task_id, task.attempt)], 60)
    assert status.cancel == [task.task_id] and status.extended == [task.task_id]
    deployed.complete_task(agent_id, task.task_id, task.attempt, "canceled", exit_code=-15)
    done = deployed.get_execution(execution_id)
    assert done.status == ExecutionStatus.CANCELED
    assert done.task is not None and done.task.status == TaskStatus.CANCELED


def test_stopping_execution_whose_worker_vanished_is_canceled_by_the_sweep(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent_id = worker()
    execution_id = _run(deployed, retry_count=5)
    deployed.lease_tasks(agent_id, 1, 60)
    deployed.cancel_execution(execution_id, actor="alice")
    clock.advance(61)
    assert deployed.sweep_expired_leases() == SweepResult([], [], canceled=[execution_id])
    record = deployed.get_execution(execution_id)
    assert record.status == ExecutionStatus.CANCELED
    assert record.task is not None and record.task.status == TaskStatus.CANCELED


@pytest.mark.parametrize(
    ("outcome", "words"),
    [("succeeded", "already succeeded"), ("failed", "already failed"), ("canceled", "already canceled")],
)
def test_cancel_of_a_finished_execution_is_a_conflict(
    deployed: Catalog, worker: Register, outcome: str, words: str
) -> None:
    agent_id = worker()
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    deployed.complete_task(agent_id, task.task_id, 1, outcome)  # type: ignore[arg-type]
    with pytest.raises(Conflict, match=words):
        deployed.cancel_execution(execution_id, actor="alice")


def test_cancel_of_an_unknown_execution_is_not_found(deployed: Catalog) -> None:
    with pytest.raises(NotFound):
        deployed.cancel_execution(12345, actor="alice")


def test_cancel_after_ending_unexpectedly_says_so(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent_id = worker()
    execution_id = _run(deployed)
    deployed.lease_tasks(agent_id, 1, 60)
    clock.advance(120)
    deployed.sweep_expired_leases()
    with pytest.raises(Conflict, match="already ended unexpectedly"):
        deployed.cancel_execution(execution_id, actor="alice")


# --- cleanup ----------------------------------------------------------------------------------------------


def test_cleanup_removes_only_finished_executions_older_than_the_retention(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent_id = worker()
    old, recent, running, pending = (_run(deployed) for _ in range(4))
    t_old, t_recent, _ = deployed.lease_tasks(agent_id, 3, 3600)
    deployed.add_events(
        agent_id,
        [EventInput(old, t_old.task_id, 1, seq, clock.now, 20, "stdout", "x") for seq in range(1, 4)],
    )
    deployed.complete_task(agent_id, t_old.task_id, 1, "succeeded")
    clock.advance(timedelta(days=2).total_seconds())
    deployed.complete_task(agent_id, t_recent.task_id, 1, "failed")
    clock.advance(timedelta(hours=12).total_seconds())
    assert deployed.cleanup_completed(timedelta(days=1)) == 1
    assert {r.execution_id for r in deployed.list_executions()} == {recent, running, pending}
    with deployed._read() as conn:  # task, events and all went with it (ON DELETE CASCADE)
        left = {
            table.name: conn.scalar(select(func.count()).select_from(table))
            for table in (tasks, event_messages)
        }
    assert left == {"tasks": 3, "event_messages": 0}
    with pytest.raises(NotFound):
        deployed.get_execution(old)
    assert deployed.cleanup_completed(timedelta(days=1)) == 0
