"""`packfleet cert ...` end to end through the real entry point, on a temporary home."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from packfleet.cli import main
from packfleet.pki import CertStore, create_self_signed, load_credential


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Run = Callable[..., Result]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def pf(home: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run `packfleet --home <tmp> ...` in-process through `main`, as the console script does."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(["--home", str(home), *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def openssl(tmp_path: Path, *args: str) -> str:
    done = subprocess.run(
        ["openssl", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def openssl_cert(tmp_path: Path, name: str, *extra: str, key: str = "ec:P-256") -> Path:
    """`openssl req -x509` a certificate and key; returns the PEM certificate (key in <name>.key)."""
    kind, _, param = key.partition(":")
    key_args = (
        ["-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{param}"]
        if kind == "ec"
        else ["-newkey", f"rsa:{param}"]
    )
    openssl(
        tmp_path, "req", "-x509", *key_args, "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.pem", "-subj", f"/CN={name}", "-days", "2", *extra,
    )  # fmt: skip
    return tmp_path / f"{name}.pem"


GOOD = (
    "-addext", "basicConstraints=critical,CA:FALSE",
    "-addext", "extendedKeyUsage=serverAuth,clientAuth",
)  # fmt: skip


def sha1_of(path: Path, inform: str = "PEM") -> str:
    out = openssl(path.parent, "x509", "-inform", inform, "-in", path.name, "-noout", "-fingerprint", "-sha1")
    return out.strip().split("=", 1)[1].replace(":", "")


def test_create_installs_with_key_and_prints_the_thumbprint(pf: Run, home: Path) -> None:
    made = pf("cert", "create", "-n", "CN=name;CN=127.0.0.2", "-r", "--store", "My")
    assert made.code == 0, made.err
    thumbprint = made.out.strip()
    store = CertStore(home, "My")
    cred = store.get(thumbprint)
    assert cred.private_key is not None
    assert (cred.info().san_dns, cred.info().san_ip) == (["name"], ["127.0.0.2"])
    assert "in store My" in made.err


def test_create_json_is_what_show_prints(pf: Run) -> None:
    made = pf("cert", "create", "-n", "CN=w1", "--store", "my", "--key", "rsa-2048", "--days", "30", "--json")
    data = made.json()
    assert data["key_type"] == "rsa-2048" and data["store"] == "My" and data["has_private_key"]
    assert data["subject_cns"] == ["w1"] and data["san_dns"] == ["w1"] and data["san_ip"] == []
    for key in ("thumbprint", "sha256", "not_before", "not_after"):
        assert data[key]
    assert pf("cert", "show", data["thumbprint"], "--json").json() == data


def test_the_makecert_line_works(pf: Run, home: Path, tmp_path: Path) -> None:
    """MakeCert.exe -n CN={master endpoint host} SSISScaleOutMaster.cer -r -ss Root -sr LocalMachine"""
    cer = tmp_path / "SSISScaleOutMaster.cer"
    made = pf("cert", "create", "-n", "CN=127.0.0.1", str(cer), "-r", "-ss", "Root")
    assert made.code == 0, made.err
    assert sha1_of(cer, "DER") == made.out.strip()
    assert CertStore(home, "Root").get(made.out.strip()).private_key is not None
    pem = tmp_path / "master.pem"
    again = pf("cert", "create", "-n", "CN=127.0.0.1", "--store", "Root", "--out", str(pem))
    assert sha1_of(pem) == again.out.strip()


def test_create_refuses_two_output_files(pf: Run, tmp_path: Path) -> None:
    result = pf("cert", "create", "-n", "CN=a", "a.cer", "--out", str(tmp_path / "b.cer"), "--store", "My")
    assert result.code == 2 and "two output files" in result.err


def test_create_refuses_a_bad_name(pf: Run) -> None:
    result = pf("cert", "create", "-n", "CN=not a host", "--store", "My")
    assert result.code == 4 and "'not a host' is neither an IP address" in result.err


def test_list_both_stores_or_one(pf: Run) -> None:
    assert pf("cert", "list", "--json").json() == []
    assert "no certificates" in pf("cert", "list").out
    mine = pf("cert", "create", "-n", "CN=worker1", "--store", "My").out.strip()
    trusted = pf("cert", "create", "-n", "CN=master", "--store", "Root").out.strip()
    listed = pf("cert", "list", "--json").json()
    assert {(item["store"], item["thumbprint"]) for item in listed} == {("My", mine), ("Root", trusted)}
    assert [item["thumbprint"] for item in pf("cert", "list", "--store", "Root", "--json").json()] == [
        trusted
    ]
    table = pf("cert", "list").out
    row = next(line for line in table.splitlines() if mine in line)
    assert row.split()[0] == "My" and "worker1" in row and row.split()[-1] == "yes"
    assert "Days left" in table


@pytest.mark.parametrize(
    "spell",
    [
        lambda t: [t.lower()],
        lambda t: [":".join(t[i : i + 2] for i in range(0, 40, 2))],
        lambda t: ["\u200e" + t],
        lambda t: [t[i : i + 2].lower() for i in range(0, 40, 2)],  # pasted unquoted, with spaces
    ],
    ids=["lowercase", "colons", "lrm", "unquoted-spaces"],
)
def test_show_accepts_thumbprints_as_people_paste_them(pf: Run, spell: Callable[[str], list[str]]) -> None:
    thumbprint = pf("cert", "create", "-n", "CN=host", "--store", "Root").out.strip()
    shown = pf("cert", "show", *spell(thumbprint), "--json")
    assert shown.code == 0, shown.err
    assert shown.json()["thumbprint"] == thumbprint and shown.json()["store"] == "Root"
    human = pf("cert", "show", *spell(thumbprint)).out
    assert f"Thumbprint:   {thumbprint}" in human and "SHA-256:" in human


def test_show_unknown(pf: Run) -> None:
    result = pf("cert", "show", "ab" * 20)
    assert result.code == 4
    assert f"no certificate {'AB' * 20} in store My or Root" in result.err
    in_my = pf("cert", "show", "ab" * 20, "--store", "My")
    assert "in store My (" in in_my.err and "fix: packfleet cert list --store My" in in_my.err


def test_import_der_certificate_and_pfx(pf: Run, home: Path, tmp_path: Path) -> None:
    pem = openssl_cert(tmp_path, "peer", *GOOD)
    openssl(tmp_path, "x509", "-in", "peer.pem", "-outform", "DER", "-out", "peer.cer")
    imported = pf("cert", "import", str(tmp_path / "peer.cer"), "--store", "Root")
    assert imported.code == 0, imported.err
    assert imported.out.strip() == sha1_of(pem)
    assert not CertStore(home, "Root").info(sha1_of(pem)).has_private_key

    openssl(
        tmp_path,
        "pkcs12",
        "-export",
        "-in",
        "peer.pem",
        "-inkey",
        "peer.key",
        "-out",
        "peer.pfx",
        "-passout",
        "pass:pw",
    )
    wrong = pf("cert", "import", str(tmp_path / "peer.pfx"), "--password", "nope", "--store", "My")
    assert wrong.code == 4 and "wrong password for PFX" in wrong.err
    done = pf("cert", "import", str(tmp_path / "peer.pfx"), "--password", "pw", "--store", "My", "--json")
    assert done.json()["has_private_key"] is True and done.json()["store"] == "My"


def test_import_refuses_rsa_1024_in_plain_words(pf: Run, home: Path, tmp_path: Path) -> None:
    weak = openssl_cert(tmp_path, "weak", *GOOD, key="rsa:1024")
    result = pf("cert", "import", str(weak), "--store", "Root")
    assert result.code == 4
    assert "RSA-1024 key: OpenSSL 3 refuses RSA keys shorter than 2048 bits" in result.err
    assert 'fix: packfleet cert create -n "CN=weak" --store My' in result.err
    assert CertStore(home, "Root").list() == []


def test_import_refuses_a_self_signed_ca(pf: Run, tmp_path: Path) -> None:
    ca = openssl_cert(tmp_path, "ca")  # openssl's default configuration says CA:TRUE
    result = pf("cert", "import", str(ca), "--store", "Root")
    assert result.code == 4 and "CA:TRUE" in result.err and "rustls" in result.err


def test_import_into_root_refuses_a_certificate_that_could_sign_others(pf: Run, tmp_path: Path) -> None:
    """No BasicConstraints: OpenSSL would trust what its key signs; fine in My, refused in Root."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nobc")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "nobc.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    refused = pf("cert", "import", str(path), "--store", "Root")
    assert refused.code == 4 and "has no BasicConstraints" in refused.err
    assert pf("cert", "import", str(path), "--store", "My").code == 0


def test_export_der_pem_and_pfx(pf: Run, tmp_path: Path) -> None:
    thumbprint = pf("cert", "create", "-n", "CN=w", "--store", "My").out.strip()
    der = pf("cert", "export", thumbprint, "--out", str(tmp_path / "w.cer"))
    assert der.code == 0 and sha1_of(tmp_path / "w.cer", "DER") == thumbprint
    assert (
        sha1_of(Path(pf("cert", "export", thumbprint, "--out", str(tmp_path / "w.pem")).out.strip()))
        == thumbprint
    )
    pfx = pf(
        "cert",
        "export",
        thumbprint.lower(),
        "--pfx",
        "--password",
        "pw",
        "--out",
        str(tmp_path / "w.p12"),
        "--json",
    )
    assert pfx.json() == {"thumbprint": thumbprint, "path": str(tmp_path / "w.p12"), "format": "pfx"}
    assert load_credential(tmp_path / "w.p12", "pw").private_key is not None
    no_password = pf("cert", "export", thumbprint, "--out", str(tmp_path / "x.pfx"))
    assert no_password.code == 2 and "needs a password" in no_password.err


def test_export_pfx_of_a_certificate_without_key(pf: Run, tmp_path: Path) -> None:
    cer = tmp_path / "peer.cer"
    cer.write_bytes(create_self_signed(["peer"]).cert_der())
    thumbprint = pf("cert", "import", str(cer), "--store", "Root").out.strip()
    result = pf("cert", "export", thumbprint, "--pfx", "--password", "pw", "--out", str(tmp_path / "p.pfx"))
    assert result.code == 4 and "has no private key here" in result.err


def test_delete_by_cn_refuses_two_matches_unless_all(pf: Run, home: Path) -> None:
    first = pf("cert", "create", "-n", "CN=worker1", "--store", "My").out.strip()
    second = pf("cert", "create", "-n", "CN=worker1;CN=10.0.0.7", "--store", "My").out.strip()
    keep = pf("cert", "create", "-n", "CN=worker2", "--store", "My").out.strip()
    refused = pf("cert", "delete", "--store", "My", "--cn", "WORKER1")
    assert refused.code == 2
    assert "matches 2 certificates" in refused.err and first in refused.err and second in refused.err
    assert "expires" in refused.err and "--all" in refused.err
    assert len(CertStore(home, "My").list()) == 3
    deleted = pf("cert", "delete", "--store", "My", "--cn", "worker1", "--all", "--json")
    assert {item["thumbprint"] for item in deleted.json()} == {first, second}
    assert [info.thumbprint for info in CertStore(home, "My").list()] == [keep]


def test_delete_by_thumbprint_or_single_cn(pf: Run, home: Path) -> None:
    one = pf("cert", "create", "-n", "CN=a", "--store", "Root").out.strip()
    two = pf("cert", "create", "-n", "CN=b", "--store", "Root").out.strip()
    colons = ":".join(one[i : i + 2] for i in range(0, 40, 2))
    assert pf("cert", "delete", colons, "--store", "Root").code == 0
    assert pf("cert", "delete", "--store", "Root", "--cn", "b").code == 0
    assert not CertStore(home, "Root").contains(one) and not CertStore(home, "Root").contains(two)
    missing = pf("cert", "delete", "--store", "Root", "--cn", "b")
    assert missing.code == 4 and "no certificate with CN 'b' in store Root" in missing.err
    neither = pf("cert", "delete", "--store", "Root")
    assert neither.code == 2 and "by its thumbprint or by --cn" in neither.err


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a key file to another account needs root")
def test_grant_by_cn_to_nobody(pf: Run, home: Path) -> None:
    thumbprint = pf("cert", "create", "-n", "CN=worker1", "--store", "My").out.strip()
    granted = pf("cert", "grant", "--cn", "worker1", "--store", "My", "--account", "nobody", "--json")
    assert granted.code == 0, granted.err
    key_file = CertStore(home, "My").key_path(thumbprint)
    assert granted.json() == {"thumbprint": thumbprint, "account": "nobody", "key_path": str(key_file)}
    assert key_file.stat().st_uid == pwd.getpwnam("nobody").pw_uid


def test_grant_unknown_account(pf: Run) -> None:
    thumbprint = pf("cert", "create", "-n", "CN=worker1", "--store", "My").out.strip()
    result = pf("cert", "grant", thumbprint, "--store", "My", "-a", "no-such-account-pf")
    assert result.code == 4 and "there is no account 'no-such-account-pf'" in result.err


@pytest.mark.parametrize(
    ("command", "windows"),
    [
        ("create", "MakeCert.exe -n CN="),
        ("list", "certmgr.exe /s"),
        ("show", "certutil"),
        ("import", "certmgr.exe /add"),
        ("export", "certutil -exportPFX"),
        ("delete", "certmgr.exe /del /c /s /r localmachine My /n"),
        ("grant", "winhttpcertcfg.exe -g -c LOCAL_MACHINE\\My -s"),
    ],
)
def test_help_teaches_the_windows_line_and_an_example(pf: Run, command: str, windows: str) -> None:
    shown = pf("cert", command, "--help")
    assert shown.code == 0
    assert windows in shown.out
    assert f"packfleet cert {command}" in shown.out or "packfleet --location" in shown.out
