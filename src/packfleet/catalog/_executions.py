"""Executions and their event messages (SSIS ``catalog.executions``, ``catalog.event_messages``).

An execution is created *pending* with one *ready* task, like SSIS's ``[catalog].[start_execution]``
with ``@runinscaleout = 1``; a worker's lease (``_leases.py``) moves it on. Executions are pinned to
the project version their parameters were checked against (the newest at creation by default).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Connection,
    Row,
    Select,
    any_,
    bindparam,
    delete,
    func,
    literal,
    literal_column,
    select,
    update,
)

from packfleet.catalog._base import (
    SEQ_CANCEL,
    CatalogBase,
    SystemEvent,
    canonical_agent_id,
)
from packfleet.catalog._prepared import Prepared
from packfleet.catalog._records import (
    EventInput,
    EventRecord,
    ExecutionRecord,
    ExecutionRequest,
    FollowPage,
    TaskRecord,
)
from packfleet.catalog._schema import (
    event_messages,
    execution_workers,
    executions,
    folders,
    packages,
    project_versions,
    projects,
    tasks,
    worker_agents,
)
from packfleet.errors import Conflict, InvalidValue, NotFound, VersionChanged
from packfleet.protocol import EVENT_SOURCES, FINISHED_EXECUTION, ExecutionStatus, MessageType, TaskStatus

# The columns a worker's event message sets (the id is the database's).
_EVENT_COLUMNS = (
    "execution_id",
    "task_id",
    "attempt",
    "seq",
    "message_time",
    "message_type",
    "message_source",
    "message",
    "received_at",
)


def _execution_query() -> Select[Any]:
    return select(
        executions,
        tasks.c.id.label("task_id"),
        tasks.c.status.label("task_status"),
        tasks.c.attempt,
        tasks.c.agent_id,
        tasks.c.lease_expires_at,
        tasks.c.created_at.label("task_created_at"),
        tasks.c.started_at.label("task_started_at"),
        tasks.c.ended_at.label("task_ended_at"),
        tasks.c.exit_code,
        tasks.c.message,
    ).outerjoin(tasks, tasks.c.execution_id == executions.c.id)


class _SubmitStatements(NamedTuple):
    newest: Prepared
    version_by_id: Prepared
    by_key: Prepared
    insert_execution: Prepared
    insert_task: Prepared


class _ReadStatements(NamedTuple):
    execution: Prepared
    allowed: Prepared
    events_after: Prepared


# The statements of a submit, built once: building and keying a statement cost more than SQLite
# running it (cProfile of create_execution).
_VERSION_ROW = (
    select(
        project_versions.c.id,
        select(packages.c.id)
        .where(
            packages.c.project_version_id == project_versions.c.id,
            packages.c.name == bindparam("package"),
        )
        .exists()
        .label("has_package"),
    )
    .join(projects, projects.c.id == project_versions.c.project_id)
    .join(folders, folders.c.id == projects.c.folder_id)
    .where(folders.c.name == bindparam("folder"), projects.c.name == bindparam("project"))
)
_NEWEST_VERSION = _VERSION_ROW.order_by(project_versions.c.version.desc()).limit(1)
_VERSION_BY_ID = _VERSION_ROW.where(project_versions.c.id == bindparam("wanted"))
_PACKAGE_NAMES = select(packages.c.name).where(packages.c.project_version_id == bindparam("version_id"))
_BY_KEY = select(executions.c.id).where(
    executions.c.created_by == bindparam("actor"), executions.c.idempotency_key == bindparam("key")
)
_INSERT_EXECUTION = executions.insert().returning(executions.c.id)
_INSERT_TASK = tasks.insert().returning(tasks.c.id)
_EXECUTION_COLUMNS = (
    "folder",
    "project",
    "package",
    "project_version_id",
    "status",
    "parameters",
    "retry_count",
    "created_by",
    "created_at",
    "idempotency_key",
)
_TASK_COLUMNS = ("execution_id", "status", "attempt", "created_at")


#: A request's project version as checked once per transaction: folder, project, package, pinned id.
_VersionKey = tuple[str, str, str, int | None]


def _version_key(request: ExecutionRequest) -> _VersionKey:
    return (request.folder, request.project, request.package, request.project_version_id)


def _task(row: Row[Any]) -> TaskRecord | None:
    if row.task_id is None:
        return None
    return TaskRecord(
        task_id=row.task_id,
        status=TaskStatus(row.task_status),
        attempt=row.attempt,
        agent_id=row.agent_id,
        lease_expires_at=row.lease_expires_at,
        created_at=row.task_created_at,
        started_at=row.task_started_at,
        ended_at=row.task_ended_at,
        exit_code=row.exit_code,
        message=row.message,
    )


def _clean_text(text: str) -> str:
    # PostgreSQL text cannot hold NUL; a package printing binary to stdout must not lose its batch.
    return text.replace("\x00", "\ufffd")


class ExecutionCatalog(CatalogBase):
    """Creating, canceling, reading and cleaning up executions; storing their event messages."""

    def _execution_records(self, conn: Connection, rows: Sequence[Any]) -> list[ExecutionRecord]:
        allowed: dict[int, list[str]] = {row.id: [] for row in rows}
        if allowed:
            for ew in self._read_statements.allowed.rows(conn, {"ids": list(allowed)}):
                allowed[ew.execution_id].append(ew.agent_id)
        return [
            ExecutionRecord(
                execution_id=row.id,
                folder=row.folder,
                project=row.project,
                package=row.package,
                project_version_id=row.project_version_id,
                status=ExecutionStatus(row.status),
                parameters=dict(row.parameters),
                retry_count=row.retry_count,
                created_by=row.created_by,
                created_at=row.created_at,
                started_at=row.started_at,
                ended_at=row.ended_at,
                allowed_workers=tuple(allowed[row.id]),
                task=_task(row),
                idempotency_key=row.idempotency_key,
            )
            for row in rows
        ]

    def _load_execution(self, conn: Connection, execution_id: int) -> ExecutionRecord:
        row = self._read_statements.execution.first(conn, {"execution_id": execution_id})
        if row is None:
            raise NotFound(
                f"no execution {execution_id}",
                fix="packfleet executions list (finished executions are removed after the retention)",
            )
        return self._execution_records(conn, [row])[0]

    # --- creating ------------------------------------------------------------------------------

    def create_execution(
        self,
        folder: str,
        project: str,
        package: str,
        *,
        parameters: Mapping[str, Any],
        actor: str,
        allowed_workers: Sequence[str] = (),
        retry_count: int = 0,
        project_version_id: int | None = None,
        idempotency_key: str | None = None,
    ) -> ExecutionRecord:
        """Queue one run of ``folder/project/package``: execution *pending*, task *ready*.

        With ``idempotency_key``, a second call by the same ``actor`` with the same key returns the
        execution the first one created instead of a new one (a client whose answer was lost sends
        the submit again); the same key for another package is a :class:`Conflict`.

        ``allowed_workers`` are agent ids (SSIS ``[catalog].[add_execution_worker]``); none means
        any enabled worker. ``retry_count`` is how many times a task whose worker vanished (its lease
        expired) is requeued; a package that fails is never retried. ``project_version_id`` pins
        the version whose manifest the caller checked ``parameters`` against, so a deploy between
        the check and this call cannot run them against another manifest; None takes the newest.
        """
        request = ExecutionRequest(
            folder,
            project,
            package,
            dict(parameters),
            tuple(allowed_workers),
            retry_count,
            project_version_id,
        )
        record, _ = self.submit_execution(request, actor=actor, idempotency_key=idempotency_key)
        return record

    def submit_execution(
        self,
        request: ExecutionRequest,
        *,
        actor: str,
        idempotency_key: str | None = None,
        if_newest: bool = False,
    ) -> tuple[ExecutionRecord, bool]:
        """:meth:`create_execution` as the master's submit makes it: also says whether this call
        created the execution (False: an earlier one with ``idempotency_key`` did).

        With ``if_newest``, ``request.project_version_id`` must still be the newest version of its
        project, else :class:`VersionChanged`: the master checked the parameters against the
        version it took for the newest without asking the catalog, and this confirms it in the same
        transaction (another master, or a deploy, may have added one since).
        """
        with self._write() as conn:
            return self._submit(conn, request, actor, idempotency_key, if_newest=if_newest)

    def _submit(
        self,
        conn: Connection,
        request: ExecutionRequest,
        actor: str,
        key: str | None,
        *,
        if_newest: bool,
        notify: bool = True,
    ) -> tuple[ExecutionRecord, bool]:
        """:meth:`submit_execution` in the transaction of ``conn``; ``notify``: tell the other
        masters of the ready task (see :meth:`_create_one`)."""
        versions: dict[_VersionKey, int] = {}
        if if_newest:
            # Before the key: a resent submit the master checked against a replaced version is
            # answered by its checked path, which looks the key up first, as it always did.
            versions[_version_key(request)] = self._version(conn, request, if_newest=True)
        existing = self._by_key(conn, actor, key) if key else None
        if existing is not None:
            target = f"{existing.folder}/{existing.project}/{existing.package}"
            if target != f"{request.folder}/{request.project}/{request.package}":
                raise Conflict(
                    f"idempotency key {key!r} was already used by {actor} for "
                    f"execution {existing.execution_id} of {target}",
                    fix="send a new key for a new submit (packfleet run makes one when none is given)",
                )
            return existing, False
        return self._create_one(conn, request, actor, key, versions, notify=notify), True

    def execution_by_key(self, actor: str, idempotency_key: str) -> ExecutionRecord | None:
        """The execution ``actor`` created with ``idempotency_key``, if any."""
        with self._read() as conn:
            return self._by_key(conn, actor, idempotency_key)

    def _by_key(self, conn: Connection, actor: str, key: str) -> ExecutionRecord | None:
        found = self._submit_statements.by_key.scalar(conn, {"actor": actor, "key": key})
        return None if found is None else self._load_execution(conn, int(found))

    def create_executions(self, requests: Sequence[ExecutionRequest], *, actor: str) -> list[int]:
        """Queue many executions in one transaction (all or none); return their ids in order."""
        if not requests:
            return []
        with self._write() as conn:
            return self._create(conn, requests, actor)

    def _version(self, conn: Connection, request: ExecutionRequest, *, if_newest: bool = False) -> int:
        """The id of the version of its project that ``request`` runs, checked to have its package."""
        folder, project, wanted = request.folder, request.project, request.project_version_id
        names = {"folder": folder, "project": project, "package": request.package}
        if wanted is None or if_newest:
            row = self._submit_statements.newest.first(conn, names)
            if if_newest and (row is None or row.id != wanted):
                raise VersionChanged(
                    f"project {folder}/{project} has a newer version than {wanted}",
                    fix="submit again: the master checks it against the newest version",
                )
        else:
            row = self._submit_statements.version_by_id.first(conn, {**names, "wanted": wanted})
            if row is None:
                raise NotFound(
                    f"project version id {wanted} is not a version of {folder}/{project}",
                    fix="packfleet projects list",
                )
        if row is None:
            raise NotFound(
                f"no project {project!r} is deployed in folder {folder!r}",
                fix="packfleet projects list, or deploy it: packfleet deploy <project folder>",
            )
        if not row.has_package:
            known = conn.scalars(_PACKAGE_NAMES, {"version_id": row.id}).all()
            raise NotFound(
                f"project {folder}/{project} has no package "
                f"{request.package!r}; its packages: {', '.join(sorted(known))}",
                fix=f"packfleet run {folder}/{project}/<package>",
            )
        return int(row.id)

    def _checked(
        self, conn: Connection, requests: Sequence[ExecutionRequest], versions: dict[_VersionKey, int]
    ) -> tuple[list[int], list[list[str]]]:
        """The version id each request runs and its allowed agent ids (canonical, sorted), checked.

        ``versions`` holds the versions already checked in this transaction (it takes the rest).
        """
        version_ids: list[int] = []
        wanted_workers: set[str] = set()
        allowed: list[list[str]] = []
        for request in requests:
            key = _version_key(request)
            if key not in versions:
                versions[key] = self._version(conn, request)
            version_ids.append(versions[key])
            if request.retry_count < 0:
                raise InvalidValue(f"retry_count must be 0 or more, not {request.retry_count}")
            ids = sorted({canonical_agent_id(a) for a in request.allowed_workers})
            wanted_workers.update(ids)
            allowed.append(ids)
        if wanted_workers:
            known = set(
                conn.scalars(
                    select(worker_agents.c.agent_id).where(
                        worker_agents.c.agent_id.in_(sorted(wanted_workers))
                    )
                )
            )
            missing = sorted(wanted_workers - known)
            if missing:
                raise NotFound(
                    f"no worker with agent id {', '.join(missing)}; an execution limited to "
                    "unknown workers would never run",
                    fix="packfleet manager worker list",
                )
        return version_ids, allowed

    def _create_one(
        self,
        conn: Connection,
        request: ExecutionRequest,
        actor: str,
        key: str | None,
        versions: dict[_VersionKey, int],
        *,
        notify: bool = True,
    ) -> ExecutionRecord:
        """One execution and its task, answered from what was written: reading it back was half
        the time of a submit's transaction (make bench, latency).

        ``notify``: tell the masters sharing a PostgreSQL catalog that a task is ready. False when
        the caller may lease it in the same transaction and tells them itself if it did not.
        """
        [version_id], [allowed] = self._checked(conn, [request], versions)
        now = self.now()
        parameters = dict(request.parameters)
        statements = self._submit_statements
        execution_id = statements.insert_execution.scalar(
            conn,
            {
                "folder": request.folder,
                "project": request.project,
                "package": request.package,
                "project_version_id": version_id,
                "status": int(ExecutionStatus.PENDING),
                "parameters": parameters,
                "retry_count": request.retry_count,
                "created_by": actor,
                "created_at": now,
                "idempotency_key": key,
            },
        )
        task_id = statements.insert_task.scalar(
            conn,
            {"execution_id": execution_id, "status": int(TaskStatus.READY), "attempt": 0, "created_at": now},
        )
        if allowed:
            conn.execute(
                execution_workers.insert(),
                [{"execution_id": execution_id, "agent_id": agent_id} for agent_id in allowed],
            )
        if notify:
            self._notify_tasks(conn, 1)
        task = TaskRecord(task_id, TaskStatus.READY, 0, None, None, now, None, None, None, None)
        return ExecutionRecord(
            execution_id=execution_id,
            folder=request.folder,
            project=request.project,
            package=request.package,
            project_version_id=version_id,
            status=ExecutionStatus.PENDING,
            parameters=parameters,
            retry_count=request.retry_count,
            created_by=actor,
            created_at=now,
            started_at=None,
            ended_at=None,
            allowed_workers=tuple(allowed),
            task=task,
            idempotency_key=key,
        )

    def _create(self, conn: Connection, requests: Sequence[ExecutionRequest], actor: str) -> list[int]:
        version_ids, allowed = self._checked(conn, requests, {})
        now = self.now()
        execution_ids: list[int] = []
        # A bulk submit is one request many times: each run of equal requests is one statement.
        alike = itertools.groupby(
            zip(requests, version_ids, allowed, strict=True), key=lambda checked: checked
        )
        for (request, version_id, workers), run in alike:
            ids = self._insert_alike(conn, request, version_id, sum(1 for _ in run), actor, now)
            if workers:
                conn.execute(
                    execution_workers.insert(),
                    [{"execution_id": i, "agent_id": agent_id} for i in ids for agent_id in workers],
                )
            execution_ids.extend(ids)
        self._notify_tasks(conn, len(execution_ids))
        return execution_ids

    def _insert_alike(
        self,
        conn: Connection,
        request: ExecutionRequest,
        version_id: int,
        count: int,
        actor: str,
        now: datetime,
    ) -> list[int]:
        """``count`` executions of ``request`` and their ready tasks, in two statements; their ids.

        Row by row (SQLAlchemy's ``executemany`` with ``RETURNING``), 3,000 took 100 ms on SQLite,
        where each row is a statement of its own, and 300 ms on PostgreSQL, where psycopg parses a
        statement with a placeholder per value: the rows are alike, so one ``INSERT ... SELECT``
        over ``count`` numbered rows makes them all.
        """
        numbers = select(literal(1).label("n")).cte("numbers", recursive=True)
        numbers = numbers.union_all(select(numbers.c.n + 1).where(numbers.c.n < count))
        values = {
            "folder": request.folder,
            "project": request.project,
            "package": request.package,
            "project_version_id": version_id,
            "status": int(ExecutionStatus.PENDING),
            "parameters": dict(request.parameters),
            "retry_count": request.retry_count,
            "created_by": actor,
            "created_at": now,
        }
        rows = select(*(bindparam(name, value, executions.c[name].type) for name, value in values.items()))
        inserted = executions.insert().from_select(list(values), rows.select_from(numbers))
        # The rows are alike, so which id is which does not matter; they are answered in order.
        ids = sorted(conn.scalars(inserted.returning(executions.c.id)))
        if self.dialect == "postgresql":
            created = executions.c.id == any_(bindparam("ids", ids, ARRAY(BigInteger)))
        else:
            created = executions.c.id.in_(
                select(literal_column("value")).select_from(func.json_each(bindparam("ids", json.dumps(ids))))
            )
        task_rows = select(
            executions.c.id,
            literal(int(TaskStatus.READY)),
            literal(0),
            bindparam("task_created_at", now, tasks.c.created_at.type),
        ).where(created)
        conn.execute(
            tasks.insert().from_select(["execution_id", "status", "attempt", "created_at"], task_rows)
        )
        return ids

    # --- changing --------------------------------------------------------------------------------

    def cancel_execution(self, execution_id: int, *, actor: str) -> ExecutionRecord:
        """Cancel an execution (SSIS ``[catalog].[stop_operation]``).

        Not yet leased: canceled at once. Leased: *stopping*; the worker learns it from the
        ``cancel`` list of its next task heartbeat, stops the package and reports ``canceled``
        (or the lease sweep finishes the cancel if the worker is gone). Finished: Conflict.

        The task row is locked before the execution is read: on PostgreSQL (READ COMMITTED) an
        unlocked read could see *ready* while a lease commits, or *running* while a completion
        commits, and the update would then overwrite a finished execution with *stopping* that no
        worker will ever confirm. Lease, completion and sweep lock the same row first, so the
        four serialize on it; a lease skips the locked row (``SKIP LOCKED``) and finds the task
        canceled the next time it looks. SQLite's ``BEGIN IMMEDIATE`` already makes this the only writer.
        """
        with self._write() as conn:
            if self.dialect == "postgresql":
                conn.execute(
                    select(tasks.c.id).where(tasks.c.execution_id == execution_id).with_for_update()
                ).all()
            current = self._load_execution(conn, execution_id)
            task = current.task
            if current.status in FINISHED_EXECUTION:
                raise Conflict(f"execution {execution_id} already {current.status.label}; nothing to cancel")
            if current.status == ExecutionStatus.STOPPING or task is None:
                return current
            now = self.now()
            if task.status == TaskStatus.READY:
                conn.execute(
                    update(executions)
                    .where(executions.c.id == execution_id)
                    .values(status=int(ExecutionStatus.CANCELED), ended_at=now)
                )
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id == task.task_id)
                    .values(status=int(TaskStatus.CANCELED), ended_at=now)
                )
                text = f"canceled by {actor} before a worker picked it up"
            else:
                conn.execute(
                    update(executions)
                    .where(executions.c.id == execution_id)
                    .values(status=int(ExecutionStatus.STOPPING))
                )
                text = f"stop requested by {actor}; worker {task.agent_id} is told on its next task heartbeat"
            event = SystemEvent(
                execution_id, task.task_id, task.attempt, SEQ_CANCEL, MessageType.STATUS_CHANGE, text
            )
            self._system_events(conn, [event])
            self._audit(conn, actor, "execution.cancel", str(execution_id), {"status": current.status})
            return self._load_execution(conn, execution_id)

    def cleanup_completed(self, retention: timedelta) -> int:
        """Delete finished executions that ended before now - ``retention``, events and all.

        The master runs it every ``CleanupCompletedJobsIntervalInMs`` (SSIS: 12 hours).
        """
        cutoff = self.now() - retention
        with self._write() as conn:
            result = conn.execute(
                delete(executions).where(
                    executions.c.status.in_([int(s) for s in FINISHED_EXECUTION]),
                    executions.c.ended_at < cutoff,
                )
            )
            return int(result.rowcount)

    # --- reading ---------------------------------------------------------------------------------

    def list_executions(
        self,
        *,
        limit: int = 50,
        status: int | None = None,
        offset: int = 0,
        folder: str | None = None,
        project: str | None = None,
        package: str | None = None,
        created_by: str | None = None,
        agent_id: str | None = None,
    ) -> list[ExecutionRecord]:
        """The newest executions first, optionally only those with SSIS status code ``status``.

        The other filters match exactly (``agent_id``: the worker holding or last holding the task);
        ``offset`` skips that many of the newest, for the console's pages.
        """
        # The page's ids first, on the indexes alone; then only those rows joined with their tasks.
        # A deep page (offset 50,000) then skips index entries, not 50,000 joined rows.
        ids = select(executions.c.id)
        if agent_id:
            ids = ids.join(tasks, tasks.c.execution_id == executions.c.id).where(tasks.c.agent_id == agent_id)
        if status is not None:
            ids = ids.where(executions.c.status == int(status))
        for column, wanted in (
            (executions.c.folder, folder),
            (executions.c.project, project),
            (executions.c.package, package),
            (executions.c.created_by, created_by),
        ):
            if wanted:
                ids = ids.where(column == wanted)
        page = ids.order_by(executions.c.id.desc()).limit(limit).offset(offset)
        query = (
            _execution_query()
            .where(executions.c.id.in_(page.scalar_subquery()))
            .order_by(executions.c.id.desc())
        )
        with self._read() as conn:
            return self._execution_records(conn, conn.execute(query).all())

    def execution_counts(self, *, since: datetime | None = None) -> dict[ExecutionStatus, int]:
        """How many executions the catalog holds in each status (every status, zero included);
        with ``since``, only those created at or after it."""
        query = select(executions.c.status, func.count()).group_by(executions.c.status)
        if since is not None:
            query = query.where(executions.c.created_at >= since)
        with self._read() as conn:
            counted = {int(status): int(n) for status, n in conn.execute(query).all()}
        return {status: counted.get(int(status), 0) for status in ExecutionStatus}

    def queue_summary(self) -> tuple[int, datetime | None]:
        """How many tasks wait for a worker (READY), and when the oldest of them was made ready."""
        query = select(func.count(), func.min(tasks.c.created_at)).where(
            tasks.c.status == int(TaskStatus.READY)
        )
        with self._read() as conn:
            count, oldest = conn.execute(query).one()
        return int(count), oldest

    def get_execution(self, execution_id: int) -> ExecutionRecord:
        """One execution with its task (status, attempt, worker, lease) and allowed workers."""
        with self._read() as conn:
            return self._load_execution(conn, execution_id)

    # --- event messages --------------------------------------------------------------------------

    def add_events(self, agent_id: str, events: Sequence[EventInput]) -> int:
        """Store the event messages worker ``agent_id`` sent; one already stored (same task,
        attempt, seq) is skipped. Returns how many were new.

        Only events of the lease ``agent_id`` holds or held last are stored: the task's worker is
        ``agent_id`` and the event's attempt is the task's attempt. Completion, cancel and a lease
        that ran out of attempts all keep the task's worker, so the tail of a finished run still
        lands. The rest is dropped, like events of a task whose execution was cleaned up, so the
        worker can still empty its log cache: another worker's task (it must not write into a run
        it does not carry), an attempt the lease sweep requeued (the master declared that lease
        lost, clearing the task's worker; that worker's completion is stale too), and an earlier
        attempt of a task leased again (the catalog does not keep who held it).

        Raises :class:`InvalidValue` for ``seq`` < 1: negative numbers are the master's own
        system events (``SEQ_CANCEL``...), and a worker that took one first would silence them.
        """
        agent_id = canonical_agent_id(agent_id)
        if not events:
            return 0
        check_events(events)
        received = self.now()
        with self._write() as conn:
            return self._store_events(conn, agent_id, events, received)

    def _store_events(
        self,
        conn: Connection,
        agent_id: str,
        events: Sequence[EventInput],
        received: datetime,
        found: Sequence[Any] | None = None,
    ) -> int:
        """:meth:`add_events` inside the caller's transaction (events already checked).

        ``found``: the rows of every task the events name (``id``, ``execution_id``, ``attempt``,
        ``agent_id``), when the caller read them already; else they are looked up here.
        """
        leases_of, insert = self._event_statements
        if found is None:
            found = leases_of.rows(conn, {"ids": sorted({e.task_id for e in events})})
        leases = {(row.id, row.attempt): row.execution_id for row in found if row.agent_id == agent_id}
        rows = [
            {
                "execution_id": leases[(e.task_id, e.attempt)],
                "task_id": e.task_id,
                "attempt": e.attempt,
                "seq": e.seq,
                "message_time": e.time,
                "message_type": int(MessageType.from_level(e.level)),
                "message_source": e.source,
                "message": _clean_text(e.message),
                "received_at": received,
            }
            for e in events
            if (e.task_id, e.attempt) in leases
        ]
        if not rows:
            return 0
        # The driver's row count leaves out the resent events ON CONFLICT skipped.
        return insert.run_many(conn, rows)

    @functools.cached_property
    def _event_statements(self) -> tuple[Prepared, Prepared]:
        """The statements of :meth:`add_events`, built once with bound parameters, run as :class:`Prepared`.

        make bench: built on each report, with the task ids as literals, building and keying them
        cost the master more than SQLite running them (half of a no-op's report transaction).
        """
        leases_of = select(tasks.c.id, tasks.c.execution_id, tasks.c.attempt, tasks.c.agent_id).where(
            tasks.c.id.in_(bindparam("ids", expanding=True))
        )
        # inline(): no RETURNING of the new ids, which PostgreSQL's compiler would otherwise add.
        insert = (
            self._insert(event_messages)
            .on_conflict_do_nothing(index_elements=["task_id", "attempt", "seq"])
            .inline()
        )
        dialect = self._engine.dialect
        return Prepared(leases_of, dialect), Prepared(insert, dialect, column_keys=_EVENT_COLUMNS)

    def get_events(self, execution_id: int, *, after_id: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Event messages of an execution in arrival order, paged by ``after_id`` (the last id seen)."""
        with self._read() as conn:
            return self._events_after(conn, execution_id, after_id, limit)

    def execution_events(self, execution_id: int, *, after_id: int = 0, limit: int = 1000) -> FollowPage:
        """:meth:`get_execution` and :meth:`get_events` in one snapshot: what a follower reads each time.

        One call instead of two is one hop to the master's catalog thread less on the path of
        ``run --wait`` (make bench, latency).
        """
        with self._read() as conn:
            return self._follow_page(conn, execution_id, after_id, limit)

    def _follow_page(self, conn: Connection, execution_id: int, after_id: int, limit: int) -> FollowPage:
        record = self._load_execution(conn, execution_id)
        return record, self._events_after(conn, execution_id, after_id, limit)

    def _events_after(
        self, conn: Connection, execution_id: int, after_id: int, limit: int
    ) -> list[EventRecord]:
        params = {"execution_id": execution_id, "after_id": after_id, "limit": limit}
        return [_event(row) for row in self._read_statements.events_after.rows(conn, params)]

    @functools.cached_property
    def _submit_statements(self) -> _SubmitStatements:
        """A submit's statements as :class:`Prepared`: its transaction was half SQLAlchemy's own
        per-statement work (cProfile of submit_execution; make bench, latency)."""
        dialect = self._engine.dialect
        return _SubmitStatements(
            newest=Prepared(_NEWEST_VERSION, dialect),
            version_by_id=Prepared(_VERSION_BY_ID, dialect),
            by_key=Prepared(_BY_KEY, dialect),
            insert_execution=Prepared(_INSERT_EXECUTION, dialect, column_keys=_EXECUTION_COLUMNS),
            insert_task=Prepared(_INSERT_TASK, dialect, column_keys=_TASK_COLUMNS),
        )

    @functools.cached_property
    def _read_statements(self) -> _ReadStatements:
        """A follower's reads (an execution, its allowed workers, its events after an id), built once.

        make bench, latency: built per call with literal values, keying them cost more than SQLite
        running them; a woken ``run --wait`` took about 1.5 ms to read the execution it answers with.
        """
        dialect = self._engine.dialect
        return _ReadStatements(
            execution=Prepared(
                _execution_query().where(executions.c.id == bindparam("execution_id")), dialect
            ),
            allowed=Prepared(
                select(execution_workers)
                .where(execution_workers.c.execution_id.in_(bindparam("ids", expanding=True)))
                .order_by(execution_workers.c.agent_id),
                dialect,
            ),
            events_after=Prepared(
                select(event_messages)
                .where(
                    event_messages.c.execution_id == bindparam("execution_id"),
                    event_messages.c.id > bindparam("after_id"),
                )
                .order_by(event_messages.c.id)
                .limit(bindparam("limit")),
                dialect,
            ),
        )


def check_events(events: Sequence[EventInput]) -> None:
    """Refuse events with an unknown source or a ``seq`` below 1 (see :meth:`ExecutionCatalog.add_events`)."""
    for event in events:
        if event.source not in EVENT_SOURCES:
            raise InvalidValue(
                f"event source {event.source!r} is not one of {', '.join(sorted(EVENT_SOURCES))}"
            )
        if event.seq < 1:
            raise InvalidValue(
                f"event seq {event.seq} of task {event.task_id} attempt {event.attempt} is not 1 or "
                "more: a worker numbers the lines of each attempt from 1"
            )


def _event(row: Any) -> EventRecord:
    """An ``event_messages`` row as its record (the execution log's reads and the console's windows)."""
    return EventRecord(
        id=row.id,
        execution_id=row.execution_id,
        task_id=row.task_id,
        attempt=row.attempt,
        seq=row.seq,
        message_time=row.message_time,
        message_type=MessageType(row.message_type),
        message_source=row.message_source,
        message=row.message,
        received_at=row.received_at,
    )
