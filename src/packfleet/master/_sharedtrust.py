"""Several masters, one trust: each master's Root store follows the catalog's worker certificates.

The TLS handshake trusts what the master's own Root store holds, and ``manager worker add --cert``,
``worker join`` or a certificate renewal install the certificate only on the master that handled
the request. With a shared (PostgreSQL) catalog every master therefore brings its Root store in line
with the catalog: an active certificate (bound or pending) the catalog holds the PEM of is added; a
retired one is removed. Revoked certificates stay where they are: their handshake still completes, so
their worker hears why it is refused. Root entries the catalog does not know (the master certificate,
admin certificates, anything imported by hand) are never touched.

A master that changes the trusted set sends ``NOTIFY packfleet_trust``; the others sync at once, and
every master syncs at start and every :data:`TRUST_SYNC_INTERVAL` seconds in case one was missed.
A master on SQLite is the only master of its catalog and does none of this.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from packfleet.errors import CertificateNotFound, PackfleetError
from packfleet.master._state import MasterState
from packfleet.pki import CertStore, Credential, load_credential_bytes

log = logging.getLogger("packfleet.master")

#: Seconds between two syncs when no notification came (a missed NOTIFY, a database failover).
TRUST_SYNC_INTERVAL = 30.0


@dataclass(frozen=True)
class TrustChange:
    added: list[str]
    removed: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def _bring_in_line(state: MasterState) -> TrustChange:
    """Add the catalog's active worker certificates to Root, remove its retired ones (executor)."""
    store = CertStore(state.home, "Root")
    added: list[str] = []
    removed: list[str] = []
    for cert in state.catalog.certificates():
        present = store.contains(cert.thumbprint)
        if cert.status == "active" and not present and cert.pem:
            try:
                public = load_credential_bytes(
                    cert.pem.encode(), source=f"catalog certificate {cert.thumbprint}"
                )
            except PackfleetError as exc:
                log.warning(
                    "cannot trust worker certificate %s from the catalog: %s", cert.thumbprint, exc.message
                )
                continue
            store.add(Credential(public.certificate))  # the certificate only, never a key
            added.append(cert.thumbprint)
        elif cert.status == "retired" and present:
            try:
                store.delete(cert.thumbprint)
            except CertificateNotFound:
                continue
            removed.append(cert.thumbprint)
    return TrustChange(added, removed)


async def sync_trust(state: MasterState) -> TrustChange:
    """Bring the Root store in line with the catalog and, when it changed, serve the new trust."""
    change = await state.db(_bring_in_line, state)
    if change:
        state.principals.invalidate(change.added + change.removed)
        log.info(
            "Root store brought in line with the catalog: %d worker certificate(s) added %s, %d removed %s",
            len(change.added),
            change.added,
            len(change.removed),
            change.removed,
        )
        try:
            await state.reload_trust()
        except PackfleetError:
            log.warning("the Root store changed but the TLS trust was not reloaded; see the error above")
    return change
