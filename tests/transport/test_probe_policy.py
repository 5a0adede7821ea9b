"""The probe context (which carries ``worker join``'s secret once the pin matched) is hardened too."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from packfleet.pki import CertStore, create_self_signed
from packfleet.transport import fetch_server_certificate, probe_context

HOST = "127.0.0.1"


def test_probe_context_is_tls13_without_compression_or_tickets() -> None:
    ctx = probe_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_TICKET
    assert (ctx.check_hostname, ctx.verify_mode) == (False, ssl.CERT_NONE)  # the caller checks the pin


def test_probe_context_on_tls12_offers_forward_secret_aead_suites_only() -> None:
    ctx = probe_context(minimum_version="1.2")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    assert all(c["aead"] and c["kea"] == "kx-ecdhe" for c in tls12), [c["name"] for c in tls12]


@pytest.fixture
def tls12_only_server(tmp_path: Path) -> Iterator[int]:
    """A server that speaks at most TLS 1.2 with any cipher OpenSSL allows; one connection."""
    cred = create_self_signed([HOST])
    store = CertStore(tmp_path, "My")
    store.add(cred)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(store.cert_path(cred.thumbprint), store.key_path(cred.thumbprint))
    listener = socket.create_server((HOST, 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.settimeout(10)
        try:
            with context.wrap_socket(conn, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
        thread.join(10)


def test_the_probe_does_not_fall_back_to_tls12(tls12_only_server: int) -> None:
    with pytest.raises(ssl.SSLError):
        fetch_server_certificate(HOST, tls12_only_server, timeout=5)
