"""Who this worker is, and following certificate changes on both sides while it runs.

The worker's identity (settings, its certificate, the master certificates it pins) is read at start
and again on SIGHUP (:meth:`CertificateFollower.reload`). While serving it follows two rotations
without a restart: the master's (a heartbeat announces the next master certificate, then which one
it serves; the pins follow) and its own (renewed two thirds into its life, or finished after a
``worker rotate-cert`` that stopped half-way).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packfleet.errors import CertificateExpired, PackfleetError
from packfleet.protocol import HeartbeatReply
from packfleet.worker._identity import WorkerIdentity, load_identity, root_pem
from packfleet.worker._link import MasterLink
from packfleet.worker._renewal import (
    Pending,
    check_not_expired,
    read_pending,
    register_next_certificate,
    renewal_due,
    resume_rotation,
    retire_previous,
)
from packfleet.worker._rotation import accept_next_master, follow_master

log = logging.getLogger("packfleet.worker")

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class CertificateFollower:
    """The identity in use, and every change to it: reloads, master rotations, own renewals."""

    def __init__(
        self,
        home: Path,
        link: MasterLink,
        identity: WorkerIdentity,
        *,
        clock: Callable[[], float],
        spawn: Spawn,
        installed: Callable[[WorkerIdentity], None],
    ) -> None:
        self.home = home
        self.identity = identity
        self._link = link
        self._clock = clock
        self._spawn = spawn
        self._installed = installed
        self._rotating: asyncio.Task[None] | None = None

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def reload(self) -> bool:
        """Re-read settings and certificates (SIGHUP); on any error keep the last good ones.

        The new identity is checked completely (stores, pins, endpoint host, a TLS context built
        from it) before anything is swapped, so a half-edited settings file never takes a running
        worker down. ``ExecutionLogCacheFolder`` and ``TasksRootFolder`` are read at start only.
        """
        try:
            identity = load_identity(self.home)
            context = identity.ssl_context()
        except PackfleetError as exc:
            log.error("reload refused, keeping the settings and certificates in use: %s", exc)
            return False
        self.install(identity, context)
        log.info("reloaded WorkerSettings.config and certificates (pins %s)", ", ".join(identity.pins))
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return True
        self.rotate()  # `worker rotate-cert` switched the certificate: retire the old one
        return True

    def install(self, identity: WorkerIdentity, context: ssl.SSLContext) -> None:
        self._link.install(identity, context)
        self.identity = identity
        self._installed(identity)

    def follow(self, reply: HeartbeatReply) -> bool:
        """Act on what a heartbeat says about certificates: the master's next or current one, then ours.

        Returns whether the master certificates this worker pins changed: a rotation step waits
        for the heartbeat that says so, which the caller sends at once.
        """
        changed = False
        if reply.next_master_cert_pem:
            changed = self._accept_next_master(reply.next_master_cert_pem)
        elif reply.master_cert_thumbprint:
            changed = self._follow_master(reply.master_cert_thumbprint)
        self.rotate()
        return changed

    def _follow_master(self, serving: str) -> bool:
        try:
            identity = follow_master(self.home, self.identity, serving)
            if identity is not None:
                self.install(identity, identity.ssl_context())
                return True
        except PackfleetError as exc:
            log.error("cannot follow the master's certificate %s; the pins stay: %s", serving, exc)
        return False

    def _accept_next_master(self, pem: str) -> bool:
        try:
            identity = accept_next_master(self.home, self.identity, pem)
            if identity is not None:
                self._trust_also(identity)
                return True
        except PackfleetError as exc:
            log.error("cannot accept the master's next certificate; the current pin stays: %s", exc)
        return False

    def _trust_also(self, identity: WorkerIdentity) -> None:
        """Use ``identity``, which pins one more master certificate, keeping the open connections.

        They were verified against a pin that stays, so trusting the next certificate needs no new
        TLS handshake; anything else that changed on disk meanwhile (the own certificate) is
        installed as a reload would.
        """
        current = self.identity
        if identity.certificate.thumbprint != current.certificate.thumbprint or not set(current.pins) <= set(
            identity.pins
        ):
            self.install(identity, identity.ssl_context())
            return
        added = "".join(root_pem(self.home, t) for t in identity.pins if t not in current.pins)
        self._link.trust_also(identity, added)
        self.identity = identity
        self._installed(identity)

    # -- own certificate rotation -----------------------------------------------------------------

    def rotate(self) -> None:
        """Retire a certificate a rotation left behind, or renew one that is two thirds through its life."""
        if self._rotating is not None and not self._rotating.done():
            return
        if self._link.state != "enabled":
            return
        pending = read_pending(self.home)
        thumbprint = self.identity.certificate.thumbprint
        if pending is not None and pending.new == thumbprint:
            self._rotating = self._spawn(self._retire_previous())
        elif pending is not None:
            self._rotating = self._spawn(self._resume_rotation(pending))
        elif renewal_due(self.identity.certificate, self.now()):
            self._rotating = self._spawn(self._renew())

    async def _resume_rotation(self, pending: Pending) -> None:
        log.warning(
            "a certificate rotation stopped half-way: %s was registered to replace %s, but this agent "
            "uses %s; finishing it",
            pending.new,
            pending.retire,
            self.identity.certificate.thumbprint,
        )
        try:
            applied = resume_rotation(self.home, pending)
        except PackfleetError as exc:
            log.error("cannot finish the certificate rotation; trying again at the next heartbeat: %s", exc)
            return
        if not applied:
            log.warning(
                "certificate %s is gone from this node: the rotation starts over when due", pending.new
            )
        elif self.reload():
            await self._retire_previous()

    async def _renew(self) -> None:
        log.info(
            "the worker certificate %s is two thirds through its lifetime (it expires %s): renewing it",
            self.identity.certificate.thumbprint,
            self.identity.certificate.not_after.isoformat(),
        )
        try:
            await register_next_certificate(self.home, self.identity, self._link.client, now=self.now())
        except PackfleetError as exc:
            log.error("cannot renew the worker certificate; trying again at the next heartbeat: %s", exc)
            return
        if self.reload():
            await self._retire_previous()

    async def _retire_previous(self) -> None:
        try:
            await retire_previous(self.home, self.identity, self._link.client)
        except PackfleetError as exc:
            log.error("cannot retire the old worker certificate yet; trying again later: %s", exc)

    def explain_expired(self) -> None:
        """Log, in the trust rule's words, that this worker's certificate has expired (if it has)."""
        try:
            check_not_expired(self.identity.certificate, self.now())
        except CertificateExpired as exc:
            log.error("%s; %s", exc.message, exc.fix)
