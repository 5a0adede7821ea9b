from __future__ import annotations

import ssl
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from packfleet.errors import PkiError, UnsupportedKey
from packfleet.pki import Credential, check_usable, create_self_signed, load_credential

from .conftest import GOOD_EXTS, OpenSSL, openssl_req


def made_by_openssl(openssl: OpenSSL, tmp_path: Path, *extra: str, key: str = "ec") -> Credential:
    cert, key_file = openssl_req(openssl, "legacy-host", *extra, key=key)
    pem = tmp_path / "both.pem"
    pem.write_bytes((tmp_path / cert).read_bytes() + (tmp_path / key_file).read_bytes())
    return load_credential(pem)


def built(key: object, *extensions: x509.ExtensionType) -> Credential:
    """A self-signed certificate with exactly ``extensions``, for profiles packfleet never makes."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return Credential(builder.sign(key, hashes.SHA256()), None)  # type: ignore[arg-type]


def test_a_good_openssl_certificate_passes(openssl: OpenSSL, tmp_path: Path) -> None:
    check_usable(made_by_openssl(openssl, tmp_path, *GOOD_EXTS))


def test_rsa_1024_is_refused_in_plain_words(openssl: OpenSSL, tmp_path: Path) -> None:
    cred = made_by_openssl(openssl, tmp_path, *GOOD_EXTS, key="rsa:1024")
    with pytest.raises(UnsupportedKey) as info:
        check_usable(cred)
    assert "RSA-1024 key: OpenSSL 3 refuses RSA keys shorter than 2048 bits" in info.value.message
    assert "default security level" in info.value.message
    assert info.value.fix == 'packfleet cert create -n "CN=legacy-host" --store My'
    # The reason is real: Python's ssl (security level 2) will not load it.
    with pytest.raises(ssl.SSLError, match="EE_KEY_TOO_SMALL"):
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            tmp_path / "legacy-host.pem", tmp_path / "legacy-host.key"
        )


def test_eku_without_tls_purposes_is_refused(openssl: OpenSSL, tmp_path: Path) -> None:
    cred = made_by_openssl(
        openssl, tmp_path, "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "extendedKeyUsage=codeSigning",
    )  # fmt: skip
    with pytest.raises(PkiError, match="would fail with 'unsuitable certificate purpose'") as info:
        check_usable(cred)
    assert "codeSigning without serverAuth and clientAuth" in info.value.message
    assert info.value.fix is not None and info.value.fix.startswith("packfleet cert create")


def test_server_only_eku_passes_when_only_serving(openssl: OpenSSL, tmp_path: Path) -> None:
    cred = made_by_openssl(
        openssl, tmp_path, "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "extendedKeyUsage=serverAuth",
    )  # fmt: skip
    check_usable(cred, purposes=("server",))
    with pytest.raises(PkiError, match="without clientAuth"):
        check_usable(cred)


def test_self_signed_ca_is_refused(openssl: OpenSSL, tmp_path: Path) -> None:
    # `openssl req -x509` with the default configuration marks the certificate CA:TRUE.
    cred = made_by_openssl(openssl, tmp_path)
    with pytest.raises(PkiError, match=r"self-signed CA certificate \(CA:TRUE\): rustls rejects"):
        check_usable(cred)


def test_dsa_and_odd_curves_are_refused() -> None:
    with warnings.catch_warnings():
        # Making a DSA key on purpose: cryptography >= 51 warns that DSA is deprecated.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        # Reading the key of a DSA certificate warns too; the refusal is what this test is about.
        dsa_cert = built(dsa.generate_private_key(2048))
        with pytest.raises(UnsupportedKey, match="has a dsa-2048 key"):
            check_usable(dsa_cert)
    with pytest.raises(UnsupportedKey, match="has a ecdsa-p521 key: packfleet uses ECDSA on P-256 or P-384"):
        check_usable(built(ec.generate_private_key(ec.SECP521R1())))
    check_usable(built(ec.generate_private_key(ec.SECP384R1())))


def test_key_usage_without_digital_signature_is_refused() -> None:
    usage = x509.KeyUsage(False, False, True, False, False, False, False, False, False)
    with pytest.raises(PkiError, match="key usage without digitalSignature"):
        check_usable(built(ec.generate_private_key(ec.SECP256R1()), usage))


def test_a_foreign_key_is_refused() -> None:
    mine, theirs = create_self_signed(["a"]), create_self_signed(["a"])
    with pytest.raises(PkiError, match="is not that certificate's key"):
        check_usable(Credential(mine.certificate, theirs.private_key))


def test_validity_is_checked_at_the_time_given() -> None:
    cred = create_self_signed(["a"], days=10)
    after = cred.certificate.not_valid_after_utc + timedelta(seconds=1)
    with pytest.raises(PkiError, match="expired on"):
        check_usable(cred, now=after)
    with pytest.raises(PkiError, match="is not valid before"):
        check_usable(cred, now=cred.certificate.not_valid_before_utc - timedelta(seconds=1))
    check_usable(cred, now=after - timedelta(days=1))
