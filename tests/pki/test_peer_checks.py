"""``check_usable(peer=True)``: a certificate about to be pinned in a Root store must not be a CA.

OpenSSL trusts what a Root-store certificate signs whenever it could be a CA: v1, no
BasicConstraints, CA:TRUE (on any certificate, not only self-signed ones), keyCertSign or cRLSign.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from packfleet.errors import PkiError
from packfleet.pki import Credential, check_usable, create_self_signed, load_credential

from .conftest import OpenSSL

_SIGN = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
_SIGN_CERTS = x509.KeyUsage(True, False, False, False, False, True, False, False, False)
_SIGN_CRLS = x509.KeyUsage(True, False, False, False, False, False, True, False, False)
_TLS = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])


def _cert(*extensions: x509.ExtensionType, issuer: Credential | None = None) -> Credential:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.certificate.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=isinstance(extension, x509.BasicConstraints))
    signer = issuer.private_key if issuer is not None else key
    return Credential(builder.sign(signer, hashes.SHA256()), key)  # type: ignore[arg-type]


def test_packfleets_own_certificates_are_fine_peers() -> None:
    check_usable(create_self_signed(["worker1"]), purposes=("client",), peer=True)
    check_usable(_cert(x509.BasicConstraints(ca=False, path_length=None), _SIGN, _TLS), peer=True)


@pytest.mark.parametrize(
    ("extensions", "reason"),
    [
        ((_SIGN_CERTS, _TLS), "has no BasicConstraints"),
        ((_TLS,), "has no BasicConstraints"),
        ((x509.BasicConstraints(ca=False, path_length=None), _SIGN_CERTS, _TLS), "key usage of keyCertSign"),
        ((x509.BasicConstraints(ca=False, path_length=None), _SIGN_CRLS, _TLS), "key usage of cRLSign"),
    ],
    ids=["no-bc-keycertsign", "no-bc", "keycertsign", "crlsign"],
)
def test_a_certificate_that_could_sign_others_is_refused_as_a_peer(
    extensions: tuple[x509.ExtensionType, ...], reason: str
) -> None:
    cred = _cert(*extensions)
    check_usable(cred)  # fine as a node's own certificate: only pinning it is the danger
    with pytest.raises(PkiError, match=reason) as info:
        check_usable(cred, peer=True)
    assert info.value.fix is not None and info.value.fix.startswith("packfleet cert create")


def test_a_ca_that_is_not_self_signed_is_refused_as_a_peer() -> None:
    root = _cert(x509.BasicConstraints(ca=True, path_length=None))
    intermediate = _cert(x509.BasicConstraints(ca=True, path_length=None), _SIGN, _TLS, issuer=root)
    check_usable(intermediate)
    with pytest.raises(PkiError, match=r"is a CA certificate \(CA:TRUE\): in a Root store"):
        check_usable(intermediate, peer=True)


def test_a_v1_certificate_is_refused_and_really_acts_as_a_ca(openssl: OpenSSL, tmp_path: Path) -> None:
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "v1.key", "-out", "v1.csr", "-subj", "/CN=v1",
    )  # fmt: skip
    openssl("x509", "-req", "-in", "v1.csr", "-signkey", "v1.key", "-out", "v1.pem", "-days", "2")
    v1 = load_credential(tmp_path / "v1.pem")
    assert v1.certificate.version == x509.Version.v1
    with pytest.raises(PkiError, match="is an X.509 v1 certificate: it has no extensions"):
        check_usable(v1, peer=True)
    # Why: a leaf its key signs verifies against it, as a worker certificate would in a handshake.
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=victim",
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "leaf.csr", "-CA", "v1.pem", "-CAkey", "v1.key", "-CAcreateserial",
        "-out", "leaf.pem", "-days", "1",
    )  # fmt: skip
    assert "leaf.pem: OK" in openssl("verify", "-CAfile", "v1.pem", "leaf.pem")
