"""Executions and projects: deploy, run, follow, cancel (SSIS ``catalog.*`` procedures)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packfleet.catalog import (
    CompletionReport,
    EventInput,
    EventRecord,
    ExecutionRecord,
    ExecutionRequest,
    Follow,
    FollowPage,
    ProjectVersionRecord,
    ReportOutcome,
)
from packfleet.errors import Conflict, InvalidValue, PackfleetError, VersionChanged
from packfleet.master._logsafe import safe
from packfleet.master._services._base import off_catalog
from packfleet.master._state import MasterState
from packfleet.master._wakeup import EVENTS, TASKS, Ticket
from packfleet.packages import Project, inspect_archive, mask_parameters, resolve_parameters
from packfleet.protocol import EVENTS_PAGE, RunPackage
from packfleet.secretbox import open_values

log = logging.getLogger("packfleet.master")

#: Events in one answer of the events route unless the caller asks for fewer (followers count on it).
EVENTS_LIMIT = EVENTS_PAGE


@dataclass(frozen=True)
class Submitted:
    """What a submit did: the execution, and whether this submit created it (else: an earlier one
    with the same idempotency key did, and this is its answer again)."""

    execution: ExecutionRecord
    created: bool
    #: A waiting lease long-poll was woken for its task already: leased to its worker in the
    #: submit's own transaction, or handed the wake-up to look for it (see ``_submit_execution``).
    woken: bool = False


@dataclass(frozen=True)
class EventPage:
    """The events after an id, the execution they belong to, and the last id handed out."""

    execution: ExecutionRecord
    events: list[EventRecord]
    last_id: int


#: Project versions whose manifests the master keeps in memory for masking (a version's manifest
#: never changes and versions are never deleted, so they need no invalidation, only a bound).
MANIFEST_CACHE = 256


class Manifests:
    """Manifests by project version, to mask sensitive parameters in what is shown of executions.

    Each execution is masked by the manifest of *its own* version: a newer deploy may have dropped
    a parameter or its ``sensitive`` flag, and must not unmask what older runs were given.

    ``known`` is shared by every answer of one master: ``run --wait`` shows its execution in each
    follow answer, and reading the manifest again each time was a catalog call on that path (make
    bench). A version that cannot be read is remembered for this answer only.
    """

    def __init__(self, state: MasterState, known: dict[int, Project] | None = None) -> None:
        self._state = state
        self._known = {} if known is None else known
        self._seen: dict[int, Project | None] = {}

    async def project(self, version_id: int) -> Project | None:
        known = self._known.get(version_id)
        if known is not None:
            return known
        if version_id not in self._seen:
            try:
                version = await self._state.db(self._state.catalog.get_project_version_by_id, version_id)
                self.know(version_id, Project.from_dict(version.manifest))
            except PackfleetError:
                self._seen[version_id] = None
        return self._seen[version_id]

    def know(self, version_id: int, project: Project) -> None:
        """Take a manifest the caller already loaded (saves a catalog call)."""
        self._seen[version_id] = project
        if len(self._known) >= MANIFEST_CACHE:
            self._known.pop(next(iter(self._known)))  # the oldest entry: insertion order
        self._known[version_id] = project

    async def shown(self, record: ExecutionRecord) -> dict[str, Any]:
        data = record.to_dict()
        project = await self.project(record.project_version_id)
        if project is not None:
            try:
                data["parameters"] = mask_parameters(project, record.package, record.parameters)
            except PackfleetError:
                data["parameters"] = {name: "********" for name in record.parameters}
        else:
            data["parameters"] = {name: "********" for name in record.parameters}
        return data


@dataclass(frozen=True)
class _Newest:
    """A project's newest version as this master last read it: enough to check a submit against."""

    version_id: int
    manifest: Mapping[str, Any]
    project: Project


@dataclass(eq=False)
class _Waiting:
    """A follower waiting for its execution's next events or its end (see ``_follow``)."""

    follow: Follow
    #: What the catalog held for it at the end of the report that woke it, read in that report's
    #: transaction (see :meth:`ExecutionService.store_report`).
    page: FollowPage | None = None


def _later(page: FollowPage, than: FollowPage | None) -> bool:
    """Whether ``page`` shows more of its execution than ``than`` (an ended execution, or more lines)."""
    if than is None:
        return True
    (record, events), (earlier, earlier_events) = page, than
    if record.status.finished != earlier.status.finished:
        return record.status.finished
    return (events[-1].id if events else 0) > (earlier_events[-1].id if earlier_events else 0)


class ExecutionService:
    """Create, list, show, follow and cancel executions."""

    def __init__(self, state: MasterState) -> None:
        self._state = state
        self._waiting: set[_Waiting] = set()
        self._manifests: dict[int, Project] = {}
        # By (folder, project). A submit is checked against it and the catalog confirms, in the
        # transaction that creates the execution, that it is still the newest: one catalog call
        # instead of two on the path of every submit. A deploy (here or by another master) makes
        # the next submit read the version again.
        self._newest: dict[tuple[str, str], _Newest] = {}

    def manifests(self) -> Manifests:
        """A masking cache for one answer (a list shares the manifests of its versions)."""
        return Manifests(self._state, self._manifests)

    async def shown(self, record: ExecutionRecord) -> dict[str, Any]:
        """An execution as it is shown: sensitive parameters masked by its version's manifest."""
        return await self.manifests().shown(record)

    async def agent_ids(self, workers: Sequence[str]) -> tuple[str, ...]:
        """Agent ids for ``run --worker``: each given as an agent id, a display name or a thumbprint.

        Raises :class:`InvalidValue` naming a worker the catalog does not know.
        """
        ids = []
        for worker in workers:
            try:
                ids.append(str(uuid.UUID(worker.strip())))
            except ValueError:
                try:
                    found = await self._state.db(self._state.catalog.get_worker, worker.strip())
                except PackfleetError as exc:
                    raise InvalidValue(
                        f"workers: {worker!r}: {exc.message}",
                        fix="packfleet manager worker list (shows each worker's agent id and name)",
                    ) from None
                ids.append(found.agent_id)
        return tuple(ids)

    async def submit(self, ask: RunPackage, *, actor: str) -> Submitted:
        """Create an execution whose task is ready at once, and wake a waiting worker's long-poll.

        With an idempotency key, a submit the master has already carried out for ``actor`` answers
        with that execution (``created`` false), whatever was deployed since.
        """
        state = self._state
        ask.check()  # the message's own bounds: retry count, idempotency key
        key = ask.idempotency_key or None
        target = (ask.folder, ask.project, ask.package)
        try:
            submitted = await self._on_newest(
                target, ask.parameters, ask.workers, ask.retry_count, actor=actor, key=key, by_name=True
            )
            if submitted is None:
                submitted = await self._checked_submit(ask, actor=actor, key=key)
        except Conflict:
            # Two submits with one key raced past the look-up (PostgreSQL, several masters): the
            # unique index kept one; answer with it.
            raced = await state.db(state.catalog.execution_by_key, actor, key) if key else None
            if raced is None or (raced.folder, raced.project, raced.package) != target:
                raise
            return Submitted(raced, created=False)
        if submitted.created:
            if not submitted.woken:
                state.wakeups.notify_one(TASKS)
            record = submitted.execution
            log.info(
                "execution %d of %s/%s/%s created by %s",
                record.execution_id,
                safe(ask.folder),
                safe(ask.project),
                safe(ask.package),
                safe(actor),
            )
        return submitted

    async def _checked_submit(self, ask: RunPackage, *, actor: str, key: str | None) -> Submitted:
        """A submit checked against the version the catalog says is newest: each error as ever."""
        state = self._state
        if key is not None:
            existing = await state.db(state.catalog.execution_by_key, actor, key)
            target = (ask.folder, ask.project, ask.package)
            if existing is not None and (existing.folder, existing.project, existing.package) == target:
                return Submitted(existing, created=False)
        newest = await self._read_newest(ask.folder, ask.project)
        parameters = self._sealed(newest, ask.package, ask.parameters)
        request = ExecutionRequest(
            ask.folder,
            ask.project,
            ask.package,
            parameters,
            await self.agent_ids(ask.workers),
            ask.retry_count,
            newest.version_id,
        )
        return await self._submit_execution(request, actor=actor, key=key, if_newest=False)

    async def _on_newest(
        self,
        target: tuple[str, str, str],
        given: Mapping[str, Any],
        workers: Sequence[str],
        retry_count: int,
        *,
        actor: str,
        key: str | None,
        by_name: bool,
    ) -> Submitted | None:
        """A submit in one catalog call, checked against the version this master knows as the
        newest; None when it knows none, or the catalog has a newer one, or the check fails (the
        checked path then says why, word for word, from what the catalog holds now).

        ``by_name``: ``workers`` may be display names or thumbprints, else they are agent ids.
        """
        folder, project, package = target
        newest = self._newest.get((folder, project))
        if newest is None:
            return None
        try:
            parameters = self._sealed(newest, package, given)
            allowed = await self.agent_ids(workers) if by_name else tuple(workers)
        except PackfleetError:
            return None
        request = ExecutionRequest(
            folder, project, package, parameters, allowed, retry_count, newest.version_id
        )
        try:
            return await self._submit_execution(request, actor=actor, key=key, if_newest=True)
        except VersionChanged:
            self._newest.pop((folder, project), None)
            return None

    async def _submit_execution(
        self, request: ExecutionRequest, *, actor: str, key: str | None, if_newest: bool
    ) -> Submitted:
        """The catalog's submit; with a lease long-poll waiting, it leases for it in the same
        transaction and wakes it with the task (see ``catalog._handoff``)."""
        state = self._state
        reservation = state.wakeups.reserve(TASKS)
        if reservation is None:
            record, created = await state.db(
                state.catalog.submit_execution, request, actor=actor, idempotency_key=key, if_newest=if_newest
            )
            return Submitted(record, created)
        try:
            record, created, leased = await state.db(
                state.catalog.submit_leasing,
                request,
                reservation.ask,
                actor=actor,
                idempotency_key=key,
                if_newest=if_newest,
            )
        except BaseException:
            reservation.cancel()
            raise
        if not created:
            reservation.cancel()
            return Submitted(record, created)
        reservation.hand(leased)
        # Leased nothing (its worker may not run the task, or went silent): the long-poll is woken
        # to look and pass the wake-up on, as notify_one would have. Leased only older tasks: the
        # new one still needs a wake-up of its own.
        woken = not leased or any(task.execution_id == record.execution_id for task in leased)
        return Submitted(record, created, woken=woken)

    async def _read_newest(self, folder: str, project: str) -> _Newest:
        """The newest version of ``folder/project`` from the catalog, remembered for the next submits."""
        state = self._state
        version = await state.db(state.catalog.get_project_version, folder, project)
        newest = _Newest(version.id, version.manifest, Project.from_dict(version.manifest))
        self.manifests().know(version.id, newest.project)
        if len(self._newest) >= MANIFEST_CACHE:
            self._newest.pop(next(iter(self._newest)))  # the oldest entry: insertion order
        self._newest[(folder, project)] = newest
        return newest

    def _sealed(self, newest: _Newest, package: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """``given`` typed by the version's manifest, defaults filled in, sensitive values sealed."""
        parameters = resolve_parameters(newest.project, package, given)
        return self._state.seal(newest.manifest, package, parameters)

    async def run_package(
        self,
        folder: str,
        project: str,
        package: str,
        *,
        parameters: dict[str, Any],
        workers: tuple[str, ...],
        actor: str,
    ) -> ExecutionRecord:
        """A submit from a form (the console): values typed by the manifest, sensitive ones sealed."""
        state = self._state
        target = (folder, project, package)
        submitted = await self._on_newest(
            target, parameters, workers, 0, actor=actor, key=None, by_name=False
        )
        if submitted is not None:
            record = submitted.execution
        else:
            newest = await self._read_newest(folder, project)
            record = await state.db(
                state.catalog.create_execution,
                folder,
                project,
                package,
                parameters=self._sealed(newest, package, parameters),
                actor=actor,
                allowed_workers=workers,
                project_version_id=newest.version_id,
            )
        if submitted is None or not submitted.woken:
            state.wakeups.notify_one(TASKS)
        return record

    async def rerun(self, execution_id: int, *, actor: str) -> tuple[ExecutionRecord, ExecutionRecord]:
        """The same package with the same parameters and allowed workers, as a new execution.

        The old execution's sensitive values are stored sealed; they are opened here and sealed
        afresh, since sealing a sealed value again would hand its worker the sealed text.
        Returns the old execution and the new one.
        """
        state = self._state
        old = await state.db(state.catalog.get_execution, execution_id)
        parameters = dict(old.parameters)
        if state.secrets is not None:
            parameters = open_values(state.secrets.get(), parameters)
        record = await self.run_package(
            old.folder,
            old.project,
            old.package,
            parameters=parameters,
            workers=old.allowed_workers,
            actor=actor,
        )
        return old, record

    async def list(self, *, limit: int, status: int | None = None) -> list[ExecutionRecord]:
        return await self._state.db(self._state.catalog.list_executions, limit=limit, status=status)

    async def get(self, execution_id: int) -> ExecutionRecord:
        return await self._state.db(self._state.catalog.get_execution, execution_id)

    async def events(
        self, execution_id: int, *, after_id: int = 0, limit: int = EVENTS_LIMIT, wait: float = 0.0
    ) -> EventPage:
        """Events after ``after_id``; with ``wait``, held until there are some or the run ends.

        The page carries the execution too, so a follower knows when to stop.
        """
        return await self._follow(execution_id, after_id=after_id, limit=limit, wait=wait)

    async def submit_waiting(
        self, ask: RunPackage, *, actor: str, wait: float
    ) -> tuple[Submitted, EventPage]:
        """A submit whose answer waits for its execution's first events or its end, up to ``wait``.

        What ``run --wait`` did in two requests (submit, then follow) in one: the follow's first
        look at the catalog came right after the submit, found nothing, and competed with the
        worker's lease for the catalog's thread.
        """
        # Taken before the execution exists: its lease, events or end cannot come before it.
        ticket = self._state.wakeups.ticket(EVENTS)
        submitted = await self.submit(ask, actor=actor)
        record = submitted.execution
        if not submitted.created:  # an earlier submit's execution: it may have events or have ended
            return submitted, await self.events(record.execution_id, wait=wait)
        try:
            page = await self._follow(record.execution_id, wait=wait, created=(ticket, record))
        except PackfleetError as exc:
            # The execution exists: an error answer now would have a client without an idempotency
            # key submit it again. Answered as just created (no events, not finished), the client
            # follows it with the events route, which says what is wrong if it still is.
            log.warning("execution %s: waiting for its first events failed: %s", record.execution_id, exc)
            page = EventPage(record, [], 0)
        return submitted, page

    async def _follow(
        self,
        execution_id: int,
        *,
        after_id: int = 0,
        limit: int = EVENTS_LIMIT,
        wait: float,
        created: tuple[Ticket, ExecutionRecord] | None = None,
    ) -> EventPage:
        """The events route's long-poll. ``created``: the execution was just created (its record
        and a ticket taken before): the first look is skipped, as it has no events and has not
        ended, until the ticket is notified."""
        state = self._state
        loop = asyncio.get_running_loop()
        deadline = loop.time() + state.wait_seconds(wait)
        while True:
            found: list[EventRecord] = []
            if created is not None:
                (ticket, record), created = created, None
            else:
                ticket = state.wakeups.ticket(EVENTS)  # taken before looking: a notification between is kept
                # One catalog call for both (one hop to the catalog's thread, one snapshot).
                record, found = await state.db(
                    state.catalog.execution_events, execution_id, after_id=after_id, limit=limit
                )
            remaining = deadline - loop.time()
            if found or record.status.finished or remaining <= 0 or state.closing:
                return EventPage(record, found, found[-1].id if found else after_id)
            waiting = _Waiting((execution_id, after_id, limit))
            self._waiting.add(waiting)
            try:
                await ticket.wait(remaining)
            finally:
                self._waiting.discard(waiting)
            if waiting.page is not None:
                record, found = waiting.page
                if found or record.status.finished:  # else a look of its own, as for any wake-up
                    return EventPage(record, found, found[-1].id if found else after_id)

    async def store_report(
        self,
        agent_id: str,
        events: Sequence[EventInput],
        reports: Sequence[CompletionReport],
        *,
        lease_capacity: int = 0,
        lease_seconds: float = 0.0,
    ) -> ReportOutcome:
        """Store a worker's report pass; the followers of the executions it touched get what they
        would read once woken, read in its transaction (one catalog call each less on the path of
        ``run --wait``). The caller wakes them. With ``lease_capacity``, the same transaction leases
        up to that many tasks to the worker (the outcome's ``leased``)."""
        state = self._state
        waiting = list(self._waiting)
        # Followers of one execution from the same event id (a console tab and a CLI) read once.
        follows = list(dict.fromkeys(w.follow for w in waiting))
        outcome = await state.db(
            state.catalog.store_report,
            agent_id,
            events,
            reports,
            follows,
            lease_capacity=lease_capacity,
            lease_seconds=lease_seconds,
        )
        pages = dict(zip(follows, outcome.pages, strict=True))
        for follower in waiting:
            page = pages[follower.follow]
            # On PostgreSQL two reports' transactions can return out of order: keep the later view.
            if page is not None and _later(page, follower.page):
                follower.page = page
        return outcome

    def followers(self) -> int:
        """How many followers wait on this master now."""
        return len(self._waiting)

    async def cancel(self, execution_id: int, *, actor: str) -> ExecutionRecord:
        """Cancel an execution and wake its worker's task heartbeat and every follower."""
        state = self._state
        record = await state.db(state.catalog.cancel_execution, execution_id, actor=actor)
        state.wakeups.notify(TASKS)
        state.wakeups.notify(EVENTS)
        return record


class ProjectService:
    """Deployed projects: every version kept, the newest listed."""

    def __init__(self, state: MasterState) -> None:
        self._state = state

    async def deploy(self, folder: str, archive: bytes, *, actor: str) -> ProjectVersionRecord:
        """Check a project archive (off the catalog's thread: CPU-bound) and store it as a new version."""
        state = self._state
        project = await off_catalog(inspect_archive, archive)
        record = await state.db(state.catalog.deploy_project, folder, project.to_dict(), archive, actor=actor)
        log.info(
            "project %s/%s version %d deployed by %s",
            safe(folder),
            safe(project.name),
            record.version,
            safe(actor),
        )
        return record

    async def list(self, folder: str | None = None) -> list[ProjectVersionRecord]:
        return await self._state.db(self._state.catalog.list_projects, folder)
