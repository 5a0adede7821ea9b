"""The admin routes: workers, projects, executions and the audit log, as SSIS Manager and the
``catalog.*`` stored procedures offer them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiohttp import web

from packfleet.catalog import ExecutionRecord, WorkerRecord
from packfleet.errors import Conflict, PackfleetError, PkiError
from packfleet.master._admission import admission_refusal
from packfleet.master._api import DEPLOY_MAX_BODY, Endpoint, Param
from packfleet.master._fleet import worker_view
from packfleet.master._logsafe import safe
from packfleet.master._problems import bad_request
from packfleet.master._state import Call, MasterState, json_response, query_float, query_int
from packfleet.master._trust import cut_off, reload_after_removal, remove_from_root, trust_in_root
from packfleet.master._wakeup import EVENTS, TASKS
from packfleet.packages import Project, inspect_archive, mask_parameters, resolve_parameters
from packfleet.pki import CertStore, Credential, check_usable, load_credential_bytes
from packfleet.protocol import (
    MAX_IDEMPOTENCY_KEY,
    MAX_RETRY_COUNT,
    AddWorker,
    RunPackage,
    UpdateWorker,
    routes,
)
from packfleet.thumbprint import normalize_thumbprint

log = logging.getLogger("packfleet.master")

_LIST_LIMIT = 10_000
_EVENTS_LIMIT = 1000


# --- bodies: the protocol's admin messages ------------------------------------------------------

# --- workers ------------------------------------------------------------------------------------


async def list_workers(call: Call) -> web.StreamResponse:
    workers = await call.state.db(call.state.catalog.list_workers)
    now = call.state.clock()
    return json_response([worker_view(w, now) for w in workers])


async def add_worker(call: Call) -> web.StreamResponse:
    """The seed's "install the client certificate into the Root store of the master", plus the record."""
    state = call.state
    ask = await call.message(AddWorker)
    try:
        cred = load_credential_bytes(ask.cert_pem.encode())
        public = Credential(cred.certificate)  # never store a key that came along with the certificate
        check_usable(public, purposes=("client",), now=state.clock(), peer=True)
    except PackfleetError as exc:
        raise bad_request(f"cert_pem: {exc.message}", fix=exc.fix) from None
    refusal = await state.db(admission_refusal, public, CertStore(state.home, "Root"))
    if refusal is not None:
        raise bad_request(
            f"cert_pem: {refusal}",
            fix='on the worker: packfleet cert create -n "CN=<worker>" --store My (a self-signed '
            "SHA-256 certificate), then add that one",
        )
    record = await state.db(
        state.catalog.add_worker_certificate,
        public.cert_pem(),
        actor=call.caller.actor,
        display_name=ask.display_name,
        worker=ask.worker.strip() or None,
        enable=ask.enable,
    )
    await trust_in_root(state, public, actor=call.caller.actor)
    if record.agent_id is not None:
        log.info(
            "certificate %s bound to worker %s by %s", record.thumbprint, record.agent_id, call.caller.actor
        )
    return json_response(record.to_dict(), status=201)


async def get_worker(call: Call) -> web.StreamResponse:
    worker = await call.state.db(call.state.catalog.get_worker, call.request.match_info["ref"])
    return json_response(worker_view(worker, call.state.clock()))


async def set_worker_enabled(
    state: MasterState, ref: str, enabled: bool, *, actor: str, reason: str | None = None
) -> WorkerRecord:
    """Enable or disable worker ``ref``: the catalog, the principal cache, its open connections and
    the waiting long-polls (the admin route and the web console share this)."""
    found = await state.db(state.catalog.get_worker, ref)
    worker = await state.db(
        state.catalog.set_worker_enabled, found.agent_id, enabled, actor=actor, reason=reason
    )
    thumbprints = [c.thumbprint for c in worker.certificates]
    state.principals.invalidate(thumbprints)
    if not enabled:
        cut_off(state, thumbprints, f"worker {worker.agent_id} disabled")
    state.wakeups.notify(TASKS)
    return worker


async def _set_enabled(call: Call, enabled: bool) -> web.StreamResponse:
    ref = call.request.match_info["ref"]
    worker = await set_worker_enabled(call.state, ref, enabled, actor=call.caller.actor)
    return json_response(worker.to_dict())


async def enable_worker(call: Call) -> web.StreamResponse:
    return await _set_enabled(call, True)


async def disable_worker(call: Call) -> web.StreamResponse:
    return await _set_enabled(call, False)


async def update_worker(call: Call) -> web.StreamResponse:
    state = call.state
    ask = await call.message(UpdateWorker)
    found = await state.db(state.catalog.get_worker, call.request.match_info["ref"])
    worker = await state.db(
        state.catalog.update_worker,
        found.agent_id,
        actor=call.caller.actor,
        description=ask.description,
        tags=ask.tags,
        display_name=ask.display_name,
    )
    state.principals.invalidate([c.thumbprint for c in worker.certificates])
    return json_response(worker.to_dict())


async def remove_worker(state: MasterState, ref: str, *, actor: str) -> dict[str, Any]:
    """SSIS Manager's "Delete Worker": forget it, drop its certificates from the Root store, close
    its connections (the admin route and the web console share this)."""
    found = await state.db(state.catalog.get_worker, ref)
    thumbprints = await state.db(state.catalog.delete_worker, found.agent_id, actor=actor)
    removed = await state.db(remove_from_root, state, thumbprints)
    state.principals.invalidate(thumbprints)
    cut_off(state, thumbprints, f"worker {found.agent_id} deleted")
    state.wakeups.notify(TASKS)
    if removed:
        await reload_after_removal(state)
    return {"agent_id": found.agent_id, "thumbprints": thumbprints, "removed_from_root": removed}


async def delete_worker(call: Call) -> web.StreamResponse:
    ref = call.request.match_info["ref"]
    return json_response(await remove_worker(call.state, ref, actor=call.caller.actor))


async def revoke_certificate(call: Call) -> web.StreamResponse:
    """Revoke one certificate; it still completes a handshake, so its worker hears why it is refused."""
    state = call.state
    try:
        thumbprint = normalize_thumbprint(call.request.match_info["thumbprint"])
    except PkiError as exc:  # the caller's typo, not the master's own PKI (which would be a 500)
        raise bad_request(exc.message, fix=exc.fix) from None
    record = await state.db(state.catalog.revoke_certificate, thumbprint, actor=call.caller.actor)
    state.principals.invalidate([record.thumbprint])
    cut_off(state, [record.thumbprint], f"certificate {record.thumbprint} revoked")
    state.wakeups.notify(TASKS)
    return json_response(record.to_dict())


# --- projects -----------------------------------------------------------------------------------


async def deploy(call: Call) -> web.StreamResponse:
    """Deploy a project archive into ``folder``; the catalog keeps every version."""
    state = call.state
    folder = call.request.query.get("folder", "").strip()
    if not folder:
        raise bad_request("query parameter folder is missing", fix="packfleet deploy DIR --folder default")
    archive = await call.body()
    if not archive:
        raise bad_request("the body must be the project's zip archive, and it is empty")
    loop = asyncio.get_running_loop()
    project = await loop.run_in_executor(None, inspect_archive, archive)  # CPU-bound, not the catalog's
    record = await state.db(
        state.catalog.deploy_project, folder, project.to_dict(), archive, actor=call.caller.actor
    )
    log.info(
        "project %s/%s version %d deployed by %s",
        safe(folder),
        safe(project.name),
        record.version,
        safe(call.caller.actor),
    )
    return json_response(record.to_dict(), status=201)


async def list_projects(call: Call) -> web.StreamResponse:
    folder = call.request.query.get("folder") or None
    projects = await call.state.db(call.state.catalog.list_projects, folder)
    return json_response([p.to_dict() for p in projects])


# --- executions ---------------------------------------------------------------------------------


class _Manifests:
    """Manifests by project version, to mask sensitive parameters in what admin routes return.

    Each execution is masked by the manifest of *its own* version: a newer deploy may have dropped
    a parameter or its ``sensitive`` flag, and must not unmask what older runs were given.
    """

    def __init__(self, state: MasterState) -> None:
        self._state = state
        self._seen: dict[int, Project | None] = {}

    async def project(self, version_id: int) -> Project | None:
        if version_id not in self._seen:
            try:
                version = await self._state.db(self._state.catalog.get_project_version_by_id, version_id)
                self._seen[version_id] = Project.from_dict(version.manifest)
            except PackfleetError:
                self._seen[version_id] = None
        return self._seen[version_id]

    def know(self, version_id: int, project: Project) -> None:
        """Take a manifest the caller already loaded (saves a catalog call)."""
        self._seen[version_id] = project

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


async def _agent_ids(state: MasterState, workers: list[str]) -> tuple[str, ...]:
    """Agent ids for ``run --worker``: each given as an agent id, a display name or a thumbprint."""
    ids = []
    for worker in workers:
        try:
            ids.append(str(uuid.UUID(worker.strip())))
        except ValueError:
            try:
                found = await state.db(state.catalog.get_worker, worker.strip())
            except PackfleetError as exc:
                raise bad_request(
                    f"workers: {worker!r}: {exc.message}",
                    fix="packfleet manager worker list (shows each worker's agent id and name)",
                ) from None
            ids.append(found.agent_id)
    return tuple(ids)


async def run(call: Call) -> web.StreamResponse:
    """Create an execution; its task is ready at once and a waiting worker's long-poll answers."""
    state = call.state
    ask = await call.message(RunPackage)
    if not 0 <= ask.retry_count <= MAX_RETRY_COUNT:
        raise bad_request(f"retry_count must be 0..{MAX_RETRY_COUNT}, not {ask.retry_count}")
    key = ask.idempotency_key or None
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise bad_request(f"idempotency_key has {len(key)} characters; at most {MAX_IDEMPOTENCY_KEY}")
    if key is not None:
        # A resent submit: answer with what the first one created (200, not 201), whatever was
        # deployed since.
        existing = await state.db(state.catalog.execution_by_key, call.caller.actor, key)
        if existing is not None and (existing.folder, existing.project, existing.package) == (
            ask.folder,
            ask.project,
            ask.package,
        ):
            return json_response(await _Manifests(state).shown(existing), status=200)
    version = await state.db(state.catalog.get_project_version, ask.folder, ask.project)
    project = Project.from_dict(version.manifest)
    parameters = resolve_parameters(project, ask.package, ask.parameters)
    parameters = state.seal(version.manifest, ask.package, parameters)
    try:
        record = await state.db(
            state.catalog.create_execution,
            ask.folder,
            ask.project,
            ask.package,
            parameters=parameters,
            actor=call.caller.actor,
            allowed_workers=await _agent_ids(state, ask.workers),
            retry_count=ask.retry_count,
            project_version_id=version.id,
            idempotency_key=key,
        )
    except Conflict:
        # Two submits with one key raced past the look-up above (PostgreSQL, several masters):
        # the unique index kept one; answer with it.
        raced = await state.db(state.catalog.execution_by_key, call.caller.actor, key) if key else None
        if raced is None or (raced.folder, raced.project, raced.package) != (
            ask.folder,
            ask.project,
            ask.package,
        ):
            raise
        return json_response(await _Manifests(state).shown(raced), status=200)
    state.wakeups.notify(TASKS)
    log.info(
        "execution %d of %s/%s/%s created by %s",
        record.execution_id,
        safe(ask.folder),
        safe(ask.project),
        safe(ask.package),
        safe(call.caller.actor),
    )
    # The manifest is the one just loaded: no catalog call that would queue on the catalog's one
    # SQLite thread ahead of the lease this execution wakes (make bench: submit->start latency).
    manifests = _Manifests(state)
    manifests.know(version.id, project)
    return json_response(await manifests.shown(record), status=201)


async def list_executions(call: Call) -> web.StreamResponse:
    request = call.request
    limit = query_int(request, "limit", 50, minimum=1, maximum=_LIST_LIMIT)
    status = query_int(request, "status", 0, minimum=0, maximum=9) or None
    records = await call.state.db(call.state.catalog.list_executions, limit=limit, status=status)
    manifests = _Manifests(call.state)
    return json_response([await manifests.shown(r) for r in records])


def _execution_id(call: Call) -> int:
    raw = call.request.match_info["execution_id"]
    # ASCII digits only, and few enough for a 64-bit column: int() would also take " 7", "٧" or a
    # number the database driver cannot bind (a 500 instead of a 400).
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise bad_request(f"{raw!r} is not an execution id (a whole number)")
    return int(raw)


async def get_execution(call: Call) -> web.StreamResponse:
    record = await call.state.db(call.state.catalog.get_execution, _execution_id(call))
    return json_response(await _Manifests(call.state).shown(record))


async def execution_events(call: Call) -> web.StreamResponse:
    """Events after ``after_id``; with ``wait``, hold the request until there are some or the run ends.

    This is what ``executions logs --follow`` and ``run --wait`` poll: each answer carries the
    execution too, so the follower knows when to stop.
    """
    state = call.state
    execution_id = _execution_id(call)
    after_id = query_int(call.request, "after_id", 0, minimum=0, maximum=2**62)
    limit = query_int(call.request, "limit", _EVENTS_LIMIT, minimum=1, maximum=_LIST_LIMIT)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.wait_seconds(query_float(call.request, "wait", 0.0))
    while True:
        ticket = state.wakeups.ticket(EVENTS)
        record = await state.db(state.catalog.get_execution, execution_id)
        found = await state.db(state.catalog.get_events, execution_id, after_id=after_id, limit=limit)
        remaining = deadline - loop.time()
        if found or record.status.finished or remaining <= 0 or state.closing:
            break
        await ticket.wait(remaining)
    return json_response(
        {
            "execution": await _Manifests(state).shown(record),
            "events": [e.to_dict() for e in found],
            "last_id": found[-1].id if found else after_id,
            "finished": record.status.finished,
        }
    )


async def cancel_execution(state: MasterState, execution_id: int, *, actor: str) -> ExecutionRecord:
    """Cancel an execution and wake its worker's task heartbeat and every follower."""
    record = await state.db(state.catalog.cancel_execution, execution_id, actor=actor)
    state.wakeups.notify(TASKS)
    state.wakeups.notify(EVENTS)
    return record


async def shown_execution(state: MasterState, record: ExecutionRecord) -> dict[str, Any]:
    """An execution as admin routes show it: sensitive parameters masked by its version's manifest."""
    return await _Manifests(state).shown(record)


async def cancel(call: Call) -> web.StreamResponse:
    record = await cancel_execution(call.state, _execution_id(call), actor=call.caller.actor)
    return json_response(await _Manifests(call.state).shown(record))


async def audit(call: Call) -> web.StreamResponse:
    limit = query_int(call.request, "limit", 100, minimum=1, maximum=_LIST_LIMIT)
    after_id = query_int(call.request, "after_id", 0, minimum=0, maximum=2**62)
    newest = call.request.query.get("newest", "") in ("1", "true")
    records = await call.state.db(
        call.state.catalog.list_audit, limit=limit, after_id=after_id, newest=newest
    )
    return json_response([r.to_dict() for r in records])


ENDPOINTS = (
    Endpoint("GET", routes.ADMIN_WORKERS, list_workers, "admin", "List workers", answer="array"),
    Endpoint(
        "POST",
        routes.ADMIN_WORKERS,
        add_worker,
        "admin",
        "Trust a worker certificate: Root store of the master + catalog (pending until its heartbeat)",
        body=AddWorker,
        status=201,
    ),
    Endpoint("GET", routes.ADMIN_WORKER, get_worker, "admin", "Show a worker (agent id or display name)"),
    Endpoint(
        "PATCH",
        routes.ADMIN_WORKER,
        update_worker,
        "admin",
        "Change a worker's description, tags or display name",
        body=UpdateWorker,
    ),
    Endpoint(
        "DELETE",
        routes.ADMIN_WORKER,
        delete_worker,
        "admin",
        "Delete a worker; its certificates leave the Root store and its connections are closed",
    ),
    Endpoint("POST", routes.ADMIN_WORKER_ENABLE, enable_worker, "admin", "Enable a worker"),
    Endpoint(
        "POST",
        routes.ADMIN_WORKER_DISABLE,
        disable_worker,
        "admin",
        "Disable a worker; its open connections are closed",
    ),
    Endpoint(
        "POST",
        routes.ADMIN_CERTIFICATE_REVOKE,
        revoke_certificate,
        "admin",
        "Revoke a worker certificate; its open connections are closed",
    ),
    Endpoint(
        "POST",
        routes.ADMIN_PROJECTS,
        deploy,
        "admin",
        "Deploy a project archive (zip) into a folder",
        body="zip",
        status=201,
        params=(
            # A folder name: 1 to 128 characters, no '/', not only spaces (the catalog's rule).
            Param(
                "folder",
                "string",
                "Catalog folder to deploy into",
                required=True,
                pattern=r"^[^/]*[^/\s][^/]*$",
                max_length=128,
            ),
        ),
        max_body=DEPLOY_MAX_BODY,
    ),
    Endpoint(
        "GET",
        routes.ADMIN_PROJECTS,
        list_projects,
        "executor",
        "List the newest version of every project",
        answer="array",
        params=(Param("folder", "string", "Only this folder"),),
    ),
    Endpoint(
        "POST",
        routes.ADMIN_EXECUTIONS,
        run,
        "executor",
        "Run a package: create an execution whose task is ready at once",
        body=RunPackage,
        status=201,
    ),
    Endpoint(
        "GET",
        routes.ADMIN_EXECUTIONS,
        list_executions,
        "executor",
        "List executions, newest first",
        answer="array",
        params=(
            Param("limit", "integer", "At most this many (default 50)", minimum=1, maximum=_LIST_LIMIT),
            Param("status", "integer", "Only this SSIS status code (1-9)", minimum=0, maximum=9),
        ),
    ),
    Endpoint("GET", routes.ADMIN_EXECUTION, get_execution, "executor", "Show an execution and its task"),
    Endpoint(
        "GET",
        routes.ADMIN_EXECUTION_EVENTS,
        execution_events,
        "executor",
        "Event messages of an execution; long-polls up to wait seconds for new ones or its end",
        params=(
            Param("after_id", "integer", "Only events with a greater id", minimum=0, maximum=2**62),
            Param("wait", "number", "Seconds to wait for news (at most 30)"),
            Param(
                "limit", "integer", "At most this many events (default 1000)", minimum=1, maximum=_LIST_LIMIT
            ),
        ),
    ),
    Endpoint(
        "POST",
        routes.ADMIN_EXECUTION_CANCEL,
        cancel,
        "executor",
        "Cancel an execution (stopping until its worker confirms)",
    ),
    Endpoint(
        "GET",
        routes.ADMIN_AUDIT,
        audit,
        "admin",
        "The audit log, oldest first, after an id",
        answer="array",
        params=(
            Param("limit", "integer", "At most this many (default 100)", minimum=1, maximum=_LIST_LIMIT),
            Param("after_id", "integer", "Only entries with a greater id", minimum=0, maximum=2**62),
        ),
    ),
)
