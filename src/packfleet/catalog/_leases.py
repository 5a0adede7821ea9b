"""Task leases: the hot path between the master and its workers.

A lease is ``(task_id, attempt)``: leasing a task bumps its attempt, so every later report names the
lease it belongs to and a report from an older lease (the worker was presumed gone and the task
requeued) is recognisably stale. Each call is a few set-based statements in one transaction:
PostgreSQL picks ready tasks with ``FOR UPDATE SKIP LOCKED`` (masters sharing the database never hand
out the same task, nor wait on each other); SQLite serializes writers with ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, get_args

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    Integer,
    Select,
    String,
    Text,
    bindparam,
    exists,
    func,
    not_,
    or_,
    select,
    update,
)

from packfleet.catalog._base import (
    SEQ_LEASE_EXPIRED,
    SEQ_REPORT_REFUSED,
    CatalogBase,
    SystemEvent,
    canonical_agent_id,
)
from packfleet.catalog._prepared import Prepared
from packfleet.catalog._records import (
    CompletionReport,
    CompletionResult,
    LeaseStatus,
    SweepResult,
    TaskAssignment,
)
from packfleet.catalog._schema import (
    UtcDateTime,
    execution_workers,
    executions,
    packages,
    project_versions,
    tasks,
    worker_agents,
)
from packfleet.errors import CatalogError
from packfleet.protocol import LEASED_TASK, ExecutionStatus, MessageType, Outcome, TaskStatus

# outcome -> (task status, execution status), as SSIS reports a Scale Out run.
_OUTCOMES: dict[str, tuple[TaskStatus, ExecutionStatus]] = {
    "succeeded": (TaskStatus.SUCCEEDED, ExecutionStatus.SUCCEEDED),
    "failed": (TaskStatus.FAILED, ExecutionStatus.FAILED),
    "canceled": (TaskStatus.CANCELED, ExecutionStatus.CANCELED),
}
_LEASED = [int(s) for s in LEASED_TASK]
# Built once: an idle worker's woken long-poll asks it before every lease (make bench, latency).
_LAST_ONLINE = select(worker_agents.c.last_online_time).where(worker_agents.c.agent_id == bindparam("agent"))


def _allowed_for(agent_id: str | ColumnElement[str]) -> ColumnElement[bool]:
    """No ``execution_workers`` row for the task's execution (any worker), or one for this agent."""
    ew = execution_workers.c
    # Correlated to every enclosing query: nested in another EXISTS (the lease's "someone else may
    # run it"), SQLAlchemy would correlate only to the nearest one and add ``tasks`` to this FROM,
    # asking about any task instead of this one.
    for_the_task = ew.execution_id == tasks.c.execution_id
    return or_(
        not_(exists().where(for_the_task).correlate_except(execution_workers)),
        exists().where(for_the_task, ew.agent_id == agent_id).correlate_except(execution_workers),
    )


def _refusal(row: Any, report: CompletionReport, agent_id: str, status: int) -> SystemEvent:
    """The system event explaining why a completion report was not recorded."""
    said = f"report of attempt {report.attempt} ({report.outcome}) from worker {agent_id} refused"
    if row.lost_by == agent_id and row.lost_at is not None and report.attempt <= row.attempt:
        why = f"its lease expired at {row.lost_at.isoformat()}"
    elif row.attempt != report.attempt or row.agent_id != agent_id:
        why = f"the task is at attempt {row.attempt} on worker {row.agent_id or '(none)'}"
    else:
        why = f"the task already ended as {TaskStatus(status).label}"
    if row.attempt != report.attempt:
        why += f"; attempt {row.attempt} is the current one"
    return SystemEvent(
        row.execution_id, row.id, report.attempt, SEQ_REPORT_REFUSED, MessageType.WARNING, f"{said}: {why}"
    )


class _PackageSpecs:
    """The package specs and archive digests of project versions, by ``(version id, package)``.

    make bench: reading them cost the lease one statement of three. A deployed version never
    changes, and none is deleted while an execution refers to it (``executions.project_version_id``
    is a foreign key without cascade, and the catalog deletes no version), so an entry never goes
    stale. Bounded, least recently used out first; shared by the threads of one catalog object.
    """

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[int, str], tuple[Mapping[str, Any], str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, keys: Collection[tuple[int, str]]) -> dict[tuple[int, str], tuple[Mapping[str, Any], str]]:
        found = {}
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    found[key] = entry
        return found

    def put(self, entries: Mapping[tuple[int, str], tuple[Mapping[str, Any], str]]) -> None:
        with self._lock:
            self._entries.update(entries)
            for key in entries:
                self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


def check_outcomes(reports: Sequence[CompletionReport]) -> None:
    """Refuse a report whose outcome is not one the catalog maps to SSIS status codes."""
    for report in reports:
        if report.outcome not in _OUTCOMES:
            known = ", ".join(get_args(Outcome))
            raise CatalogError(f"task outcome {report.outcome!r} is not one of {known}")


class LeaseCatalog(CatalogBase):
    """Leasing, extending, completing and sweeping tasks."""

    def _lock(self, query: Select[Any], *, skip_locked: bool = False) -> Select[Any]:
        # SQLite has no row locks (BEGIN IMMEDIATE already made this transaction the only writer);
        # on PostgreSQL lock the task rows only, never the joined execution rows.
        if self.dialect == "postgresql":
            return query.with_for_update(of=tasks, skip_locked=skip_locked)
        return query

    @functools.cached_property
    def _package_specs(self) -> _PackageSpecs:
        return _PackageSpecs()

    @functools.cached_property
    def _lease_statements(self) -> tuple[Prepared, Prepared, Executable]:
        """The three statements of :meth:`lease_tasks`, built once with bound parameters.

        make bench: the lease was the master's largest catalog cost with five statements, and
        building SQLAlchemy constructs on each call cost more than SQLite running them. Now:
        pick-and-update the tasks with UPDATE ... RETURNING (SQLite >= 3.35 and PostgreSQL), the
        enabled check folded into the pick; the same for their executions; then their packages,
        only for versions not in :attr:`_package_specs` already. The first two run on every lease, as
        :class:`Prepared` statements; the third seldom, through SQLAlchemy.
        """
        agent = bindparam("agent", type_=String)
        enabled = exists().where(worker_agents.c.agent_id == agent, worker_agents.c.is_enabled)
        # A task whose lease this very worker let expire goes to another live, enabled worker that
        # may run it, if there is one: the worker that went silent (partitioned, paused) may still
        # hold a long-poll, but it is the one least likely to finish the task.
        other = worker_agents.alias("other_worker")
        someone_else = exists().where(
            other.c.agent_id != agent,
            other.c.is_enabled,
            other.c.last_online_time >= bindparam("alive_since", type_=UtcDateTime),
            _allowed_for(other.c.agent_id),
        )
        not_the_loser = or_(tasks.c.lost_by.is_(None), tasks.c.lost_by != agent, not_(someone_else))
        ready = self._lock(
            select(tasks.c.id)
            .where(tasks.c.status == int(TaskStatus.READY), _allowed_for(agent), enabled, not_the_loser)
            .order_by(tasks.c.id)
            .limit(bindparam("cap", type_=Integer)),
            skip_locked=True,
        )
        pick = (
            update(tasks)
            .where(tasks.c.id.in_(ready.scalar_subquery()))
            .values(
                status=int(TaskStatus.PICKED_UP),
                agent_id=agent,
                attempt=tasks.c.attempt + 1,
                lease_expires_at=bindparam("expires", type_=UtcDateTime),
                started_at=bindparam("now", type_=UtcDateTime),
            )
            .returning(tasks.c.id, tasks.c.attempt, tasks.c.execution_id)
        )
        start = (
            update(executions)
            .where(executions.c.id.in_(bindparam("ids", expanding=True)))
            .values(
                status=int(ExecutionStatus.RUNNING),
                started_at=func.coalesce(executions.c.started_at, bindparam("now", type_=UtcDateTime)),
            )
            .returning(
                executions.c.id,
                executions.c.folder,
                executions.c.project,
                executions.c.package,
                executions.c.parameters,
                executions.c.project_version_id,
            )
        )
        packages_of = (
            select(packages.c.project_version_id, packages.c.name, packages.c.spec, project_versions.c.sha256)
            .join(project_versions, project_versions.c.id == packages.c.project_version_id)
            .where(
                packages.c.project_version_id.in_(bindparam("versions", expanding=True)),
                packages.c.name.in_(bindparam("names", expanding=True)),
            )
        )
        dialect = self._engine.dialect
        return Prepared(pick, dialect), Prepared(start, dialect), packages_of

    def lease_tasks(self, agent_id: str, capacity: int, lease_seconds: float) -> list[TaskAssignment]:
        """Lease up to ``capacity`` of the oldest ready tasks ``agent_id`` may run.

        Nothing for a disabled or unknown worker. Each leased task is *picked up* with its attempt
        increased and a lease of ``lease_seconds`` (the worker's ``LeaseInterval``); its execution
        becomes *running*. A task requeued because this worker's lease on it expired is left for
        another enabled worker that heartbeated within ``lease_seconds`` and may run it; only when
        there is none does the same worker get it again.
        """
        agent_id = canonical_agent_id(agent_id)
        if capacity <= 0:
            return []
        with self._write() as conn:
            return self._lease(conn, agent_id, capacity, lease_seconds)

    def _lease(
        self, conn: Connection, agent_id: str, capacity: int, lease_seconds: float
    ) -> list[TaskAssignment]:
        """:meth:`lease_tasks` in the transaction of ``conn`` (``agent_id`` canonical)."""
        now = self.now()
        expires = now + timedelta(seconds=lease_seconds)
        pick, start, packages_of = self._lease_statements
        params = {
            "agent": agent_id,
            "cap": capacity,
            "expires": expires,
            "now": now,
            "alive_since": now - timedelta(seconds=lease_seconds),
        }
        leased = pick.rows(conn, params)
        if not leased:
            return []
        running = start.rows(conn, {"ids": sorted({row.execution_id for row in leased}), "now": now})
        by_execution = {row.id: row for row in running}
        wanted = {(row.project_version_id, row.package) for row in running}
        specs = self._package_specs.get(wanted)
        if missing := wanted - specs.keys():
            loaded = {
                (row.project_version_id, row.name): (row.spec, row.sha256)
                for row in conn.execute(
                    packages_of,
                    {
                        "versions": sorted({v for v, _ in missing}),
                        "names": sorted({n for _, n in missing}),
                    },
                )
                if (row.project_version_id, row.name) in missing
            }
            self._package_specs.put(loaded)
            specs.update(loaded)
        assignments: list[TaskAssignment] = []
        for row in sorted(leased, key=lambda r: r.id):
            execution = by_execution[row.execution_id]
            package = specs.get((execution.project_version_id, execution.package))
            if package is None:  # the join the old query made: no package row, no assignment
                continue
            spec, sha256 = package
            assignments.append(
                TaskAssignment(
                    execution_id=execution.id,
                    task_id=row.id,
                    attempt=row.attempt,
                    folder=execution.folder,
                    project=execution.project,
                    package=execution.package,
                    package_spec=dict(spec),
                    parameters=dict(execution.parameters),
                    project_sha256=sha256,
                    lease_expires_at=expires,
                )
            )
        return assignments

    def extend_leases(
        self, agent_id: str, leases: Sequence[tuple[int, int]], lease_seconds: float
    ) -> LeaseStatus:
        """Renew the leases a worker still holds (its task heartbeat) and mark them *running*.

        ``cancel`` lists held leases whose execution is *stopping*; they are extended too, so the
        worker has time to stop the package and report. ``lost`` lists leases the worker no longer
        holds (requeued, finished, another attempt or worker): it must abandon those tasks.
        """
        agent_id = canonical_agent_id(agent_id)
        now = self.now()
        held_rows, worker_row, seen, renew = self._extend_statements
        with self._write() as conn:
            rows = held_rows.rows(
                conn, {"ids": sorted({task_id for task_id, _ in leases}), "agent": agent_id}
            )
            by_id = {row.id: row for row in rows}
            known = worker_row.scalar(conn, {"agent": agent_id})
            extended: list[int] = []
            cancel: list[int] = []
            lost: list[int] = []
            for task_id, attempt in leases:
                row = by_id.get(task_id)
                held = (
                    known is not None
                    and row is not None
                    and row.agent_id == agent_id
                    and row.attempt == attempt
                    and row.status in _LEASED
                )
                if not held:
                    lost.append(task_id)
                    continue
                extended.append(task_id)
                if row is not None and row.execution_status == ExecutionStatus.STOPPING:
                    cancel.append(task_id)
            if known is not None:
                # A task heartbeat shows the worker alive as well as its own heartbeat does.
                seen.run(conn, {"agent": agent_id, "now": now})
            if extended:
                renew.run(conn, {"ids": extended, "expires": now + timedelta(seconds=lease_seconds)})
        return LeaseStatus(extended=extended, cancel=cancel, lost=lost)

    @functools.cached_property
    def _extend_statements(self) -> tuple[Prepared, Prepared, Prepared, Prepared]:
        """The statements of :meth:`extend_leases`, built once (see :attr:`_lease_statements`)."""
        agent = bindparam("agent", type_=String)
        held_rows = self._lock(
            select(
                tasks.c.id,
                tasks.c.attempt,
                tasks.c.agent_id,
                tasks.c.status,
                executions.c.status.label("execution_status"),
            )
            .join(executions, executions.c.id == tasks.c.execution_id)
            # Only this worker's rows: another's (or a requeued, ready one) is reported lost all the
            # same, and locking it (PostgreSQL) would make a concurrent lease skip a ready task.
            .where(tasks.c.id.in_(bindparam("ids", expanding=True)), tasks.c.agent_id == agent)
        )
        worker_row = select(worker_agents.c.agent_id).where(worker_agents.c.agent_id == agent)
        seen = (
            update(worker_agents)
            .where(worker_agents.c.agent_id == agent)
            .values(last_online_time=bindparam("now", type_=UtcDateTime))
        )
        renew = (
            update(tasks)
            .where(tasks.c.id.in_(bindparam("ids", expanding=True)))
            .values(
                status=int(TaskStatus.RUNNING),
                lease_expires_at=bindparam("expires", type_=UtcDateTime),
            )
        )
        dialect = self._engine.dialect
        return (
            Prepared(held_rows, dialect),
            Prepared(worker_row, dialect),
            Prepared(seen, dialect),
            Prepared(renew, dialect),
        )

    def complete_task(
        self,
        agent_id: str,
        task_id: int,
        attempt: int,
        outcome: Outcome,
        *,
        exit_code: int | None = None,
        message: str = "",
    ) -> CompletionResult:
        """Record how the task of lease ``(task_id, attempt)`` ended; see :meth:`complete_tasks`."""
        report = CompletionReport(task_id, attempt, outcome, exit_code, message)
        return self.complete_tasks(agent_id, [report])[0]

    def complete_tasks(self, agent_id: str, reports: Sequence[CompletionReport]) -> list[CompletionResult]:
        """Record completion reports in one transaction, one result per report.

        Idempotent per lease: a report repeated after a lost answer is accepted again and changes
        nothing. A report for an older attempt or another worker's lease is not accepted and marked
        ``stale``: the task was requeued and belongs to someone else now.
        """
        agent_id = canonical_agent_id(agent_id)
        check_outcomes(reports)
        if not reports:
            return []
        now = self.now()
        with self._write() as conn:
            return self._complete(conn, agent_id, reports, now)

    def _complete(
        self,
        conn: Connection,
        agent_id: str,
        reports: Sequence[CompletionReport],
        now: datetime,
        rows: Sequence[Any] | None = None,
    ) -> list[CompletionResult]:
        """:meth:`complete_tasks` inside the caller's transaction (outcomes already checked).

        ``rows``: what :meth:`_completion_rows` read for these reports' tasks (and maybe more), when
        the caller read them already.
        """
        if rows is None:
            rows = self._completion_rows(conn, {r.task_id for r in reports})
        by_id = {row.id: row for row in rows}
        final: dict[int, int] = {row.id: row.status for row in rows}
        changes: list[dict[str, Any]] = []
        results: list[CompletionResult] = []
        refusals: list[SystemEvent] = []
        for report in reports:
            row = by_id.get(report.task_id)
            task_status, execution_status = _OUTCOMES[report.outcome]
            mine = row is not None and row.agent_id == agent_id and row.attempt == report.attempt
            if row is not None and mine and final[row.id] in _LEASED:
                final[row.id] = int(task_status)
                changes.append(
                    {
                        "_task": row.id,
                        "_execution": row.execution_id,
                        "_task_status": int(task_status),
                        "_execution_status": int(execution_status),
                        "_exit_code": report.exit_code,
                        "_message": report.message,
                        "_ended": now,
                    }
                )
                results.append(CompletionResult(report.task_id, True, False))
            elif row is not None and mine and final[row.id] == task_status:
                results.append(CompletionResult(report.task_id, True, False))
            else:
                results.append(CompletionResult(report.task_id, False, True))
                if row is not None:
                    refusals.append(_refusal(row, report, agent_id, final[row.id]))
        if changes:
            self._apply_completions(conn, changes)
        # The log says why the status and the worker's report disagree (a resent refusal is
        # stored once: same task, attempt and sequence number).
        self._system_events(conn, refusals)
        return results

    def _completion_rows(self, conn: Connection, task_ids: set[int]) -> list[Any]:
        """The rows of tasks ``task_ids`` as a completion needs them, locked on PostgreSQL."""
        lookup, _, _ = self._completion_statements
        return lookup.rows(conn, {"ids": sorted(task_ids)})

    @functools.cached_property
    def _completion_statements(self) -> tuple[Prepared, Prepared, Prepared]:
        """The statements of :meth:`complete_tasks`, built once (see :attr:`_lease_statements`)."""
        lookup = self._lock(
            select(
                tasks.c.id,
                tasks.c.execution_id,
                tasks.c.attempt,
                tasks.c.agent_id,
                tasks.c.status,
                tasks.c.lost_by,
                tasks.c.lost_at,
            ).where(tasks.c.id.in_(bindparam("ids", expanding=True)))
        )
        end_tasks = (
            update(tasks)
            .where(tasks.c.id == bindparam("_task"))
            .values(
                status=bindparam("_task_status"),
                exit_code=bindparam("_exit_code", type_=Integer),
                message=bindparam("_message", type_=Text),
                ended_at=bindparam("_ended", type_=UtcDateTime),
                lease_expires_at=None,
            )
        )
        end_executions = (
            update(executions)
            .where(executions.c.id == bindparam("_execution"))
            .values(
                status=bindparam("_execution_status"),
                ended_at=bindparam("_ended", type_=UtcDateTime),
            )
        )
        dialect = self._engine.dialect
        return Prepared(lookup, dialect), Prepared(end_tasks, dialect), Prepared(end_executions, dialect)

    def _apply_completions(self, conn: Connection, changes: list[dict[str, Any]]) -> None:
        _, end_tasks, end_executions = self._completion_statements
        end_tasks.run_many(conn, changes)
        end_executions.run_many(conn, changes)

    def renew_leases(self, grace: timedelta) -> int:
        """Give every held lease at least ``grace`` from now; return how many were renewed.

        A master calls this when it starts: while it was away no worker *could* renew a lease, so
        an expiry that fell in that gap says nothing about the worker. Counting leases from the
        moment the master is back keeps a master restart from ending healthy tasks.
        """
        until = self.now() + grace
        with self._write() as conn:
            renewed = conn.execute(
                update(tasks)
                .where(tasks.c.status.in_(_LEASED), tasks.c.lease_expires_at < until)
                .values(lease_expires_at=until)
            )
        return int(renewed.rowcount or 0)

    def extend_held_leases(self, by: timedelta) -> int:
        """Push every held lease's expiry ``by`` later; return how many were extended.

        A master calls this when its catalog comes back after an outage, before any sweep: while
        the database was unreachable no worker could renew a lease, so the time it was away must
        not count against them.
        """
        with self._write() as conn:
            held = conn.execute(
                self._lock(
                    select(tasks.c.id, tasks.c.lease_expires_at).where(
                        tasks.c.status.in_(_LEASED), tasks.c.lease_expires_at.is_not(None)
                    )
                )
            ).all()
            if held:
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id == bindparam("_id"))
                    .values(lease_expires_at=bindparam("_until", type_=UtcDateTime)),
                    [{"_id": row.id, "_until": row.lease_expires_at + by} for row in held],
                )
        return len(held)

    def worker_alive(self, agent_id: str, within: timedelta) -> bool:
        """Whether ``agent_id`` heartbeated (agent or task heartbeat) within ``within`` of now."""
        with self._read() as conn:
            return self._alive(conn, canonical_agent_id(agent_id), within)

    def _alive(self, conn: Connection, agent_id: str, within: timedelta) -> bool:
        seen = conn.scalar(_LAST_ONLINE, {"agent": agent_id})
        return seen is not None and seen >= self.now() - within

    def sweep_expired_leases(self) -> SweepResult:
        """Deal with tasks whose worker stopped renewing the lease (SSIS DealWithExpiredTasks).

        While attempts remain (``attempt < retry_count + 1``) the task is *ready* again with its
        attempt count kept and the execution *pending*; otherwise the task *failed* and the
        execution *ended unexpectedly*. A *stopping* execution whose lease expired is *canceled*.
        Each gets a ``system`` event saying why.
        """
        now = self.now()
        with self._write() as conn:
            expired = conn.execute(
                self._lock(
                    select(
                        tasks.c.id,
                        tasks.c.execution_id,
                        tasks.c.attempt,
                        tasks.c.agent_id,
                        tasks.c.lease_expires_at,
                        executions.c.status.label("execution_status"),
                        executions.c.retry_count,
                    )
                    .join(executions, executions.c.id == tasks.c.execution_id)
                    .where(tasks.c.status.in_(_LEASED), tasks.c.lease_expires_at < now)
                    .order_by(tasks.c.id),
                    skip_locked=True,
                )
            ).all()
            result = SweepResult(requeued=[], ended=[], canceled=[])
            events: list[SystemEvent] = []
            for row in expired:
                lost = (
                    f"worker {row.agent_id} stopped renewing the lease of attempt {row.attempt} "
                    f"(expired {row.lease_expires_at.isoformat()})"
                )
                max_attempts = row.retry_count + 1
                if row.execution_status == ExecutionStatus.STOPPING:
                    result.canceled.append(row.execution_id)
                    kind, text = MessageType.STATUS_CHANGE, f"{lost}; the stop request is complete"
                elif row.attempt < max_attempts:
                    result.requeued.append(row.execution_id)
                    kind = MessageType.WARNING
                    text = f"{lost}; requeued for attempt {row.attempt + 1} of {max_attempts}"
                else:
                    result.ended.append(row.execution_id)
                    kind = MessageType.ERROR
                    text = f"{lost}; no attempts left ({max_attempts}), ended unexpectedly"
                events.append(
                    SystemEvent(row.execution_id, row.id, row.attempt, SEQ_LEASE_EXPIRED, kind, text)
                )
            self._settle(conn, result, now)
            losers = [
                {"_id": row.id, "_by": row.agent_id, "_at": row.lease_expires_at}
                for row in expired
                if row.execution_id not in result.canceled
            ]
            if losers:
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id == bindparam("_id"))
                    .values(lost_by=bindparam("_by"), lost_at=bindparam("_at", type_=UtcDateTime)),
                    losers,
                )
            self._system_events(conn, events)
            if result.requeued:
                self._notify_tasks(conn)
        return result

    def _settle(self, conn: Connection, result: SweepResult, now: datetime) -> None:
        groups = (
            (result.requeued, TaskStatus.READY, ExecutionStatus.PENDING, None),
            (result.ended, TaskStatus.FAILED, ExecutionStatus.ENDED_UNEXPECTEDLY, now),
            (result.canceled, TaskStatus.CANCELED, ExecutionStatus.CANCELED, now),
        )
        for execution_ids, task_status, execution_status, ended in groups:
            if not execution_ids:
                continue
            task_values: dict[str, Any] = {"status": int(task_status), "lease_expires_at": None}
            if task_status == TaskStatus.READY:
                task_values["agent_id"] = None
            else:
                task_values["ended_at"] = ended
            conn.execute(update(tasks).where(tasks.c.execution_id.in_(execution_ids)).values(**task_values))
            conn.execute(
                update(executions)
                .where(executions.c.id.in_(execution_ids))
                .values(status=int(execution_status), ended_at=ended)
            )
