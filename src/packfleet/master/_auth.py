"""Who is calling, and may they: the master's half of DESIGN.md "Certificates and trust".

The TLS handshake has already checked that a presented certificate is in the master's Root store
(CERT_OPTIONAL: none at all is allowed through, for the join and health routes). What remains is the
catalog's half: the SHA-1 thumbprint of the peer certificate names a principal (admin, executor) or a
worker, and each route says which of them it admits. Every refusal is a 403 problem document naming
the thumbprint, the worker when there is one, the reason, and the command that lifts it.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from packfleet.catalog import Principal
from packfleet.master._problems import Problem, forbidden

#: Which callers a route admits.
#: ``open``: anyone, with or without a certificate (health, join, the OpenAPI document).
#: ``certificate``: any certificate from the Root store (the worker heartbeat, by which workers register).
#: ``worker``: an enabled worker whose certificate is active.
#: ``viewer``: role admin, executor or viewer (reads: every GET of an admin or executor route).
#: ``executor``: role admin or executor (run packages and watch executions).
#: ``admin``: role admin.
Access = Literal["open", "certificate", "worker", "viewer", "executor", "admin"]
_ROLES_ADMITTED: dict[str, tuple[str, ...]] = {
    "viewer": ("admin", "executor", "viewer"),
    "executor": ("admin", "executor"),
    "admin": ("admin",),
}

_ADMIN_FIX = (
    "use the admin certificate from `packfleet master init` (ManagerSettings.config AdminCertThumbprint)"
)


@dataclass(frozen=True)
class Caller:
    """The peer of one request: its certificate's thumbprint (if any) and whom the catalog says it is."""

    thumbprint: str | None
    der: bytes | None
    principal: Principal | None

    @property
    def worker_label(self) -> str | None:
        """``name (agent id)`` for a worker certificate, for refusals and logs."""
        p = self.principal
        if p is None or p.kind != "worker":
            return None
        if p.agent_id and p.name != p.agent_id:
            return f"{p.name} ({p.agent_id})"
        return p.agent_id or p.name

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        if self.principal is not None:
            return f"{self.principal.kind}:{self.principal.name}"
        return f"certificate:{self.thumbprint}" if self.thumbprint else "anonymous"


def peer_certificate(request: web.Request) -> bytes | None:
    """The DER of the client certificate of this request's connection, or None if it sent none."""
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    return ssl_object.getpeercert(binary_form=True)


def thumbprint_of_der(der: bytes) -> str:
    """SHA-1 of the DER, uppercase hex: the thumbprint as SSIS and Windows show it."""
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


class PrincipalCache:
    """``catalog.authorize`` answers, kept for a few seconds per thumbprint.

    Every request of a worker's keep-alive connection would otherwise cost a catalog query. The
    master invalidates the cache on every worker or certificate change it makes, so the TTL only
    bounds how long a change made by *another* master (sharing a PostgreSQL catalog) takes to apply.
    """

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[Principal | None]],
        *,
        ttl: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._monotonic = monotonic
        self._entries: dict[str, tuple[float, Principal | None]] = {}

    async def get(self, thumbprint: str) -> Principal | None:
        now = self._monotonic()
        hit = self._entries.get(thumbprint)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await self._lookup(thumbprint)
        self._entries[thumbprint] = (now + self._ttl, principal)
        return principal

    def put(self, thumbprint: str, principal: Principal) -> None:
        """Keep ``principal`` for ``thumbprint`` as a lookup would: what a catalog call just read."""
        self._entries[thumbprint] = (self._monotonic() + self._ttl, principal)

    def invalidate(self, thumbprints: Iterable[str] | None = None) -> None:
        """Forget some thumbprints, or all of them when none are named."""
        if thumbprints is None:
            self._entries.clear()
            return
        for thumbprint in thumbprints:
            self._entries.pop(thumbprint, None)


class ConnectionRegistry:
    """Open client connections by certificate thumbprint, so a revocation can end them at once.

    A keep-alive connection was authenticated once, at its handshake; without this, a worker
    disabled or revoked mid-connection would keep being served until it reconnected.
    """

    def __init__(self) -> None:
        self._by_thumbprint: dict[str, weakref.WeakSet[asyncio.BaseTransport]] = {}

    def add(self, thumbprint: str, transport: asyncio.BaseTransport) -> None:
        live = self._by_thumbprint.setdefault(thumbprint, weakref.WeakSet())
        if transport in live:  # the next request of a keep-alive connection
            return
        for stale in [t for t in live if t.is_closing()]:
            live.discard(stale)
        live.add(transport)

    def count(self, thumbprint: str) -> int:
        return sum(1 for t in self._by_thumbprint.get(thumbprint, ()) if not t.is_closing())

    def close(self, thumbprints: Iterable[str]) -> int:
        """Close every open connection of these thumbprints; return how many were closed."""
        closed = 0
        for thumbprint in thumbprints:
            for transport in list(self._by_thumbprint.pop(thumbprint, ())):
                if not transport.is_closing():
                    transport.close()
                    closed += 1
        return closed


def check_access(access: Access, caller: Caller, route: str) -> None:
    """Refuse with a 403 problem unless ``caller`` may use a route of kind ``access``."""
    if access == "open":
        return
    thumbprint = caller.thumbprint
    if thumbprint is None:
        raise forbidden(
            f"{route} needs a client certificate and this connection presented none; only "
            "/api/v1/health, /api/v1/join and /api/v1/openapi.json answer without one",
            thumbprint=None,
            fix="connect with a worker or admin certificate (packfleet doctor shows which one is configured)",
        )
    principal = caller.principal
    if access == "certificate":
        if principal is not None and principal.kind != "worker":
            raise forbidden(
                f"certificate {thumbprint} belongs to {principal.kind} {principal.name!r}, not to a "
                "worker; a worker needs its own certificate",
                thumbprint=thumbprint,
                fix="on the worker: packfleet worker init (makes a worker certificate)",
            )
        return
    if access == "worker":
        _check_worker(caller, route)
        return
    _check_role(access, caller, route)


def _check_worker(caller: Caller, route: str) -> None:
    thumbprint = caller.thumbprint
    principal = caller.principal
    if principal is None:
        raise forbidden(
            f"certificate {thumbprint} is trusted by the master's Root store but belongs to no worker "
            f"yet, so it may not use {route}; a worker registers through its first heartbeat",
            thumbprint=thumbprint,
            fix="start the worker (packfleet worker run), then: packfleet manager worker list and "
            "packfleet manager worker enable AGENT_ID",
        )
    if principal.kind != "worker":
        raise forbidden(
            f"certificate {thumbprint} belongs to {principal.kind} {principal.name!r}; {route} is for "
            "workers",
            thumbprint=thumbprint,
            fix="on the worker: packfleet worker init (makes a worker certificate)",
        )
    worker = caller.worker_label
    agent = principal.agent_id or "AGENT_ID"
    if principal.cert_status == "revoked":
        raise forbidden(
            f"certificate {thumbprint} of worker {worker} was revoked",
            thumbprint=thumbprint,
            worker=worker,
            fix=f"re-admit it with a new certificate: packfleet manager worker connect {agent} --token "
            "(on the master), then packfleet worker join TOKEN (on the worker)",
        )
    if principal.cert_status != "active":
        raise forbidden(
            f"certificate {thumbprint} is {principal.cert_status}: a newer certificate of worker {worker} "
            "replaced it, or the worker was deleted",
            thumbprint=thumbprint,
            worker=worker,
            fix="on the worker: packfleet doctor (is WorkerHttpsCertThumbprint the current certificate?); "
            f"to re-admit it: packfleet manager worker connect {agent} --token, then packfleet worker join "
            "TOKEN; if it was deleted: packfleet manager worker add --cert worker.cer --enable",
        )
    if not principal.enabled:
        raise forbidden(
            f"worker {worker} is disabled (certificate {thumbprint}); a disabled worker may only send "
            "heartbeats",
            thumbprint=thumbprint,
            worker=worker,
            fix=f"packfleet manager worker enable {agent}",
        )


def _check_role(access: Access, caller: Caller, route: str) -> None:
    thumbprint = caller.thumbprint
    principal = caller.principal
    allowed = _ROLES_ADMITTED[access]
    if principal is not None and principal.kind == "worker":
        raise forbidden(
            f"certificate {thumbprint} is a worker certificate (worker {caller.worker_label}); a "
            f"worker certificate is never accepted on admin routes such as {route}",
            thumbprint=thumbprint,
            worker=caller.worker_label,
            fix=_ADMIN_FIX,
        )
    if principal is None:
        raise forbidden(
            f"certificate {thumbprint} is in the master's Root store but belongs to no admin, "
            f"executor or viewer identity, so it may not use {route}",
            thumbprint=thumbprint,
            fix=_ADMIN_FIX,
        )
    if principal.kind not in allowed:
        raise forbidden(
            f"{principal.kind} {principal.name!r} (certificate {thumbprint}) may not use {route}: it "
            f"needs role {' or '.join(allowed)}",
            thumbprint=thumbprint,
            fix=_ADMIN_FIX,
        )


def _agent_key(agent_id: str) -> str:
    # SSIS shows agent ids as GUIDs, in braces or uppercase at times; all spell the same worker.
    try:
        return str(uuid.UUID(agent_id.strip()))
    except ValueError:
        return agent_id.strip().casefold()


def require_agent(caller: Caller, agent_id: str) -> None:
    """A worker speaks only for itself: the body's agent id must be its certificate's worker."""
    principal = caller.principal
    if principal is None or principal.agent_id is None:
        return
    if _agent_key(principal.agent_id) != _agent_key(agent_id):
        raise Problem(
            403,
            "forbidden",
            f"certificate {caller.thumbprint} belongs to worker {caller.worker_label}, which may not "
            f"act for agent {agent_id!r}",
            thumbprint=caller.thumbprint,
            worker=caller.worker_label,
            fix="check AgentId in the worker's WorkerSettings.config (packfleet settings show worker)",
        )
