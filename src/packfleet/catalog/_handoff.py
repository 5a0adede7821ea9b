"""A submit that leases its task to a waiting worker in its own transaction.

An idle worker waits in a lease long-poll. A submit committed its execution and woke that
long-poll, which leased the task in a second write transaction: a hop to the catalog's thread and
back, with the event loop's turn in between, the whole of an idle fleet's submit->start (0.9 ms p50,
make bench, latency). Now the master names the long-poll waiting longest (:class:`LeaseAsk`) and
the submit's transaction leases for its worker what that worker's own look would have leased right
after the commit: the same statements and rules (enabled, allowed workers, a task whose lease this
worker let expire left for another), and, as for any look after a wait, only if the worker
heartbeated within its lease.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from packfleet.catalog._base import canonical_agent_id
from packfleet.catalog._executions import ExecutionCatalog
from packfleet.catalog._leases import LeaseCatalog
from packfleet.catalog._records import ExecutionRecord, ExecutionRequest, TaskAssignment


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseAsk:
    """What a waiting lease long-poll asks for: tasks for ``agent_id``, up to ``capacity``, leased
    for ``lease_seconds``."""

    agent_id: str
    capacity: int
    lease_seconds: float


class HandoffCatalog(ExecutionCatalog, LeaseCatalog):
    """:meth:`submit_execution` and a waiting worker's lease, in one write transaction."""

    def submit_leasing(
        self,
        request: ExecutionRequest,
        ask: LeaseAsk,
        *,
        actor: str,
        idempotency_key: str | None = None,
        if_newest: bool = False,
    ) -> tuple[ExecutionRecord, bool, list[TaskAssignment]]:
        """:meth:`submit_execution`, then :meth:`lease_tasks` for ``ask`` if it created the execution.

        Returns the execution as created (its task ready), whether this call created it, and what
        was leased: the new task when ``ask``'s worker may run it, maybe older ready ones, or
        nothing (the worker is disabled, silent past its lease, or not among the allowed workers).
        The masters sharing a PostgreSQL catalog are told of the new task only when it was not
        leased here.
        """
        agent_id = canonical_agent_id(ask.agent_id)
        with self._write() as conn:
            record, created = self._submit(
                conn, request, actor, idempotency_key, if_newest=if_newest, notify=False
            )
            if not created:
                return record, False, []
            leased: list[TaskAssignment] = []
            if ask.capacity > 0 and self._alive(conn, agent_id, timedelta(seconds=ask.lease_seconds)):
                leased = self._lease(conn, agent_id, ask.capacity, ask.lease_seconds)
            if all(task.execution_id != record.execution_id for task in leased):
                self._notify_tasks(conn, 1)
        return record, True, leased
