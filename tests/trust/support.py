"""Homes made as an operator makes them (``master init``, ``worker init``), for the trust rules' tests
and ``doctor``'s: both break them the ways the seed's manual steps do and read what each consumer says.

``tests/trust/conftest.py`` and ``tests/doctor/conftest.py`` import the fixtures from here, so both
folders set up the same homes from one place.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from packfleet.config import Binding, add_binding, delete_binding
from packfleet.doctor import Report, run_doctor
from packfleet.errors import PackfleetError
from packfleet.pki import CertStore, create_self_signed
from packfleet.provision import init_master, init_worker

#: The PortNumber the homes are made with; nothing listens on it (tests start masters on port 0).
PORT = 18391


@pytest.fixture
def master_home(tmp_path: Path) -> Path:
    home = tmp_path / "m"
    init_master(home, cns=["127.0.0.1"], port=PORT)
    return home


@pytest.fixture
def worker_home(tmp_path: Path, master_home: Path) -> Path:
    home = tmp_path / "w"
    init_worker(
        home,
        master_url=f"https://127.0.0.1:{PORT}",
        master_cert=master_home / "master.cer",
        name="worker1",
        ip="127.0.0.2",
    )
    return home


def bind_another_certificate(home: Path) -> tuple[str, str]:
    """The seed's step 2 (netsh delete/add sslcert) done and step 3 (SSLCertThumbprint) forgotten: the
    binding names a new certificate. Returns its thumbprint and the appid the binding kept."""
    new = CertStore(home, "Root").add(create_self_signed(["127.0.0.1"])).thumbprint
    ipport = f"0.0.0.0:{PORT}"
    appid = delete_binding(home, ipport).appid
    add_binding(home, Binding(ipport=ipport, certhash=new, certstorename="Root", appid=appid))
    return new, appid


def only(report: Report, check: str) -> str:
    """The one finding of ``check`` that is not ok, as ``severity: message | fix: fix``."""
    [finding] = [f for f in report.findings if f.check == check and f.severity != "ok"]
    return f"{finding.severity}: {finding.message} | fix: {finding.fix}"


def doctor_says(home: Path, check: str, *, probe: bool = False, **options: object) -> tuple[str, str | None]:
    """The message and fix of ``doctor``'s one error of ``check`` on ``home``."""
    report = run_doctor(home, probe=probe, **options)  # type: ignore[arg-type]
    [finding] = [f for f in report.by_check(check) if f.severity == "error"]
    return finding.message, finding.fix


def said(error: PackfleetError) -> tuple[str, str | None]:
    """What an error tells a person: its message and its fix."""
    return error.message, error.fix


def refusal(verify_code: int) -> ssl.SSLCertVerificationError:
    """OpenSSL's verdict on a certificate, as a handshake raises it (``X509_V_ERR_*`` code)."""
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error.verify_code = verify_code
    return error
