"""Admin identities: the people and scripts that administer the master from elsewhere.

An identity is a client certificate pinned to a role: ``admin`` (everything), ``executor`` (also
runs and cancels executions) or ``viewer`` (reads everything, changes nothing). Pinning it puts the
certificate in the master's Root store (so its handshake passes) and records the principal (so the
routes admit it); revoking undoes both and closes its open connections. The catalog audits each.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from packfleet.errors import CertificateNotFound, PackfleetError
from packfleet.master._api import Endpoint
from packfleet.master._problems import Problem, bad_request
from packfleet.master._state import Call, MasterState, json_response
from packfleet.master._trust import cut_off, reload_after_removal, remove_from_root, trust_in_root
from packfleet.pki import CertStore, Credential, check_usable, load_credential_bytes
from packfleet.protocol import routes

log = logging.getLogger("packfleet.master")

#: The roles an identity may hold (a worker certificate is never an identity).
IDENTITY_ROLES = ("admin", "executor", "viewer")
#: An identity's name: at most the catalog column's 256 characters, something besides spaces, and
#: neither control characters (it is logged) nor "/" (it is a path segment of the revoke route).
MAX_NAME = 256
NAME_PATTERN = r"^[^\x00-\x1f\x7f/]*[^\s\x00-\x1f\x7f/][^\x00-\x1f\x7f/]*$"


@dataclass(frozen=True)
class CreateIdentity:
    """Pin a client certificate (PEM, no key) to a new principal ``name`` with ``role``."""

    name: str = field(metadata={"schema": {"maxLength": MAX_NAME, "pattern": NAME_PATTERN}})
    role: str = field(metadata={"schema": {"enum": list(IDENTITY_ROLES)}})
    cert_pem: str = field(metadata={"schema": {"format": "pem-certificate"}})


def _not_after(state: MasterState, thumbprint: str | None) -> str | None:
    if thumbprint is None:
        return None
    try:
        return CertStore(state.home, "Root").get(thumbprint).info().not_after.isoformat()
    except CertificateNotFound:
        return None


async def create_identity(call: Call) -> web.StreamResponse:
    state = call.state
    ask = await call.message(CreateIdentity)
    if ask.role not in IDENTITY_ROLES:
        raise bad_request(
            f"role {ask.role!r} is not one of {', '.join(IDENTITY_ROLES)}",
            fix="packfleet manager identity create NAME --role viewer --out DIR",
        )
    # The same test as the document's pattern (Python's re, as a fuzzer's validator uses), so the
    # master takes exactly the names the document promises.
    if len(ask.name) > MAX_NAME or not re.search(NAME_PATTERN, ask.name):
        raise bad_request(
            f"name {ask.name!r} is not a usable identity name: 1 to {MAX_NAME} characters, not only "
            "spaces, without control characters or '/'",
            fix="packfleet manager identity create alice --role viewer --out DIR",
        )
    try:
        public = Credential(load_credential_bytes(ask.cert_pem.encode()).certificate)
        check_usable(public, purposes=("client",), now=state.clock(), peer=True)
    except PackfleetError as exc:
        raise bad_request(f"cert_pem: {exc.message}", fix=exc.fix) from None
    record = await state.db(
        state.catalog.add_principal,
        ask.name.strip(),
        ask.role,  # type: ignore[arg-type]  # checked against IDENTITY_ROLES above
        actor=call.caller.actor,
        thumbprint=public.thumbprint,
        cert_pem=public.cert_pem().decode(),  # the other masters of a shared catalog trust it too
    )
    await trust_in_root(state, public, actor=call.caller.actor)
    log.info(
        "identity %s (%s, %s) pinned by %s", record.name, record.role, public.thumbprint, call.caller.actor
    )
    return json_response(_shown(state, record.to_dict()), status=201)


def _shown(state: MasterState, principal: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in principal.items() if k not in ("password_hash", "id")}
    shown["not_after"] = _not_after(state, principal.get("thumbprint"))
    return shown


async def list_identities(call: Call) -> web.StreamResponse:
    state = call.state
    people = await state.db(state.catalog.list_principals)
    rows = [await state.db(_shown, state, p.to_dict()) for p in people]
    return json_response(rows)


async def revoke_identity(call: Call) -> web.StreamResponse:
    state = call.state
    name = call.request.match_info["name"]
    principal = call.caller.principal
    if principal is not None and principal.name == name:
        raise Problem(
            409,
            "conflict",
            f"identity {name!r} is the one this request uses; revoking it would lock this manager out",
            fix="revoke it with another admin identity (packfleet manager identity list)",
        )
    record = await state.db(state.catalog.remove_principal, name, actor=call.caller.actor)
    thumbprints = [record.thumbprint] if record.thumbprint else []
    removed = await state.db(remove_from_root, state, thumbprints)
    state.principals.invalidate(thumbprints)
    cut_off(state, thumbprints, f"identity {name} revoked")
    if removed:
        await reload_after_removal(state)
    return json_response(
        {"name": record.name, "role": record.role, "thumbprint": record.thumbprint, "revoked": True}
    )


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
