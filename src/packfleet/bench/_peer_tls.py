"""Mutual-TLS material for the peers of ``bench-peers`` (Redis, Celery, Dask).

The peers get the same kind of certificates packfleet uses (ECDSA P-256, made by
:func:`packfleet.pki.create_self_signed`): one for the servers (Redis, the Dask scheduler and
workers) and one for the clients (the bench, the Celery worker). Each side trusts exactly the
other's certificate (``ca.pem`` holds both), and every server requires a client certificate, so
the peers pay for the same handshakes and encryption as packfleet's mutual TLS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from packfleet.pki import Credential, create_self_signed


@dataclass(frozen=True)
class PeerTls:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.folder / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.folder / "client.key"


def _write(cred: Credential, cert: Path, key: Path) -> None:
    cert.write_bytes(cred.cert_pem())
    # Keys are 0600 from the first byte: created with that mode, never chmod-ed afterwards.
    with os.fdopen(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
        file.write(cred.key_pem())


def make_peer_tls(folder: Path) -> PeerTls:
    """Write a server and a client credential, and the bundle each side trusts, under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    tls = PeerTls(folder)
    server = create_self_signed(["127.0.0.1", "localhost"])
    client = create_self_signed(["bench-client"])
    _write(server, tls.server_cert, tls.server_key)
    _write(client, tls.client_cert, tls.client_key)
    tls.ca.write_bytes(server.cert_pem() + client.cert_pem())
    return tls
