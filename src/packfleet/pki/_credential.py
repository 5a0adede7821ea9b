"""A certificate with (maybe) its private key, and the facts people and settings files need about it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from packfleet.errors import PkiError
from packfleet.pki._hosts import certificate_names_host

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# Curve names as OpenSSL and TLS 1.3's signature schemes (RFC 8446 §4.2.3) call them, shortened the
# way people write them: "ecdsa-p256" rather than "ecdsa-secp256r1".
_CURVE_LABELS = {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}


def thumbprint_of(cert: x509.Certificate) -> str:
    """The Windows/SSIS thumbprint: SHA-1 of the DER encoding, 40 uppercase hex digits.

    SHA-1 is used here as a name, not as a security boundary; it is what ``SSLCertThumbprint``,
    ``MasterHttpsCertThumbprint`` and ``netsh http ... certhash=`` hold.
    """
    der = cert.public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def sha256_of(cert: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, 64 uppercase hex digits (what join tokens pin)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def key_type_of(public_key: object) -> str:
    """Name a key the way ``--key`` does: ``ecdsa-p256``, ``rsa-2048``, ``ed25519``, ``dsa-1024``..."""
    if isinstance(public_key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"rsa-{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        curve = public_key.curve.name
        return f"ecdsa-{_CURVE_LABELS.get(curve, curve)}"
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(public_key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "ed448"
    kind = type(public_key).__name__
    # DSA is recognised by its class name, not through cryptography's `dsa` module: since cryptography 51
    # merely naming `dsa.DSAPublicKey` warns that DSA is deprecated, even for a key of another kind.
    if kind.startswith("DSA"):
        return f"dsa-{getattr(public_key, 'key_size', '?')}"
    return kind


def subject_cns(cert: x509.Certificate) -> list[str]:
    """Every CN of the subject, in order (``MakeCert -n "CN=a;CN=b"`` makes two)."""
    return [str(attr.value) for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def is_self_signed(cert: x509.Certificate) -> bool:
    """True when the certificate names itself as issuer and its own key verifies its signature."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


@dataclass(frozen=True)
class CertInfo:
    """What ``packfleet cert list/show`` print: a certificate's names, dates, fingerprints and store."""

    thumbprint: str
    sha256: str
    subject: str
    subject_cns: list[str]
    san_dns: list[str]
    san_ip: list[str]
    not_before: datetime
    not_after: datetime
    store: str | None
    has_private_key: bool
    key_type: str
    serial: str
    self_signed: bool

    @property
    def names(self) -> list[str]:
        """Every name, in MakeCert's order: the CNs, then the SAN entries not among them."""
        return list(dict.fromkeys([*self.subject_cns, *self.san_dns, *self.san_ip]))

    @property
    def lifetime_days(self) -> int:
        """Whole days from ``not_before`` to ``not_after`` (at least 1), as ``--days`` gave them."""
        return max(1, round((self.not_after - self.not_before).total_seconds() / 86400))

    def matches_host(self, host: str) -> bool:
        """Whether a TLS client connecting to ``host`` accepts this certificate (RFC 6125, as OpenSSL)."""
        return certificate_names_host(
            host, san_dns=self.san_dns, san_ip=self.san_ip, subject_cns=self.subject_cns
        )

    def days_left(self, now: datetime | None = None) -> float:
        """Days until ``not_after`` (negative once expired); ``now`` defaults to the current time."""
        moment = now if now is not None else datetime.now(UTC)
        return (self.not_after - moment).total_seconds() / 86400

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict, datetimes in ISO 8601 with their UTC offset."""
        return {
            "thumbprint": self.thumbprint,
            "sha256": self.sha256,
            "subject": self.subject,
            "subject_cns": list(self.subject_cns),
            "san_dns": list(self.san_dns),
            "san_ip": list(self.san_ip),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "store": self.store,
            "has_private_key": self.has_private_key,
            "key_type": self.key_type,
            "serial": self.serial,
            "self_signed": self.self_signed,
        }


@dataclass(frozen=True)
class Credential:
    """A certificate and, when this node owns it, its private key.

    >>> cred = create_self_signed(["worker1", "10.0.0.7"])   # doctest: +SKIP
    >>> cred.thumbprint                                       # doctest: +SKIP
    '3F2A...'
    """

    certificate: x509.Certificate
    private_key: PrivateKey | None = None

    @property
    def thumbprint(self) -> str:
        return thumbprint_of(self.certificate)

    @property
    def sha256(self) -> str:
        return sha256_of(self.certificate)

    def info(self, store: str | None = None) -> CertInfo:
        cert = self.certificate
        san = _san(cert)
        return CertInfo(
            thumbprint=self.thumbprint,
            sha256=self.sha256,
            subject=cert.subject.rfc4514_string(),
            subject_cns=subject_cns(cert),
            san_dns=san.get_values_for_type(x509.DNSName) if san else [],
            san_ip=[str(ip) for ip in san.get_values_for_type(x509.IPAddress)] if san else [],
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            store=store,
            has_private_key=self.private_key is not None,
            key_type=key_type_of(cert.public_key()),
            serial=format(cert.serial_number, "X"),
            self_signed=is_self_signed(cert),
        )

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def cert_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM; the file mode (0600) is what protects it."""
        if self.private_key is None:
            raise PkiError(
                f"certificate {self.thumbprint} has no private key here",
                fix="import it from a PFX that holds the key: packfleet cert import FILE.pfx "
                "--password P --store My",
            )
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
