"""Worker certificate rotation, the master's half: register the next certificate, retire the old one.

The seed's "change the worker certificate" procedure ends with "install the client certificate into
the Root store of the master machine" and a worker restart. Here the worker does it itself, over
the connection its current certificate authenticates: it sends the new certificate with a proof
that it holds the new key, the master puts it in its Root store, binds it to the same AgentId and
reloads its trust; the worker switches, then asks (with the new certificate) to retire the old one.

An *expired* certificate cannot take part: the master refuses it during the handshake, so such a
worker must be admitted again (join token or ``manager worker connect``).

The handlers parse, check that the worker speaks for itself and render; the call sequences are
:class:`~packfleet.master._services.RenewalService`'s.
"""

from __future__ import annotations

from aiohttp import web

from packfleet import protocol
from packfleet.master._api import Endpoint
from packfleet.master._auth import require_agent
from packfleet.master._services import services_of
from packfleet.master._state import Call, json_response
from packfleet.protocol import routes


async def renew(call: Call) -> web.StreamResponse:
    """Trust a worker's next certificate: Root store, bound to the same AgentId, trust reloaded."""
    ask = await call.message(protocol.CertificateRenewal)
    require_agent(call.caller, ask.agent_id)
    reply = await services_of(call).renewal.register(ask, caller=call.caller)
    return json_response(protocol.encode(reply))


async def retire(call: Call) -> web.StreamResponse:
    """Retire a worker's old certificate, asked with its new one: catalog, Root store, connections."""
    ask = await call.message(protocol.CertificateRetirement)
    require_agent(call.caller, ask.agent_id)
    reply = await services_of(call).renewal.retire(ask, caller=call.caller)
    return json_response(protocol.encode(reply))


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
