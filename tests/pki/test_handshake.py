"""The key proof: a certificate from ``create_self_signed`` is a pinned trust anchor for mutual TLS.

A real TLS 1.3 server and client (Python ``ssl``, i.e. OpenSSL 3) on 127.0.0.1, port 0, each
trusting exactly the other's certificate, as a master and a worker do.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from packfleet.pki import Credential, create_self_signed

TIMEOUT = 10.0


def write_chain(cred: Credential, folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    cert.write_bytes(cred.cert_pem())
    key.write_bytes(cred.key_pem())
    return cert, key


def server_context(server: Credential, trusted_client: Credential, folder: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(*write_chain(server, folder, "server"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=trusted_client.cert_pem().decode())
    return context


def client_context(client: Credential, trusted_server: Credential, folder: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    context.load_cert_chain(*write_chain(client, folder, "client"))
    context.load_verify_locations(cadata=trusted_server.cert_pem().decode())
    return context


@dataclass
class ServerResult:
    peer_der: bytes | None = None
    version: str | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def serve_once(listener: socket.socket, context: ssl.SSLContext, result: ServerResult) -> None:
    """Accept one connection, handshake, echo one message; record what happened."""
    try:
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT)
        with context.wrap_socket(conn, server_side=True) as tls:
            result.peer_der = tls.getpeercert(binary_form=True)
            result.version = tls.version()
            tls.sendall(tls.recv(64))
    except (OSError, ssl.SSLError) as exc:
        result.error = exc
    finally:
        result.done.set()


@dataclass
class Outcome:
    server: ServerResult
    echoed: bytes | None = None
    client_error: BaseException | None = None


def exchange(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> Outcome:
    """One connection from client to server on loopback, bounded by ``TIMEOUT`` on both sides."""
    outcome = Outcome(ServerResult())
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]
        thread = threading.Thread(target=serve_once, args=(listener, server_ctx, outcome.server), daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
                client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                tls.sendall(b"ping")
                outcome.echoed = tls.recv(64)
        except (OSError, ssl.SSLError) as exc:
            outcome.client_error = exc
        finally:
            thread.join(TIMEOUT)
    assert outcome.server.done.is_set(), "the server thread did not finish in time"
    return outcome


@pytest.fixture(scope="module")
def master() -> Credential:
    return create_self_signed(["master.example", "127.0.0.1"])


@pytest.fixture(scope="module")
def worker() -> Credential:
    return create_self_signed(["worker1", "10.0.0.7"])


def test_mutual_tls_with_pinned_self_signed_certificates(
    master: Credential, worker: Credential, tmp_path: Path
) -> None:
    outcome = exchange(server_context(master, worker, tmp_path), client_context(worker, master, tmp_path))
    assert outcome.client_error is None and outcome.server.error is None
    assert outcome.echoed == b"ping"
    assert outcome.server.version == "TLSv1.3"
    assert outcome.server.peer_der == worker.cert_der()


def test_rsa_certificates_work_too(tmp_path: Path) -> None:
    server = create_self_signed(["127.0.0.1"], key_type="rsa-2048")
    client = create_self_signed(["worker-rsa"], key_type="rsa-2048")
    outcome = exchange(server_context(server, client, tmp_path), client_context(client, server, tmp_path))
    assert outcome.client_error is None and outcome.echoed == b"ping"


def test_a_client_with_another_certificate_is_refused(
    master: Credential, worker: Credential, tmp_path: Path
) -> None:
    impostor = create_self_signed(["worker1", "10.0.0.7"])  # same names, another key
    outcome = exchange(server_context(master, worker, tmp_path), client_context(impostor, master, tmp_path))
    assert isinstance(outcome.server.error, ssl.SSLCertVerificationError)
    assert "certificate verify failed" in str(outcome.server.error)
    assert outcome.server.peer_der is None
    # In TLS 1.3 the client finishes first; the server's alert reaches it on its next read.
    assert outcome.echoed is None and outcome.client_error is not None


def test_a_server_without_the_host_in_its_names_fails_hostname_check(
    worker: Credential, tmp_path: Path
) -> None:
    elsewhere = create_self_signed(["master.example", "10.9.9.9"])  # not 127.0.0.1
    outcome = exchange(
        server_context(elsewhere, worker, tmp_path), client_context(worker, elsewhere, tmp_path)
    )
    error = outcome.client_error
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert error.verify_code == 64  # X509_V_ERR_IP_ADDRESS_MISMATCH
    assert "IP address mismatch" in error.verify_message
    assert outcome.server.error is not None and outcome.server.peer_der is None
