"""``doctor`` on homes made by ``master init`` / ``worker init``, then broken the ways the seed's
manual steps break them. No master runs here (probe=False): the network checks are in tests/e2e."""

from __future__ import annotations

import json
import os
import pwd
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from packfleet.cli import main
from packfleet.config import (
    delete_binding,
    get_binding,
    load_master_settings,
    load_worker_settings,
    set_setting,
)
from packfleet.doctor import Report, run_doctor
from packfleet.pki import CertStore, create_self_signed
from packfleet.provision import init_worker
from packfleet.worker import render_unit
from trust.support import PORT, bind_another_certificate, only


def errors(report: Report) -> dict[str, str]:
    return {f.check: f.message for f in report.errors}


def test_fresh_homes_have_no_errors(master_home: Path, worker_home: Path) -> None:
    master = run_doctor(master_home, probe=False)
    worker = run_doctor(worker_home, probe=False)
    assert master.roles == ["master"] and worker.roles == ["worker"]
    assert master.errors == [] and master.warnings == []
    assert worker.errors == [] and worker.warnings == []
    checks = {f.check for f in master.findings}
    assert {"master.binding", "master.certificate", "master.catalog", "master.admin"} <= checks


def test_a_folder_that_is_no_home_is_an_error(tmp_path: Path) -> None:
    report = run_doctor(tmp_path, probe=False)
    assert list(errors(report)) == ["home"]
    assert report.exit_code() == 1


def test_binding_and_setting_naming_different_certificates(master_home: Path) -> None:
    old = load_master_settings(master_home).ssl_cert_thumbprint
    new, appid = bind_another_certificate(master_home)
    text = only(run_doctor(master_home, probe=False), "master.binding")
    assert text.startswith("error:")
    assert new in text and old in text
    assert f"packfleet settings set master SSLCertThumbprint {new}" in text
    assert appid in text  # keeping the setting instead re-adds the binding with the original appid


def test_missing_binding(master_home: Path) -> None:
    delete_binding(master_home, f"0.0.0.0:{PORT}")
    text = only(run_doctor(master_home, probe=False), "master.binding")
    assert "no certificate is bound to 0.0.0.0:18391" in text
    assert "packfleet binding add --port 18391" in text


def test_key_that_is_not_the_certificates(master_home: Path) -> None:
    thumbprint = load_master_settings(master_home).ssl_cert_thumbprint
    store = CertStore(master_home, "Root")
    other = create_self_signed(["127.0.0.1"])
    store.key_path(thumbprint).write_bytes(other.key_pem())
    text = only(run_doctor(master_home, probe=False), "master.key-match")
    assert text.startswith("error:") and thumbprint in text


def test_bound_certificate_without_key(master_home: Path) -> None:
    thumbprint = load_master_settings(master_home).ssl_cert_thumbprint
    CertStore(master_home, "Root").key_path(thumbprint).unlink()
    text = only(run_doctor(master_home, probe=False), "master.certificate")
    assert "has no private key" in text and "cert import master.pfx" in text


def test_key_readable_by_others(master_home: Path) -> None:
    thumbprint = load_master_settings(master_home).ssl_cert_thumbprint
    key = CertStore(master_home, "Root").key_path(thumbprint)
    key.chmod(0o644)
    text = only(run_doctor(master_home, probe=False), "master.key-access")
    assert "mode 0644" in text and f"chmod 600 {key}" in text


def test_master_address_host_not_in_the_certificate(master_home: Path) -> None:
    set_setting(master_home, "master", "MasterAddress", f"https://master.example.com:{PORT}")
    text = only(run_doctor(master_home, probe=False), "master.address")
    assert "'master.example.com'" in text and "127.0.0.1" in text


@pytest.mark.parametrize(("days", "label", "severity"), [(20, "30d", "warning"), (5, "7d", "warning")])
def test_expiry_warnings(master_home: Path, days: int, label: str, severity: str) -> None:
    thumbprint = load_master_settings(master_home).ssl_cert_thumbprint
    not_after = CertStore(master_home, "Root").info(thumbprint).not_after
    report = run_doctor(master_home, probe=False, now=not_after - timedelta(days=days, hours=1))
    text = only(report, "master.expiry")
    assert text.startswith(severity) and f"expires in {days} days" in text and f"({label} warning)" in text
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1


def test_expired_master_certificate_is_an_error(master_home: Path) -> None:
    thumbprint = load_master_settings(master_home).ssl_cert_thumbprint
    not_after = CertStore(master_home, "Root").info(thumbprint).not_after
    report = run_doctor(master_home, probe=False, now=not_after + timedelta(days=2))
    assert "expired 2 days ago" in errors(report)["master.expiry"]


def test_catalog_not_migrated(master_home: Path) -> None:
    import sqlite3

    with sqlite3.connect(master_home / "catalog.db") as conn:
        conn.execute("DELETE FROM alembic_version")
    text = only(run_doctor(master_home, probe=False), "master.catalog")
    assert "not migrated" in text and "packfleet master run" in text


def test_admin_certificate_not_trusted_in_root(master_home: Path) -> None:
    from packfleet.config import load_manager_settings

    admin = load_manager_settings(master_home).admin_cert_thumbprint
    CertStore(master_home, "Root").delete(admin)
    text = only(run_doctor(master_home, probe=False), "master.admin")
    assert admin in text and "Root" in text


def test_master_certificate_not_in_the_workers_root(worker_home: Path) -> None:
    pin = load_worker_settings(worker_home).master_https_cert_thumbprint
    CertStore(worker_home, "Root").delete(pin)
    text = only(run_doctor(worker_home, probe=False), "worker.master-pin")
    assert text.startswith("error: cert not in Root") and pin in text
    assert "packfleet cert import master.cer --store Root" in text


def test_wrong_host(worker_home: Path) -> None:
    set_setting(worker_home, "worker", "MasterEndpoint", f"https://localhost:{PORT}")
    text = only(run_doctor(worker_home, probe=False), "worker.master-host")
    assert text.startswith("error: wrong host") and "'localhost'" in text and "127.0.0.1" in text
    assert f"MasterEndpoint https://127.0.0.1:{PORT}" in text


def test_worker_certificate_missing_from_its_store(worker_home: Path) -> None:
    own = load_worker_settings(worker_home).worker_https_cert_thumbprint
    CertStore(worker_home, "My").delete(own)
    text = only(run_doctor(worker_home, probe=False), "worker.certificate")
    assert own in text and "WorkerHttpsCertThumbprint" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to root and to another account needs root")
def test_key_not_readable_by_the_service_account_then_granted(worker_home: Path) -> None:
    # The seed's winhttpcertcfg step skipped: the key belongs to root (0600), the unit runs as nobody.
    own = load_worker_settings(worker_home).worker_https_cert_thumbprint
    store = CertStore(worker_home, "My")
    os.chown(store.key_path(own), 0, 0)
    store.key_path(own).chmod(0o600)
    unit = worker_home / "packfleet-worker.service"
    unit.write_text(render_unit(worker_home, user="nobody"))
    text = only(run_doctor(worker_home, probe=False), "worker.key-access")
    assert "'nobody'" in text and own in text and str(unit) in text
    assert f"packfleet cert grant {own} --store My --account nobody" in text

    # The fix it names works, on a private home too: the grant lets the account's group traverse it.
    store.grant(own, "nobody")
    report = run_doctor(worker_home, probe=False)
    assert "worker.key-access" not in errors(report)
    assert store.key_path(own).stat().st_uid == pwd.getpwnam("nobody").pw_uid


def test_a_home_can_be_master_and_worker(master_home: Path, tmp_path: Path) -> None:
    init_worker(
        master_home,
        master_url=f"https://127.0.0.1:{PORT}",
        master_cert=master_home / "master.cer",
        name="local",
        ip="127.0.0.1",
    )
    report = run_doctor(master_home, probe=False)
    assert report.roles == ["master", "worker"]
    assert report.errors == []


def test_cli_json_and_exit_status(
    master_home: Path, worker_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert get_binding(master_home, f"0.0.0.0:{PORT}") is not None
    assert main(["--home", str(master_home), "doctor", "--offline", "--json"]) == 0
    findings = json.loads(capsys.readouterr().out)
    assert {f["severity"] for f in findings} == {"ok"}
    assert {"check", "severity", "message", "fix"} == set(findings[0])
    CertStore(worker_home, "Root").delete(load_worker_settings(worker_home).master_https_cert_thumbprint)
    assert main(["--home", str(worker_home), "doctor", "--offline"]) == 1
    assert main(["--home", str(master_home), "doctor", "--offline"]) == 0


def test_now_defaults_to_the_current_time(master_home: Path) -> None:
    report = run_doctor(master_home, probe=False, now=datetime.now(UTC))
    assert report.exit_code() == 0


def test_the_master_names_this_hosts_names_its_certificate_does_not_cover(master_home: Path) -> None:
    [names] = [f for f in run_doctor(master_home, probe=False).findings if f.check == "master.names"]
    assert names.severity == "ok"
    assert socket.gethostname() in names.message and "does not cover" in names.message


def test_every_master_of_a_worker_is_checked_against_the_certificate(worker_home: Path) -> None:
    first = load_worker_settings(worker_home).master_endpoint
    set_setting(worker_home, "worker", "MasterEndpoint", f"{first},https://127.0.0.9:{PORT}")
    text = only(run_doctor(worker_home, probe=False), "worker.master-host")
    assert text.startswith("error:") and "'127.0.0.9'" in text
    checked = [f for f in run_doctor(worker_home, probe=False).findings if f.check == "worker.master-host"]
    assert [f.severity for f in checked] == ["ok", "error"]
