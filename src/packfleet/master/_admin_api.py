"""The admin routes: workers, projects, executions and the audit log, as SSIS Manager and the
``catalog.*`` stored procedures offer them.

Each handler parses its request, calls one service (:mod:`packfleet.master._services`) and renders
the answer; the call sequences live in the services, which the web console calls too."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from packfleet import protocol
from packfleet.errors import PackfleetError, PkiError
from packfleet.master._api import DEPLOY_MAX_BODY, Endpoint, Param
from packfleet.master._problems import bad_request
from packfleet.master._services import EVENTS_LIMIT, EventPage, ExecutionService, services_of
from packfleet.master._state import Call, json_response, query_float, query_int
from packfleet.protocol import AddWorker, RunPackage, UpdateWorker, routes
from packfleet.thumbprint import normalize_thumbprint

_LIST_LIMIT = 10_000


# --- workers ------------------------------------------------------------------------------------


async def list_workers(call: Call) -> web.StreamResponse:
    workers = services_of(call).workers
    return json_response([workers.view(w) for w in await workers.list()])


async def add_worker(call: Call) -> web.StreamResponse:
    """The seed's "install the client certificate into the Root store of the master", plus the record."""
    services = services_of(call)
    ask = await call.message(AddWorker)
    try:
        public = services.trust.worker_certificate(ask.cert_pem.encode())
    except PackfleetError as exc:
        raise bad_request(f"cert_pem: {exc.message}", fix=exc.fix) from None
    record = await services.trust.add_worker_certificate(
        public,
        actor=call.caller.actor,
        display_name=ask.display_name,
        worker=ask.worker.strip() or None,
        enable=ask.enable,
    )
    return json_response(record.to_dict(), status=201)


async def get_worker(call: Call) -> web.StreamResponse:
    workers = services_of(call).workers
    return json_response(workers.view(await workers.get(call.request.match_info["ref"])))


async def _set_enabled(call: Call, enabled: bool) -> web.StreamResponse:
    workers = services_of(call).workers
    worker = await workers.set_enabled(call.request.match_info["ref"], enabled, actor=call.caller.actor)
    return json_response(workers.view(worker))


async def enable_worker(call: Call) -> web.StreamResponse:
    return await _set_enabled(call, True)


async def disable_worker(call: Call) -> web.StreamResponse:
    return await _set_enabled(call, False)


async def update_worker(call: Call) -> web.StreamResponse:
    ask = await call.message(UpdateWorker)
    workers = services_of(call).workers
    worker = await workers.update(
        call.request.match_info["ref"],
        actor=call.caller.actor,
        description=ask.description,
        tags=ask.tags,
        display_name=ask.display_name,
    )
    return json_response(workers.view(worker))


async def delete_worker(call: Call) -> web.StreamResponse:
    ref = call.request.match_info["ref"]
    return json_response(await services_of(call).workers.delete(ref, actor=call.caller.actor))


async def revoke_certificate(call: Call) -> web.StreamResponse:
    """Revoke one certificate; it still completes a handshake, so its worker hears why it is refused."""
    try:
        thumbprint = normalize_thumbprint(call.request.match_info["thumbprint"])
    except PkiError as exc:  # the caller's typo, not the master's own PKI (which would be a 500)
        raise bad_request(exc.message, fix=exc.fix) from None
    record = await services_of(call).trust.revoke(thumbprint, actor=call.caller.actor)
    return json_response(record.to_dict())


# --- projects -----------------------------------------------------------------------------------


async def deploy(call: Call) -> web.StreamResponse:
    """Deploy a project archive into ``folder``; the catalog keeps every version."""
    folder = call.request.query.get("folder", "").strip()
    if not folder:
        raise bad_request("query parameter folder is missing", fix="packfleet deploy DIR --folder default")
    archive = await call.body()
    if not archive:
        raise bad_request("the body must be the project's zip archive, and it is empty")
    record = await services_of(call).projects.deploy(folder, archive, actor=call.caller.actor)
    return json_response(record.to_dict(), status=201)


async def list_projects(call: Call) -> web.StreamResponse:
    projects = await services_of(call).projects.list(call.request.query.get("folder") or None)
    return json_response([p.to_dict() for p in projects])


# --- executions ---------------------------------------------------------------------------------


async def run(call: Call) -> web.StreamResponse:
    """Create an execution; its task is ready at once and a waiting worker's long-poll answers.

    With ``wait`` the answer is the events route's page (after id 0), held like its long-poll
    until the execution has events or has ended: ``run --wait`` in one request instead of two.
    """
    ask = await call.message(RunPackage)
    wait = query_float(call.request, "wait", 0.0) if "wait" in call.request.query else None
    executions = services_of(call).executions
    if wait is None:
        submitted = await executions.submit(ask, actor=call.caller.actor)
        answer = await executions.shown(submitted.execution)
    else:
        submitted, page = await executions.submit_waiting(ask, actor=call.caller.actor, wait=wait)
        answer = await _page_answer(executions, page)
    # A resent submit is answered with what the first one created: 200, not 201.
    return json_response(answer, status=201 if submitted.created else 200)


async def list_executions(call: Call) -> web.StreamResponse:
    request = call.request
    limit = query_int(request, "limit", 50, minimum=1, maximum=_LIST_LIMIT)
    status = query_int(request, "status", 0, minimum=0, maximum=9) or None
    executions = services_of(call).executions
    records = await executions.list(limit=limit, status=status)
    manifests = executions.manifests()
    return json_response([await manifests.shown(r) for r in records])


def _execution_id(call: Call) -> int:
    raw = call.request.match_info["execution_id"]
    # ASCII digits only, and few enough for a 64-bit column: int() would also take " 7", "٧" or a
    # number the database driver cannot bind (a 500 instead of a 400).
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise bad_request(f"{raw!r} is not an execution id (a whole number)")
    return int(raw)


async def get_execution(call: Call) -> web.StreamResponse:
    executions = services_of(call).executions
    return json_response(await executions.shown(await executions.get(_execution_id(call))))


async def execution_events(call: Call) -> web.StreamResponse:
    """Events after ``after_id``; with ``wait``, hold the request until there are some or the run ends.

    This is what ``executions logs --follow`` and ``run --wait`` poll: each answer carries the
    execution too, so the follower knows when to stop.
    """
    execution_id = _execution_id(call)
    after_id = query_int(call.request, "after_id", 0, minimum=0, maximum=2**62)
    limit = query_int(call.request, "limit", EVENTS_LIMIT, minimum=1, maximum=_LIST_LIMIT)
    wait = query_float(call.request, "wait", 0.0)
    executions = services_of(call).executions
    page = await executions.events(execution_id, after_id=after_id, limit=limit, wait=wait)
    return json_response(await _page_answer(executions, page))


async def _page_answer(executions: ExecutionService, page: EventPage) -> dict[str, Any]:
    """An :class:`~packfleet.protocol.EventPage`: the events route's answer, and a waiting run's."""
    return {
        "execution": await executions.shown(page.execution),
        "events": [e.to_dict() for e in page.events],
        "last_id": page.last_id,
        "finished": page.execution.status.finished,
    }


async def cancel(call: Call) -> web.StreamResponse:
    executions = services_of(call).executions
    record = await executions.cancel(_execution_id(call), actor=call.caller.actor)
    return json_response(await executions.shown(record))


async def audit(call: Call) -> web.StreamResponse:
    limit = query_int(call.request, "limit", 100, minimum=1, maximum=_LIST_LIMIT)
    after_id = query_int(call.request, "after_id", 0, minimum=0, maximum=2**62)
    newest = call.request.query.get("newest", "") in ("1", "true")
    records = await services_of(call).audit.list(limit=limit, after_id=after_id, newest=newest)
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
        "Run a package: create an execution whose task is ready at once; with wait, answer its "
        "first events or its end (an EventPage) within wait seconds",
        body=RunPackage,
        answer=protocol.Execution | protocol.EventPage,
        status=201,
        params=(
            Param(
                "wait",
                "number",
                "Answer an EventPage (events after id 0): held up to this many seconds (at most 30) "
                "until the execution has events or has ended. Without it the answer is the Execution",
            ),
        ),
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
        answer=protocol.EventPage,
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
