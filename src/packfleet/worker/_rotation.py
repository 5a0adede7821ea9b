"""Master certificate rotation, the worker's half: trust the next master certificate when told.

During a rotation the master's heartbeat reply carries the PEM of the certificate it will serve
next. The worker installs it in its Root store and pins it as ``NextMasterHttpsCertThumbprint``
beside ``MasterHttpsCertThumbprint``, so that the moment the master switches, handshakes go on
succeeding; this replaces the seed's manual step of importing the new master.cer on every worker.
The reply travels over the TLS connection authenticated by the current pin, which is what makes
trusting its content safe.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from packfleet.config import set_setting
from packfleet.errors import CertificateNotFound
from packfleet.pki import CertStore, Credential, check_usable, load_credential_bytes
from packfleet.worker._identity import WorkerIdentity, load_identity

log = logging.getLogger("packfleet.worker")


def accept_next_master(home: Path, identity: WorkerIdentity, pem: str) -> WorkerIdentity | None:
    """Trust the certificate ``pem`` too; return the new identity, or None if it is already pinned."""
    offered = load_credential_bytes(pem.encode("ascii", "replace"), source="the master's next certificate")
    public = Credential(offered.certificate)  # a key sent by mistake is never stored
    if public.thumbprint in identity.pins:
        return None
    check_usable(public, purposes=("server",))
    CertStore(home, "Root").add(public)
    set_setting(home, "worker", "NextMasterHttpsCertThumbprint", public.thumbprint)
    log.info(
        "the master announced its next certificate %s: added to the Root store and pinned as "
        "NextMasterHttpsCertThumbprint",
        public.thumbprint,
    )
    return load_identity(home)


def follow_master(home: Path, identity: WorkerIdentity, serving: str) -> WorkerIdentity | None:
    """Act on the thumbprint the master says it serves; return the new identity when pins changed.

    - It is NextMasterHttpsCertThumbprint: the master has switched. Promote it (the seed's step 5.2,
      MasterHttpsCertThumbprint = new) and drop the old certificate from the Root store (5.1 undone
      for the old one), so this worker trusts exactly one master certificate again.
    - It is the current pin while a next one is pinned, and no rotation is announced (the caller
      only asks then): the rotation was aborted, so the next certificate is dropped.
    """
    settings = identity.settings
    current, upcoming = settings.master_https_cert_thumbprint, settings.next_master_https_cert_thumbprint
    serving = serving.upper()
    if not upcoming:
        return None
    root = CertStore(home, "Root")
    own = settings.worker_https_cert_thumbprint
    if serving == upcoming:
        set_setting(home, "worker", "MasterHttpsCertThumbprint", upcoming)
        set_setting(home, "worker", "NextMasterHttpsCertThumbprint", "")
        dropped = current
        log.info(
            "the master now serves %s: pinned it as MasterHttpsCertThumbprint and retired %s",
            upcoming,
            current,
        )
    elif serving == current:
        set_setting(home, "worker", "NextMasterHttpsCertThumbprint", "")
        dropped = upcoming
        log.info("the master's rotation to %s was aborted: it is no longer pinned", upcoming)
    else:
        return None
    if dropped not in (own, serving):
        with contextlib.suppress(CertificateNotFound):
            root.delete(dropped)
    return load_identity(home)
