from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from packfleet.errors import PkiError
from packfleet.pki import KEY_TYPES, Credential, check_usable, create_self_signed, parse_names

from .conftest import OpenSSL


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def test_profile_of_a_two_name_certificate() -> None:
    cred = create_self_signed(parse_names("CN=name;CN=127.0.0.2"))
    cert = cred.certificate
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    assert cns == ["name", "127.0.0.2"]
    assert cert.issuer == cert.subject

    san = ext(cert, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["name"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.2")]

    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value == x509.BasicConstraints(ca=False, path_length=None)

    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert isinstance(usage.value, x509.KeyUsage)
    assert usage.value.digital_signature and not usage.value.key_encipherment
    assert not usage.value.key_cert_sign

    eku = ext(cert, x509.ExtendedKeyUsage).value
    assert isinstance(eku, x509.ExtendedKeyUsage)
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]

    ski = ext(cert, x509.SubjectKeyIdentifier).value
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert isinstance(ski, x509.SubjectKeyIdentifier)
    assert isinstance(aki, x509.AuthorityKeyIdentifier)
    assert aki.key_identifier == ski.digest

    assert 0 < cert.serial_number < 2**159
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert isinstance(cred.private_key, ec.EllipticCurvePrivateKey)
    check_usable(cred)


def test_rsa_keys_also_allow_key_encipherment() -> None:
    cred = create_self_signed(["rsa-host"], key_type="rsa-2048")
    assert isinstance(cred.private_key, rsa.RSAPrivateKey) and cred.private_key.key_size == 2048
    usage = ext(cred.certificate, x509.KeyUsage).value
    assert isinstance(usage, x509.KeyUsage)
    assert usage.digital_signature and usage.key_encipherment


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_every_key_type_is_made_and_reported(key_type: str) -> None:
    cred = create_self_signed(["host"], key_type=key_type)
    assert cred.info().key_type == key_type
    check_usable(cred)


def test_serials_are_random() -> None:
    serials = {create_self_signed(["same"]).certificate.serial_number for _ in range(5)}
    assert len(serials) == 5


def test_validity_allows_clock_skew_and_counts_days() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    cert = create_self_signed(["host"], days=30).certificate
    after = datetime.now(UTC)
    assert before - timedelta(minutes=5, seconds=1) <= cert.not_valid_before_utc
    assert cert.not_valid_before_utc <= after - timedelta(minutes=5)
    assert before + timedelta(days=30) <= cert.not_valid_after_utc + timedelta(seconds=1)
    assert cert.not_valid_after_utc <= after + timedelta(days=30)


def test_explicit_not_before_starts_the_validity() -> None:
    start = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    cert = create_self_signed(["host"], days=10, not_before=start).certificate
    assert cert.not_valid_before_utc == start
    assert cert.not_valid_after_utc == start + timedelta(days=10)
    naive = create_self_signed(["host"], not_before=start.replace(tzinfo=None)).certificate
    assert naive.not_valid_before_utc == start


def test_ipv6_and_idna_names_go_into_the_san() -> None:
    cert = create_self_signed(["::1", "bücher.example", "*.svc.example"]).certificate
    san = ext(cert, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]
    assert san.get_values_for_type(x509.DNSName) == ["xn--bcher-kva.example", "*.svc.example"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"names": []}, "at least one name"),
        ({"names": ["has space"]}, "neither an IP address nor a valid DNS name"),
        ({"names": ["-dash.example"]}, "neither an IP address nor a valid DNS name"),
        ({"names": [".".join(["abcdefghij"] * 6)]}, "at most 64"),
        ({"names": ["host"], "days": 0}, "at least 1"),
        ({"names": ["host"], "key_type": "rsa-1024"}, "unknown key type 'rsa-1024'"),
    ],
)
def test_bad_requests_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PkiError, match=message):
        create_self_signed(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("purpose", ["sslserver", "sslclient"])
def test_openssl_accepts_it_as_a_strict_self_signed_trust_anchor(
    cred: Credential, openssl: OpenSSL, tmp_path: Path, purpose: str
) -> None:
    (tmp_path / "c.pem").write_bytes(cred.cert_pem())
    out = openssl("verify", "-x509_strict", "-purpose", purpose, "-CAfile", "c.pem", "c.pem")
    assert out.strip() == "c.pem: OK"
    text = openssl("x509", "-in", "c.pem", "-noout", "-text")
    assert "CA:FALSE" in text
    assert "DNS:name, IP Address:127.0.0.2" in text
