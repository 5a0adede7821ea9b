"""Executions and tasks: create, lease, heartbeat, complete, event messages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import pytest
from sqlalchemy import event

from packfleet import protocol
from packfleet.catalog import (
    TASKS_CHANNEL,
    Catalog,
    CompletionReport,
    CompletionResult,
    EventInput,
    ExecutionRequest,
    ExecutionStatus,
    LeaseStatus,
    MessageType,
    TaskStatus,
)
from packfleet.catalog._leases import _PackageSpecs
from packfleet.errors import CatalogError, NotFound

from .conftest import MANIFEST, FakeClock, listening, new_agent

Register = Callable[..., str]


def _run(catalog: Catalog, package: str = "extract", **kwargs: object) -> int:
    record = catalog.create_execution(
        "default",
        "etl",
        package,
        parameters={"rows": 5},
        actor="admin",
        **kwargs,  # type: ignore[arg-type]
    )
    return record.execution_id


def test_full_life_cycle_with_ssis_status_codes(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    catalog = deployed
    agent_id = worker()
    created = catalog.create_execution(
        "default", "etl", "load", parameters={"rows": 5}, actor="alice", retry_count=2
    )
    assert created.status == ExecutionStatus.PENDING and int(created.status) == 5
    assert created.task is not None and created.task.status == TaskStatus.READY
    assert int(created.task.status) == 1
    assert created.task.attempt == 0 and created.created_by == "alice"
    assert created.retry_count == 2 and created.parameters == {"rows": 5}

    clock.advance(1)
    [task] = catalog.lease_tasks(agent_id, 10, lease_seconds=60)
    assert (task.execution_id, task.attempt, task.package) == (created.execution_id, 1, "load")
    assert task.package_spec == MANIFEST["packages"][1]
    assert task.parameters == {"rows": 5}
    assert task.project_sha256 == catalog.list_projects()[0].sha256
    assert task.lease_expires_at == clock.now + timedelta(seconds=60)
    picked = catalog.get_execution(created.execution_id)
    assert picked.status == ExecutionStatus.RUNNING and picked.started_at == clock.now
    assert picked.task is not None and picked.task.status == TaskStatus.PICKED_UP
    assert picked.task.agent_id == agent_id

    clock.advance(20)
    status = catalog.extend_leases(agent_id, [(task.task_id, 1)], lease_seconds=60)
    assert status == LeaseStatus(extended=[task.task_id], cancel=[], lost=[])
    running = catalog.get_execution(created.execution_id)
    assert running.task is not None and running.task.status == TaskStatus.RUNNING
    assert running.task.lease_expires_at == clock.now + timedelta(seconds=60)

    clock.advance(5)
    result = catalog.complete_task(agent_id, task.task_id, 1, "succeeded", exit_code=0, message="ok")
    assert result == CompletionResult(task.task_id, accepted=True, stale=False)
    done = catalog.get_execution(created.execution_id)
    assert done.status == ExecutionStatus.SUCCEEDED and int(done.status) == 7 and done.ended_at == clock.now
    assert done.task is not None and done.task.status == TaskStatus.SUCCEEDED
    assert (done.task.exit_code, done.task.message, done.task.lease_expires_at) == (0, "ok", None)
    assert done.status.finished
    assert done.to_dict()["status_name"] == "succeeded"
    assert done.to_dict()["task"]["status_name"] == "succeeded"


@pytest.mark.parametrize(
    ("outcome", "task_status", "execution_status"),
    [
        ("failed", TaskStatus.FAILED, ExecutionStatus.FAILED),
        ("canceled", TaskStatus.CANCELED, ExecutionStatus.CANCELED),
    ],
)
def test_other_outcomes_map_to_ssis_codes(
    deployed: Catalog,
    worker: Register,
    outcome: str,
    task_status: TaskStatus,
    execution_status: ExecutionStatus,
) -> None:
    agent_id = worker()
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    deployed.complete_task(agent_id, task.task_id, task.attempt, outcome, exit_code=3)  # type: ignore[arg-type]
    record = deployed.get_execution(execution_id)
    assert record.status == execution_status
    assert record.task is not None and record.task.status == task_status and record.task.exit_code == 3


def test_unknown_outcome_is_refused(deployed: Catalog, worker: Register) -> None:
    agent_id = worker()
    _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    with pytest.raises(CatalogError, match="'exploded' is not one of succeeded, failed, canceled"):
        deployed.complete_task(agent_id, task.task_id, 1, "exploded")  # type: ignore[arg-type]


def test_lease_takes_the_oldest_ready_tasks_up_to_capacity(deployed: Catalog, worker: Register) -> None:
    agent_id = worker()
    ids = [_run(deployed) for _ in range(5)]
    first = deployed.lease_tasks(agent_id, 2, 60)
    assert [t.execution_id for t in first] == ids[:2]
    second = deployed.lease_tasks(agent_id, 10, 60)
    assert [t.execution_id for t in second] == ids[2:]
    assert deployed.lease_tasks(agent_id, 10, 60) == []
    assert deployed.lease_tasks(agent_id, 0, 60) == []


def test_a_leased_task_as_json_is_the_wire_message_as_it_is(deployed: Catalog, worker: Register) -> None:
    # The master's lease route sends the record's to_dict() without decoding it into the message.
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(worker(), 1, 60)
    wire = task.to_dict()
    message = protocol.decode(protocol.TaskAssignment, wire)
    assert protocol.encode(message) == wire
    assert message.execution_id == execution_id and message.parameters == {"rows": 5}


def test_disabled_or_unknown_workers_lease_nothing(deployed: Catalog, worker: Register) -> None:
    disabled = worker("off", enabled=False)
    _run(deployed)
    assert deployed.lease_tasks(disabled, 5, 60) == []
    assert deployed.lease_tasks(new_agent(), 5, 60) == []
    deployed.set_worker_enabled(disabled, True, actor="admin")
    assert len(deployed.lease_tasks(disabled, 5, 60)) == 1


def test_allowed_workers_limit_who_may_lease(deployed: Catalog, worker: Register) -> None:
    one, two = worker("one"), worker("two")
    only_two = _run(deployed, allowed_workers=[two.upper()])
    anyone = _run(deployed)
    assert deployed.get_execution(only_two).allowed_workers == (two,)
    assert [t.execution_id for t in deployed.lease_tasks(one, 5, 60)] == [anyone]
    assert [t.execution_id for t in deployed.lease_tasks(two, 5, 60)] == [only_two]


def test_creating_for_an_unknown_worker_or_package_says_what_exists(deployed: Catalog) -> None:
    with pytest.raises(NotFound) as caught:
        _run(deployed, "transform")
    assert "'transform'" in caught.value.message and "extract, load" in caught.value.message
    ghost = new_agent()
    with pytest.raises(NotFound, match=ghost):
        _run(deployed, allowed_workers=[ghost])
    with pytest.raises(NotFound, match="no project 'nope'"):
        deployed.create_execution("default", "nope", "x", parameters={}, actor="admin")
    with pytest.raises(CatalogError, match="retry_count"):
        _run(deployed, retry_count=-1)
    assert deployed.list_executions() == []


def test_executions_are_pinned_to_the_version_newest_at_creation(deployed: Catalog, worker: Register) -> None:
    agent_id = worker()
    first = _run(deployed)
    v2 = deployed.deploy_project("default", MANIFEST, b"version two", actor="admin")
    second = _run(deployed)
    tasks = {t.execution_id: t for t in deployed.lease_tasks(agent_id, 5, 60)}
    assert tasks[first].project_sha256 != v2.sha256
    assert tasks[second].project_sha256 == v2.sha256


def test_a_versions_package_specs_are_read_once_and_never_mixed_up(
    deployed: Catalog, worker: Register
) -> None:
    # Leasing reads a version's package specs from the database the first time only: versions
    # never change. A newer version with other specs gets its own.
    agent_id = worker()
    reads: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "packages.name IN" in statement:  # the lease's read of the specs
            reads.append(statement)

    event.listen(deployed._engine, "before_cursor_execute", count)
    _run(deployed)
    [first] = deployed.lease_tasks(agent_id, 5, 60)
    _run(deployed, "load")
    _run(deployed)
    assert len(deployed.lease_tasks(agent_id, 5, 60)) == 2  # "load" is new, "extract" is known
    _run(deployed, "load")
    _run(deployed)
    assert len(deployed.lease_tasks(agent_id, 5, 60)) == 2
    assert len(reads) == 2
    extract = cast(list[dict[str, Any]], MANIFEST["packages"])[0]
    changed = {**MANIFEST, "packages": [{**extract, "entry": "etl.jobs:extract_v2"}]}
    v2 = deployed.deploy_project("default", changed, b"version two", actor="admin")
    _run(deployed)
    [second] = deployed.lease_tasks(agent_id, 5, 60)
    assert len(reads) == 3
    assert first.package_spec["entry"] == "etl.jobs:extract"
    assert second.package_spec["entry"] == "etl.jobs:extract_v2"
    assert second.project_sha256 == v2.sha256 != first.project_sha256


def test_the_package_spec_cache_is_bounded_least_recently_used_first() -> None:
    specs = _PackageSpecs(size=2)
    specs.put({(1, "a"): ({"n": 1}, "x"), (2, "a"): ({"n": 2}, "y")})
    assert specs.get([(1, "a")]) == {(1, "a"): ({"n": 1}, "x")}  # now (2, "a") is the oldest
    specs.put({(3, "a"): ({"n": 3}, "z")})
    assert specs.get([(1, "a"), (2, "a"), (3, "a")]).keys() == {(1, "a"), (3, "a")}


def test_create_executions_is_one_transaction(deployed: Catalog, worker: Register) -> None:
    two = worker("two")
    ids = deployed.create_executions(
        [
            ExecutionRequest("default", "etl", "extract", {"rows": 1}),
            ExecutionRequest("default", "etl", "load", {}, (two,), 1),
        ],
        actor="bulk",
    )
    assert len(ids) == 2 and ids[0] < ids[1]
    records = {r.execution_id: r for r in deployed.list_executions()}
    assert records[ids[0]].parameters == {"rows": 1} and records[ids[0]].allowed_workers == ()
    assert records[ids[1]].allowed_workers == (two,) and records[ids[1]].retry_count == 1
    with pytest.raises(NotFound):
        deployed.create_executions(
            [ExecutionRequest("default", "etl", "extract"), ExecutionRequest("default", "etl", "nope")],
            actor="bulk",
        )
    assert len(deployed.list_executions()) == 2  # the failed batch left nothing behind
    assert deployed.create_executions([], actor="bulk") == []


def test_a_bulk_of_alike_requests_makes_each_execution_with_its_ready_task(
    deployed: Catalog, worker: Register
) -> None:
    """Runs of equal requests are inserted together: every execution still gets its own values,
    its allowed workers and one ready task, and the ids come back in the order asked."""
    two = worker("two")
    alike = ExecutionRequest("default", "etl", "extract", {"rows": 7}, retry_count=2)
    limited = ExecutionRequest("default", "etl", "load", {}, (two,))
    asked = [alike] * 3 + [limited] * 2 + [alike]
    ids = deployed.create_executions(asked, actor="bulk")
    assert len(ids) == len(set(ids)) == 6 and ids == sorted(ids)
    records = {r.execution_id: r for r in deployed.list_executions()}
    for execution_id, request in zip(ids, asked, strict=True):
        record = records[execution_id]
        assert (record.package, record.parameters, record.retry_count, record.created_by) == (
            request.package,
            dict(request.parameters),
            request.retry_count,
            "bulk",
        )
        assert record.allowed_workers == request.allowed_workers
        assert record.task is not None and record.task.status == protocol.TaskStatus.READY
        assert record.task.attempt == 0 and record.task.created_at == record.created_at
    assert len({r.task.task_id for r in records.values() if r.task is not None}) == 6
    # Only the worker allowed gets the limited ones; any worker gets the rest.
    leased = deployed.lease_tasks(two, 10, 60)
    assert sorted(t.execution_id for t in leased) == ids


def test_list_executions_newest_first_and_by_status(deployed: Catalog, worker: Register) -> None:
    agent_id = worker()
    ids = [_run(deployed) for _ in range(3)]
    deployed.lease_tasks(agent_id, 1, 60)
    assert [r.execution_id for r in deployed.list_executions()] == ids[::-1]
    assert [r.execution_id for r in deployed.list_executions(limit=2)] == ids[:0:-1]
    running = deployed.list_executions(status=ExecutionStatus.RUNNING)
    assert [r.execution_id for r in running] == ids[:1]
    with pytest.raises(NotFound):
        deployed.get_execution(999)


# --- task heartbeats and completions ------------------------------------------------------------------


def test_extend_leases_sorts_held_lost_and_canceled(deployed: Catalog, worker: Register) -> None:
    me, other = worker("me"), worker("other")
    a, b, c = _run(deployed), _run(deployed), _run(deployed)
    mine = {t.execution_id: t for t in deployed.lease_tasks(me, 2, 60)}
    [theirs] = deployed.lease_tasks(other, 1, 60)
    deployed.cancel_execution(b, actor="admin")
    status = deployed.extend_leases(
        me,
        [
            (mine[a].task_id, 1),
            (mine[b].task_id, 1),
            (mine[a].task_id + 1000, 1),  # no such task
            (theirs.task_id, 1),  # another worker's lease
        ],
        60,
    )
    assert status.extended == [mine[a].task_id, mine[b].task_id]
    assert status.cancel == [mine[b].task_id]
    assert status.lost == [mine[a].task_id + 1000, theirs.task_id]
    assert theirs.execution_id == c
    old = deployed.extend_leases(me, [(mine[a].task_id, 0)], 60)  # an attempt it never had
    assert old.lost == [mine[a].task_id]
    deleted = deployed.extend_leases(new_agent(), [(mine[a].task_id, 1)], 60)
    assert deleted.lost == [mine[a].task_id]


def test_completion_is_idempotent_per_lease(deployed: Catalog, worker: Register, clock: FakeClock) -> None:
    agent_id = worker()
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    first = deployed.complete_task(agent_id, task.task_id, 1, "failed", exit_code=2, message="boom")
    ended = deployed.get_execution(execution_id)
    clock.advance(30)
    again = deployed.complete_task(agent_id, task.task_id, 1, "failed", exit_code=2, message="boom")
    assert first == again == CompletionResult(task.task_id, True, False)
    assert deployed.get_execution(execution_id) == ended  # ended_at did not move
    contradicting = deployed.complete_task(agent_id, task.task_id, 1, "succeeded")
    assert contradicting == CompletionResult(task.task_id, False, True)
    assert deployed.get_execution(execution_id).status == ExecutionStatus.FAILED


def test_another_workers_report_is_stale(deployed: Catalog, worker: Register) -> None:
    me, other = worker("me"), worker("other")
    _run(deployed)
    [task] = deployed.lease_tasks(me, 1, 60)
    assert deployed.complete_task(other, task.task_id, 1, "succeeded").stale
    assert deployed.complete_task(me, task.task_id + 99, 1, "succeeded").stale


def test_complete_tasks_batches_reports_with_one_result_each(deployed: Catalog, worker: Register) -> None:
    agent_id = worker()
    a, b = _run(deployed), _run(deployed)
    ta, tb = deployed.lease_tasks(agent_id, 2, 60)
    results = deployed.complete_tasks(
        agent_id,
        [
            CompletionReport(ta.task_id, 1, "succeeded", 0),
            CompletionReport(tb.task_id, 1, "failed", 1, "bad row"),
            CompletionReport(ta.task_id, 1, "succeeded", 0),  # a repeat inside the batch
            CompletionReport(tb.task_id, 0, "failed"),  # an older attempt
        ],
    )
    assert [(r.task_id, r.accepted, r.stale) for r in results] == [
        (ta.task_id, True, False),
        (tb.task_id, True, False),
        (ta.task_id, True, False),
        (tb.task_id, False, True),
    ]
    assert deployed.get_execution(a).status == ExecutionStatus.SUCCEEDED
    record = deployed.get_execution(b)
    assert record.status == ExecutionStatus.FAILED
    assert record.task is not None and record.task.message == "bad row"
    assert deployed.complete_tasks(agent_id, []) == []


# --- event messages ----------------------------------------------------------------------------------


def _event(execution_id: int, task_id: int, seq: int, clock: FakeClock, **kw: object) -> EventInput:
    values: dict[str, object] = {
        "execution_id": execution_id,
        "task_id": task_id,
        "attempt": 1,
        "seq": seq,
        "time": clock.now + timedelta(milliseconds=seq),
        "level": 20,
        "source": "stdout",
        "message": f"line {seq}",
    }
    values.update(kw)
    return EventInput(**values)  # type: ignore[arg-type]


def test_events_are_stored_once_per_task_attempt_and_seq(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent_id = worker()
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    batch = [_event(execution_id, task.task_id, seq, clock) for seq in range(1, 4)]
    assert deployed.add_events(agent_id, batch) == 3
    assert deployed.add_events(agent_id, batch) == 0  # the worker resent a batch it had no answer for
    resent = batch[1:] + [_event(execution_id, task.task_id, 4, clock), batch[0]]
    assert deployed.add_events(agent_id, resent) == 1
    events = deployed.get_events(execution_id)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert events[0].message == "line 1" and events[0].message_time == batch[0].time
    page = deployed.get_events(execution_id, after_id=events[1].id, limit=1)
    assert [e.seq for e in page] == [3]
    assert deployed.add_events(agent_id, []) == 0


def test_event_levels_map_to_ssis_message_types(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent_id = worker()
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    levels = [50, 40, 30, 20, 10]
    deployed.add_events(
        agent_id,
        [_event(execution_id, task.task_id, i, clock, level=lvl) for i, lvl in enumerate(levels, 1)],
    )
    types = [e.message_type for e in deployed.get_events(execution_id)]
    assert types == [120, 120, 110, 70, 70]
    assert types[0] is MessageType.ERROR
    assert deployed.get_events(execution_id)[2].to_dict()["message_type_name"] == "warning"


def test_events_keep_odd_text_and_drop_unknown_tasks(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent_id = worker()
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    stored = deployed.add_events(
        agent_id,
        [
            _event(execution_id, task.task_id, 1, clock, message="bin\x00ary é ✓", source="stderr"),
            _event(execution_id, task.task_id + 50, 1, clock),  # its execution was cleaned up
        ],
    )
    assert stored == 1
    [event] = deployed.get_events(execution_id)
    assert event.message == "bin\ufffdary é ✓" and event.message_source == "stderr"
    with pytest.raises(CatalogError, match="event source 'printer'"):
        deployed.add_events(agent_id, [_event(execution_id, task.task_id, 1, clock, source="printer")])


# --- a report pass: events and completions in one transaction -----------------------------------------


def test_store_report_stores_events_then_ends_the_task_in_one_transaction(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent_id = worker()
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    events = [_event(execution_id, task.task_id, seq, clock) for seq in (1, 2)]
    done = [CompletionReport(task.task_id, 1, "succeeded", 0, "ok")]
    outcome = deployed.store_report(agent_id, events, done)
    assert outcome.stored == 2 and outcome.results == [CompletionResult(task.task_id, True, False)]
    record, stored = deployed.execution_events(execution_id)
    assert record.status == ExecutionStatus.SUCCEEDED
    assert [e.seq for e in stored] == [1, 2]
    # A resend after a lost answer: the events are stored once, the report accepted again.
    again = deployed.store_report(agent_id, events, done)
    assert again.stored == 0 and again.results == outcome.results
    assert [e.seq for e in deployed.get_events(execution_id)] == [1, 2]
    assert deployed.store_report(agent_id, [], []).results == []


def test_a_report_of_many_tasks_stores_their_events_in_order_and_ends_each_as_reported(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    # Events of several tasks interleaved, some resent, and a different outcome for each task: the
    # events keep their order, the resends are stored once, each task ends as reported.
    agent_id = worker()
    ids = [_run(deployed) for _ in range(4)]
    leased = deployed.lease_tasks(agent_id, 4, 60)
    by_execution = {t.execution_id: t.task_id for t in leased}
    first = [_event(e, by_execution[e], 1, clock) for e in ids]
    assert deployed.store_report(agent_id, first[:2], []).stored == 2
    events = [_event(e, by_execution[e], seq, clock) for seq in (2, 3) for e in reversed(ids)]
    events.append(_event(ids[3], by_execution[ids[3]], 4, clock, message=""))
    task_of = [by_execution[e] for e in ids]
    done = [
        CompletionReport(task_of[0], 1, "succeeded", 0),
        CompletionReport(task_of[1], 1, "failed", 3, "bad row"),
        CompletionReport(task_of[2], 1, "canceled", None, "stopped"),
        CompletionReport(task_of[3], 1, "succeeded", 0, "done"),
    ]

    outcome = deployed.store_report(agent_id, first + events, done)  # the first two are resent

    assert outcome.stored == 2 + len(events)
    assert all(r.accepted for r in outcome.results)
    arrived = [(e.execution_id, e.seq) for e in sorted(_all_events(deployed, ids), key=lambda e: e.id)]
    assert arrived == [(e.execution_id, e.seq) for e in first + events]
    records = [deployed.get_execution(e) for e in ids]
    assert [r.status for r in records] == [
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELED,
        ExecutionStatus.SUCCEEDED,
    ]
    assert [(r.task.exit_code, r.task.message) for r in records if r.task] == [
        (0, ""),
        (3, "bad row"),
        (None, "stopped"),
        (0, "done"),
    ]
    assert all(r.ended_at is not None and r.task and r.task.ended_at == r.ended_at for r in records)


def _all_events(catalog: Catalog, execution_ids: list[int]) -> list[Any]:
    return [e for execution_id in execution_ids for e in catalog.get_events(execution_id)]


def test_store_report_leases_the_next_tasks_in_its_transaction_when_asked(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent_id, other = worker(), worker("other")
    first, second, third = _run(deployed), _run(deployed), _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    done = [CompletionReport(task.task_id, 1, "succeeded", 0, "ok")]
    outcome = deployed.store_report(agent_id, [], done, lease_capacity=5, lease_seconds=60)
    assert outcome.results == [CompletionResult(task.task_id, True, False)]
    assert [t.execution_id for t in outcome.leased] == [second, third]
    assert all(t.attempt == 1 for t in outcome.leased)
    assert deployed.get_execution(first).status == ExecutionStatus.SUCCEEDED
    assert deployed.get_execution(third).status == ExecutionStatus.RUNNING
    # Nothing ready: nothing leased; a report that does not ask leases nothing.
    assert deployed.store_report(other, [], [], lease_capacity=5, lease_seconds=60).leased == []
    fourth = _run(deployed)
    assert deployed.store_report(agent_id, [], done).leased == []
    # The lease's own rules hold: a disabled worker is leased nothing, even with its report.
    disabled = worker("off", enabled=False)
    assert deployed.store_report(disabled, [], [], lease_capacity=5, lease_seconds=60).leased == []
    [leased] = deployed.store_report(agent_id, [], [], lease_capacity=1, lease_seconds=60).leased
    assert leased.execution_id == fourth


def test_store_report_reads_what_the_followers_of_the_executions_it_touched_would_find(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    agent_id = worker()
    ended, running, untouched = _run(deployed), _run(deployed), _run(deployed)
    [ended_task, running_task, _] = deployed.lease_tasks(agent_id, 3, 60)
    deployed.store_report(agent_id, [_event(ended, ended_task.task_id, 1, clock)], [])
    [first] = deployed.get_events(ended)
    outcome = deployed.store_report(
        agent_id,
        [_event(ended, ended_task.task_id, seq, clock) for seq in (2, 3, 4)]
        + [_event(running, running_task.task_id, 1, clock)],
        [CompletionReport(ended_task.task_id, 1, "succeeded", 0)],
        follows=[(ended, first.id, 2), (running, 0, 1000), (untouched, 0, 1000), (ended, 0, 1000)],
    )
    after_first, of_running, of_untouched, of_all = outcome.pages
    assert of_untouched is None  # its follower reads for itself, if anything wakes it
    assert after_first is not None
    record, events = after_first
    assert record.status == ExecutionStatus.SUCCEEDED
    assert [e.seq for e in events] == [2, 3]  # after the follow's event id, at most its limit
    # What each follower's own read finds right after the report.
    assert of_all == deployed.execution_events(ended)
    assert of_running == deployed.execution_events(running)
    assert of_running[0].status == ExecutionStatus.RUNNING
    assert deployed.store_report(agent_id, [], [], follows=[(ended, 0, 10)]).pages == [None]


def test_store_report_keeps_the_fences_of_events_and_completions(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    me, other = worker("me"), worker("other")
    mine, theirs = _run(deployed), _run(deployed)
    [my_task] = deployed.lease_tasks(me, 1, 60)
    [their_task] = deployed.lease_tasks(other, 1, 60)
    outcome = deployed.store_report(
        me,
        [_event(mine, my_task.task_id, 1, clock), _event(theirs, their_task.task_id, 1, clock)],
        [
            CompletionReport(my_task.task_id, 1, "failed", 1),
            CompletionReport(their_task.task_id, 1, "succeeded"),
        ],
    )
    assert outcome.stored == 1  # only the event of the lease this worker holds
    assert outcome.results == [
        CompletionResult(my_task.task_id, True, False),
        CompletionResult(their_task.task_id, False, True),
    ]
    assert deployed.get_execution(mine).status == ExecutionStatus.FAILED
    assert deployed.get_execution(theirs).status == ExecutionStatus.RUNNING
    assert [e.message_source for e in deployed.get_events(theirs)] == ["system"]  # the refusal, said


def test_store_report_stores_the_events_of_tasks_it_does_not_end(
    deployed: Catalog, worker: Register, clock: FakeClock
) -> None:
    # The events of the ended task are read with its completion; those of a task still running
    # (not in the completion lookup) are looked up apart: both land, only the first task ends.
    me, other = worker("me"), worker("other")
    ended, running, theirs = _run(deployed), _run(deployed), _run(deployed)
    [ended_task, running_task] = deployed.lease_tasks(me, 2, 60)
    [their_task] = deployed.lease_tasks(other, 1, 60)
    outcome = deployed.store_report(
        me,
        [
            _event(ended, ended_task.task_id, 1, clock),
            _event(running, running_task.task_id, 1, clock),
            _event(theirs, their_task.task_id, 1, clock),
        ],
        [CompletionReport(ended_task.task_id, 1, "succeeded", 0)],
    )
    assert outcome.stored == 2  # not the event of the other worker's lease
    assert outcome.results == [CompletionResult(ended_task.task_id, True, False)]
    assert deployed.get_execution(ended).status == ExecutionStatus.SUCCEEDED
    assert deployed.get_execution(running).status == ExecutionStatus.RUNNING
    assert [e.seq for e in deployed.get_events(running)] == [1]
    assert deployed.get_events(theirs) == []


def test_store_report_stores_nothing_when_a_part_is_refused_or_fails(
    deployed: Catalog, worker: Register, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent_id = worker()
    execution_id = _run(deployed)
    [task] = deployed.lease_tasks(agent_id, 1, 60)
    events = [_event(execution_id, task.task_id, 1, clock)]
    done = [CompletionReport(task.task_id, 1, "succeeded")]
    with pytest.raises(CatalogError, match="outcome 'exploded'"):
        deployed.store_report(agent_id, events, [CompletionReport(task.task_id, 1, "exploded")])  # type: ignore[arg-type]
    with pytest.raises(CatalogError, match="seq 0"):
        deployed.store_report(agent_id, [_event(execution_id, task.task_id, 0, clock)], done)

    def broken(*_args: object) -> list[CompletionResult]:
        raise CatalogError("the completion failed after the events were written")

    monkeypatch.setattr(deployed, "_complete", broken)
    with pytest.raises(CatalogError, match="after the events"):
        deployed.store_report(agent_id, events, done)
    monkeypatch.undo()
    assert deployed.get_events(execution_id) == []  # rolled back with the completion
    assert deployed.get_execution(execution_id).status == ExecutionStatus.RUNNING
    assert deployed.store_report(agent_id, events, done).stored == 1


@pytest.mark.postgres
def test_new_ready_tasks_wake_listeners_on_postgresql(migrated_pg: str, clock: FakeClock) -> None:
    """Another master LISTENing on TASKS_CHANNEL hears of each execution created (on commit)."""
    with listening(migrated_pg, clock) as (catalog, listener):
        catalog.deploy_project("default", MANIFEST, b"z", actor="admin")
        assert list(listener.notifies(timeout=0.2)) == []  # a deploy readies no task
        catalog.create_execution("default", "etl", "load", parameters={}, actor="admin")
        heard = list(listener.notifies(timeout=10, stop_after=1))
    assert [n.channel for n in heard] == [TASKS_CHANNEL]


def test_execution_counts_cover_every_status(deployed: Catalog) -> None:
    assert set(deployed.execution_counts().values()) == {0}
    first = _run(deployed)
    _run(deployed)
    deployed.cancel_execution(first, actor="admin")
    counts = deployed.execution_counts()
    assert counts[ExecutionStatus.PENDING] == 1
    assert counts[ExecutionStatus.CANCELED] == 1
    assert len(counts) == len(ExecutionStatus)
