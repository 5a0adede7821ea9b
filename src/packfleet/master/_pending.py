"""Why an execution is still pending (what ``run --wait`` tells the person waiting on it), and the
master's view of a worker that asks about itself (what ``doctor`` on a worker shows).

The handlers parse and render; the answers are :class:`~packfleet.master._services.PendingService`'s.
"""

from __future__ import annotations

from aiohttp import web

from packfleet.master._api import Endpoint
from packfleet.master._problems import bad_request
from packfleet.master._services import services_of
from packfleet.master._state import Call, json_response
from packfleet.protocol import routes


async def pending(call: Call) -> web.StreamResponse:
    raw = call.request.match_info["execution_id"]
    try:
        execution_id = int(raw)
    except ValueError:
        raise bad_request(f"{raw!r} is not an execution id (a whole number)") from None
    return json_response(await services_of(call).pending.explain(execution_id))


async def worker_self(call: Call) -> web.StreamResponse:
    """The master's view of the worker whose certificate calls: known, enabled, state, certificate status."""
    return json_response(await services_of(call).pending.worker_self(call.caller))


ENDPOINTS = (
    Endpoint(
        "GET",
        routes.ADMIN_EXECUTION_PENDING,
        pending,
        "executor",
        "Why an execution is still pending: per worker, disabled, offline, or its own gate with figures",
    ),
    Endpoint(
        "GET",
        routes.WORKER_SELF,
        worker_self,
        "certificate",
        "The master's view of the calling worker: known, enabled, state, certificate status",
    ),
)
