"""CertInfo.matches_host gives OpenSSL's verdict (``X509_check_host``/``X509_check_ip``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from packfleet.pki import Credential, create_self_signed, is_ip_address

from .conftest import OpenSSL


def _cn_only(*cns: str) -> Credential:
    """A certificate as an old ``MakeCert -n "CN=a;CN=b"`` makes it: CNs and no SAN."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return Credential(cert, key)


def _openssl_accepts(openssl: OpenSSL, tmp_path: Path, cred: Credential, host: str) -> bool:
    pem = tmp_path / "cert.pem"
    pem.write_bytes(cred.cert_pem())
    option = "-checkip" if is_ip_address(host) else "-checkhost"
    out = openssl("x509", "-in", str(pem), "-noout", option, host.strip("[]"))
    return "does match" in out


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST", "other.example", "127.0.0.1", "127.0.0.2", "::1", "0::1", "[::1]", "::2"],
)
def test_san_names_match_as_openssl_checks_them(openssl: OpenSSL, tmp_path: Path, host: str) -> None:
    cred = create_self_signed(["localhost", "127.0.0.1", "::1"])
    assert cred.info().matches_host(host) is _openssl_accepts(openssl, tmp_path, cred, host)


@pytest.mark.parametrize(("host", "expected"), [("master1", True), ("Master1", True), ("10.0.0.7", False)])
def test_cns_count_only_without_dns_names_in_the_san(
    openssl: OpenSSL, tmp_path: Path, host: str, expected: bool
) -> None:
    cred = _cn_only("master1", "10.0.0.7")
    assert cred.info().matches_host(host) is expected
    assert _openssl_accepts(openssl, tmp_path, cred, host) is expected


def test_a_cn_missing_from_a_present_san_does_not_match() -> None:
    cred = create_self_signed(["master1"])
    info = cred.info()
    assert info.matches_host("master1")
    # the same CN would not count once the SAN lists other names (RFC 6125 §6.4.4)
    assert not replace(info, san_dns=["elsewhere"]).matches_host("master1")


def test_ip_literals_are_recognised_with_or_without_brackets() -> None:
    assert is_ip_address("10.0.0.7") and is_ip_address("::1") and is_ip_address("[fe80::1]")
    assert not is_ip_address("master1") and not is_ip_address("10.0.0.256")
