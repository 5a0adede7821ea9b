"""``/api/v1/admin/rotation/master-cert``: the master certificate rotation's admin route.

The handlers parse and render; the steps are :class:`~packfleet.master._services.RotationService`'s.
"""

from __future__ import annotations

from aiohttp import web

from packfleet.master._api import Endpoint
from packfleet.master._problems import bad_request
from packfleet.master._rotation import RotateRequest
from packfleet.master._services import services_of
from packfleet.master._state import Call, json_response, query_float
from packfleet.protocol import routes


async def _rotation_status(call: Call) -> web.StreamResponse:
    # ?wait_for=confirmed|promoted&wait=SECONDS: answer once the workers got there (a long-poll).
    wait_for = call.request.query.get("wait_for") or None
    if wait_for is not None and wait_for not in WAIT_STEPS:
        raise bad_request(f"query parameter wait_for={wait_for!r} is not one of {', '.join(WAIT_STEPS)}")
    wait = query_float(call.request, "wait", 0.0)
    rotation = services_of(call).require_rotation()
    return json_response(await rotation.status(wait_for=wait_for, wait=wait if wait == wait else 0.0))


async def _rotate(call: Call) -> web.StreamResponse:
    ask = await call.message(RotateRequest)
    rotation = services_of(call).require_rotation()
    result = await rotation.advance(
        ask.action, actor=call.caller.actor, cns=ask.cns, days=ask.days, force=ask.force
    )
    return json_response(result)


#: The steps a status long-poll can wait for.
WAIT_STEPS = ("confirmed", "promoted")

ENDPOINTS = (
    Endpoint(
        "GET",
        routes.ADMIN_ROTATION_MASTER_CERT,
        _rotation_status,
        "admin",
        "The master certificate rotation under way, and which workers accept the new certificate",
    ),
    Endpoint(
        "POST",
        routes.ADMIN_ROTATION_MASTER_CERT,
        _rotate,
        "admin",
        "Advance the master certificate rotation: start, switch, finish or abort",
        body=RotateRequest,
    ),
)
