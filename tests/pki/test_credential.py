from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from packfleet.errors import PkiError
from packfleet.pki import Credential, create_self_signed, sha256_of, thumbprint_of

from .conftest import openssl_fingerprint


def test_thumbprint_and_sha256_match_openssl(cred: Credential, tmp_path: Path) -> None:
    pem = tmp_path / "c.pem"
    pem.write_bytes(cred.cert_pem())
    assert cred.thumbprint == thumbprint_of(cred.certificate) == openssl_fingerprint(pem, "sha1")
    assert cred.sha256 == sha256_of(cred.certificate) == openssl_fingerprint(pem, "sha256")
    assert len(cred.thumbprint) == 40 and cred.thumbprint.isupper()
    assert len(cred.sha256) == 64


def test_info_describes_the_certificate(cred: Credential) -> None:
    info = cred.info("My")
    cert = cred.certificate
    assert info.thumbprint == cred.thumbprint and info.sha256 == cred.sha256
    assert info.subject == "CN=127.0.0.2,CN=name"  # RFC 4514 writes the last RDN first
    assert info.subject_cns == ["name", "127.0.0.2"]
    assert (info.san_dns, info.san_ip) == (["name"], ["127.0.0.2"])
    assert info.not_before == cert.not_valid_before_utc and info.not_after.tzinfo is not None
    assert info.store == "My" and info.has_private_key and info.self_signed
    assert info.key_type == "ecdsa-p256"
    assert int(info.serial, 16) == cert.serial_number
    assert Credential(cert).info().has_private_key is False


def test_days_left_uses_the_clock_given(cred: Credential) -> None:
    info = cred.info()
    assert info.days_left(info.not_after - timedelta(days=2, hours=12)) == pytest.approx(2.5)
    assert info.days_left(info.not_after + timedelta(days=1)) == pytest.approx(-1)
    assert 364 < info.days_left() <= 365.01


def test_to_dict_is_json_with_iso_dates(cred: Credential) -> None:
    data = json.loads(json.dumps(cred.info("Root").to_dict()))
    assert data["thumbprint"] == cred.thumbprint
    assert data["store"] == "Root" and data["has_private_key"] is True
    assert data["san_ip"] == ["127.0.0.2"] and data["key_type"] == "ecdsa-p256"
    assert datetime.fromisoformat(data["not_after"]) == cred.certificate.not_valid_after_utc
    assert datetime.fromisoformat(data["not_before"]).utcoffset() == timedelta(0)
    assert set(data) >= {"sha256", "subject_cns", "san_dns", "not_before", "serial", "self_signed"}


def test_encodings_round_trip(cred: Credential) -> None:
    assert x509.load_pem_x509_certificate(cred.cert_pem()) == cred.certificate
    assert x509.load_der_x509_certificate(cred.cert_der()) == cred.certificate
    pem = cred.key_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, not encrypted
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.private_numbers() == cred.private_key.private_numbers()  # type: ignore[union-attr]


def test_key_pem_without_a_key_says_so(cred: Credential) -> None:
    with pytest.raises(PkiError, match=f"{cred.thumbprint} has no private key"):
        Credential(cred.certificate).key_pem()


def test_a_certificate_issued_by_another_key_is_not_self_signed(cred: Credential) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "same")])
    now = datetime.now(UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(other.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(cred.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    assert Credential(forged).info().self_signed is False
    assert create_self_signed(["x"]).info().self_signed is True
