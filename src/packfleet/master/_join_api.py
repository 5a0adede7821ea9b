"""Join tokens and ``/api/v1/join``: a worker admitted by one copy-paste string (kubeadm's ``join``).

The administrator makes a token (``manager token create``); it carries the master's endpoint, the
SHA-256 pin of the certificate the master serves, and a secret. The worker connects without a
client certificate (the master's TLS policy is CERT_OPTIONAL for exactly this route), checks the pin
before sending anything, and posts its certificate with the secret and a signature proving it holds
the certificate's key. The master then does what ``manager worker add`` does — the certificate goes
into the Root store and is trusted at once — and the worker is registered under its AgentId.

``manager worker connect`` is SSIS Manager's "delete the worker and add it again" for a worker that
stays: its certificates are replaced in one step, keeping its AgentId and enabled state.

The handlers parse and render; what joining and connecting do is :class:`JoinService`'s
(``master/_services/_joins.py``), and the tokens are :class:`TokenService`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web

from packfleet.catalog import TokenBinding
from packfleet.master._api import Endpoint
from packfleet.master._services import services_of
from packfleet.master._state import Call, json_response
from packfleet.protocol import CreateToken, JoinChallenge, JoinReply, JoinRequest, encode, routes

#: POST /join is open to anyone who can reach the port: its body (a certificate, a signature and a
#: few names; under 8 KiB even with an RSA-4096 certificate) is capped far below the 4 MiB default.
JOIN_MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class ConnectWorker:
    """Give an existing worker a new certificate; its other certificates are retired.

    ``cert_pem`` is the certificate; or ``thumbprint`` names one the master already holds (pending
    in the catalog, or in its Root store): how an administrator confirms the binding a worker's
    heartbeat asked for and was refused (the seed's manual "change the worker certificate").
    """

    cert_pem: str = field(default="", metadata={"schema": {"format": "pem-certificate", "minLength": 1}})
    #: The canonical spelling; the master also takes spaces, colons and lowercase, as people paste.
    thumbprint: str = field(default="", metadata={"schema": {"pattern": "^[0-9A-F]{40}$"}})
    #: Exactly one of the two: the join service refuses neither and both (400).
    SCHEMA: ClassVar[dict[str, Any]] = {"oneOf": [{"required": ["cert_pem"]}, {"required": ["thumbprint"]}]}


# --- /api/v1/join -------------------------------------------------------------------------------


async def join_challenge(call: Call) -> web.StreamResponse:
    return json_response(encode(services_of(call).joins.challenge()))


async def join(call: Call) -> web.StreamResponse:
    """Admit a worker certificate with a join token; a retry of a completed join answers the same."""
    ask = await call.message(JoinRequest)
    return json_response(encode(await services_of(call).joins.join(ask)))


# --- /api/v1/admin/tokens -----------------------------------------------------------------------


async def create_token(call: Call) -> web.StreamResponse:
    ask = await call.message(CreateToken)
    tokens = services_of(call).tokens
    made = await tokens.create(
        actor=call.caller.actor,
        ttl_seconds=ask.ttl_seconds,
        uses=ask.uses,
        enable=ask.enable,
        endpoint=ask.endpoint,
        worker=ask.worker,
    )
    answer = tokens.view(made.record, TokenBinding(made.agent_id))
    answer |= {"token": made.token, "master_sha256": made.master_sha256}
    return json_response(answer, status=201)


async def list_tokens(call: Call) -> web.StreamResponse:
    tokens = services_of(call).tokens
    return json_response([tokens.view(record, binding) for record, binding in await tokens.list()])


async def revoke_token(call: Call) -> web.StreamResponse:
    tokens = services_of(call).tokens
    record, binding = await tokens.revoke(call.request.match_info["token_id"], actor=call.caller.actor)
    return json_response(tokens.view(record, binding))


# --- /api/v1/admin/workers/{ref}/connect --------------------------------------------------------


async def connect_worker(call: Call) -> web.StreamResponse:
    """Replace a worker's certificates by the given one: same AgentId, same enabled state."""
    ask = await call.message(ConnectWorker)
    connected = await services_of(call).joins.connect(
        call.request.match_info["ref"],
        cert_pem=ask.cert_pem,
        thumbprint=ask.thumbprint,
        actor=call.caller.actor,
    )
    return json_response(connected.outcome.to_dict() | {"removed_from_root": connected.removed_from_root})


ENDPOINTS = (
    Endpoint(
        "GET",
        routes.JOIN,
        join_challenge,
        "open",
        "Start a join: the master's time, for the worker's proof of possession",
        answer=JoinChallenge,
    ),
    Endpoint(
        "POST",
        routes.JOIN,
        join,
        "open",
        "Join with a token: enroll a worker certificate (pinned master, signed proof of its key)",
        body=JoinRequest,
        answer=JoinReply,
        max_body=JOIN_MAX_BODY,
    ),
    Endpoint(
        "GET",
        routes.ADMIN_TOKENS,
        list_tokens,
        "admin",
        "List join tokens (never their secrets)",
        answer="array",
    ),
    Endpoint(
        "POST",
        routes.ADMIN_TOKENS,
        create_token,
        "admin",
        "Create a join token (shown once); bound to a worker when worker is given",
        body=CreateToken,
        status=201,
    ),
    Endpoint("POST", routes.ADMIN_TOKEN_REVOKE, revoke_token, "admin", "Revoke a join token"),
    Endpoint(
        "POST",
        routes.ADMIN_WORKER_CONNECT,
        connect_worker,
        "admin",
        "Give a worker a new certificate: the old ones leave the Root store; AgentId and enabled state stay",
        body=ConnectWorker,
    ),
)
