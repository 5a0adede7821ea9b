"""Several masters, one trust: each master's Root store follows the catalog's worker certificates.

The TLS handshake trusts what the master's own Root store holds, and ``manager worker add --cert``,
``worker join`` or a certificate renewal install the certificate only on the master that handled
the request. With a shared (PostgreSQL) catalog every master therefore brings its Root store in line
with the catalog: an active certificate (bound or pending) the catalog holds the PEM of is added; a
retired one is removed. Revoked certificates stay where they are: their handshake still completes, so
their worker hears why it is refused. Identity certificates (admin, executor, viewer) pinned with
``manager identity add`` follow the same way: an active one is added, a revoked one removed (the
catalog already refuses it on every route; leaving Root only ends its handshakes too). Root entries
the catalog does not know (the master certificate, identities pinned before the catalog kept their
PEM, anything imported by hand) are never touched.

A master that changes the trusted set sends ``NOTIFY packfleet_trust``; the others sync at once, and
every master syncs at start and every :data:`TRUST_SYNC_INTERVAL` seconds in case one was missed.
A master on SQLite is the only master of its catalog and does none of this.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from packfleet.catalog import CertificateRecord, PrincipalCertificate
from packfleet.errors import CertificateNotFound, PackfleetError
from packfleet.master._state import MasterState, off_catalog
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


def _bring_in_line(
    home: Path, certificates: list[CertificateRecord], identities: list[PrincipalCertificate]
) -> TrustChange:
    """Add the catalog's active worker and identity certificates to Root, remove the retired and
    revoked ones (store files: off the catalog's executor)."""
    store = CertStore(home, "Root")
    added: list[str] = []
    removed: list[str] = []
    for cert in certificates:
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
    workers = {cert.thumbprint for cert in certificates}
    for identity in identities:
        if identity.thumbprint in workers:
            continue  # a worker's certificate follows its worker row above, never an identity row
        present = store.contains(identity.thumbprint)
        if identity.active and not present:
            shared = _public(identity.pem, f"identity {identity.principal} ({identity.thumbprint})")
            if shared is None or shared.thumbprint != identity.thumbprint:
                continue  # a PEM that is not the pinned certificate is never trusted in its place
            store.add(shared)
            added.append(identity.thumbprint)
        elif not identity.active and present:
            try:
                store.delete(identity.thumbprint)
            except CertificateNotFound:
                continue
            removed.append(identity.thumbprint)
    return TrustChange(added, removed)


def _public(pem: str, what: str) -> Credential | None:
    """The certificate alone from a catalog PEM, or None (logged) when it does not load."""
    try:
        return Credential(load_credential_bytes(pem.encode(), source=f"catalog {what}").certificate)
    except PackfleetError as exc:
        log.warning("cannot trust %s from the catalog: %s", what, exc.message)
        return None


async def sync_trust(state: MasterState) -> TrustChange:
    """Bring the Root store in line with the catalog and, when it changed, serve the new trust."""
    # The catalog's rows on its executor; the store files off it.
    certificates = await state.db(state.catalog.certificates)
    identities = await state.db(state.catalog.principal_certificates)
    change = await off_catalog(_bring_in_line, state.home, certificates, identities)
    if change:
        state.principals.invalidate(change.added + change.removed)
        log.info(
            "Root store brought in line with the catalog: %d certificate(s) added %s, %d removed %s",
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
