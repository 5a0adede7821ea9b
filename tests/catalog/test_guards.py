"""What the catalog refuses to let one party do to another: a worker writing into a run it does not
carry, a cancel overwriting a completion that raced it, a run pinned to a version its parameters
were not checked against."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy
from sqlalchemy import select, update

from packfleet.catalog import (
    Catalog,
    EventInput,
    ExecutionRecord,
    ExecutionRequest,
    ExecutionStatus,
    TaskStatus,
)
from packfleet.catalog._schema import executions, tasks
from packfleet.errors import Conflict, InvalidValue, NotFound
from packfleet.pki import create_self_signed

from .conftest import MANIFEST, FakeClock, empty_database, info, new_agent

Register = Callable[..., str]


def _run(catalog: Catalog, **kwargs: object) -> int:
    record = catalog.create_execution(
        "default",
        "etl",
        "extract",
        parameters={"rows": 5},
        actor="admin",
        **kwargs,  # type: ignore[arg-type]
    )
    return record.execution_id


def _events(execution_id: int, task_id: int, attempt: int, clock: FakeClock, *seqs: int) -> list[EventInput]:
    return [
        EventInput(execution_id, task_id, attempt, seq, clock.now, 20, "stdout", f"line {seq}")
        for seq in seqs
    ]


# --- events: only the worker that holds (or held last) the lease writes them ----------------------


def test_a_worker_cannot_write_into_another_workers_run(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    owner, other = worker("one"), worker("two")
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(owner, 1, 60)
    forged = _events(execution_id, task.task_id, task.attempt, clock, 1, 2)
    assert deployed.add_events(other, forged) == 0
    assert deployed.add_events(owner, _events(execution_id, task.task_id, task.attempt, clock, 1)) == 1
    assert deployed.add_events(owner, _events(execution_id, task.task_id, task.attempt + 1, clock, 2)) == 0
    assert [(e.seq, e.message) for e in deployed.get_events(execution_id)] == [(1, "line 1")]


def test_events_of_a_finished_attempt_still_land(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    """The log cache may upload the tail of a run after its completion report."""
    agent_id = worker()
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    deployed.complete_task(agent_id, task.task_id, task.attempt, "succeeded", exit_code=0)
    assert deployed.add_events(agent_id, _events(execution_id, task.task_id, task.attempt, clock, 1, 2)) == 2


def test_events_of_a_requeued_attempt_are_dropped(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    """The sweep declared that lease lost: its worker's late lines are acknowledged, not stored."""
    first, second = worker("one"), worker("two")
    execution_id = _run(deployed, retry_count=1)
    [lost] = deployed.lease_tasks(first, 1, 60)
    clock.advance(61)
    deployed.sweep_expired_leases()
    late = _events(execution_id, lost.task_id, lost.attempt, clock, 1)
    assert deployed.add_events(first, late) == 0
    [again] = deployed.lease_tasks(second, 1, 60)
    assert deployed.add_events(first, late) == 0
    assert deployed.add_events(second, _events(execution_id, again.task_id, again.attempt, clock, 1)) == 1


@pytest.mark.parametrize("seq", [0, -2])
def test_a_worker_cannot_take_the_masters_sequence_numbers(
    deployed: Catalog, worker: Register, clock: FakeClock, seq: int
) -> None:
    agent_id = worker()
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    with pytest.raises(InvalidValue, match=f"event seq {seq} of task {task.task_id}"):
        deployed.add_events(agent_id, _events(execution_id, task.task_id, task.attempt, clock, seq))
    deployed.cancel_execution(execution_id, actor="alice")
    [system] = deployed.get_events(execution_id)
    assert system.message_source == "system" and "stop requested by alice" in system.message


# --- a run is pinned to the version its parameters were checked against ------------------------------


def test_an_execution_runs_the_version_it_was_checked_against(deployed: Catalog) -> None:
    first = deployed.get_project_version("default", "etl")
    deployed.deploy_project("default", MANIFEST | {"version": "2.0.0"}, b"PK\x05\x06" + bytes(18), actor="a")
    newest = deployed.get_project_version("default", "etl")
    assert newest.id != first.id
    assert deployed.get_execution(_run(deployed)).project_version_id == newest.id
    pinned = deployed.get_execution(_run(deployed, project_version_id=first.id))
    assert pinned.project_version_id == first.id
    [bulk] = deployed.create_executions(
        [ExecutionRequest("default", "etl", "extract", {"rows": 1}, project_version_id=first.id)], actor="a"
    )
    assert deployed.get_execution(bulk).project_version_id == first.id
    assert deployed.get_project_version_by_id(first.id).version == first.version


def test_a_version_of_another_project_is_refused(deployed: Catalog) -> None:
    other = MANIFEST | {"name": "reports"}
    deployed.deploy_project("default", other, b"PK\x05\x06" + bytes(18), actor="admin")
    foreign = deployed.get_project_version("default", "reports")
    with pytest.raises(NotFound, match=f"project version id {foreign.id} is not a version of default/etl"):
        _run(deployed, project_version_id=foreign.id)
    with pytest.raises(NotFound, match="no project version with id 999"):
        deployed.get_project_version_by_id(999)


# --- cancel racing a lease or a completion on PostgreSQL ----------------------------------------------


@pytest.fixture
def pg(migrated_pg: str, clock: FakeClock) -> Iterator[tuple[Catalog, sqlalchemy.Engine, str]]:
    """A deployed PostgreSQL catalog with one enabled worker, and a second engine to race it with."""
    empty_database(migrated_pg)
    catalog = Catalog.open(migrated_pg, clock=clock, connect_timeout=5)
    other = sqlalchemy.create_engine(migrated_pg)
    try:
        catalog.deploy_project("default", MANIFEST, b"PK\x05\x06" + bytes(18), actor="admin")
        cert = catalog.add_worker_certificate(create_self_signed(["w"]).cert_pem(), actor="a", enable=True)
        agent_id = new_agent()
        assert catalog.worker_heartbeat(cert.thumbprint, info(agent_id, "w")).state == "enabled"
        yield catalog, other, agent_id
    finally:
        other.dispose()
        catalog.close()


def _cancel_while(
    catalog: Catalog,
    other: sqlalchemy.Engine,
    execution_id: int,
    change: Callable[[sqlalchemy.Connection], None],
) -> ExecutionRecord | BaseException:
    """Cancel while another transaction has made ``change`` (holding its row locks) but not committed."""
    outcome: list[ExecutionRecord | BaseException] = []

    def cancel() -> None:
        try:
            outcome.append(catalog.cancel_execution(execution_id, actor="alice"))
        except BaseException as error:  # examined by the test
            outcome.append(error)

    with other.connect() as conn, conn.begin():
        change(conn)
        thread = threading.Thread(target=cancel)
        thread.start()
        deadline = time.monotonic() + 20
        with other.connect() as watcher:  # wait until the cancel is blocked on our row locks
            while not watcher.scalar(sqlalchemy.text("SELECT count(*) FROM pg_locks WHERE NOT granted")):
                assert time.monotonic() < deadline and thread.is_alive(), "the cancel never waited"
                time.sleep(0.02)
    thread.join(timeout=30)
    assert not thread.is_alive()
    return outcome[0]


@pytest.mark.postgres
def test_cancel_racing_a_completion_does_not_leave_it_stopping(
    pg: tuple[Catalog, sqlalchemy.Engine, str],
) -> None:
    catalog, other, agent_id = pg
    execution_id = _run(catalog)
    [task] = catalog.lease_tasks(agent_id, 1, 60)

    def complete(conn: sqlalchemy.Connection) -> None:  # what complete_tasks does, held open
        conn.execute(select(tasks.c.id).where(tasks.c.id == task.task_id).with_for_update()).all()
        conn.execute(update(tasks).where(tasks.c.id == task.task_id).values(status=int(TaskStatus.SUCCEEDED)))
        values = {"status": int(ExecutionStatus.SUCCEEDED)}
        conn.execute(update(executions).where(executions.c.id == execution_id).values(**values))

    outcome = _cancel_while(catalog, other, execution_id, complete)
    assert isinstance(outcome, Conflict) and "already succeeded" in outcome.message
    assert catalog.get_execution(execution_id).status == ExecutionStatus.SUCCEEDED


@pytest.mark.postgres
def test_cancel_racing_a_lease_stops_the_worker_instead_of_claiming_nobody_had_it(
    pg: tuple[Catalog, sqlalchemy.Engine, str],
) -> None:
    catalog, other, agent_id = pg
    execution_id = _run(catalog)
    [task_id] = [r.task.task_id for r in catalog.list_executions() if r.task is not None]

    def lease(conn: sqlalchemy.Connection) -> None:  # what lease_tasks does, held open
        conn.execute(select(tasks.c.id).where(tasks.c.id == task_id).with_for_update(skip_locked=True)).all()
        picked = {"status": int(TaskStatus.PICKED_UP), "agent_id": agent_id, "attempt": 1}
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(**picked))
        running = {"status": int(ExecutionStatus.RUNNING)}
        conn.execute(update(executions).where(executions.c.id == execution_id).values(**running))

    outcome = _cancel_while(catalog, other, execution_id, lease)
    assert isinstance(outcome, ExecutionRecord), outcome
    assert outcome.status == ExecutionStatus.STOPPING
    assert outcome.task is not None and outcome.task.status == TaskStatus.PICKED_UP
    [event] = catalog.get_events(execution_id)
    assert f"worker {agent_id} is told on its next task heartbeat" in event.message
    assert catalog.extend_leases(agent_id, [(task_id, 1)], 60).cancel == [task_id]
