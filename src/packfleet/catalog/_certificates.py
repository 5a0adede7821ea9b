"""The facts the catalog keeps about a worker certificate, read by :mod:`packfleet.pki`."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from packfleet.pki import load_credential_bytes


@dataclasses.dataclass(frozen=True, slots=True)
class CertificateFacts:
    """Thumbprint (SHA-1 of the DER, uppercase hex, as Windows shows it), SHA-256, names, validity.

    ``name`` is the first CN (``MakeCert -n "CN=host;CN=10.0.0.7"`` puts the machine name first).
    """

    thumbprint: str
    sha256: str
    subject: str
    name: str
    not_before: datetime
    not_after: datetime
    pem: str


def certificate_facts(data: bytes) -> CertificateFacts:
    """Read a worker certificate from PEM or DER (Windows exports ``.cer`` files in either).

    Only the public certificate is kept: a private key that came along in the same PEM is dropped.
    Unreadable data raises :class:`~packfleet.errors.PkiError` saying which formats are accepted.
    """
    credential = load_credential_bytes(data, source="the worker certificate")
    info = credential.info()
    return CertificateFacts(
        thumbprint=info.thumbprint,
        sha256=info.sha256,
        subject=info.subject,
        name=info.subject_cns[0] if info.subject_cns else info.subject,
        not_before=info.not_before,
        not_after=info.not_after,
        pem=credential.cert_pem().decode("ascii"),
    )
