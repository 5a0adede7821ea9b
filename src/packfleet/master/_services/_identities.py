"""Admin identities: client certificates pinned to a role (admin, executor, viewer).

Pinning one puts the certificate in the master's Root store (so its handshake passes) and records
the principal (so the routes admit it); revoking undoes both and closes its open connections. The
catalog audits each.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from packfleet.errors import CertificateNotFound, Conflict, InvalidValue, PackfleetError
from packfleet.master._services._base import off_catalog
from packfleet.master._state import MasterState
from packfleet.master._trust import cut_off, reload_after_removal, remove_from_root, trust_in_root
from packfleet.pki import CertStore, Credential, check_usable, load_credential_bytes
from packfleet.protocol import CreateIdentity

log = logging.getLogger("packfleet.master")


class IdentityService:
    """Pin, list and revoke identities. Answers are the principals as the admin routes show them
    (never a password hash), with ``not_after`` read from the master's Root store."""

    def __init__(self, state: MasterState) -> None:
        self._state = state

    async def create(self, ask: CreateIdentity, *, actor: str) -> dict[str, Any]:
        """Pin ``ask.cert_pem`` to a new principal; a bad role, name or certificate is an
        :class:`InvalidValue` before anything is written."""
        state = self._state
        ask.check()
        try:
            public = Credential(load_credential_bytes(ask.cert_pem.encode()).certificate)
            check_usable(public, purposes=("client",), now=state.clock(), peer=True)
        except PackfleetError as exc:
            raise InvalidValue(f"cert_pem: {exc.message}", fix=exc.fix) from None
        record = await state.db(
            state.catalog.add_principal,
            ask.name.strip(),
            ask.role,  # type: ignore[arg-type]  # checked against IDENTITY_ROLES by ask.check()
            actor=actor,
            thumbprint=public.thumbprint,
            cert_pem=public.cert_pem().decode(),  # the other masters of a shared catalog trust it too
        )
        await trust_in_root(state, public, actor=actor)
        log.info("identity %s (%s, %s) pinned by %s", record.name, record.role, public.thumbprint, actor)
        return (await self._shown([record.to_dict()]))[0]

    async def revoke(self, name: str, *, actor: str, own: str | None = None) -> dict[str, Any]:
        """Revoke identity ``name``: catalog, Root store, open connections. ``own`` is the identity
        the request itself uses, which is never revoked (it would lock its manager out)."""
        state = self._state
        if own is not None and own == name:
            raise Conflict(
                f"identity {name!r} is the one this request uses; revoking it would lock this manager out",
                fix="revoke it with another admin identity (packfleet manager identity list)",
            )
        record = await state.db(state.catalog.remove_principal, name, actor=actor)
        thumbprints = [record.thumbprint] if record.thumbprint else []
        removed = await remove_from_root(state, thumbprints)
        state.principals.invalidate(thumbprints)
        cut_off(state, thumbprints, f"identity {name} revoked")
        if removed:
            await reload_after_removal(state)
        return {"name": record.name, "role": record.role, "thumbprint": record.thumbprint, "revoked": True}

    async def _shown(self, principals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # The expiry dates are store files: one trip off the catalog's executor for the whole list.
        return await off_catalog(_shown, self._state.home, principals)

    # Last in the class: below it, ``list`` in an annotation would name this method.
    async def list(self) -> list[dict[str, Any]]:
        people = await self._state.db(self._state.catalog.list_principals)
        return await self._shown([p.to_dict() for p in people])


def _shown(home: Path, principals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    root = CertStore(home, "Root")
    shown = []
    for principal in principals:
        row = {k: v for k, v in principal.items() if k not in ("password_hash", "id")}
        row["not_after"] = _not_after(root, principal.get("thumbprint"))
        shown.append(row)
    return shown


def _not_after(root: CertStore, thumbprint: str | None) -> str | None:
    if thumbprint is None:
        return None
    try:
        return root.get(thumbprint).info().not_after.isoformat()
    except CertificateNotFound:
        return None
