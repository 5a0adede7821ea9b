"""Worker certificate rotation, the master's half: register the next certificate, retire the old one.

The seed's "change the worker certificate" procedure ends with "install the client certificate into
the Root store of the master machine" and a worker restart. Here the worker does it itself, over
the connection its current certificate authenticates: it sends the new certificate with a proof
that it holds the new key, the master puts it in its Root store, binds it to the same AgentId and
reloads its trust; the worker switches, then asks (with the new certificate) to retire the old one.

An *expired* certificate cannot take part: the master refuses it during the handshake, so such a
worker must be admitted again (join token or ``manager worker connect``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from datetime import datetime

from aiohttp import web

from packfleet import protocol
from packfleet.errors import PackfleetError
from packfleet.master._api import Endpoint
from packfleet.master._auth import require_agent
from packfleet.master._logsafe import safe
from packfleet.master._problems import Problem, bad_request
from packfleet.master._state import Call, MasterState, json_response
from packfleet.master._times import PROOF_WINDOW, parse_aware_time
from packfleet.master._trust import reload_after_removal, remove_from_root, trust_in_root
from packfleet.master._wakeup import TASKS
from packfleet.pki import Credential, check_usable, load_credential_bytes, verify_proof
from packfleet.protocol import routes

log = logging.getLogger("packfleet.master")

#: After a retirement, how long the old certificate's connections may finish what they carry before
#: they are closed. Long-polls of that certificate are woken at once and answer empty, and the
#: worker sends nothing new on them, so this only covers answers already on their way.
RETIRE_GRACE = 3.0


def _signed_at(text: str, now: datetime) -> datetime:
    moment = parse_aware_time(text, "signed_at")
    if abs(now - moment) > PROOF_WINDOW:
        raise bad_request(
            f"the proof was signed at {text}, more than {PROOF_WINDOW} from the master's time "
            f"{now.isoformat()}",
            fix="check the worker's clock (timedatectl), then: packfleet worker rotate-cert",
        )
    return moment


async def renew(call: Call) -> web.StreamResponse:
    """Trust a worker's next certificate: Root store, bound to the same AgentId, trust reloaded."""
    state, caller = call.state, call.caller
    ask = await call.message(protocol.CertificateRenewal)
    require_agent(caller, ask.agent_id)
    assert caller.thumbprint is not None  # noqa: S101 - the "worker" access rule guarantees it
    try:
        public = Credential(load_credential_bytes(ask.cert_pem.encode(), source="cert_pem").certificate)
        check_usable(public, purposes=("client",), now=state.clock(), peer=True)
    except PackfleetError as exc:
        raise bad_request(f"cert_pem: {exc.message}", fix=exc.fix) from None
    now = state.clock()
    info = public.info()
    if info.not_after <= now:
        raise bad_request(f"the new certificate {info.thumbprint} expired on {info.not_after.isoformat()}")
    _signed_at(ask.signed_at, now)
    message = protocol.renewal_proof_message(ask.agent_id, info.thumbprint, caller.thumbprint, ask.signed_at)
    try:
        signature = base64.b64decode(ask.proof, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("proof is not base64") from None
    if not verify_proof(public.certificate, message, signature):
        raise Problem(
            403,
            "forbidden",
            f"the proof does not match certificate {info.thumbprint}: it was not signed by its key",
            thumbprint=caller.thumbprint,
            worker=caller.worker_label,
            fix="packfleet worker rotate-cert (signs with the new key it creates)",
        )
    record = await state.db(
        state.catalog.add_worker_certificate,
        public.cert_pem(),
        actor=caller.actor,
        agent_id=ask.agent_id,
    )
    await state.db(
        state.catalog.audit,
        caller.actor,
        "certificate.renew",
        record.thumbprint,
        {"agent_id": record.agent_id, "old": caller.thumbprint, "store": "Root"},
    )
    await trust_in_root(state, public, actor=caller.actor)
    log.info(
        "worker %s registered its next certificate %s (over %s)",
        safe(caller.worker_label),
        record.thumbprint,
        caller.thumbprint,
    )
    reply = protocol.CertificateRenewalReply(
        thumbprint=record.thumbprint,
        agent_id=record.agent_id or ask.agent_id,
        not_after=info.not_after.isoformat(),
    )
    return json_response(protocol.encode(reply))


async def retire(call: Call) -> web.StreamResponse:
    """Retire a worker's old certificate, asked with its new one: catalog, Root store, connections."""
    state, caller = call.state, call.caller
    ask = await call.message(protocol.CertificateRetirement)
    require_agent(caller, ask.agent_id)
    assert caller.thumbprint is not None  # noqa: S101 - the "worker" access rule guarantees it
    changed = await state.db(
        state.catalog.retire_worker_certificate,
        ask.thumbprint,
        agent_id=ask.agent_id,
        replaced_by=caller.thumbprint,
        actor=caller.actor,
    )
    old = ask.thumbprint.upper()
    removed = bool(await state.db(remove_from_root, state, [old]))
    state.principals.invalidate([old])
    # Long-polls still held on the old certificate re-check it when woken, and answer empty.
    state.wakeups.notify(TASKS)
    _close_later(state, old)
    if removed:
        await reload_after_removal(state)
    if changed:
        log.info("worker %s retired its old certificate %s", safe(caller.worker_label), old)
    reply = protocol.CertificateRetirementReply(thumbprint=old, removed_from_root=removed)
    return json_response(protocol.encode(reply))


def _close_later(state: MasterState, thumbprint: str) -> None:
    async def close() -> None:
        await asyncio.sleep(RETIRE_GRACE)
        closed = state.connections.close([thumbprint])
        if closed:
            log.info("closed %d connection(s) of the retired certificate %s", closed, thumbprint)

    task = asyncio.get_running_loop().create_task(close())
    state.background.add(task)
    task.add_done_callback(state.background.discard)


ENDPOINTS = (
    Endpoint(
        "POST",
        routes.WORKER_CERTIFICATE,
        renew,
        "worker",
        "Register this worker's next certificate (with proof of possession of its key)",
        body=protocol.CertificateRenewal,
        answer=protocol.CertificateRenewalReply,
    ),
    Endpoint(
        "POST",
        routes.WORKER_CERTIFICATE_RETIRE,
        retire,
        "worker",
        "Retire this worker's previous certificate; sent with the new one",
        body=protocol.CertificateRetirement,
        answer=protocol.CertificateRetirementReply,
    ),
)
