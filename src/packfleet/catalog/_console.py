"""What the web console reads of a large catalog, bounded in SQL: a page of workers (search, state
filter, sort, limit and offset in the query), worker counts by state, and windows of an execution's
event messages. Every query here costs the same with ten workers or ten thousand."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, not_, or_, select

from packfleet.catalog._base import CatalogBase
from packfleet.catalog._executions import _event
from packfleet.catalog._records import EventRecord, WorkerRecord
from packfleet.catalog._schema import (
    audit_log,
    event_messages,
    executions,
    tasks,
    worker_agents,
    worker_certificates,
)
from packfleet.catalog._workers import _worker
from packfleet.errors import InvalidValue
from packfleet.protocol import ExecutionStatus, MessageType, TaskStatus

#: The states a worker page filters on; a worker is in two of them (online or offline, enabled or
#: disabled).
WORKER_STATES = ("online", "offline", "enabled", "disabled")
#: How a worker page sorts. ``state`` is worst first: offline but enabled (it should take work and
#: cannot), offline and disabled, online but disabled, then online and enabled.
WORKER_SORTS = ("state", "name", "heartbeat", "running", "cert")


@dataclass(frozen=True)
class WorkerPage:
    """One page of workers and how many match in all."""

    workers: list[WorkerRecord]
    total: int


def _online(now: datetime, window: timedelta) -> ColumnElement[bool]:
    seen = worker_agents.c.last_online_time
    return and_(seen.is_not(None), seen >= now - window)


#: The longest ``message_source`` the catalog stores (its column is ``String(16)``).
EVENT_SOURCE_MAX = 16


def _event_filter(
    execution_id: int, message_type: MessageType | None, source: str
) -> list[ColumnElement[bool]]:
    """The ``where`` of an execution's event messages, filtered. The query still walks the
    ``(execution_id, id)`` index (there is none on type or source, and no migration adds one): type
    and source are checked on that one execution's rows, in id order, and a page stops after
    ``limit`` matches."""
    if len(source) > EVENT_SOURCE_MAX or not source.isprintable():
        raise InvalidValue(
            f"event source {source!r} is not a source name (printable, at most {EVENT_SOURCE_MAX} characters)"
        )
    where: list[ColumnElement[bool]] = [event_messages.c.execution_id == execution_id]
    if message_type is not None:
        where.append(event_messages.c.message_type == int(MessageType(message_type)))
    if source:
        # A prefix matches exactly too ("stdout"), or a family ("std"); % and _ are matched as text.
        where.append(event_messages.c.message_source.startswith(source, autoescape=True))
    return where


class ConsoleCatalog(CatalogBase):
    """The console's bounded reads."""

    def worker_page(
        self,
        *,
        now: datetime,
        online_window: timedelta,
        search: str = "",
        state: str = "",
        sort: str = "state",
        descending: bool = False,
        limit: int = 25,
        offset: int = 0,
    ) -> WorkerPage:
        """Workers matching ``search`` (name, agent id, machine, tags or a certificate thumbprint,
        case-insensitive) and ``state`` (one of :data:`WORKER_STATES`), sorted, one page of them."""
        if state and state not in WORKER_STATES:
            raise InvalidValue(f"worker state {state!r} is not one of {', '.join(WORKER_STATES)}")
        if sort not in WORKER_SORTS:
            raise InvalidValue(f"worker sort {sort!r} is not one of {', '.join(WORKER_SORTS)}")
        online = _online(now, online_window)
        where: list[ColumnElement[bool]] = []
        if search:
            needle = search.strip()
            where.append(
                or_(
                    worker_agents.c.display_name.icontains(needle, autoescape=True),
                    worker_agents.c.agent_id.icontains(needle, autoescape=True),
                    worker_agents.c.machine_name.icontains(needle, autoescape=True),
                    worker_agents.c.tags.icontains(needle, autoescape=True),
                    exists().where(
                        worker_certificates.c.agent_id == worker_agents.c.agent_id,
                        worker_certificates.c.thumbprint.icontains(needle.replace(" ", ""), autoescape=True),
                    ),
                )
            )
        if state == "online":
            where.append(online)
        elif state == "offline":
            where.append(not_(online))
        elif state == "enabled":
            where.append(worker_agents.c.is_enabled.is_(True))
        elif state == "disabled":
            where.append(worker_agents.c.is_enabled.is_(False))
        keys = self._worker_order(sort, online)
        name = worker_agents.c.display_name
        order = [k.desc() if descending else k.asc() for k in keys]
        order += [name.asc(), worker_agents.c.agent_id.asc()]
        query = select(worker_agents).where(*where).order_by(*order).limit(limit).offset(offset)
        with self._read() as conn:
            total = int(conn.scalar(select(func.count()).select_from(worker_agents).where(*where)) or 0)
            rows = conn.execute(query).all()
            ids = [row.agent_id for row in rows]
            certs = (
                conn.execute(
                    select(worker_certificates)
                    .where(worker_certificates.c.agent_id.in_(ids))
                    .order_by(worker_certificates.c.created_at, worker_certificates.c.thumbprint)
                ).all()
                if ids
                else []
            )
        by_agent: dict[str, list[Any]] = {}
        for cert in certs:
            by_agent.setdefault(cert.agent_id, []).append(cert)
        return WorkerPage([_worker(row, by_agent.get(row.agent_id, [])) for row in rows], total)

    @staticmethod
    def _worker_order(sort: str, online: ColumnElement[bool]) -> list[ColumnElement[Any]]:
        if sort == "name":
            return [func.lower(worker_agents.c.display_name)]
        if sort == "heartbeat":
            # Never seen sorts as the oldest heartbeat of all.
            return [worker_agents.c.last_online_time.is_not(None), worker_agents.c.last_online_time]
        if sort == "running":
            return [func.coalesce(worker_agents.c.machine_info["running_tasks"].as_integer(), 0)]
        if sort == "cert":
            soonest = (
                select(func.min(worker_certificates.c.not_after))
                .where(
                    worker_certificates.c.agent_id == worker_agents.c.agent_id,
                    worker_certificates.c.status == "active",
                )
                .scalar_subquery()
            )
            # No active certificate sorts first: it is worse than any expiry date.
            return [soonest.is_not(None), soonest]
        enabled = worker_agents.c.is_enabled.is_(True)
        rank = case(
            (and_(not_(online), enabled), 0),
            (not_(online), 1),
            (not_(enabled), 2),
            else_=3,
        )
        return [rank]

    def worker_counts(self, *, now: datetime, online_window: timedelta) -> dict[tuple[bool, bool], int]:
        """How many workers are in each (online, enabled) state, counted in the database."""
        online = _online(now, online_window)
        flag = case((online, 1), else_=0)
        query = select(flag, worker_agents.c.is_enabled, func.count()).group_by(
            flag, worker_agents.c.is_enabled
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
        counts: dict[tuple[bool, bool], int] = {}
        for is_online, enabled, n in rows:
            key = (bool(is_online), bool(enabled))
            counts[key] = counts.get(key, 0) + int(n)
        return counts

    def worker_names(self) -> list[tuple[str, str, bool, datetime | None]]:
        """(agent id, display name, enabled, last heartbeat) of every worker, by name: the light list
        the console's choices and the certificate page's names need."""
        query = select(
            worker_agents.c.agent_id,
            worker_agents.c.display_name,
            worker_agents.c.is_enabled,
            worker_agents.c.last_online_time,
        ).order_by(worker_agents.c.display_name, worker_agents.c.agent_id)
        with self._read() as conn:
            return [
                (r.agent_id, r.display_name, bool(r.is_enabled), r.last_online_time)
                for r in conn.execute(query)
            ]

    def count_events(
        self, execution_id: int, *, message_type: MessageType | None = None, source: str = ""
    ) -> int:
        """How many event messages execution ``execution_id`` has (of ``message_type``, from a
        source starting with ``source``, when given)."""
        query = select(func.count()).where(*_event_filter(execution_id, message_type, source))
        with self._read() as conn:
            return int(conn.scalar(query) or 0)

    def event_window(
        self,
        execution_id: int,
        *,
        offset: int,
        limit: int,
        message_type: MessageType | None = None,
        source: str = "",
        after_id: int = 0,
    ) -> list[EventRecord]:
        """Event messages ``offset`` .. ``offset + limit - 1`` of an execution, in arrival order,
        optionally only those of ``message_type`` and from a source starting with ``source``.

        A negative ``offset`` counts from the end: ``-500`` is the last 500 (read newest first on the
        index, so the tail of a huge log costs what its head costs). ``after_id`` keeps only messages
        newer than that id: a download pages on it (by id, never by a growing offset).
        """
        where = _event_filter(execution_id, message_type, source)
        if after_id:
            where.append(event_messages.c.id > after_id)
        if offset < 0:
            query = select(event_messages).where(*where).order_by(event_messages.c.id.desc()).limit(-offset)
        else:
            query = (
                select(event_messages).where(*where).order_by(event_messages.c.id).limit(limit).offset(offset)
            )
        with self._read() as conn:
            rows = conn.execute(query).all()
        if offset < 0:
            rows = rows[::-1][:limit]
        return [_event(row) for row in rows]

    def event_attempts(self, execution_id: int) -> list[tuple[tuple[int, int], int]]:
        """How many event messages each (task, attempt) of an execution has, counted in the database."""
        key = (event_messages.c.task_id, event_messages.c.attempt)
        query = (
            select(*key, func.count())
            .where(event_messages.c.execution_id == execution_id)
            .group_by(*key)
            .order_by(*key)
        )
        with self._read() as conn:
            return [((int(t), int(a)), int(n)) for t, a, n in conn.execute(query).all()]

    def queue_depth(self, *, cap: int) -> tuple[int, datetime | None]:
        """Tasks waiting for a worker (READY), counted up to ``cap + 1`` (more than ``cap`` reads as
        ``cap + 1``), and when the oldest of them was made ready. Bounded: a queue of a million
        costs what one of ``cap`` costs; ``queue_summary`` gives the exact count."""
        ready = tasks.c.status == int(TaskStatus.READY)
        some = select(tasks.c.id).where(ready).limit(cap + 1).subquery()
        with self._read() as conn:
            count = int(conn.scalar(select(func.count()).select_from(some)) or 0)
            oldest = conn.scalar(select(func.min(tasks.c.created_at)).where(ready))  # first index entry
        return count, oldest

    def recent_counts(self, *, since: datetime, cap: int) -> dict[ExecutionStatus, int]:
        """Executions created at or after ``since`` in each status, each counted up to ``cap + 1``
        (one bounded range of the ``(status, created_at)`` index per status)."""
        counts = {}
        with self._read() as conn:
            for status in ExecutionStatus:
                some = (
                    select(executions.c.id)
                    .where(executions.c.status == int(status), executions.c.created_at >= since)
                    .limit(cap + 1)
                    .subquery()
                )
                counts[status] = int(conn.scalar(select(func.count()).select_from(some)) or 0)
        return counts

    def last_audit_id(self) -> int:
        """The id of the newest audit row (0 when there is none): every change to the fleet's
        certificates writes one, so a cache of them keyed on it is never stale."""
        with self._read() as conn:
            return int(conn.scalar(select(func.max(audit_log.c.id))) or 0)
