"""Fault tolerance in the catalog: who gets a requeued task, refused reports explained, outages made
up for, idempotent submits, receive times and clock skew."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest

from packfleet.catalog import Catalog, EventInput, ExecutionStatus
from packfleet.errors import Conflict

from .conftest import FakeClock, info

Register = Callable[..., str]


def _run(catalog: Catalog, retry_count: int = 2, key: str | None = None, package: str = "extract") -> int:
    record = catalog.create_execution(
        "default", "etl", package, parameters={}, actor="admin", retry_count=retry_count, idempotency_key=key
    )
    return record.execution_id


def _beat(catalog: Catalog, agent_id: str, name: str, skew: float | None = None) -> None:
    [cert] = [c for w in catalog.list_workers() if w.agent_id == agent_id for c in w.certificates]
    beat = dataclasses.replace(info(agent_id, name), clock_skew_seconds=skew)
    assert catalog.worker_heartbeat(cert.thumbprint, beat).state == "enabled"


def test_a_requeued_task_goes_to_another_live_worker_not_the_one_that_lost_it(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    silent, other = worker("silent"), worker("other")
    execution_id = _run(deployed)
    [first] = deployed.lease_tasks(silent, 1, 10)
    clock.advance(11)
    _beat(deployed, other, "other")  # the other worker is alive; the silent one is not
    assert deployed.sweep_expired_leases().requeued == [execution_id]
    assert deployed.lease_tasks(silent, 1, 10) == []  # e.g. through a long-poll held from before
    [second] = deployed.lease_tasks(other, 1, 10)
    assert (second.task_id, second.attempt) == (first.task_id, 2)


def test_the_worker_that_lost_a_task_gets_it_again_when_no_other_worker_is_alive(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    silent, _other = worker("silent"), worker("other")
    execution_id = _run(deployed)
    deployed.lease_tasks(silent, 1, 10)
    clock.advance(11)  # "other" last beat 11 s ago: older than the lease, so not counted as alive
    assert deployed.sweep_expired_leases().requeued == [execution_id]
    [again] = deployed.lease_tasks(silent, 1, 10)
    assert again.attempt == 2


def test_a_disabled_or_disallowed_worker_does_not_keep_the_task_from_the_one_that_lost_it(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    silent, disabled = worker("silent"), worker("disabled")
    deployed.set_worker_enabled(disabled, False, actor="admin")
    execution_id = _run(deployed)
    deployed.lease_tasks(silent, 1, 10)
    clock.advance(11)
    assert deployed.sweep_expired_leases().requeued == [execution_id]
    assert len(deployed.lease_tasks(silent, 1, 10)) == 1


def test_a_worker_allowed_only_for_other_executions_does_not_keep_the_task_from_the_one_that_lost_it(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    """The "someone else may run it" check asks about this task's allowed workers, not any task's."""
    silent, other = worker("silent"), worker("other")
    execution_id = deployed.create_execution(
        "default", "etl", "extract", parameters={}, actor="admin", allowed_workers=[silent], retry_count=2
    ).execution_id
    elsewhere = deployed.create_execution(
        "default", "etl", "extract", parameters={}, actor="admin", allowed_workers=[other]
    ).execution_id
    [first] = deployed.lease_tasks(silent, 1, 10)
    assert first.execution_id == execution_id
    clock.advance(11)
    _beat(deployed, other, "other")  # alive and enabled, but not allowed to run this execution
    assert deployed.sweep_expired_leases().requeued == [execution_id]
    [again] = deployed.lease_tasks(silent, 1, 10)
    assert (again.execution_id, again.attempt) == (execution_id, 2)
    assert [t.execution_id for t in deployed.lease_tasks(other, 5, 10)] == [elsewhere]


def test_a_refused_stale_report_leaves_an_event_saying_when_its_lease_expired(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    silent, other = worker("silent"), worker("other")
    execution_id = _run(deployed)
    [first] = deployed.lease_tasks(silent, 1, 10)
    expired_at = first.lease_expires_at
    clock.advance(11)
    _beat(deployed, other, "other")
    deployed.sweep_expired_leases()
    deployed.lease_tasks(other, 1, 10)
    for _ in range(2):  # the worker resends its report; the explanation is stored once
        result = deployed.complete_task(silent, first.task_id, first.attempt, "succeeded")
        assert (result.accepted, result.stale) == (False, True)
    refused = [e for e in deployed.get_events(execution_id) if "refused" in e.message]
    assert len(refused) == 1
    assert refused[0].message_source == "system"
    assert f"report of attempt 1 (succeeded) from worker {silent} refused" in refused[0].message
    assert f"its lease expired at {expired_at.isoformat()}" in refused[0].message
    assert deployed.get_execution(execution_id).status == ExecutionStatus.RUNNING


def test_extending_held_leases_by_an_outage_keeps_the_sweep_from_ending_them(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent = worker()
    execution_id = _run(deployed, retry_count=0)
    [task] = deployed.lease_tasks(agent, 1, 10)
    clock.advance(30)  # the database was away 30 s: no task heartbeat could renew the lease
    assert deployed.extend_held_leases(timedelta(seconds=30)) == 1
    assert deployed.sweep_expired_leases().ended == []
    assert deployed.complete_task(agent, task.task_id, task.attempt, "succeeded").accepted
    assert deployed.get_execution(execution_id).status == ExecutionStatus.SUCCEEDED


def test_a_task_heartbeat_counts_as_the_worker_being_alive(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent = worker()
    _run(deployed)
    [task] = deployed.lease_tasks(agent, 1, 10)
    clock.advance(20)
    assert not deployed.worker_alive(agent, timedelta(seconds=10))
    deployed.extend_leases(agent, [(task.task_id, task.attempt)], 10)
    assert deployed.worker_alive(agent, timedelta(seconds=10))


def test_a_repeated_submit_with_the_same_key_returns_the_same_execution(deployed: Catalog) -> None:
    first = _run(deployed, key="k-1")
    assert _run(deployed, key="k-1") == first
    assert deployed.execution_by_key("admin", "k-1") is not None
    assert _run(deployed, key="k-2") != first
    assert _run(deployed) != _run(deployed)  # no key: every submit is new
    with pytest.raises(Conflict, match="idempotency key 'k-1' was already used"):
        _run(deployed, key="k-1", package="load")


def test_events_keep_the_time_they_were_received_beside_the_workers_time(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent = worker()
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(agent, 1, 60)
    worker_time = clock.now - timedelta(hours=1)  # a worker clock an hour behind
    deployed.add_events(
        agent, [EventInput(execution_id, task.task_id, task.attempt, 1, worker_time, 20, "log", "hi")]
    )
    [event] = [e for e in deployed.get_events(execution_id) if e.message == "hi"]
    assert event.message_time == worker_time
    assert event.received_at == clock.now


def test_a_heartbeat_records_the_workers_clock_skew(deployed: Catalog, worker: Register) -> None:
    agent = worker()
    _beat(deployed, agent, "worker1", skew=-42.5)
    [record] = [w for w in deployed.list_workers() if w.agent_id == agent]
    assert record.clock_skew_seconds == -42.5
