"""Admin identities: the people and scripts that administer the master from elsewhere.

An identity is a client certificate pinned to a role: ``admin`` (everything), ``executor`` (also
runs and cancels executions) or ``viewer`` (reads everything, changes nothing). Pinning it puts the
certificate in the master's Root store (so its handshake passes) and records the principal (so the
routes admit it); revoking undoes both and closes its open connections. The catalog audits each.

The handlers parse and render; the call sequences are :class:`~packfleet.master._services.IdentityService`'s,
and the request's rules (roles, names) are :class:`packfleet.protocol.CreateIdentity`'s.
"""

from __future__ import annotations

from aiohttp import web

from packfleet.master._api import Endpoint
from packfleet.master._services import services_of
from packfleet.master._state import Call, json_response
from packfleet.protocol import CreateIdentity, routes


async def create_identity(call: Call) -> web.StreamResponse:
    ask = await call.message(CreateIdentity)
    shown = await services_of(call).identities.create(ask, actor=call.caller.actor)
    return json_response(shown, status=201)


async def list_identities(call: Call) -> web.StreamResponse:
    return json_response(await services_of(call).identities.list())


async def revoke_identity(call: Call) -> web.StreamResponse:
    principal = call.caller.principal
    revoked = await services_of(call).identities.revoke(
        call.request.match_info["name"],
        actor=call.caller.actor,
        own=principal.name if principal is not None else None,
    )
    return json_response(revoked)


ENDPOINTS = (
    Endpoint(
        "POST",
        routes.ADMIN_IDENTITIES,
        create_identity,
        "admin",
        "Pin a client certificate to a new identity with role admin, executor or viewer",
        body=CreateIdentity,
        status=201,
    ),
    Endpoint(
        "GET",
        routes.ADMIN_IDENTITIES,
        list_identities,
        "admin",
        "List identities (admins, executors, viewers) and their certificates",
        answer="array",
    ),
    Endpoint(
        "POST",
        routes.ADMIN_IDENTITY_REVOKE,
        revoke_identity,
        "admin",
        "Revoke an identity: its certificate leaves the Root store, its connections are closed",
    ),
)
