"""Helpers of the transport security tests: a master in-process with chosen settings, and blocking
TLS clients that run in a thread beside it (``ssl``'s ``session=`` argument exists only there)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from master.support import MasterHome, build_master_home, write_manager_settings
from packfleet.config import load_master_settings, save_master_settings
from packfleet.master import MasterServer
from packfleet.pki import CertStore, Credential


def set_master_settings(home: Path, **changes: Any) -> None:
    """Rewrite MasterSettings.config with ``changes`` (attribute names of MasterSettings)."""
    save_master_settings(home, dataclasses.replace(load_master_settings(home), **changes))


@contextlib.asynccontextmanager
async def running_master(root: Path, **settings: Any) -> AsyncIterator[tuple[MasterHome, MasterServer]]:
    """A master home under ``root`` with ``settings`` applied, served on an ephemeral loopback port."""
    mh = build_master_home(root)
    if settings:
        set_master_settings(mh.home, **settings)
    # watch_interval=0: the tests call reload() or watch_once() themselves, so nothing races them.
    server = MasterServer(mh.home, host="127.0.0.1", port=0, watch_interval=0)
    await server.start()
    write_manager_settings(mh, server)
    try:
        yield mh, server
    finally:
        await server.stop()


def key_files(cred: Credential, folder: Path) -> tuple[Path, Path]:
    """``cred``'s certificate and key as files (a My store under ``folder``)."""
    store = CertStore(folder / cred.thumbprint, "My")
    if not store.cert_path(cred.thumbprint).exists():
        store.add(cred)
    return store.cert_path(cred.thumbprint), store.key_path(cred.thumbprint)


def plain_client(
    mh: MasterHome,
    *,
    cert: tuple[Path, Path] | None = None,
    maximum: ssl.TLSVersion | None = None,
    minimum: ssl.TLSVersion | None = None,
    group: str | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A client context built with ``ssl`` alone (not packfleet's policy), to offer what a test wants."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=mh.master_pem)
    if maximum is not None:
        ctx.maximum_version = maximum
    if minimum is not None:
        ctx.minimum_version = minimum
    if group is not None:
        ctx.set_ecdh_curve(group)  # with OpenSSL 3: SSL_CTX_set1_groups with this one group
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


@dataclass
class Handshake:
    version: str | None
    reused: bool
    session: ssl.SSLSession | None
    status_line: bytes


def _get_health(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> Handshake:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls:
            tls.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
            result = Handshake(tls.version(), tls.session_reused, tls.session, data.split(b"\r\n")[0])
            # A clean close_notify: OpenSSL drops a session from its cache when a connection ends
            # without one, which would hide a cache that is on.
            with contextlib.suppress(OSError, ssl.SSLError):
                tls.unwrap()
            return result


async def get_health(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> Handshake:
    """Handshake with the master and GET the health route in a thread; raises ssl.SSLError if refused."""
    return await asyncio.to_thread(_get_health, port, ctx, session)


async def refused(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> bool:
    """True when the master refuses the handshake (or closes before answering)."""
    try:
        answer = await get_health(port, ctx, session)
    except (ssl.SSLError, ConnectionError):
        return True
    return not answer.status_line.startswith(b"HTTP/1.1 200")
