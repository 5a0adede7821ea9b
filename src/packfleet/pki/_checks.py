"""Refuse, in plain words, certificates that a TLS handshake would later reject in obscure ones."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from packfleet.errors import PkiError, UnsupportedKey
from packfleet.pki._credential import (
    Credential,
    PrivateKey,
    is_self_signed,
    key_type_of,
    subject_cns,
)

# Security level 2 (112-bit security) means RSA >= 2048 bits: Python's ssl sets it for every context
# since 3.10 and OpenSSL makes it the default since 3.2; `load_cert_chain` then fails with the
# cryptic "EE_KEY_TOO_SMALL".
MIN_RSA_BITS = 2048
# Curves both OpenSSL and rustls verify in TLS 1.3 (RFC 8446 §4.2.3 ecdsa_secp256r1/384r1_sha*);
# P-521 is missing from some rustls crypto providers (ring).
SUPPORTED_CURVES = {"secp256r1", "secp384r1"}

_EKU = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
_EKU_NAMES = {"server": "serverAuth", "client": "clientAuth"}


def remake_command(cert: x509.Certificate | None, store: str = "My") -> str:
    """The ``packfleet cert create`` line that makes a good replacement, keeping the names."""
    names = subject_cns(cert) if cert is not None else []
    spec = ";".join(f"CN={name}" for name in names) or "CN=<host>"
    return f'packfleet cert create -n "{spec}" --store {store}'


def refuse_key(key: object, *, source: str, fix: str) -> None:
    """Raise :class:`UnsupportedKey` unless ``key`` (public or private) is one packfleet's TLS can use."""
    label = key_type_of(key)
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise UnsupportedKey(
                f"{source} has an RSA-{key.key_size} key: OpenSSL 3 refuses RSA keys shorter than "
                f"{MIN_RSA_BITS} bits at its default security level, so every handshake with it "
                "would fail",
                fix=fix,
            )
        return
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if key.curve.name not in SUPPORTED_CURVES:
            raise UnsupportedKey(
                f"{source} has a {label} key: packfleet uses ECDSA on P-256 or P-384 only, the "
                "curves both OpenSSL and rustls verify in TLS 1.3",
                fix=fix,
            )
        return
    raise unsupported_kind(label, source=source, fix=fix)


def unsupported_kind(label: str, *, source: str, fix: str) -> UnsupportedKey:
    """The refusal for a key that is neither ECDSA nor RSA (DSA, Ed25519, Ed448...)."""
    return UnsupportedKey(
        f"{source} has a {label} key: packfleet uses ECDSA (P-256, P-384) or RSA (2048 bits or more) "
        "keys, which every peer (OpenSSL, rustls, Windows) can verify",
        fix=fix,
    )


def _extension(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def check_usable(
    cred: Credential,
    *,
    purposes: Collection[str] = ("server", "client"),
    now: datetime | None = None,
    peer: bool = False,
) -> None:
    """Raise :class:`PkiError` (or :class:`UnsupportedKey`) if ``cred`` cannot work in packfleet's TLS.

    Each refusal names the certificate and the reason a handshake would fail, with ``fix`` set to the
    ``packfleet cert create`` command that makes a good certificate under the same names:

    - an RSA key under 2048 bits (OpenSSL 3 security level 2) or a DSA/Ed25519/other key;
    - an ExtendedKeyUsage lacking serverAuth or clientAuth (``purposes`` says which roles the
      certificate must play; a master-only certificate may pass ``purposes=("server",)``);
    - a KeyUsage without digitalSignature (TLS 1.3 authenticates with a signature, RFC 8446 §4.4.3);
    - BasicConstraints CA:TRUE on a self-signed certificate (rustls: ``CaUsedAsEndEntity``);
    - with ``peer`` (a certificate another node presents, about to be pinned in a Root store), any
      certificate OpenSSL could take for a CA: see :func:`_refuse_ca_like`;
    - outside its validity period at ``now`` (OpenSSL checks dates even on a pinned trust anchor);
    - a private key that is not the certificate's.
    """
    unknown = set(purposes) - set(_EKU)
    if unknown:
        raise ValueError(f"purposes must be among {sorted(_EKU)}, not {sorted(unknown)}")
    cert = cred.certificate
    source = f"certificate {cred.thumbprint} ({cert.subject.rfc4514_string() or 'no subject'})"
    fix = remake_command(cert)
    refuse_key(cert.public_key(), source=source, fix=fix)

    eku = _extension(cert, ExtensionOID.EXTENDED_KEY_USAGE)
    if isinstance(eku, x509.ExtendedKeyUsage):
        missing = [_EKU_NAMES[p] for p in purposes if _EKU[p] not in eku]
        if missing:
            has = ", ".join(getattr(oid, "_name", oid.dotted_string) for oid in eku) or "nothing"
            raise PkiError(
                f"{source} has an extended key usage of {has} without {' and '.join(missing)}: "
                "a TLS handshake with it would fail with 'unsuitable certificate purpose'",
                fix=fix,
            )

    usage = _extension(cert, ExtensionOID.KEY_USAGE)
    if isinstance(usage, x509.KeyUsage) and not usage.digital_signature:
        raise PkiError(
            f"{source} has a key usage without digitalSignature: TLS 1.3 proves the key with a "
            "signature, so a handshake with it would fail",
            fix=fix,
        )

    constraints = _extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca and is_self_signed(cert):
        raise PkiError(
            f"{source} is a self-signed CA certificate (CA:TRUE): rustls rejects a CA certificate "
            "used as the end-entity certificate of a connection; packfleet pins certificates with "
            "CA:FALSE",
            fix=fix,
        )
    if peer:
        _refuse_ca_like(cert, source, fix)

    moment = now if now is not None else datetime.now(UTC)
    if moment > cert.not_valid_after_utc:
        raise PkiError(
            f"{source} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: OpenSSL refuses an "
            "expired certificate even when it is pinned",
            fix=fix,
        )
    if moment < cert.not_valid_before_utc:
        raise PkiError(
            f"{source} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; "
            "check this machine's clock",
            fix="timedatectl status",
        )

    if cred.private_key is not None and not _same_public_key(cert, cred.private_key):
        raise PkiError(
            f"the private key given with {source} is not that certificate's key",
            fix="import the certificate together with its own key (the PFX or PEM it came with)",
        )


def _refuse_ca_like(cert: x509.Certificate, source: str, fix: str) -> None:
    """Refuse a certificate that, once in a Root store, would let its key vouch for others.

    OpenSSL puts the whole Root store in the X509_STORE a handshake verifies against, and treats a
    trust anchor as a CA when it is a v1 certificate, has no BasicConstraints at all, or says CA:TRUE
    (``X509_check_ca``; RFC 5280 §4.2.1.9 only *requires* BasicConstraints on CA certificates, so
    its absence reads as "maybe a CA"), and KeyUsage keyCertSign or cRLSign says the same. Any
    certificate its key then signs would pass the handshake as a peer: packfleet pins each peer's
    own certificate, so a pinned one must say CA:FALSE and sign nothing.
    """
    if cert.version != x509.Version.v3:
        raise PkiError(
            f"{source} is an X.509 {cert.version.name} certificate: it has no extensions, so it cannot "
            "say CA:FALSE, and OpenSSL would trust whatever certificate its key signs",
            fix=fix,
        )
    constraints = _extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if not isinstance(constraints, x509.BasicConstraints):
        raise PkiError(
            f"{source} has no BasicConstraints: without CA:FALSE OpenSSL may take it for a CA and "
            "trust whatever certificate its key signs; packfleet pins only certificates marked CA:FALSE",
            fix=fix,
        )
    if constraints.ca:
        raise PkiError(
            f"{source} is a CA certificate (CA:TRUE): in a Root store it would make every certificate "
            "its key signs trusted; packfleet pins only end-entity certificates (CA:FALSE)",
            fix=fix,
        )
    usage = _extension(cert, ExtensionOID.KEY_USAGE)
    if isinstance(usage, x509.KeyUsage):
        signs = [
            name for name, on in (("keyCertSign", usage.key_cert_sign), ("cRLSign", usage.crl_sign)) if on
        ]
        if signs:
            raise PkiError(
                f"{source} has a key usage of {' and '.join(signs)}: that is a CA's key usage, and "
                "packfleet pins only end-entity certificates whose key signs no other certificate",
                fix=fix,
            )


def _same_public_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)
