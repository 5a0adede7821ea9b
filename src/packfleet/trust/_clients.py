"""Which client certificates a master accepts: the ones in its Root store, fit for a client, in date.

The master trusts a worker or an administrator by their certificate being in its Root store (the
seed's "install the client certificate into the Root store of the master"); TLS refuses any other.
These rules say so in one set of words wherever it is met: ``doctor`` on a master home's admin
certificate and Root store, the manager's loader, a client whose handshake the master refused (the
transport's explainer) and the master's own log of failed handshakes and of Root certificates it
will never accept.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from packfleet.config import ManagerSettings, settings_path
from packfleet.errors import PackfleetError, TlsError
from packfleet.pki import CertStore, Credential, check_usable
from packfleet.trust._finding import Finding, error, ok, warning
from packfleet.trust._fixes import DELETE_FROM_ROOT, NEW_ADMIN_FIX
from packfleet.trust._own import ADMIN, CLIENT, ROLES, OwnRole, named, own_certificate_rule

#: Why a client certificate outside the master's Root store matters, whichever client holds it.
UNTRUSTED_WHY = "the master refuses it during the TLS handshake"


def untrusted_client(role: str | None, thumbprint: str | None) -> Finding:
    """The master's Root store lacks this client certificate (``role``: ``worker``, ``manager``, or
    None on the master's side of a handshake, where a worker's and an admin's look alike)."""
    spec = ROLES.get(role or CLIENT.role, CLIENT)
    return error(
        f"{spec.role}.trusted",
        f"{named(spec, thumbprint)} is not in the master's Root store",
        UNTRUSTED_WHY,
        spec.trust_fix.format(thumbprint=thumbprint or "THUMBPRINT"),
        raises=TlsError,
    )


def trusted_client_rule(master_home: Path, spec: OwnRole, thumbprint: str) -> list[Finding]:
    """The master of ``master_home`` has ``thumbprint`` in its Root store, so it accepts it from a client."""
    if not CertStore(master_home, "Root").contains(thumbprint):
        return [untrusted_client(spec.role, thumbprint)]
    return [ok(f"{spec.role}.trusted", f"{named(spec, thumbprint)} is in the master's Root store")]


def admin_certificate_rule(
    home: Path,
    settings: ManagerSettings,
    *,
    now: datetime | None = None,
    master_home: Path | None = None,
    profile: bool = True,
) -> list[Finding]:
    """The admin certificate AdminCertThumbprint names: in store My with its own key, fit for a client,
    within its dates (:func:`own_certificate_rule`), and trusted by the master of ``master_home``.

    ``now`` None leaves the dates unjudged; ``master_home`` None (a manager away from its master)
    leaves the master's Root store unjudged.
    """
    thumbprint = settings.admin_cert_thumbprint
    if not thumbprint:
        return [
            error(
                f"{ADMIN.role}.certificate",
                f"{settings_path(home, 'manager')} has no AdminCertThumbprint",
                ADMIN.needs,
                NEW_ADMIN_FIX,
            )
        ]
    findings = own_certificate_rule(
        home, ADMIN, store_name="My", thumbprint=thumbprint, now=now, profile=profile
    )
    if master_home is not None:
        findings += trusted_client_rule(master_home, ADMIN, thumbprint)
    return findings


def admission_refusal(public: Credential, root: CertStore) -> str | None:
    """Why the client certificate ``public`` can never be accepted, or None when it can."""
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


#: Verdicts on self-signed Root certificates, by file (path, size, mtime), with the validity they
#: hold for: such a verdict depends only on the certificate and the date, and a fleet's Root store
#: holds thousands of them, which every reload (three in a master certificate rotation) would
#: otherwise read and parse again.
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
        cert = store.get(thumbprint).certificate
        public = Credential(cert)
        check_usable(public, purposes=("client",), now=now, peer=True)
        reason = admission_refusal(public, store)
    except PackfleetError as exc:
        return exc.message
    if key is not None and cert.issuer == cert.subject:  # judged without the rest of the store
        if len(_VERDICTS) >= _VERDICTS_KEPT:
            _VERDICTS.clear()
        _VERDICTS[key] = (reason, cert.not_valid_before_utc, cert.not_valid_after_utc)
    return reason


def root_store_rule(home: Path, *, now: datetime, serving: str | None) -> list[Finding]:
    """A warning for each certificate in the master's Root store it will never accept from a client
    (CA-like, expired, wrong EKU, weak key or hash, an issuer it does not pin); one ok without any.

    ``serving`` (the master's own certificate, which lives in Root too) is skipped: the binding and
    own-certificate rules judge it as a server certificate.
    """
    check = "master.root-store"
    store = CertStore(home, "Root")
    findings = []
    for thumbprint in store.thumbprints():
        if thumbprint == serving:
            continue
        reason = _verdict(store, thumbprint, now)
        if reason is not None:
            findings.append(
                warning(
                    check,
                    f"{store.cert_path(thumbprint)} (certificate {thumbprint}) will never be accepted: "
                    f"{reason}",
                    fix=DELETE_FROM_ROOT.format(thumbprint=thumbprint),
                )
            )
    return findings or [ok(check, "every client certificate in the Root store can be accepted")]
