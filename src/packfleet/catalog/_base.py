"""What every part of :class:`~packfleet.catalog.Catalog` shares: engine, clock, transactions, audit.

Each public method is one transaction: ``_write()`` for changes (on SQLite ``BEGIN IMMEDIATE``, so
writers queue instead of failing), ``_read()`` for a consistent snapshot. Nothing is held between
calls, which is what makes a :class:`Catalog` safe to share between threads.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import URL, Connection, Engine, Table, text
from sqlalchemy.dialects import postgresql, sqlite

from packfleet.catalog._engine import WRITE_OPTION, mask, translated
from packfleet.catalog._records import plain
from packfleet.catalog._schema import audit_log, event_messages
from packfleet.errors import InvalidValue
from packfleet.protocol import MessageType

Clock = Callable[[], datetime]

# PostgreSQL LISTEN channel: a notification is sent (on commit) whenever a task becomes READY, so a
# master long-polling for a worker wakes up even when another master created the execution.
TASKS_CHANNEL = "packfleet_tasks"


class SystemEvent(NamedTuple):
    """An event message the master writes about a task (source ``system``)."""

    execution_id: int
    task_id: int
    attempt: int
    seq: int
    message_type: MessageType
    message: str


# Sequence numbers of system events, one per kind and task attempt (see _system_events).
SEQ_LEASE_EXPIRED = -1
SEQ_CANCEL = -2
SEQ_REPORT_REFUSED = -3


def utc_now() -> datetime:
    """The default clock: the current time, aware, in UTC."""
    return datetime.now(UTC)


def canonical_agent_id(text_: str) -> str:
    """Return a worker ``AgentId`` in one spelling (lowercase, hyphenated), whatever way it was typed.

    SSIS shows agent ids as GUIDs, sometimes uppercase or in braces; all name the same worker.

    >>> canonical_agent_id("{6F1C3D8E-0B2A-4C5D-9E8F-7A6B5C4D3E2F}")
    '6f1c3d8e-0b2a-4c5d-9e8f-7a6b5c4d3e2f'
    """
    try:
        return str(uuid.UUID(text_.strip()))
    except ValueError as error:
        raise InvalidValue(
            f"{text_!r} is not a worker agent id (a UUID like 6f1c3d8e-0b2a-4c5d-9e8f-7a6b5c4d3e2f)",
            fix="copy AgentId from the worker's WorkerSettings.config or from "
            "`packfleet manager worker list`",
        ) from error


class CatalogBase:
    """Engine, clock and transaction helpers shared by the parts of :class:`Catalog`."""

    def __init__(self, engine: Engine, url: URL, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        self._url = url
        self.clock = clock
        #: Names this catalog object in its task notifications (PostgreSQL): its own master has
        #: already woken its long-polls for what it changed, and must not wake them again.
        self.origin = uuid.uuid4().hex

    @property
    def url(self) -> str:
        """The catalog URL with its password masked, fit for logs and messages."""
        return mask(self._url)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    def now(self) -> datetime:
        """The injected clock's time, in UTC (a naive time from the clock is taken as UTC)."""
        value = self.clock()
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with translated(self._url), self._writer.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with translated(self._url), self._engine.begin() as conn:
            yield conn

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """An INSERT that can take ``on_conflict_do_nothing`` on the current backend."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def _notify_tasks(self, conn: Connection, count: int | None = None) -> None:
        """Tell every master sharing a PostgreSQL catalog (on commit) that tasks became ready.

        The payload is :attr:`origin`, then the number of new tasks (a master wakes as many of its
        long-polls) or nothing (it wakes them all; an empty payload, from an older master, too).
        """
        if self.dialect == "postgresql":
            payload = self.origin if count is None else f"{self.origin} {count}"
            conn.execute(
                text("SELECT pg_notify(:channel, :payload)"), {"channel": TASKS_CHANNEL, "payload": payload}
            )

    def _system_events(self, conn: Connection, events: Sequence[SystemEvent]) -> None:
        """Record what the master itself did to a task, beside the worker's own messages.

        System events use negative sequence numbers, which a worker never sends, so they cannot
        collide with the worker's ``(task_id, attempt, seq)`` keys; a repeat is ignored.
        """
        if not events:
            return
        now = self.now()
        stmt = self._insert(event_messages).on_conflict_do_nothing(
            index_elements=["task_id", "attempt", "seq"]
        )
        conn.execute(
            stmt,
            [
                {
                    "execution_id": e.execution_id,
                    "task_id": e.task_id,
                    "attempt": e.attempt,
                    "seq": e.seq,
                    "message_time": now,
                    "message_type": int(e.message_type),
                    "message_source": "system",
                    "message": e.message,
                    "received_at": now,
                }
                for e in events
            ],
        )

    def _audit(
        self,
        conn: Connection,
        actor: str,
        action: str,
        target: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Write an audit row inside the caller's transaction, so change and record commit together."""
        conn.execute(
            audit_log.insert().values(
                time=self.now(),
                actor=actor,
                action=action,
                target=target,
                details=plain(details or {}),
            )
        )
