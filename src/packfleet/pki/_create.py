"""``MakeCert -r``: self-signed certificates that OpenSSL 3 and rustls accept as pinned trust anchors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from packfleet.errors import PkiError
from packfleet.pki._credential import CertInfo, Credential, PrivateKey
from packfleet.pki._names import classify_name

KEY_TYPES = ("ecdsa-p256", "rsa-2048", "rsa-3072")

# Machines disagree about the time by seconds to minutes; a certificate made on the master and used
# at once by a worker whose clock runs behind would otherwise be "not yet valid".
CLOCK_SKEW = timedelta(minutes=5)


def generate_key(key_type: str) -> PrivateKey:
    """A fresh key of one of :data:`KEY_TYPES` (ECDSA P-256 unless asked otherwise, as DESIGN.md fixes)."""
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type in ("rsa-2048", "rsa-3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise PkiError(
        f"unknown key type {key_type!r}; packfleet makes {', '.join(KEY_TYPES)}",
        fix="packfleet cert create --key ecdsa-p256 ...",
    )


def create_self_signed(
    names: Sequence[str],
    *,
    key_type: str = "ecdsa-p256",
    days: int = 365,
    not_before: datetime | None = None,
) -> Credential:
    """Make a key and a self-signed certificate for ``names`` (``MakeCert -r -n "CN=a;CN=b"``).

    Every name is a CN of the subject (as MakeCert does) *and* a subjectAltName entry, an IP address
    when it parses as one: TLS clients match hosts against the SAN only (RFC 6125 §6.4.4, and OpenSSL
    when ``check_hostname`` is on), so a CN alone would not let ``https://10.0.0.7:8391`` connect.

    The profile is an end-entity certificate that is its own trust anchor, because packfleet pins
    each peer's certificate instead of using a CA:

    - BasicConstraints CA:FALSE, critical: rustls refuses a CA:TRUE certificate as an end entity
      (``CaUsedAsEndEntity``).
    - KeyUsage digitalSignature (TLS 1.3 authenticates with a signature, RFC 8446 §4.4.3), plus
      keyEncipherment for RSA so TLS 1.2 RSA key exchange stays possible, critical (RFC 5280 §4.2.1.3).
    - ExtendedKeyUsage serverAuth + clientAuth: a master serves, a worker and an admin are clients, and
      OpenSSL fails an EKU without the needed purpose with "unsuitable certificate purpose".
    - SubjectKeyIdentifier, and AuthorityKeyIdentifier equal to it since the issuer is itself
      (RFC 5280 §4.2.1.1-2): path builders such as Windows' CryptoAPI match issuers by key id.
    - A random 159-bit serial (positive, at most 20 octets, RFC 5280 §4.1.2.2) and SHA-256 signature.

    ``not_before`` defaults to five minutes ago (clock skew); ``not_after`` is ``days`` after now, or
    after ``not_before`` when one is given. A naive ``not_before`` is taken as UTC.
    """
    if not names:
        raise PkiError("a certificate needs at least one name", fix='-n "CN=host;CN=10.0.0.7"')
    if days < 1:
        raise PkiError(f"--days must be at least 1, not {days}", fix="--days 365")
    entries = [classify_name(name) for name in names]
    key = generate_key(key_type)

    if not_before is None:
        now = datetime.now(UTC)
        start, end = now - CLOCK_SKEW, now + timedelta(days=days)
    else:
        start = not_before if not_before.tzinfo else not_before.replace(tzinfo=UTC)
        end = start + timedelta(days=days)

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name) for name in names])
    san: list[x509.GeneralName] = [
        x509.DNSName(entry) if isinstance(entry, str) else x509.IPAddress(entry) for entry in entries
    ]
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    return Credential(builder.sign(key, hashes.SHA256()), key)


def successor_of(
    current: Credential | CertInfo, *, names: Sequence[str] | None = None, days: int | None = None
) -> Credential:
    """The certificate that replaces ``current`` in a rotation: a new key, nothing else changes.

    Same names (unless ``names``), same lifetime (unless ``days``), same key type when packfleet makes
    it (:data:`KEY_TYPES`); an imported certificate with any other key type gets ECDSA P-256, the
    default DESIGN.md fixes, since :func:`create_self_signed` makes only those.
    """
    info = current.info() if isinstance(current, Credential) else current
    key_type = info.key_type if info.key_type in KEY_TYPES else "ecdsa-p256"
    return create_self_signed(
        list(names) if names else info.names,
        key_type=key_type,
        days=days if days is not None else info.lifetime_days,
    )
