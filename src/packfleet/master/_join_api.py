"""Join tokens and ``/api/v1/join``: a worker admitted by one copy-paste string (kubeadm's ``join``).

The administrator makes a token (``manager token create``); it carries the master's endpoint, the
SHA-256 pin of the certificate the master serves, and a secret. The worker connects without a
client certificate (the master's TLS policy is CERT_OPTIONAL for exactly this route), checks the pin
before sending anything, and posts its certificate with the secret and a signature proving it holds
the certificate's key. The master then does what ``manager worker add`` does — the certificate goes
into the Root store and is trusted at once — and the worker is registered under its AgentId.

``manager worker connect`` is SSIS Manager's "delete the worker and add it again" for a worker that
stays: its certificates are replaced in one step, keeping its AgentId and enabled state.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from aiohttp import web

from packfleet.catalog import JoinTokenRecord, TokenBinding, canonical_agent_id
from packfleet.errors import CatalogError, Conflict, NotFound, PackfleetError
from packfleet.master._api import Endpoint
from packfleet.master._logsafe import safe
from packfleet.master._problems import Problem, bad_request, forbidden
from packfleet.master._services import off_catalog, services_of
from packfleet.master._state import Call, MasterState, json_response
from packfleet.master._times import PROOF_WINDOW, parse_aware_time
from packfleet.master._tls import load_tls_material
from packfleet.master._trust import cut_off, remove_from_root, trust_in_root
from packfleet.master._wakeup import TASKS
from packfleet.pki import (
    CertStore,
    Credential,
    check_usable,
    load_credential_bytes,
    verify_proof,
)
from packfleet.protocol import (
    CreateToken,
    JoinChallenge,
    JoinReply,
    JoinRequest,
    encode,
    join_proof_message,
    routes,
    secret_matches,
)
from packfleet.thumbprint import is_thumbprint, normalize_thumbprint

log = logging.getLogger("packfleet.master")

#: POST /join is open to anyone who can reach the port: its body (a certificate, a signature and a
#: few names; under 8 KiB even with an RSA-4096 certificate) is capped far below the 4 MiB default.
JOIN_MAX_BODY = 64 * 1024
_JOIN_AGAIN = (
    "on the master: packfleet manager token create   (then on the worker: packfleet worker join TOKEN)"
)


@dataclass(frozen=True)
class ConnectWorker:
    """Give an existing worker a new certificate; its other certificates are retired.

    ``cert_pem`` is the certificate; or ``thumbprint`` names one the master already holds (pending
    in the catalog, or in its Root store): how an administrator confirms the binding a worker's
    heartbeat asked for and was refused (the seed's manual "change the worker certificate").
    """

    cert_pem: str = field(default="", metadata={"schema": {"format": "pem-certificate", "minLength": 1}})
    #: The canonical spelling; the handler also takes spaces, colons and lowercase, as people paste.
    thumbprint: str = field(default="", metadata={"schema": {"pattern": "^[0-9A-F]{40}$"}})
    #: Exactly one of the two: the handler refuses neither and both (400).
    SCHEMA: ClassVar[dict[str, Any]] = {"oneOf": [{"required": ["cert_pem"]}, {"required": ["thumbprint"]}]}


# --- /api/v1/join -------------------------------------------------------------------------------


async def join_challenge(call: Call) -> web.StreamResponse:
    return json_response(encode(JoinChallenge(issued_at=call.state.clock().isoformat())))


def _refused(detail: str, fix: str = _JOIN_AGAIN) -> Problem:
    return forbidden(detail, thumbprint=None, fix=fix)


async def _checked_token(state: MasterState, token_id: str, secret: str) -> JoinTokenRecord:
    try:
        token = await state.db(state.catalog.get_join_token, token_id)
    except NotFound:
        token = None
    # One answer for "no such token" and "wrong secret", so the route tells a guesser nothing.
    if token is None or not secret_matches(secret, token.secret_hash):
        raise _refused(f"join token {token_id!r} is not known to this master, or its secret is wrong")
    return token


def _enrolled_certificate(state: MasterState, cert_pem: str) -> Credential:
    try:
        public = Credential(load_credential_bytes(cert_pem.encode(), source="cert_pem").certificate)
        check_usable(public, purposes=("client",), now=state.clock(), peer=True)
    except PackfleetError as exc:
        raise bad_request(f"the worker certificate cannot be used: {exc.message}", fix=exc.fix) from None
    return public


def _check_proof(state: MasterState, ask: JoinRequest, public: Credential, agent_id: str) -> None:
    signed = parse_aware_time(ask.issued_at, "issued_at")
    try:
        signature = base64.b64decode(ask.signature, validate=True)
    except (ValueError, binascii.Error):
        raise bad_request("signature must be base64") from None
    if abs(state.clock() - signed) > PROOF_WINDOW:
        raise _refused(
            f"the join proof was signed for {ask.issued_at}, more than {PROOF_WINDOW} from the master's "
            f"time {state.clock().isoformat()}",
            fix="run packfleet worker join again (it asks the master for the time first)",
        )
    message = join_proof_message(ask.token_id, ask.issued_at, public.sha256, agent_id)
    if not verify_proof(public.certificate, message, signature):
        raise _refused(
            f"the signature does not prove possession of the private key of certificate {public.thumbprint}",
            fix="join from the worker that holds the certificate's key: packfleet worker join TOKEN",
        )


async def join(call: Call) -> web.StreamResponse:
    """Admit a worker certificate with a join token; a retry of a completed join answers the same."""
    state = call.state
    ask = await call.message(JoinRequest)
    try:
        agent_id = canonical_agent_id(ask.agent_id)
    except CatalogError as exc:
        raise bad_request(f"agent_id: {exc.message}", fix=exc.fix) from None
    await _checked_token(state, ask.token_id, ask.secret)
    public = _enrolled_certificate(state, ask.cert_pem)
    _check_proof(state, ask, public, agent_id)
    try:
        outcome = await state.db(
            state.catalog.redeem_join_token,
            ask.token_id,
            public.cert_pem(),
            agent_id=agent_id,
            display_name=ask.display_name.strip(),
        )
    except Conflict as exc:
        raise _refused(exc.message, exc.fix or _JOIN_AGAIN) from None
    actor = f"worker:{outcome.agent_id}"
    await _retire(state, list(outcome.retired), f"worker {outcome.agent_id} joined again")
    # Also on a retry: the first attempt may have died between the catalog and the store, or its
    # reload may have been refused (503); adding again is harmless and serves the store as it is.
    await trust_in_root(state, public, actor=actor)
    state.principals.invalidate([public.thumbprint])
    state.wakeups.notify(TASKS)
    word = "enabled" if outcome.enabled else "disabled until an administrator enables it"
    log.info(
        "worker %s (%s) joined with token %s and certificate %s%s",
        safe(outcome.display_name),
        outcome.agent_id,
        outcome.token_id,
        outcome.thumbprint,
        " (retry)" if outcome.repeated else "",
    )
    message = f"worker {outcome.display_name!r} ({outcome.agent_id}) joined; it is {word}"
    if not outcome.enabled:
        message += f": packfleet manager worker enable {outcome.agent_id}"
    reply = JoinReply(
        agent_id=outcome.agent_id,
        display_name=outcome.display_name,
        worker_thumbprint=outcome.thumbprint,
        master_thumbprint=await _serving_thumbprint(state),
        enabled=outcome.enabled,
        repeated=outcome.repeated,
        message=message,
    )
    return json_response(encode(reply))


async def _retire(state: MasterState, thumbprints: list[str], why: str) -> list[str]:
    """Drop replaced certificates from the Root store and end their connections."""
    if not thumbprints:
        return []
    removed = await remove_from_root(state, thumbprints)
    state.principals.invalidate(thumbprints)
    cut_off(state, thumbprints, why)
    return removed


async def _serving_thumbprint(state: MasterState) -> str:
    material = await off_catalog(load_tls_material, state.home)
    return material.thumbprint


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
    state = call.state
    ask = await call.message(ConnectWorker)
    if bool(ask.cert_pem) == bool(ask.thumbprint):
        raise bad_request(
            "give either cert_pem (the worker's new certificate) or thumbprint (one the master holds)",
            fix="packfleet manager worker connect REF --cert worker.cer (or --cert THUMBPRINT)",
        )
    pem = ask.cert_pem or (await _held_certificate(state, ask.thumbprint)).decode()
    public = _enrolled_certificate(state, pem)
    outcome = await state.db(
        state.catalog.connect_worker_certificate,
        call.request.match_info["ref"],
        public.cert_pem(),
        actor=call.caller.actor,
    )
    removed = await _retire(state, list(outcome.retired), f"worker {outcome.agent_id} connected anew")
    await trust_in_root(state, public, actor=call.caller.actor)
    state.wakeups.notify(TASKS)
    return json_response(outcome.to_dict() | {"removed_from_root": removed})


async def _held_certificate(state: MasterState, thumbprint: str) -> bytes:
    """The certificate ``thumbprint`` as the master holds it: pending in the catalog, or in Root."""
    if not is_thumbprint(thumbprint):
        raise bad_request(f"thumbprint {thumbprint!r} is not 40 hex digits (a SHA-1 thumbprint)")
    thumbprint = normalize_thumbprint(thumbprint)
    pem = await state.db(state.catalog.certificate_pem, thumbprint)
    if pem is not None:
        return pem
    try:
        # A store file, not the catalog: off the catalog's executor.
        return await off_catalog(_root_pem, state.home, thumbprint)
    except PackfleetError:
        raise Problem(
            404,
            "not-found",
            f"certificate {thumbprint} is neither in the catalog nor in the master's Root store",
            thumbprint=thumbprint,
            fix="give the certificate file instead: packfleet manager worker connect REF --cert worker.cer",
        ) from None


def _root_pem(home: Path, thumbprint: str) -> bytes:
    return CertStore(home, "Root").get(thumbprint).cert_pem()


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
