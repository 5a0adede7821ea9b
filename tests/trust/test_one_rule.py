"""One rule, one place: each trust rule reads the same through every consumer that meets it.

The start-up loaders raise a rule's first error, ``doctor`` lists its findings, and the TLS failure
explainer quotes it. Each test breaks a real home (made by ``master init`` / ``worker init``) one way
and compares what each consumer says, word for word and fix for fix.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from packfleet import transport, trust
from packfleet.cli import main
from packfleet.config import delete_binding, load_worker_settings, set_setting
from packfleet.errors import CertificateExpired, SettingsError, TlsError
from packfleet.master import MasterServer
from packfleet.pki import CertStore, create_self_signed
from packfleet.transport import PeerCertificate, explain_client_failure, fetch_server_certificate
from packfleet.trust import READMIT_FIX, ROTATE_MASTER
from packfleet.worker import load_identity
from packfleet.worker._renewal import check_not_expired
from trust.support import PORT, bind_another_certificate, doctor_says, refusal, said

HOST_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH
EXPIRED = 10  # X509_V_ERR_CERT_HAS_EXPIRED


def pinned_peer(worker_home: Path) -> PeerCertificate:
    """The certificate the master presents when it serves the one this worker pins."""
    pin = load_worker_settings(worker_home).master_https_cert_thumbprint
    der = CertStore(worker_home, "Root").get(pin).certificate.public_bytes(Encoding.DER)
    return PeerCertificate.from_der(der)


def explained_to_worker(
    worker_home: Path,
    exc: BaseException,
    *,
    host: str = "127.0.0.1",
    port: int = PORT,
    peer: PeerCertificate | None = None,
    now: datetime | None = None,
) -> TlsError:
    """What the explainer tells this worker (its pins, its certificate) about a failed connection."""
    settings = load_worker_settings(worker_home)
    return explain_client_failure(
        exc,
        role="worker",
        host=host,
        port=port,
        pins=[settings.master_https_cert_thumbprint],
        own_thumbprint=settings.worker_https_cert_thumbprint,
        peer=peer,
        now=now,
    )


def test_wrong_host_reads_the_same_in_the_loader_doctor_and_explainer(worker_home: Path) -> None:
    set_setting(worker_home, "worker", "MasterEndpoint", f"https://localhost:{PORT}")

    with pytest.raises(SettingsError) as loaded:
        load_identity(worker_home)
    explained = explained_to_worker(
        worker_home, refusal(HOST_MISMATCH), host="localhost", peer=pinned_peer(worker_home)
    )

    assert said(loaded.value) == doctor_says(worker_home, "worker.master-host") == said(explained)
    message, fix = said(explained)
    assert message.startswith("wrong host: the MasterEndpoint host 'localhost'")
    assert fix is not None and f"MasterEndpoint https://127.0.0.1:{PORT}" in fix


def test_an_expired_pinned_master_certificate_reads_the_same_everywhere(worker_home: Path) -> None:
    settings = load_worker_settings(worker_home)
    master = CertStore(worker_home, "Root").info(settings.master_https_cert_thumbprint)
    # Replace the worker's own certificate with one that outlives the master's, so the pinned
    # master certificate is the first thing wrong at that moment.
    lasting = create_self_signed(["worker1"], days=3650)
    CertStore(worker_home, "My").add(lasting)
    set_setting(worker_home, "worker", "WorkerHttpsCertThumbprint", lasting.thumbprint)
    later = master.not_after + timedelta(days=2)

    with pytest.raises(CertificateExpired) as loaded:
        load_identity(worker_home, now=later)
    explained = explained_to_worker(worker_home, refusal(EXPIRED), peer=pinned_peer(worker_home), now=later)

    assert (
        said(loaded.value) == doctor_says(worker_home, "worker.master-expiry", now=later) == said(explained)
    )
    assert "expired 2 days ago" in said(explained)[0]
    assert said(explained)[1] == ROTATE_MASTER


def test_an_expired_worker_certificate_reads_the_same_everywhere(worker_home: Path) -> None:
    settings = load_worker_settings(worker_home)
    own = CertStore(worker_home, "My").info(settings.worker_https_cert_thumbprint)
    later = own.not_after + timedelta(days=2)

    with pytest.raises(CertificateExpired) as loaded:
        load_identity(worker_home, now=later)
    with pytest.raises(CertificateExpired) as running:
        check_not_expired(own, later)  # what a running agent logs when its certificate runs out
    # The master's alert carries no date: the explainer names the certificate, the reason and the fix.
    explained = explained_to_worker(
        worker_home, ssl.SSLError(1, "[SSL: SSLV3_ALERT_CERTIFICATE_EXPIRED] sslv3 alert certificate expired")
    )

    expected = doctor_says(worker_home, "worker.expiry", now=later)
    assert said(loaded.value) == said(running.value) == expected
    message, fix = said(explained)
    why = "the master refuses it during the TLS handshake, so it cannot be renewed over the old one"
    assert expected[0].endswith(why) and message.endswith(why)
    assert own.thumbprint in message and "has expired" in message
    assert fix == expected[1] == READMIT_FIX


async def test_binding_and_setting_apart_read_the_same_at_start_in_doctor_and_the_cli_note(
    master_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other, appid = bind_another_certificate(master_home)

    with pytest.raises(SettingsError) as started:
        await MasterServer(master_home, host="127.0.0.1", port=0).start()
    # The CLI reminds at the step of the seed that sets them apart: a setting of the master.
    assert main(["--home", str(master_home), "settings", "set", "master", "PortNumber", str(PORT)]) == 0

    message, fix = said(started.value)
    assert (message, fix) == doctor_says(master_home, "master.binding")
    assert f"note: {message}\n  fix: {fix}\n" in capsys.readouterr().err
    assert other in message
    assert fix is not None and appid in fix


def test_a_missing_binding_reads_the_same_in_doctor_and_the_cli_note(
    master_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    delete_binding(master_home, f"0.0.0.0:{PORT}")
    assert main(["--home", str(master_home), "settings", "set", "master", "PortNumber", str(PORT)]) == 0
    message, fix = doctor_says(master_home, "master.binding")
    assert f"note: {message}\n  fix: {fix}\n" in capsys.readouterr().err
    assert fix is not None and fix.startswith(f"packfleet binding add --port {PORT}")


@pytest.fixture
def impostor() -> Iterator[tuple[str, int, str]]:
    """A TLS server on loopback that presents a certificate no worker pins: (host, port, thumbprint)."""
    cred = create_self_signed(["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert.write_bytes(cred.cert_pem())
        key.write_bytes(cred.key_pem())
        context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                raw, _addr = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(raw, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", listener.getsockname()[1], cred.thumbprint
    finally:
        stopping.set()
        thread.join(5)
        listener.close()


def test_a_served_certificate_that_is_not_pinned_reads_the_same_in_doctor_and_explainer(
    worker_home: Path, impostor: tuple[str, int, str]
) -> None:
    host, port, served = impostor
    set_setting(worker_home, "worker", "MasterEndpoint", f"https://{host}:{port}")
    explained = explained_to_worker(
        worker_home,
        refusal(20),  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: not in the pinned trust
        host=host,
        port=port,
        peer=fetch_server_certificate(host, port),
    )

    assert doctor_says(worker_home, "worker.master-served", probe=True) == said(explained)
    message, fix = said(explained)
    assert message.startswith(
        f"thumbprint mismatch: the master at {host}:{port} presented certificate {served}"
    )
    assert fix is not None and f"MasterHttpsCertThumbprint {served}" in fix


def test_the_transport_gives_the_fixes_the_trust_rules_own() -> None:
    assert transport.READMIT_FIX is trust.READMIT_FIX
    assert transport.NEW_ADMIN_FIX is trust.NEW_ADMIN_FIX
    # Without the presented certificate the explainer still gives the rotation as the fix.
    explained = explain_client_failure(
        refusal(EXPIRED), role="worker", host="h", port=1, pins=[], own_thumbprint=None
    )
    assert explained.fix == trust.ROTATE_MASTER
