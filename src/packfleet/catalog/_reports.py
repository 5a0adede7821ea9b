"""A worker's report pass in one transaction: its event messages, then the completions they unblock.

Stored apart (:meth:`~ExecutionCatalog.add_events`, then :meth:`~LeaseCatalog.complete_tasks`), a
finished no-op cost the master two write transactions and its follower two wake-ups: the first saw
the events of an execution still running. Together, a reader sees the events and the end of an
execution at once, or neither (make bench, latency).

The same transaction reads what the followers waiting on the master (``run --wait``, ``executions
logs --follow``) would read once it woke them, for the executions it touched: the follower woken
answers with it instead of going back to the catalog, one hop to the catalog's thread and one
transaction less between a task's end and a waiting client's answer.

A busy worker's report also asks for as many tasks as its pass freed slots: the same transaction
leases them, so under load one request and one commit, not two of each, carry a task's end and the
next task's start (make bench, throughput).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from packfleet.catalog._base import canonical_agent_id
from packfleet.catalog._executions import ExecutionCatalog, check_events
from packfleet.catalog._leases import LeaseCatalog, check_outcomes
from packfleet.catalog._records import CompletionReport, EventInput, FollowPage, ReportOutcome
from packfleet.errors import NotFound

#: A follower waiting for an execution's news: the execution, the last event id it has, and how
#: many events it takes at most.
Follow = tuple[int, int, int]


class ReportCatalog(ExecutionCatalog, LeaseCatalog):
    """Event messages and completion reports of one worker, stored in one write transaction."""

    def store_report(
        self,
        agent_id: str,
        events: Sequence[EventInput],
        reports: Sequence[CompletionReport],
        follows: Sequence[Follow] = (),
        *,
        lease_capacity: int = 0,
        lease_seconds: float = 0.0,
    ) -> ReportOutcome:
        """:meth:`add_events` then :meth:`complete_tasks`, both or neither.

        The events go first, so a report that ends a task lands with its last lines: the master
        never shows an execution finished whose log is still on its way. Each part keeps its own
        rules (only events of the lease the worker holds or held last, stale reports, idempotent
        resends) and its own refusals, checked before anything is written.

        ``follows``: the outcome's ``pages`` has, for each, what :meth:`execution_events` would
        find just after this transaction, if the report touched its execution (else None).

        ``lease_capacity``: then, in the same transaction, :meth:`lease_tasks` for up to that many
        tasks, leased for ``lease_seconds`` (the outcome's ``leased``).
        """
        agent_id = canonical_agent_id(agent_id)
        check_events(events)
        check_outcomes(reports)
        if not events and not reports and lease_capacity <= 0:
            return ReportOutcome(stored=0, results=[], pages=[None] * len(follows))
        now = self.now()
        reported = {r.task_id for r in reports}
        with self._write() as conn:
            # Events of the tasks the report ends (a finished task's last lines, the usual case):
            # the completion's lookup has every row the events need, so one statement, not two, reads
            # them (make bench). The lookup locks only the tasks being ended, as before.
            rows = self._completion_rows(conn, reported) if reported else None
            if events:
                mine = rows if rows is not None and reported.issuperset(e.task_id for e in events) else None
                stored = self._store_events(conn, agent_id, events, now, mine)
            else:
                stored = 0
            results = self._complete(conn, agent_id, reports, now, rows) if reports else []
            touched = {e.execution_id for e in events} | {row.execution_id for row in rows or ()}
            pages = [self._page(conn, follow) if follow[0] in touched else None for follow in follows]
            # After the completions: a slot the report frees may take the next task at once.
            leased = self._lease(conn, agent_id, lease_capacity, lease_seconds) if lease_capacity > 0 else []
        return ReportOutcome(stored=stored, results=results, pages=pages, leased=leased)

    def _page(self, conn: Connection, follow: Follow) -> FollowPage | None:
        try:
            return self._follow_page(conn, *follow)
        except NotFound:  # named by a worker's event, not there: its follower reads for itself
            return None
