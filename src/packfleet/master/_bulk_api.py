"""Bulk execution creation: many runs of one package in one request and one catalog transaction.

SSIS has no bulk ``create_execution``; packfleet adds one because a client that queues thousands of
small runs (``make bench``, a nightly fan-out) would otherwise pay one HTTPS round trip, one catalog
transaction and, on SQLite, one WAL commit per execution. Parameters are resolved once against the
manifest; every execution gets the same ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiohttp import web

from packfleet.catalog import ExecutionRequest
from packfleet.master._api import Endpoint
from packfleet.master._problems import bad_request
from packfleet.master._services import services_of
from packfleet.master._state import Call, json_response
from packfleet.master._wakeup import TASKS
from packfleet.packages import Project, resolve_parameters
from packfleet.protocol import MAX_RETRY_COUNT, routes

log = logging.getLogger("packfleet.master")

#: One request creates at most this many executions: enough to fill a fleet's queue in a few
#: requests, small enough that the one transaction holds SQLite's write lock for well under a second.
MAX_BULK = 10_000


@dataclass(frozen=True)
class RunPackageBulk:
    """Create ``count`` executions of one package, all with the same parameters and workers."""

    folder: str
    project: str
    package: str
    count: int = field(metadata={"schema": {"minimum": 1, "maximum": MAX_BULK}})
    parameters: dict[str, str] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)
    retry_count: int = field(default=0, metadata={"schema": {"minimum": 0, "maximum": MAX_RETRY_COUNT}})


async def run_bulk(call: Call) -> web.StreamResponse:
    """Create the executions in one transaction (all or none); their tasks are ready at once."""
    state = call.state
    ask = await call.message(RunPackageBulk)
    if not 1 <= ask.count <= MAX_BULK:
        raise bad_request(f"count must be 1..{MAX_BULK}, not {ask.count}")
    if not 0 <= ask.retry_count <= MAX_RETRY_COUNT:
        raise bad_request(f"retry_count must be 0..{MAX_RETRY_COUNT}, not {ask.retry_count}")
    version = await state.db(state.catalog.get_project_version, ask.folder, ask.project)
    parameters = resolve_parameters(Project.from_dict(version.manifest), ask.package, ask.parameters)
    parameters = state.seal(version.manifest, ask.package, parameters)
    request = ExecutionRequest(
        ask.folder,
        ask.project,
        ask.package,
        parameters,
        await services_of(call).executions.agent_ids(ask.workers),
        ask.retry_count,
        project_version_id=version.id,  # the version the parameters were resolved against
    )
    ids = await state.db(state.catalog.create_executions, [request] * ask.count, actor=call.caller.actor)
    state.wakeups.notify_one(TASKS, len(ids))  # a waiting long-poll per new task, as far as there are
    log.info(
        "%d executions of %s/%s/%s created by %s (ids %d..%d)",
        len(ids),
        ask.folder,
        ask.project,
        ask.package,
        call.caller.actor,
        ids[0],
        ids[-1],
    )
    return json_response({"execution_ids": ids}, status=201)


ENDPOINTS = (
    Endpoint(
        "POST",
        routes.ADMIN_EXECUTIONS_BULK,
        run_bulk,
        "executor",
        "Run a package many times: create `count` executions in one transaction",
        body=RunPackageBulk,
        answer="object",
        status=201,
    ),
)
