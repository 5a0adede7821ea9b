from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from packfleet.errors import PkiError, UnsupportedKey
from packfleet.pki import (
    Credential,
    export_certificate,
    export_pfx,
    load_credential,
    load_credential_bytes,
)

from .conftest import GOOD_EXTS, OpenSSL, openssl_fingerprint, openssl_req


@pytest.fixture
def ossl_cert(openssl: OpenSSL, tmp_path: Path) -> tuple[Path, Path]:
    cert, key = openssl_req(openssl, "ossl", *GOOD_EXTS, "-addext", "subjectAltName=DNS:ossl,IP:127.0.0.3")
    return tmp_path / cert, tmp_path / key


def test_reads_a_pem_certificate_made_by_openssl(ossl_cert: tuple[Path, Path]) -> None:
    pem, _ = ossl_cert
    cred = load_credential(pem)
    assert cred.private_key is None
    assert cred.thumbprint == openssl_fingerprint(pem, "sha1")
    assert cred.sha256 == openssl_fingerprint(pem, "sha256")
    info = cred.info()
    assert (info.subject_cns, info.san_dns, info.san_ip) == (["ossl"], ["ossl"], ["127.0.0.3"])


def test_reads_der_whatever_the_file_is_called(
    ossl_cert: tuple[Path, Path], openssl: OpenSSL, tmp_path: Path
) -> None:
    pem, _ = ossl_cert
    openssl("x509", "-in", pem.name, "-outform", "DER", "-out", "ossl.der")
    for name in ("ossl.cer", "misnamed.pem", "noext"):
        shutil.copy(tmp_path / "ossl.der", tmp_path / name)
        assert load_credential(tmp_path / name).thumbprint == openssl_fingerprint(pem, "sha1")
    shutil.copy(pem, tmp_path / "pem-in-a.der")
    assert load_credential(tmp_path / "pem-in-a.der").thumbprint == openssl_fingerprint(pem, "sha1")


def test_reads_a_pem_holding_certificate_and_key(ossl_cert: tuple[Path, Path], tmp_path: Path) -> None:
    pem, key = ossl_cert
    both = tmp_path / "both.pem"
    both.write_bytes(key.read_bytes() + b"\n" + pem.read_bytes())
    cred = load_credential(both)
    assert cred.private_key is not None
    assert cred.info().key_type == "ecdsa-p256"


def test_with_a_chain_the_key_picks_its_certificate(
    ossl_cert: tuple[Path, Path], openssl: OpenSSL, tmp_path: Path
) -> None:
    pem, key = ossl_cert
    other, _ = openssl_req(openssl, "other", *GOOD_EXTS)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((tmp_path / other).read_bytes() + pem.read_bytes() + key.read_bytes())
    assert load_credential(bundle).thumbprint == openssl_fingerprint(pem, "sha1")


def test_encrypted_pem_key_needs_its_password(
    ossl_cert: tuple[Path, Path], openssl: OpenSSL, tmp_path: Path
) -> None:
    pem, _ = ossl_cert
    openssl("pkey", "-in", "ossl.key", "-aes256", "-passout", "pass:k3y", "-out", "enc.key")
    both = tmp_path / "enc.pem"
    both.write_bytes(pem.read_bytes() + (tmp_path / "enc.key").read_bytes())
    assert load_credential(both, "k3y").private_key is not None
    with pytest.raises(PkiError, match="is encrypted and no password was given"):
        load_credential(both)
    with pytest.raises(PkiError, match="wrong password for the private key in .*enc.pem"):
        load_credential(both, "nope")


@pytest.mark.parametrize("legacy", [False, True], ids=["aes", "legacy-rc2-3des"])
def test_reads_a_pfx_made_by_openssl(
    ossl_cert: tuple[Path, Path], openssl: OpenSSL, tmp_path: Path, legacy: bool
) -> None:
    pem, _ = ossl_cert
    flags = ["-legacy"] if legacy else []
    openssl(
        "pkcs12",
        "-export",
        *flags,
        "-in",
        pem.name,
        "-inkey",
        "ossl.key",
        "-out",
        "o.pfx",
        "-passout",
        "pass:s3cret",
    )
    if legacy:
        info = openssl("pkcs12", "-in", "o.pfx", "-info", "-noout", "-passin", "pass:s3cret", "-legacy")
        assert info == ""  # the details go to stderr; the call succeeding shows the provider works
    cred = load_credential(tmp_path / "o.pfx", "s3cret")
    assert cred.thumbprint == openssl_fingerprint(pem, "sha1")
    assert cred.private_key is not None
    with pytest.raises(PkiError, match="wrong password for PFX .*o.pfx") as wrong:
        load_credential(tmp_path / "o.pfx", b"wrong")
    assert wrong.value.fix is not None and "--password" in wrong.value.fix
    with pytest.raises(PkiError, match="password-protected PFX and no password was given"):
        load_credential(tmp_path / "o.pfx")


def test_reads_a_pfx_with_an_empty_password(
    ossl_cert: tuple[Path, Path], openssl: OpenSSL, tmp_path: Path
) -> None:
    openssl(
        "pkcs12", "-export", "-in", "ossl.pem", "-inkey", "ossl.key", "-out", "e.pfx", "-passout", "pass:"
    )
    assert load_credential(tmp_path / "e.pfx").private_key is not None


def test_refuses_garbage_naming_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.cer"
    junk.write_bytes(b"\x30\x82\x01\x00 definitely not a certificate")
    with pytest.raises(PkiError, match=r"junk\.cer is not a certificate packfleet can read"):
        load_credential(junk)
    with pytest.raises(PkiError, match="cannot read .*missing.cer"):
        load_credential(tmp_path / "missing.cer")
    with pytest.raises(PkiError, match="upload holds a damaged CERTIFICATE block"):
        load_credential_bytes(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", source="upload"
        )


def test_a_key_alone_is_not_a_credential(ossl_cert: tuple[Path, Path]) -> None:
    _, key = ossl_cert
    with pytest.raises(PkiError, match=r"holds no certificate \(only a private key\)"):
        load_credential(key)


def test_an_ed25519_key_is_refused_when_read(openssl: OpenSSL, tmp_path: Path) -> None:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ed25519",
        "-nodes",
        "-keyout",
        "ed.key",
        "-out",
        "ed.pem",
        "-subj",
        "/CN=ed",
        "-days",
        "1",
    )
    both = tmp_path / "both.pem"
    both.write_bytes((tmp_path / "ed.pem").read_bytes() + (tmp_path / "ed.key").read_bytes())
    with pytest.raises(UnsupportedKey, match="has a ed25519 key: packfleet uses ECDSA"):
        load_credential(both)
    assert load_credential(tmp_path / "ed.pem").info().key_type == "ed25519"  # a public cert reads


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("encoding", "label"), [("der", "DER"), ("pem", "PEM")])
def test_export_certificate(
    cred: Credential, openssl: OpenSSL, tmp_path: Path, encoding: str, label: str
) -> None:
    out = export_certificate(cred, tmp_path / f"c.{encoding}", encoding=encoding)  # type: ignore[arg-type]
    assert mode(out) == 0o644
    fingerprint = openssl("x509", "-inform", label, "-in", out.name, "-noout", "-fingerprint", "-sha1")
    assert fingerprint.strip().split("=")[1].replace(":", "") == cred.thumbprint
    assert load_credential(out).private_key is None


def test_export_pfx_round_trip(cred: Credential, openssl: OpenSSL, tmp_path: Path) -> None:
    out = export_pfx(cred, tmp_path / "c.pfx", "pa55")
    assert mode(out) == 0o600
    back = load_credential(out, "pa55")
    assert back.thumbprint == cred.thumbprint
    assert back.key_pem() == cred.key_pem()
    with pytest.raises(PkiError, match="wrong password"):
        load_credential(out, "not-it")
    # OpenSSL 3 reads it without its legacy provider: PBES2 with AES-256, HMAC-SHA256.
    done = subprocess.run(
        ["openssl", "pkcs12", "-in", "c.pfx", "-info", "-noout", "-passin", "pass:pa55"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "PBES2, PBKDF2, AES-256-CBC" in done.stderr and "MAC: sha256" in done.stderr


def test_export_pfx_needs_a_key_and_a_password(cred: Credential, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="has no private key here"):
        export_pfx(Credential(cred.certificate), tmp_path / "x.pfx", "pw")
    with pytest.raises(PkiError, match="needs a password"):
        export_pfx(cred, tmp_path / "x.pfx", "")
    assert not (tmp_path / "x.pfx").exists()


def test_export_replaces_an_existing_file(cred: Credential, tmp_path: Path) -> None:
    target = tmp_path / "c.cer"
    target.write_bytes(b"old")
    target.chmod(0o600)
    export_certificate(cred, target)
    assert target.read_bytes() == cred.cert_der() and mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.cer"]  # no temporary file left
