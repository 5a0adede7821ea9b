"""Which master a node trusts: its pins, the pinned certificates, and the certificate the master serves.

A worker (and the manager) trusts the master by thumbprint: MasterHttpsCertThumbprint, and during a
rotation NextMasterHttpsCertThumbprint, each looked up in the node's Root store. The pinned
certificate must be valid now and name the endpoint's host (OpenSSL's host check,
``X509_V_ERR_HOSTNAME_MISMATCH``, would name neither the host nor the certificate), and the master
must serve one of the pinned certificates (the seed's "thumbprint mismatch" after step 5 of "change
the master certificate" was skipped on a worker).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol

from packfleet.config import WorkerSettings, settings_path
from packfleet.errors import CertificateNotFound, PackfleetError, TlsError
from packfleet.pki import CertInfo, CertStore, check_usable
from packfleet.trust._expiry import date_findings
from packfleet.trust._finding import Finding, error, from_exception, ok, warning
from packfleet.trust._fixes import IMPORT_MASTER, ROTATE_MASTER
from packfleet.trust._own import did_you_mean

#: How the rules name the master certificate a node pins, wherever they judge it.
PINNED_MASTER = "the pinned master certificate"
#: An endpoint as ``(host, port)``; the trust layer parses none itself (transport's parse_endpoint does).
Endpoint = tuple[str, int]


class Pins(Protocol):
    """The settings that pin a master: WorkerSettings.config's, and ManagerSettings.config's alike."""

    @property
    def master_https_cert_thumbprint(self) -> str: ...

    @property
    def next_master_https_cert_thumbprint(self) -> str: ...


def pin_keys(settings: Pins) -> list[tuple[str, str]]:
    """``(setting key, thumbprint)`` of each master certificate a node accepts, the current pin first."""
    pinned = [("MasterHttpsCertThumbprint", settings.master_https_cert_thumbprint)]
    if settings.next_master_https_cert_thumbprint:
        pinned.append(("NextMasterHttpsCertThumbprint", settings.next_master_https_cert_thumbprint))
    return pinned


def worker_settings_rule(home: Path, settings: WorkerSettings) -> list[Finding]:
    """The keys a worker cannot connect without: MasterEndpoint, and a master it trusts."""
    source = settings_path(home, "worker")
    findings: list[Finding] = []
    if not settings.master_endpoint:
        findings.append(
            error(
                "worker.endpoint",
                f"{source} has no MasterEndpoint",
                "this worker does not know where its master is",
                "packfleet settings set worker MasterEndpoint https://MASTER:8391",
            )
        )
    if not settings.worker_https_cert_thumbprint:
        findings.append(
            error(
                "worker.certificate",
                f"{source} has no WorkerHttpsCertThumbprint",
                "this worker has no certificate to prove who it is",
                "packfleet worker init --master URL --master-cert master.cer (creates the worker "
                "certificate and sets it)",
            )
        )
    if not settings.master_https_cert_thumbprint:
        findings.append(
            error(
                "worker.master-pin",
                f"{source} has no MasterHttpsCertThumbprint",
                "this worker trusts no master",
                f"{IMPORT_MASTER} && packfleet settings set worker MasterHttpsCertThumbprint THUMBPRINT",
            )
        )
    return findings


def pinned_master_rule(
    home: Path,
    settings: WorkerSettings,
    endpoints: list[Endpoint],
    *,
    now: datetime | None = None,
) -> tuple[list[Finding], list[CertInfo]]:
    """Every pinned master certificate is in the Root store, fit to serve, within its dates, and names
    every endpoint host; returns the findings and the pinned certificates found.

    A next pin (NextMasterHttpsCertThumbprint) that does not name a host is a warning: connections
    fail only once the master serves it.
    """
    root = CertStore(home, "Root")
    findings: list[Finding] = []
    found: list[CertInfo] = []
    for index, (key, thumbprint) in enumerate(pin_keys(settings)):
        if not thumbprint:
            continue
        try:
            cred = root.get(thumbprint)
        except CertificateNotFound:
            findings.append(_not_in_root(root, key, thumbprint, current=index == 0, role="worker"))
            continue
        except PackfleetError as exc:
            findings.append(from_exception("worker.master-pin", exc))
            continue
        info = cred.info("Root")
        try:
            # Dates are judged by master_certificate_rule, with the rotation as their fix.
            check_usable(cred, purposes=("server",), now=info.not_before)
        except PackfleetError as exc:
            findings.append(from_exception("worker.master-pin", exc))
            continue
        findings.append(
            ok(
                "worker.master-pin",
                f"the pinned master certificate {thumbprint} ({key}) is in the Root store",
            )
        )
        findings += master_certificate_rule(info, endpoints, now=now, label=PINNED_MASTER, next_pin=index > 0)
        found.append(info)
    return findings, found


def pins_in_root_rule(home: Path, settings: Pins, *, role: str) -> list[Finding]:
    """Each master certificate ``role`` pins is in its Root store, where its TLS context reads it.

    The manager's loader applies this part of :func:`pinned_master_rule` (it leaves the names and
    dates to the handshake and its explanation).
    """
    root = CertStore(home, "Root")
    findings = []
    for index, (key, thumbprint) in enumerate(pin_keys(settings)):
        if not thumbprint:
            continue
        if root.contains(thumbprint):
            findings.append(
                ok(f"{role}.master-pin", f"{PINNED_MASTER} {thumbprint} ({key}) is in the Root store")
            )
        else:
            findings.append(_not_in_root(root, key, thumbprint, current=index == 0, role=role))
    return findings


def _not_in_root(root: CertStore, key: str, thumbprint: str, *, current: bool, role: str) -> Finding:
    step = " (seed step 5.1 was skipped)" if role == "worker" else ""
    return error(
        f"{role}.master-pin",
        f"cert not in Root: {PINNED_MASTER} {thumbprint} ({key}) is not in this {role}'s Root store "
        f"({root.path}){did_you_mean(root, thumbprint)}",
        f"this {role} trusts no master{step}"
        if current
        else f"this {role} could not follow the master to its next certificate",
        IMPORT_MASTER,
        raises=CertificateNotFound,
    )


def master_certificate_rule(
    info: CertInfo,
    endpoints: list[Endpoint],
    *,
    now: datetime | None,
    label: str = PINNED_MASTER,
    role: str = "worker",
    next_pin: bool = False,
) -> list[Finding]:
    """A master certificate is within its dates and names each endpoint host.

    Applied to the pinned copy in a node's Root store (loader, ``doctor``) and to the certificate a
    master presented in a failed handshake (the explainer).
    """
    findings: list[Finding] = []
    if now is not None:
        findings += date_findings(f"{role}.master-expiry", label, info, now, expired_fix=ROTATE_MASTER)
    names = info.names
    shown = ", ".join(names) or "no names"
    for host, port in endpoints:
        if info.matches_host(host):
            findings.append(
                ok(
                    f"{role}.master-host",
                    f"endpoint host {host!r} is among the names of {label} {info.thumbprint}",
                )
            )
            continue
        what = (
            f"wrong host: the MasterEndpoint host {host!r} is not among the names of {label} "
            f"{info.thumbprint} ({shown})"
        )
        fix = (
            f"packfleet settings set {role} MasterEndpoint https://{names[0] if names else 'NAME'}:{port}   "
            f"(or re-create the master certificate with --cn {host})"
        )
        if next_pin:
            findings.append(
                warning(f"{role}.master-host", what, "connections will fail once the master serves it", fix)
            )
        else:
            findings.append(error(f"{role}.master-host", what, "TLS refuses the connection", fix))
    return findings


def served_rule(served: CertInfo, pins: list[str], *, role: str, host: str, port: int) -> Finding:
    """The master at ``host:port`` serves one of the certificates this ``role`` pins."""
    check = f"{role}.master-served"
    if served.thumbprint in pins:
        return ok(check, f"the master at {host}:{port} serves the pinned certificate {served.thumbprint}")
    pinned = " or ".join(pins) if pins else "(none)"
    return error(
        check,
        f"thumbprint mismatch: the master at {host}:{port} presented certificate {served.thumbprint} but "
        f"this {role} pins MasterHttpsCertThumbprint {pinned}",
        f"the master certificate was changed and this {role} was not (seed step 5)",
        f"copy the new master.cer here, then: {IMPORT_MASTER} && packfleet settings set {role} "
        f"MasterHttpsCertThumbprint {served.thumbprint}",
        raises=TlsError,
    )
