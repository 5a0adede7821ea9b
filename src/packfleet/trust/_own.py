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
from packfleet.trust._fixes import (
    NEW_ADMIN_FIX,
    READMIT_FIX,
    RENEW_WORKER,
    ROTATE_MASTER,
    TRUST_ADMIN,
    TRUST_WORKER,
)


@dataclass(frozen=True)
class OwnRole:
    """How one role names its own certificate, and what mends it; a field left empty derives from another."""

    #: The prefix of its checks' names and its settings kind: master, worker, manager (the admin's), client.
    role: str
    #: What a missing certificate or key stops.
    needs: str
    #: What mends an expired certificate, and why one must be mended.
    expired_fix: str
    expired_why: str = "the master refuses it during the TLS handshake"
    #: How it is called, "the {name} certificate", and its export, "{name}.pfx" (default: ``role``).
    name: str = ""
    #: How a stored copy is named: "bound certificate" (default: "{name} certificate").
    what: str = ""
    #: Where the thumbprint comes from, shown after it: " (WorkerHttpsCertThumbprint)".
    named_by: str = ""
    purposes: tuple[str, ...] = ("client",)
    #: What to do when the store lacks the certificate the settings name, ``{store}`` filled in
    #: (default: :attr:`import_fix`).
    missing_fix: str = ""
    #: What to do ahead of its end (default: ``expired_fix``).
    renew_fix: str = ""
    #: The error type its loader has always raised for a missing key.
    missing_key: type[PackfleetError] = PkiError
    #: How the master comes to trust it as a client (``{thumbprint}`` is filled in); empty for the
    #: master's own certificate, which no master is asked to accept from a client.
    trust_fix: str = ""

    def __post_init__(self) -> None:
        name = self.name or self.role
        # Frozen: the derived defaults are set once, here.
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "what", self.what or f"{name} certificate")
        object.__setattr__(self, "missing_fix", self.missing_fix or self.import_fix)
        object.__setattr__(self, "renew_fix", self.renew_fix or self.expired_fix)

    @property
    def label(self) -> str:
        """How dates and expiry name it: "the master certificate"."""
        return f"the {self.name} certificate"

    @property
    def import_fix(self) -> str:
        """Brings the certificate and its key into the store (``{store}`` is filled in)."""
        return f"packfleet cert import {self.name}.pfx --password P --store {{store}}"


MASTER = OwnRole(
    role="master",
    what="bound certificate",
    purposes=("server",),
    needs="the master cannot serve it",
    missing_key=SettingsError,
    expired_fix=ROTATE_MASTER,
    expired_why="TLS refuses an expired certificate even when it is pinned: every worker is refused",
)
WORKER = OwnRole(
    role="worker",
    named_by=" (WorkerHttpsCertThumbprint)",
    needs="it cannot prove this worker's identity",
    missing_fix="packfleet cert list --store {store}, then: packfleet settings set worker "
    "WorkerHttpsCertThumbprint THUMBPRINT",
    trust_fix=TRUST_WORKER,
    expired_fix=READMIT_FIX,
    expired_why="the master refuses it during the TLS handshake, so it cannot be renewed over the old one",
    renew_fix=RENEW_WORKER,
)
#: ``master init`` makes a new admin certificate when the old one is gone or expired; the manager's
#: loader has always stopped with a settings error (exit status 3) on a missing key.
ADMIN = OwnRole(
    role="manager",
    name="admin",
    named_by=" (AdminCertThumbprint)",
    missing_key=SettingsError,
    trust_fix=TRUST_ADMIN,
    needs="the manager cannot prove it is an administrator",
    missing_fix=NEW_ADMIN_FIX,
    expired_fix=NEW_ADMIN_FIX,
)
#: A client certificate the master met in a handshake: it cannot tell a worker's from an admin's
#: before it reads its catalog, so the fixes name both.
CLIENT = OwnRole(
    role="client",
    needs="the client cannot prove who it is",
    expired_fix=f"a worker's: {READMIT_FIX}; an admin's: {NEW_ADMIN_FIX}",
    renew_fix=f"a worker's: {RENEW_WORKER}; an admin's: {NEW_ADMIN_FIX}",
    trust_fix=f"a worker's: {TRUST_WORKER}; an admin's: {TRUST_ADMIN.format(thumbprint='THUMBPRINT')}",
)
ROLES = {spec.role: spec for spec in (MASTER, WORKER, ADMIN, CLIENT)}


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
    who = f"the {spec.what} {thumbprint}{spec.named_by}"
    import_fix = spec.import_fix.format(store=store.name)
    try:
        cred = store.get(thumbprint)
    except CertificateNotFound:
        where = f"is not in store {store.name} ({store.path}){did_you_mean(store, thumbprint)}"
        fix, raises = spec.missing_fix.format(store=store.name), CertificateNotFound
        return [error(check, f"{who} {where}", spec.needs, fix, raises=raises)]
    except PackfleetError as exc:
        return [from_exception(check, exc)]
    if cred.private_key is None:
        where = f"in store {store.name} has no private key ({store.key_path(thumbprint).name} is missing)"
        return [error(check, f"{who} {where}", spec.needs, import_fix, raises=spec.missing_key)]
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
    """The master refused this node's certificate in the handshake as expired (its date unknown here).

    ``role`` ``client`` is the master's side, which cannot tell a worker's certificate from an admin's.
    """
    spec = ROLES.get(role, WORKER)
    return error(
        f"{spec.role}.expiry", f"{named(spec, thumbprint)} has expired", spec.expired_why, spec.expired_fix
    )


def named(spec: OwnRole, thumbprint: str | None) -> str:
    """``the worker certificate T``; the label alone where the thumbprint is not known."""
    return f"{spec.label} {thumbprint}" if thumbprint else spec.label


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
