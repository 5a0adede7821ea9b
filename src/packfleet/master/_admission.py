"""Admission checks: certificates the master would pin but could never accept, said up front.

``manager worker add`` refuses a certificate that no handshake can complete (signed by an issuer
the master does not pin) or that is signed with SHA-1, rather than pinning it and leaving the worker
to fail at every connection. On start and reload the master warns, naming the file, about each
certificate in its Root store it will never accept; ``doctor`` reports the same list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from packfleet.errors import PackfleetError
from packfleet.master._logsafe import safe
from packfleet.pki import CertStore, Credential, check_usable

log = logging.getLogger("packfleet.master")


def admission_refusal(public: Credential, root: CertStore) -> str | None:
    """Why the worker certificate ``public`` can never be accepted, or None when it can."""
    cert = public.certificate
    name = f"certificate {public.thumbprint} ({cert.subject.rfc4514_string() or 'no subject'})"
    algorithm = cert.signature_hash_algorithm
    if isinstance(algorithm, hashes.SHA1 | hashes.MD5):
        return (
            f"{name} is signed with {algorithm.name.upper()}: collisions can be forged for that hash, "
            "so a certificate signed with it is neither pinned nor accepted"
        )
    if cert.issuer != cert.subject and not _issuer_pinned(cert, root):
        return (
            f"{name} is not self-signed and its issuer ({cert.issuer.rfc4514_string()}) is not a CA "
            "certificate in the master's Root store, so no handshake with it can complete; packfleet "
            "pins each worker's own self-signed certificate"
        )
    return None


def _issuer_pinned(cert: x509.Certificate, root: CertStore) -> bool:
    for thumbprint in root.thumbprints():
        try:
            candidate = root.get(thumbprint).certificate
        except PackfleetError:
            continue
        try:
            is_ca = candidate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if candidate.subject == cert.issuer and is_ca:
            return True
    return False


@dataclass(frozen=True)
class NeverAccepted:
    """A certificate in the master's Root store that no client handshake will be accepted with."""

    thumbprint: str
    path: Path
    reason: str


#: Verdicts on self-signed Root certificates, by file (path, size, mtime): such a verdict depends
#: only on the certificate and the date, and a fleet's Root store holds thousands of them, which
#: every reload (three in a master certificate rotation) would otherwise read and parse again.
_VERDICTS: dict[tuple[str, int, int], tuple[str | None, datetime, datetime]] = {}
_VERDICTS_KEPT = 50_000


def _verdict(store: CertStore, thumbprint: str, now: datetime) -> str | None:
    """Why the Root certificate ``thumbprint`` is never accepted from a client, or None."""
    path = store.cert_path(thumbprint)
    try:
        st = path.stat()
    except OSError:
        st = None
    key = (str(path), st.st_size, st.st_mtime_ns) if st is not None else None
    known = _VERDICTS.get(key) if key is not None else None
    if known is not None and known[1] <= now < known[2]:
        return known[0]
    try:
        cred = store.get(thumbprint)
        public = Credential(cred.certificate)
        check_usable(public, purposes=("client",), now=now, peer=True)
        reason = admission_refusal(public, store)
    except PackfleetError as exc:
        return exc.message
    cert = cred.certificate
    if key is not None and cert.issuer == cert.subject:  # judged without the rest of the store
        if len(_VERDICTS) >= _VERDICTS_KEPT:
            _VERDICTS.clear()
        _VERDICTS[key] = (reason, cert.not_valid_before_utc, cert.not_valid_after_utc)
    return reason


def never_accepted(home: Path, *, now: datetime, serving: str | None) -> list[NeverAccepted]:
    """Every Root certificate of the master at ``home`` it will never accept from a client.

    ``serving`` (the master's own certificate, which lives in Root too) is skipped: it is judged as
    a server certificate by the binding checks.
    """
    store = CertStore(home, "Root")
    found = []
    for thumbprint in store.thumbprints():
        if thumbprint == serving:
            continue
        reason = _verdict(store, thumbprint, now)
        if reason is not None:
            found.append(NeverAccepted(thumbprint, store.cert_path(thumbprint), reason))
    return found


def warn_never_accepted(home: Path, *, now: datetime, serving: str | None) -> list[NeverAccepted]:
    """Log one warning per Root certificate the master will never accept (start and reload)."""
    found = never_accepted(home, now=now, serving=serving)
    for item in found:
        log.warning(
            "the Root store holds %s, a certificate this master will never accept: %s; remove it: "
            "packfleet cert delete --store Root %s",
            item.path,
            safe(item.reason, 400),
            item.thumbprint,
        )
    return found
