"""The rules on which client certificates a master accepts read the same through every consumer.

Each test breaks a real master home one way and compares, message for message and fix for fix, what
the loader raises (the manager's client, the master's start), what ``doctor`` lists, what a refused
client is told and what the master logs, with the finding the rule in :mod:`packfleet.trust` returns.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from packfleet import trust
from packfleet.config import load_manager_settings
from packfleet.doctor import run_doctor
from packfleet.errors import PackfleetError, PkiError, SettingsError, TlsError
from packfleet.manager import ManagerClient, RemoteOptions
from packfleet.master import MasterServer
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.transport import explain_client_failure, explain_handshake_failure
from trust.support import PORT, doctor_says, refusal, said

UNTRUSTED = 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: a client certificate not in Root
EXPIRED = 10  # X509_V_ERR_CERT_HAS_EXPIRED


def admin_of(home: Path) -> str:
    return load_manager_settings(home).admin_cert_thumbprint


async def test_an_admin_certificate_the_master_does_not_trust_reads_the_same_everywhere(
    master_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    admin = admin_of(master_home)
    CertStore(master_home, "Root").delete(admin)
    rule = trust.untrusted_client("manager", admin)
    assert doctor_says(master_home, "master.admin") == (rule.message, rule.fix)

    # A real handshake: the master refuses the certificate, and both sides say why in the rule's words.
    caplog.set_level(logging.WARNING, logger="packfleet.master.connections")
    server = MasterServer(master_home, host="127.0.0.1", port=0, watch_interval=0)
    await server.start()
    try:
        options = RemoteOptions(master=f"https://127.0.0.1:{server.port}")
        async with ManagerClient.connect(master_home, options, timeout=15) as client:
            with pytest.raises(TlsError) as refused:
                await client.list_workers()
        # The master's handshake task logs on this event loop; the client may see the close first.
        for _ in range(300):
            logged = [r.getMessage() for r in caplog.records if "TLS handshake with" in r.getMessage()]
            if logged:
                break
            await asyncio.sleep(0.05)
    finally:
        await server.stop()
    assert refused.value.fix == rule.fix
    assert admin in refused.value.message
    master_side = trust.untrusted_client(None, None)
    assert logged and all(f"{master_side.message} (fix: {master_side.fix})" in line for line in logged)
    assert f"presented certificate {admin}" in logged[0]

    # The alert a TLS 1.2 master sends instead is explained with the same finding.
    alert = explain_client_failure(
        ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"),
        role="manager",
        host="127.0.0.1",
        port=PORT,
        pins=[],
        own_thumbprint=admin,
    )
    assert alert.message.endswith(f"refused this manager's certificate: {rule.message}")
    assert alert.fix == rule.fix


def test_the_master_logs_a_refused_client_certificate_in_the_rules_words() -> None:
    untrusted = trust.untrusted_client(None, None)
    expired = trust.refused_as_expired("client", None)
    assert explain_handshake_failure(refusal(UNTRUSTED)) == f"{untrusted.message} (fix: {untrusted.fix})"
    assert explain_handshake_failure(refusal(EXPIRED)) == f"{expired.message} (fix: {expired.fix})"
    # The master cannot tell whose certificate it refused: the fixes name a worker's and an admin's.
    assert untrusted.fix is not None and expired.fix is not None
    assert trust.TRUST_WORKER in untrusted.fix and "packfleet cert import admin.cer" in untrusted.fix
    assert trust.READMIT_FIX in expired.fix and trust.NEW_ADMIN_FIX in expired.fix


def test_an_admin_certificate_without_its_key_stops_the_manager_as_doctor_says(master_home: Path) -> None:
    admin = admin_of(master_home)
    CertStore(master_home, "My").key_path(admin).unlink()
    with pytest.raises(SettingsError) as loaded:
        ManagerClient.connect(master_home, RemoteOptions(master="https://127.0.0.1:1"))
    assert said(loaded.value) == doctor_says(master_home, "master.admin")
    assert "has no private key" in loaded.value.message
    assert loaded.value.fix == "packfleet cert import admin.pfx --password P --store My"


def test_an_admin_certificate_missing_from_my_stops_the_manager_as_doctor_says(master_home: Path) -> None:
    CertStore(master_home, "My").delete(admin_of(master_home))
    with pytest.raises(PackfleetError) as loaded:
        ManagerClient.connect(master_home, RemoteOptions(master="https://127.0.0.1:1"))
    assert said(loaded.value) == doctor_says(master_home, "master.admin")
    assert loaded.value.fix == trust.NEW_ADMIN_FIX


async def test_a_root_certificate_never_accepted_reads_the_same_in_the_masters_log_and_doctor(
    master_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ended = create_self_signed(["old-client"], not_before=datetime.now(UTC) - timedelta(days=10), days=1)
    CertStore(master_home, "Root").add(Credential(ended.certificate))
    [rule] = [
        f
        for f in trust.root_store_rule(master_home, now=datetime.now(UTC), serving=None)
        if ended.thumbprint in f.message
    ]
    caplog.set_level(logging.WARNING, logger="packfleet.master")
    server = MasterServer(master_home, host="127.0.0.1", port=0, watch_interval=0)
    await server.start()
    await server.stop()

    assert rule.severity == "warning" and rule.fix == f"packfleet cert delete --store Root {ended.thumbprint}"
    assert f"{rule.message}; fix: {rule.fix}" in [r.getMessage() for r in caplog.records]
    listed = run_doctor(master_home, probe=False).by_check("master.root-store")
    assert (rule.message, rule.fix) in [(f.message, f.fix) for f in listed]


def test_a_certificate_without_its_purpose_is_mended_the_same_on_both_sides() -> None:
    purpose = 26  # X509_V_ERR_INVALID_PURPOSE
    told = explain_client_failure(
        refusal(purpose), role="worker", host="h", port=1, pins=[], own_thumbprint=None
    )
    assert told.fix == trust.RECREATE_CERT
    assert explain_handshake_failure(refusal(purpose)).endswith(f"({trust.RECREATE_CERT})")


def test_a_manager_pin_missing_from_root_stops_the_manager_as_doctor_says(master_home: Path) -> None:
    pin = load_manager_settings(master_home).master_https_cert_thumbprint
    CertStore(master_home, "Root").delete(pin)
    with pytest.raises(PkiError) as loaded:
        ManagerClient.connect(master_home, RemoteOptions(master="https://127.0.0.1:1"))
    assert said(loaded.value) == doctor_says(master_home, "manager.master-pin")
    assert loaded.value.message.startswith(f"cert not in Root: the pinned master certificate {pin}")
    assert loaded.value.fix == trust.IMPORT_MASTER
