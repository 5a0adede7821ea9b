"""A submit that leases its new task, in its own transaction, to the worker of a waiting long-poll."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from packfleet.catalog import (
    TASKS_CHANNEL,
    Catalog,
    ExecutionRequest,
    ExecutionStatus,
    LeaseAsk,
    TaskStatus,
)

from .conftest import MANIFEST, FakeClock, info, listening, new_agent

Register = Callable[..., str]


def _request(catalog: Catalog, **kwargs: object) -> ExecutionRequest:
    version = catalog.get_project_version("default", "etl")
    return ExecutionRequest("default", "etl", "extract", {"rows": 5}, project_version_id=version.id, **kwargs)  # type: ignore[arg-type]


def test_the_new_task_is_leased_to_the_waiting_worker_as_its_own_look_would(
    deployed: Catalog, worker: Register
) -> None:
    agent = worker()
    record, created, leased = deployed.submit_leasing(
        _request(deployed), LeaseAsk(agent, 2, 60), actor="alice", if_newest=True
    )
    assert created and record.task is not None and record.task.status == TaskStatus.READY  # as created
    [task] = leased
    assert (task.execution_id, task.task_id, task.attempt) == (record.execution_id, record.task.task_id, 1)
    assert task.parameters == {"rows": 5} and task.package_spec
    held = deployed.get_execution(record.execution_id)
    assert held.status == ExecutionStatus.RUNNING and held.task is not None
    assert (held.task.status, held.task.agent_id) == (TaskStatus.PICKED_UP, agent)
    assert deployed.lease_tasks(agent, 5, 60) == []  # nothing left behind


def test_older_ready_tasks_come_first_up_to_the_capacity(deployed: Catalog, worker: Register) -> None:
    agent = worker()
    older = deployed.create_execution("default", "etl", "load", parameters={}, actor="bob")
    record, _, leased = deployed.submit_leasing(_request(deployed), LeaseAsk(agent, 1, 60), actor="alice")
    assert [t.execution_id for t in leased] == [older.execution_id]
    assert [t.execution_id for t in deployed.lease_tasks(agent, 5, 60)] == [record.execution_id]


def test_a_silent_worker_or_one_not_allowed_gets_nothing_and_the_task_stays_ready(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent, other = worker("one"), worker("two")
    only_other = _request(deployed, allowed_workers=(other,))
    record, created, leased = deployed.submit_leasing(only_other, LeaseAsk(agent, 1, 60), actor="alice")
    assert created and leased == []
    clock.advance(61)  # the worker's last heartbeat is older than its lease: it may be gone
    late, _, leased = deployed.submit_leasing(_request(deployed), LeaseAsk(agent, 1, 60), actor="alice")
    assert leased == []
    for execution in (record, late):
        held = deployed.get_execution(execution.execution_id)
        assert held.task is not None and held.task.status == TaskStatus.READY


def test_a_repeated_submit_leases_nothing(deployed: Catalog, worker: Register) -> None:
    agent = worker()
    first, _, leased = deployed.submit_leasing(
        _request(deployed), LeaseAsk(agent, 1, 60), actor="alice", idempotency_key="k"
    )
    again, created, more = deployed.submit_leasing(
        _request(deployed), LeaseAsk(agent, 1, 60), actor="alice", idempotency_key="k"
    )
    assert len(leased) == 1 and not created and more == [] and again.execution_id == first.execution_id


@pytest.mark.postgres
def test_other_masters_hear_of_the_task_only_when_it_was_not_leased(
    migrated_pg: str, clock: FakeClock, make_cert: Callable[[str], bytes]
) -> None:
    with listening(migrated_pg, clock) as (catalog, listener):
        catalog.deploy_project("default", MANIFEST, b"z", actor="admin")
        agent = new_agent()
        cert = catalog.add_worker_certificate(make_cert("w"), actor="admin", enable=True)
        catalog.worker_heartbeat(cert.thumbprint, info(agent, "w"))
        _, _, leased = catalog.submit_leasing(_request(catalog), LeaseAsk(agent, 1, 60), actor="a")
        assert len(leased) == 1
        assert list(listener.notifies(timeout=0.3)) == []
        _, _, leased = catalog.submit_leasing(_request(catalog), LeaseAsk(agent, 0, 60), actor="a")
        assert leased == []
        heard = list(listener.notifies(timeout=10, stop_after=1))
    assert [n.channel for n in heard] == [TASKS_CHANNEL]
