"""Reading certificates in whatever form people bring them, and writing them out safely."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from packfleet._files import atomic_replace
from packfleet.errors import PkiError
from packfleet.pki._checks import remake_command, unsupported_kind
from packfleet.pki._credential import Credential, PrivateKey, key_type_of, subject_cns

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE"}
_KEY_LABELS = {b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}
_PFX_FIX = "give the password the PFX was exported with: --password P"


def _password_bytes(password: str | bytes | None) -> bytes | None:
    if isinstance(password, str):
        return password.encode("utf-8")
    return password


def _looks_like_pfx(data: bytes) -> bool:
    """Tell a PKCS#12 file from a DER certificate by its first fields.

    ``PFX ::= SEQUENCE { version INTEGER {v3(3)}, authSafe ContentInfo, macData MacData OPTIONAL }``
    (RFC 7292 §4): after the outer SEQUENCE header comes ``02 01 03``, where a certificate has the
    ``tbsCertificate`` SEQUENCE (``30 ...``). Knowing it is a PFX lets a decryption failure be
    reported as a wrong password rather than as an unreadable file.
    """
    if len(data) < 5 or data[0] != 0x30:
        return False
    length_byte = data[1]
    offset = 2 if length_byte < 0x80 else 2 + (length_byte & 0x7F)
    return data[offset : offset + 3] == b"\x02\x01\x03"


def as_supported_key(key: object, source: str) -> PrivateKey:
    """Return ``key`` if packfleet can hold it in a :class:`Credential`, else raise UnsupportedKey."""
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return key
    raise unsupported_kind(key_type_of(key), source=source, fix=remake_command(None))


def _load_pfx(data: bytes, password: bytes | None, source: str) -> Credential:
    # `openssl pkcs12 -export -passout pass:` makes a PFX with an empty password, which is not the
    # same as none at all; without a password, try both.
    attempts = [password] if password is not None else [None, b""]
    for attempt in attempts:
        try:
            key, cert, _extra = pkcs12.load_key_and_certificates(data, attempt)
        except ValueError:
            continue
        if cert is None:
            raise PkiError(
                f"{source} is a PFX without a certificate (only a key)",
                fix="export the PFX again with its certificate",
            )
        return Credential(cert, as_supported_key(key, source) if key is not None else None)
    if password is None:
        raise PkiError(f"{source} is a password-protected PFX and no password was given", fix=_PFX_FIX)
    raise PkiError(
        f"wrong password for PFX {source} (or the PFX is damaged: its MAC does not verify)",
        fix=_PFX_FIX,
    )


def _load_pem(data: bytes, password: bytes | None, source: str) -> Credential:
    certs: list[x509.Certificate] = []
    keys: list[PrivateKey] = []
    for match in _PEM_BLOCK.finditer(data):
        label, block = match.group(1), match.group(0)
        try:
            if label in _CERT_LABELS:
                certs.append(x509.load_pem_x509_certificate(block))
            elif label in _KEY_LABELS:
                keys.append(as_supported_key(_load_pem_key(block, password, source), source))
        except ValueError as exc:
            raise PkiError(f"{source} holds a damaged {label.decode()} block: {exc}") from exc
    if not certs:
        raise PkiError(
            f"{source} holds no certificate" + (" (only a private key)" if keys else ""),
            fix="give the certificate file (.cer/.pem), or a PEM or PFX holding certificate and key",
        )
    if len(keys) > 1:
        raise PkiError(f"{source} holds {len(keys)} private keys; keep one key per file")
    key = keys[0] if keys else None
    # A chain file lists the leaf first (RFC 8446 §4.4.2); with a key, take the certificate it fits.
    cert = certs[0]
    if key is not None:
        mine = _spki(key.public_key())
        cert = next((c for c in certs if _spki(c.public_key()) == mine), cert)
    return Credential(cert, key)


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_pem_key(block: bytes, password: bytes | None, source: str) -> object:
    try:
        return serialization.load_pem_private_key(block, password)
    except TypeError as exc:
        if password is None:
            raise PkiError(
                f"the private key in {source} is encrypted and no password was given",
                fix="give the key's password: --password P",
            ) from exc
        # A password for an unencrypted key (e.g. one meant for another file): the key is readable.
        return serialization.load_pem_private_key(block, None)
    except ValueError as exc:
        if password is not None and b"ENCRYPTED" in block:
            raise PkiError(
                f"wrong password for the private key in {source}",
                fix="give the key's password: --password P",
            ) from exc
        raise


def load_credential_bytes(
    data: bytes, password: str | bytes | None = None, *, source: str = "<data>"
) -> Credential:
    """Read a certificate (and key, when present) from PEM, DER or PKCS#12 bytes, told by content.

    ``source`` names the data in error messages (a file name, usually).
    """
    secret = _password_bytes(password)
    if b"-----BEGIN " in data:
        return _load_pem(data, secret, source)
    if _looks_like_pfx(data):
        return _load_pfx(data, secret, source)
    try:
        return Credential(x509.load_der_x509_certificate(data))
    except ValueError:
        pass
    raise PkiError(
        f"{source} is not a certificate packfleet can read: expected PEM (-----BEGIN CERTIFICATE-----), "
        "DER (.cer/.der) or PKCS#12 (.pfx/.p12)",
        fix="check the file: openssl x509 -in FILE -noout -text",
    )


def load_credential(path: Path, password: str | bytes | None = None) -> Credential:
    """Read ``path`` (.cer/.crt/.pem/.der/.pfx/.p12); the content decides the format, not the name."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return load_credential_bytes(data, password, source=str(path))


def write_atomic(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to ``path`` with ``mode``, never half-written nor, for a key, readable by others.

    See :func:`packfleet._files.atomic_replace`: the temporary file is 0600 from its creation.
    """
    return atomic_replace(Path(path), data, mode)


def _write_out(path: Path, data: bytes, mode: int) -> Path:
    try:
        return write_atomic(path, data, mode)
    except OSError as exc:
        raise PkiError(f"cannot write {path}: {exc.strerror or exc}") from exc


def export_certificate(
    cred: Credential, path: Path, *, encoding: Literal["der", "pem"] = "der", mode: int = 0o644
) -> Path:
    """Write the public certificate (the seed's ``SSISScaleOutMaster.cer``), mode 0644 by default.

    ``master init`` and ``worker init`` write theirs into the node's home 0600, private as every
    file there; a copy exported elsewhere for other machines is public.

    DER is what Windows' ``.cer`` and MakeCert produce; PEM is what Linux tools expect.
    """
    data = cred.cert_der() if encoding == "der" else cred.cert_pem()
    return _write_out(Path(path), data, mode)


def export_pfx(cred: Credential, path: Path, password: str) -> Path:
    """Write certificate and key as a PKCS#12 file protected by ``password``, mode 0600.

    Encrypted with PBES2 / PBKDF2 / AES-256-CBC and an HMAC-SHA256 MAC: what OpenSSL 3 and Windows
    (Server 2019 and later) read, unlike the RC2/3DES of old PFX files, which OpenSSL 3 reads only
    with its legacy provider.
    """
    if cred.private_key is None:
        raise PkiError(
            f"certificate {cred.thumbprint} has no private key here, and a PFX carries one",
            fix="export the public certificate instead: packfleet cert export THUMBPRINT --out F.cer",
        )
    if not password:
        raise PkiError(
            "a PFX needs a password: it holds the private key",
            fix="packfleet cert export THUMBPRINT --pfx --password P --out F.pfx",
        )
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password.encode("utf-8"))
    )
    friendly = (subject_cns(cred.certificate) or [cred.thumbprint])[0].encode("utf-8")
    data = pkcs12.serialize_key_and_certificates(
        friendly, cred.private_key, cred.certificate, None, encryption
    )
    return _write_out(Path(path), data, 0o600)
