"""Workers, their certificates and the master's trust in them: SSIS Manager's worker operations.

One service per concern, each the only place its call sequence lives: the admin routes, the join
route and the web console call these, and render what they return.
"""

from __future__ import annotations

import logging
from typing import Any

from packfleet.catalog import CertificateRecord, WorkerRecord
from packfleet.errors import CertificateNotFound, InvalidValue
from packfleet.master._admission import admission_refusal
from packfleet.master._fleet import worker_view
from packfleet.master._services._base import off_catalog
from packfleet.master._state import MasterState
from packfleet.master._trust import cut_off, reload_after_removal, remove_from_root, trust_in_root
from packfleet.master._wakeup import TASKS
from packfleet.pki import CertStore, Credential, check_usable, load_credential_bytes
from packfleet.thumbprint import normalize_thumbprint

log = logging.getLogger("packfleet.master")

_REFUSAL_FIX = (
    'on the worker: packfleet cert create -n "CN=<worker>" --store My (a self-signed SHA-256 '
    "certificate), then add that one"
)


class WorkerService:
    """List, show, enable, disable, change and delete workers (``catalog.worker_agents``)."""

    def __init__(self, state: MasterState) -> None:
        self._state = state

    def view(self, worker: WorkerRecord) -> dict[str, Any]:
        """The worker as the admin routes show it, with the master's verdict (``state``, ``online``)."""
        return worker_view(worker, self._state.clock())

    async def list(self) -> list[WorkerRecord]:
        return await self._state.db(self._state.catalog.list_workers)

    async def get(self, ref: str) -> WorkerRecord:
        """Worker ``ref``: an agent id, a display name or a certificate thumbprint."""
        return await self._state.db(self._state.catalog.get_worker, ref)

    async def set_enabled(
        self, ref: str, enabled: bool, *, actor: str, reason: str | None = None
    ) -> WorkerRecord:
        """Enable or disable a worker: the catalog, the principal cache, its open connections (when
        disabled) and the waiting long-polls."""
        state = self._state
        found = await self.get(ref)
        worker = await state.db(
            state.catalog.set_worker_enabled, found.agent_id, enabled, actor=actor, reason=reason
        )
        thumbprints = [c.thumbprint for c in worker.certificates]
        state.principals.invalidate(thumbprints)
        if not enabled:
            cut_off(state, thumbprints, f"worker {worker.agent_id} disabled")
        state.wakeups.notify(TASKS)
        return worker

    async def update(
        self,
        ref: str,
        *,
        actor: str,
        description: str | None = None,
        tags: str | None = None,
        display_name: str | None = None,
    ) -> WorkerRecord:
        """Change what an administrator may change; None leaves a field as it is."""
        state = self._state
        found = await self.get(ref)
        worker = await state.db(
            state.catalog.update_worker,
            found.agent_id,
            actor=actor,
            description=description,
            tags=tags,
            display_name=display_name,
        )
        state.principals.invalidate([c.thumbprint for c in worker.certificates])
        return worker

    async def delete(self, ref: str, *, actor: str) -> dict[str, Any]:
        """SSIS Manager's "Delete Worker": forget it, drop its certificates from the Root store, close
        its connections."""
        state = self._state
        found = await self.get(ref)
        thumbprints = await state.db(state.catalog.delete_worker, found.agent_id, actor=actor)
        # The store files off the catalog's executor; then the catalog tells the other masters of a
        # shared catalog, which drop the certificates too.
        removed = await remove_from_root(state, thumbprints)
        state.principals.invalidate(thumbprints)
        cut_off(state, thumbprints, f"worker {found.agent_id} deleted")
        state.drained_looks.pop(found.agent_id, None)
        state.wakeups.notify(TASKS)
        if removed:
            await reload_after_removal(state)
        return {"agent_id": found.agent_id, "thumbprints": thumbprints, "removed_from_root": removed}


class TrustService:
    """Worker certificates the master trusts: checked, recorded, in its Root store, revoked."""

    def __init__(self, state: MasterState) -> None:
        self._state = state

    def worker_certificate(self, data: bytes) -> Credential:
        """A worker certificate (PEM or DER) checked as a client certificate; its public part only.

        Raises the certificate's :class:`PackfleetError`: the caller's input, which a route
        answers with 400.
        """
        cred = load_credential_bytes(data)
        public = Credential(cred.certificate)  # never keep a key that came along with the certificate
        check_usable(public, purposes=("client",), now=self._state.clock(), peer=True)
        return public

    async def add_worker_certificate(
        self,
        public: Credential,
        *,
        actor: str,
        display_name: str | None = None,
        worker: str | None = None,
        enable: bool = False,
    ) -> CertificateRecord:
        """The seed's "install the client certificate into the Root store of the master", plus the
        record: pending until it beats, or bound at once to ``worker``.

        Raises :class:`InvalidValue` for a certificate no handshake could complete or signed with a
        broken hash, before anything is written.
        """
        state = self._state
        refusal = await off_catalog(admission_refusal, public, CertStore(state.home, "Root"))
        if refusal is not None:
            raise InvalidValue(f"cert_pem: {refusal}", fix=_REFUSAL_FIX)
        record = await state.db(
            state.catalog.add_worker_certificate,
            public.cert_pem(),
            actor=actor,
            display_name=display_name,
            worker=worker,
            enable=enable,
        )
        await trust_in_root(state, public, actor=actor)
        if record.agent_id is not None:
            log.info("certificate %s bound to worker %s by %s", record.thumbprint, record.agent_id, actor)
        return record

    async def revoke(self, thumbprint: str, *, actor: str) -> CertificateRecord:
        """Revoke one certificate; it still completes a handshake, so its worker hears why it is refused."""
        state = self._state
        record = await state.db(
            state.catalog.revoke_certificate, normalize_thumbprint(thumbprint), actor=actor
        )
        state.principals.invalidate([record.thumbprint])
        cut_off(state, [record.thumbprint], f"certificate {record.thumbprint} revoked")
        state.wakeups.notify(TASKS)
        return record

    async def stored_certificate(self, thumbprint: str) -> bytes:
        """The certificate ``thumbprint`` from the master's Root or My store (PEM)."""
        return await off_catalog(stored_certificate, self._state, thumbprint)


def stored_certificate(state: MasterState, thumbprint: str) -> bytes:
    """The certificate ``thumbprint`` from the master's Root or My store (PEM); blocking (files)."""
    wanted = normalize_thumbprint(thumbprint)
    for name in ("Root", "My"):
        try:
            return CertStore(state.home, name).get(wanted).cert_pem()
        except CertificateNotFound:
            continue
    raise CertificateNotFound(
        f"certificate {wanted} is in neither the master's Root nor its My store",
        fix="upload the worker's .cer file instead, or create a join token and run "
        "packfleet worker join TOKEN on the worker",
    )
