"""A node's own certificate: in its store, with its own key, readable by the service, within its dates.

The master's own certificate is the one its binding names; a worker's is WorkerHttpsCertThumbprint;
the manager's is AdminCertThumbprint. Each half-done step of the seed's certificate procedures
leaves one of these wrong: a certificate without its key (``MakeCert`` without ``-pe``), a key
replaced beside an old certificate, a key only root can read (``winhttpcertcfg`` skipped), a
certificate past its end.
"""

from __future__ import annotations

import shlex
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from packfleet.errors import CertificateNotFound, PackfleetError, PkiError, SettingsError
from packfleet.pki import CertInfo, CertStore, Credential, check_usable
from packfleet.trust._account import Account, owner_of, unreadable_reason
from packfleet.trust._expiry import date_findings
from packfleet.trust._finding import Finding, error, from_exception, ok
from packfleet.trust._fixes import NEW_ADMIN_FIX, READMIT_FIX, RENEW_WORKER, ROTATE_MASTER


@dataclass(frozen=True)
class OwnRole:
    """How one role names its own certificate, and what mends it."""

    role: str
    #: "bound certificate", "worker certificate"
    what: str
    #: How dates and expiry name it: "the master certificate".
    label: str
    #: Where the thumbprint comes from, shown after it: "(WorkerHttpsCertThumbprint)".
    named_by: str
    #: What a missing key stops.
    needs: str
    purposes: tuple[str, ...]
    import_fix: str
    expired_fix: str
    expired_why: str
    renew_fix: str
    #: The error type its loader has always raised for a missing key.
    missing_key: type[PackfleetError]


MASTER = OwnRole(
    role="master",
    what="bound certificate",
    label="the master certificate",
    named_by="",
    needs="the master cannot serve it",
    purposes=("server",),
    import_fix="packfleet cert import master.pfx --password P --store {store}",
    expired_fix=ROTATE_MASTER,
    expired_why="TLS refuses an expired certificate even when it is pinned: every worker is refused",
    renew_fix=ROTATE_MASTER,
    missing_key=SettingsError,
)
WORKER = OwnRole(
    role="worker",
    what="worker certificate",
    label="the worker certificate",
    named_by=" (WorkerHttpsCertThumbprint)",
    needs="it cannot prove this worker's identity",
    purposes=("client",),
    import_fix="packfleet cert import worker.pfx --password P --store {store}",
    expired_fix=READMIT_FIX,
    expired_why="the master refuses it during the TLS handshake, so it cannot be renewed over the old one",
    renew_fix=RENEW_WORKER,
    missing_key=PkiError,
)
ADMIN = OwnRole(
    role="manager",
    what="admin certificate",
    label="the admin certificate",
    named_by=" (AdminCertThumbprint)",
    needs="the manager cannot prove it is an administrator",
    purposes=("client",),
    import_fix="packfleet cert import admin.pfx --password P --store {store}",
    expired_fix=NEW_ADMIN_FIX,
    expired_why="the master refuses it during the TLS handshake",
    renew_fix=NEW_ADMIN_FIX,
    missing_key=PkiError,
)
ROLES = {spec.role: spec for spec in (MASTER, WORKER, ADMIN)}


def key_matches(cred: Credential) -> bool:
    """Whether the stored key is the certificate's own (a replaced .key beside an old .cer is not)."""
    if cred.private_key is None:
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    mine = cred.private_key.public_key().public_bytes(der, spki)
    return mine == cred.certificate.public_key().public_bytes(der, spki)


def own_certificate_rule(
    home: Path,
    spec: OwnRole,
    *,
    store_name: str,
    thumbprint: str,
    now: datetime | None = None,
    account: Account | None = None,
    profile: bool = True,
) -> list[Finding]:
    """In the store, with a private key that is its own, fit for its TLS role, readable, within its dates.

    ``now`` None leaves the dates unjudged and ``account`` None the key's access; ``profile`` False
    skips the certificate-profile checks (:func:`packfleet.pki.check_usable`).
    """
    role = spec.role
    check = f"{role}.certificate"
    store = CertStore(home, store_name)
    try:
        cred = store.get(thumbprint)
    except CertificateNotFound:
        return [
            error(
                check,
                f"the {spec.what} {thumbprint}{spec.named_by} is not in store {store.name} "
                f"({store.path}){did_you_mean(store, thumbprint)}",
                spec.needs,
                f"packfleet cert list --store {store.name}, then: packfleet settings set {role} "
                "WorkerHttpsCertThumbprint THUMBPRINT"
                if spec is WORKER
                else spec.import_fix.format(store=store.name),
                raises=CertificateNotFound,
            )
        ]
    except PackfleetError as exc:
        return [from_exception(check, exc)]
    import_fix = spec.import_fix.format(store=store.name)
    if cred.private_key is None:
        return [
            error(
                check,
                f"the {spec.what} {thumbprint}{spec.named_by} in store {store.name} has no private key "
                f"({store.key_path(thumbprint).name} is missing)",
                spec.needs,
                import_fix,
                raises=spec.missing_key,
            )
        ]
    findings = [ok(check, f"{spec.what} {thumbprint} and its private key are in store {store.name}")]
    if not key_matches(cred):
        findings.append(
            error(
                f"{role}.key-match",
                f"{store.key_path(thumbprint)} is not the key of certificate {thumbprint}",
                "a handshake would fail (OpenSSL: 'key values mismatch')",
                f"import the certificate with its own key: {import_fix}",
                raises=PkiError,
            )
        )
    info = cred.info(store.name)
    if profile and findings[-1].severity == "ok":  # check_usable would refuse the mismatch again
        try:
            # The dates are judged below, in words that name the role's fix; here only the profile.
            check_usable(cred, purposes=spec.purposes, now=info.not_before)
        except PackfleetError as exc:
            findings.append(from_exception(check, exc))
    if account is not None:
        findings += key_access_findings(
            f"{role}.key-access",
            store.key_path(thumbprint),
            [home, home / "certs", store.path],
            account,
            thumbprint=thumbprint,
            store=store.name,
        )
    if now is not None:
        findings += own_dates(spec, info, now)
    return findings


def own_dates(spec: OwnRole, info: CertInfo, now: datetime) -> list[Finding]:
    """The dates of a node's own certificate, with the way back in once it has expired."""
    return date_findings(
        f"{spec.role}.expiry",
        spec.label,
        info,
        now,
        expired_fix=spec.expired_fix,
        warn_fix=spec.renew_fix,
        expired_why=spec.expired_why,
    )


def did_you_mean(store: CertStore, thumbprint: str) -> str:
    """``"; did you mean X?"`` when the store holds a thumbprint one character away (a typo)."""
    near = store.near(thumbprint)
    return f"; did you mean {near[0]}? (one character differs)" if near else ""


def refused_as_expired(role: str, thumbprint: str | None) -> Finding:
    """The master refused this node's certificate in the handshake as expired (its date unknown here)."""
    spec = ROLES.get(role, WORKER)
    return error(
        f"{spec.role}.expiry",
        f"{spec.label} {thumbprint or '(none)'} has expired",
        spec.expired_why,
        spec.expired_fix,
    )


def key_access_findings(
    check: str,
    key_file: Path,
    folders: list[Path],
    account: Account,
    *,
    thumbprint: str,
    store: str,
) -> list[Finding]:
    """Mode 0600 (nobody else may read a private key) and readable by the service account."""
    findings: list[Finding] = []
    st = key_file.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        findings.append(
            error(
                check,
                f"the private key {key_file} has mode {mode:04o}: group or others may read it",
                "a private key must be 0600 (readable by its owner, the service account, only)",
                f"chmod 600 {shlex.quote(str(key_file))}",
                raises=PkiError,
            )
        )
    reason = unreadable_reason(key_file, folders, account)
    if reason is not None:
        findings.append(
            error(
                check,
                f"the service account {account.name!r} ({account.source}) cannot read the private key "
                f"of certificate {thumbprint} ({key_file}): {reason}",
                "the service would fail to load its certificate (the seed's winhttpcertcfg step)",
                f"packfleet cert grant {thumbprint} --store {store} --account {account.name}",
                raises=PkiError,
            )
        )
    if not findings:
        findings.append(
            ok(
                check,
                f"private key {key_file} is mode {mode:04o}, owned by {owner_of(st)}, readable by "
                f"{account.name!r} ({account.source})",
            )
        )
    return findings
