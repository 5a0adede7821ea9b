"""Turn OpenSSL's verdicts into sentences a person can act on.

Every TLS failure a worker or the CLI meets goes through :func:`explain_client_failure`, which says
which side refused, which certificate, which check failed, and the command that fixes it.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from packfleet.errors import TlsError
from packfleet.pki import CertInfo, Credential, is_ip_address
from packfleet.transport._policy import probe_context
from packfleet.trust import (
    CLIENT,
    IMPORT_MASTER,
    PINNED_MASTER,
    RECREATE_CERT,
    ROTATE_MASTER,
    SYNC_CLOCKS,
    Finding,
    master_certificate_rule,
    refused_as_expired,
    served_rule,
    untrusted_client,
)

# OpenSSL X509_V_ERR_* codes that a pinned, self-signed setup meets (openssl/x509_vfy.h).
_EXPIRED = 10
_NOT_YET_VALID = 9
_UNTRUSTED = {18, 19, 20, 21}
_HOST_MISMATCH = {62, 64}
_PURPOSE = 26


@dataclass(frozen=True)
class PeerCertificate:
    """What a server presented, read without trusting it (for explanations only)."""

    thumbprint: str
    sha256: str
    names: list[str]
    not_before: datetime
    not_after: datetime
    info: CertInfo

    def matches_host(self, host: str) -> bool:
        """Whether a client connecting to ``host`` accepts this certificate (as the handshake checks)."""
        return self.info.matches_host(host)

    @classmethod
    def from_der(cls, der: bytes) -> PeerCertificate:
        import hashlib

        cert = x509.load_der_x509_certificate(der)
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names += [str(v) for v in san.get_values_for_type(x509.DNSName)]
            names += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            pass
        return cls(
            thumbprint=hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
            sha256=hashlib.sha256(der).hexdigest().upper(),
            names=list(dict.fromkeys(names)),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            info=Credential(cert).info(),
        )


def fetch_server_certificate(host: str, port: int, *, timeout: float = 5.0) -> PeerCertificate:
    """Handshake with ``host:port`` only to read the certificate it serves; nothing else is sent."""
    with socket.create_connection((host, port), timeout=timeout) as raw:
        server_name = None if is_ip_address(host) else host
        with probe_context().wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise TlsError(f"the server at {host}:{port} presented no certificate")
    return PeerCertificate.from_der(der)


def master_accepts_client_certificate(
    host: str, port: int, context: ssl.SSLContext, *, timeout: float = 5.0
) -> bool | None:
    """Whether the master keeps a connection that presents ``context``'s client certificate.

    With TLS 1.3 the server checks the client certificate *after* the client considers the
    handshake done, and asyncio servers then close the connection without sending OpenSSL's alert.
    So a refused certificate looks like a dropped connection. This probe tells the two apart: it
    asks for ``/api/v1/health`` (open to anyone) with the certificate; a master that trusts it
    answers, one that does not closes the connection unanswered. None: the master is unreachable,
    or too slow to answer within ``timeout`` (a slow master says nothing about the certificate).
    """
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    try:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET /api/v1/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            return tls.recv(12).startswith(b"HTTP/1.1")
    except TimeoutError:  # socket.timeout; an OSError, so it must be caught before the clause below
        return None
    except (OSError, ssl.SSLError):
        return False
    finally:
        raw.close()


def explain_client_failure(
    exc: BaseException,
    *,
    role: str,
    host: str,
    port: int,
    pins: list[str],
    own_thumbprint: str | None,
    peer: PeerCertificate | None = None,
    now: datetime | None = None,
) -> TlsError:
    """Explain a failed TLS connection from a worker or admin client to the master.

    ``peer`` is the certificate the master actually presented (see :func:`fetch_server_certificate`),
    when it could be read; with it the explanation names the thumbprint and the check that failed.
    """
    now = now or datetime.now(UTC)
    where = f"the master at {host}:{port}"
    pinned = " or ".join(pins) if pins else "(none)"
    verify_code = getattr(exc, "verify_code", None)
    reason = (getattr(exc, "reason", None) or "").upper()
    text = str(exc)

    if peer is not None and (verify_code is not None or "CERTIFICATE_VERIFY_FAILED" in text):
        # The trust rules judge the presented certificate: is it the one this node pins, then (it
        # being the pinned one) its dates and names, in the words and with the fixes the loader
        # and doctor give for the pinned copy. The first error is the explanation.
        served = served_rule(peer.info, pins, role=role, host=host, port=port)
        judged = master_certificate_rule(peer.info, [(host, port)], now=now, role=role, label=PINNED_MASTER)
        for finding in (served, *judged):
            if finding.severity == "error":
                return TlsError(finding.message, fix=finding.fix)
    if verify_code == _EXPIRED:
        return TlsError(f"{where} presented an expired certificate", fix=ROTATE_MASTER)
    if verify_code == _NOT_YET_VALID:
        return TlsError(
            f"{where} presented a certificate that is not valid yet: check the clocks", fix=SYNC_CLOCKS
        )
    if verify_code in _HOST_MISMATCH:
        return TlsError(
            f"the endpoint host {host!r} is not among the names of the master's certificate",
            fix="packfleet doctor",
        )
    if verify_code in _UNTRUSTED:
        return TlsError(
            f"{where} presented a certificate that is not the pinned MasterHttpsCertThumbprint "
            f"{pinned} in this {role}'s Root store",
            fix=f"{IMPORT_MASTER} (and check MasterHttpsCertThumbprint)",
        )
    if verify_code == _PURPOSE:
        return TlsError(
            f"{where} presented a certificate without the serverAuth purpose "
            "(OpenSSL: 'unsuitable certificate purpose')",
            fix=RECREATE_CERT,
        )
    # The master's verdicts on this node's certificate are the client trust rules' (packfleet.trust),
    # in the words doctor and the master's own log use.
    refused = None
    if "UNKNOWN_CA" in reason or "UNKNOWN_CA" in text or "BAD_CERTIFICATE" in reason + text:
        refused = untrusted_client(role, own_thumbprint)
    elif "CERTIFICATE_EXPIRED" in reason + text:
        refused = refused_as_expired(role, own_thumbprint)
    if refused is not None:
        return TlsError(f"{where} refused this {role}'s certificate: {refused.message}", fix=refused.fix)
    if "CERTIFICATE_REQUIRED" in reason + text:
        return TlsError(
            f"{where} requires a client certificate and this {role} presented none",
            fix="packfleet doctor",
        )
    if "WRONG_VERSION_NUMBER" in reason + text or "UNSUPPORTED_PROTOCOL" in reason + text:
        return TlsError(
            f"{where} does not speak the same TLS version (packfleet defaults to TLS 1.3): is it a "
            "packfleet master, and does TlsMinimumVersion match on both sides?",
        )
    return TlsError(f"TLS with {where} failed: {text}", fix="packfleet doctor")


def explain_handshake_failure(exc: BaseException) -> str:
    """Why a client's TLS handshake with the master failed, as the master's log says it.

    The master's side of :func:`explain_client_failure`: the same OpenSSL verdicts, seen from the
    server, in words an operator can act on, ending with what fixes it.
    """
    verify_code = getattr(exc, "verify_code", None)
    words = f"{getattr(exc, 'reason', None) or ''} {exc}".upper()
    # The client trust rules' findings, as the refused client is told them; the master cannot tell a
    # worker's certificate from an admin's here, so they name the fix of both.
    if verify_code == _EXPIRED:
        return _cited(refused_as_expired(CLIENT.role, None))
    if verify_code in _UNTRUSTED:
        return _cited(untrusted_client(None, None))
    if verify_code == _NOT_YET_VALID:
        return f"the client certificate is not valid yet (fix: {SYNC_CLOCKS})"
    if verify_code == _PURPOSE:
        return f"the client certificate lacks the clientAuth purpose ({RECREATE_CERT})"
    if verify_code is not None:
        message = getattr(exc, "verify_message", None) or "unknown reason"
        return f"the client certificate failed verification: {message} (packfleet doctor on the client)"
    if any(alert in words for alert in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN")):
        return (
            "the client refused the master's certificate: it does not pin or trust it (on the "
            "client: packfleet doctor)"
        )
    if "HTTP_REQUEST" in words:
        return "the client spoke plain HTTP to the HTTPS port (use an https:// endpoint)"
    if any(v in words for v in ("WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL", "VERSION_TOO_LOW")):
        return (
            "the client offers no TLS version the master accepts (TlsMinimumVersion; packfleet "
            "defaults to 1.3)"
        )
    if any(n in words for n in ("NO_SHARED_CIPHER", "NO_SUITABLE_KEY_SHARE", "NO_SHARED_GROUP")):
        return "the client offers no cipher suite or key exchange group the master accepts"
    return f"TLS error: {exc}"


def _cited(finding: Finding) -> str:
    """A trust rule's finding as one clause of the master's log line."""
    return f"{finding.message} (fix: {finding.fix})"
