"""The TLS policy holds on every context and across reloads: groups, suites, no resumption, Root edits."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from pathlib import Path

import pytest

from packfleet.manager import ManagerClient
from packfleet.pki import CertStore, create_self_signed
from packfleet.transport import client_context, master_server_context, probe_context
from packfleet.transport._native import session_cache_mode
from security._tls_support import (
    get_health,
    key_files,
    plain_client,
    refused,
    running_master,
    set_master_settings,
)

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3


# --- key exchange groups --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [TLS12, TLS13])
@pytest.mark.parametrize("group", ["X448", "secp521r1"])
async def test_the_master_refuses_a_client_that_offers_only_x448_or_p521(
    tmp_path: Path, group: str, version: ssl.TLSVersion
) -> None:
    async with running_master(tmp_path, tls_minimum_version="1.2") as (mh, server):
        ctx = plain_client(mh, group=group, minimum=version, maximum=version)
        # asyncio closes a failed server handshake without flushing OpenSSL's alert: the client
        # sees either the handshake_failure alert or an EOF in the middle of its handshake.
        with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE|UNEXPECTED_EOF"):
            await get_health(server.port, ctx)
        # The same client with one of the three groups gets through: the group was the reason.
        # (P-256: in TLS 1.2 the client's groups must also cover the curve of the master's ECDSA key.)
        fine = plain_client(mh, group="prime256v1", minimum=version, maximum=version)
        assert (await get_health(server.port, fine)).status_line.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("group", ["X25519", "prime256v1", "secp384r1"])
async def test_the_master_accepts_each_of_the_three_groups(tmp_path: Path, group: str) -> None:
    async with running_master(tmp_path) as (mh, server):
        answer = await get_health(server.port, plain_client(mh, group=group))
        assert answer.status_line.startswith(b"HTTP/1.1 200")
        assert answer.version == "TLSv1.3"


def _one_group_server(cert: Path, key: str | Path, group: str) -> tuple[int, threading.Thread, list[str]]:
    """A bare ssl server that accepts only ``group``, for checking what packfleet's clients offer."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_ecdh_curve(group)
    listener = socket.create_server(("127.0.0.1", 0))
    outcome: list[str] = []

    def serve() -> None:
        with listener:
            listener.settimeout(20)
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    outcome.append(f"ok {tls.version()}")
            except (ssl.SSLError, OSError) as exc:
                outcome.append(f"refused {exc}")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, outcome


@pytest.mark.parametrize(("group", "accepted"), [("X448", False), ("secp521r1", False), ("secp384r1", True)])
@pytest.mark.parametrize("kind", ["client", "probe"])
async def test_packfleet_clients_offer_only_the_three_groups(
    tmp_path: Path, group: str, accepted: bool, kind: str
) -> None:
    server_cred = create_self_signed(["127.0.0.1"])
    cert, key = key_files(server_cred, tmp_path)
    ctx = client_context(None, None, server_cred.cert_pem().decode()) if kind == "client" else probe_context()
    port, thread, outcome = _one_group_server(cert, key, group)

    def connect() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return True
        except ssl.SSLError:
            return False

    assert await asyncio.to_thread(connect) is accepted
    thread.join(20)
    assert outcome and outcome[0].startswith("ok" if accepted else "refused")


# --- cipher suites ---------------------------------------------------------------------------------


def test_every_context_carries_the_forward_secret_aead_suites_whatever_its_minimum(tmp_path: Path) -> None:
    cred = create_self_signed(["127.0.0.1"])
    cert, key = key_files(cred, tmp_path)
    contexts = [
        master_server_context(cert, key, "", minimum_version="1.3"),
        master_server_context(cert, key, "", minimum_version="1.2"),
        client_context(None, None, cred.cert_pem().decode(), minimum_version="1.3"),
        probe_context(minimum_version="1.3"),
    ]
    for ctx in contexts:
        tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
        assert tls12, "no TLS 1.2 suites at all"
        for cipher in tls12:
            assert cipher["kea"] == "kx-ecdhe" and cipher["aead"], cipher["name"]


async def test_a_cbc_only_client_is_refused_after_a_reload_lowers_the_minimum(tmp_path: Path) -> None:
    async with running_master(tmp_path) as (mh, server):
        set_master_settings(mh.home, tls_minimum_version="1.2")
        await server.reload()
        good = plain_client(mh, maximum=TLS12)
        assert (await get_health(server.port, good)).version == "TLSv1.2"
        cbc = plain_client(mh, maximum=TLS12, ciphers="ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA")
        assert await refused(server.port, cbc)


# --- TlsMinimumVersion across reload ---------------------------------------------------------------


async def test_a_reload_changes_the_minimum_version_on_the_next_handshake(tmp_path: Path) -> None:
    async with running_master(tmp_path) as (mh, server):
        tls12_client = plain_client(mh, maximum=TLS12)
        assert await refused(server.port, tls12_client)

        set_master_settings(mh.home, tls_minimum_version="1.2")
        await server.reload()
        assert (await get_health(server.port, tls12_client)).version == "TLSv1.2"

        set_master_settings(mh.home, tls_minimum_version="1.3")
        await server.reload()
        assert await refused(server.port, tls12_client)
        assert (await get_health(server.port, plain_client(mh))).version == "TLSv1.3"


async def test_the_file_watch_applies_a_minimum_version_edit(tmp_path: Path) -> None:
    async with running_master(tmp_path, tls_minimum_version="1.2") as (mh, server):
        tls12_client = plain_client(mh, maximum=TLS12)
        assert (await get_health(server.port, tls12_client)).version == "TLSv1.2"
        set_master_settings(mh.home, tls_minimum_version="1.3")
        await server.watch_once()
        assert await refused(server.port, tls12_client)


# --- no resumption ---------------------------------------------------------------------------------


def test_server_contexts_have_the_session_cache_off(tmp_path: Path) -> None:
    cred = create_self_signed(["127.0.0.1"])
    cert, key = key_files(cred, tmp_path)
    for version in ("1.2", "1.3"):
        assert session_cache_mode(master_server_context(cert, key, "", minimum_version=version)) == 0
    # What the policy turns off: OpenSSL's default for a server (SSL_SESS_CACHE_SERVER).
    assert session_cache_mode(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)) == 2


async def test_a_tls12_client_cannot_resume_and_a_removed_certificate_is_refused_at_once(
    tmp_path: Path,
) -> None:
    async with running_master(tmp_path, tls_minimum_version="1.2") as (mh, server):
        ctx = plain_client(mh, cert=key_files(mh.worker, tmp_path / "clients"), maximum=TLS12)
        first = await get_health(server.port, ctx)
        assert first.version == "TLSv1.2" and first.status_line.startswith(b"HTTP/1.1 200")
        assert first.session is not None

        second = await get_health(server.port, ctx, session=first.session)
        assert second.status_line.startswith(b"HTTP/1.1 200")
        assert second.reused is False

        CertStore(mh.home, "Root").delete(mh.worker.thumbprint)  # `cert delete --store Root`
        await server.reload()
        assert await refused(server.port, ctx, session=first.session)


async def test_a_tls12_session_would_resume_without_the_policy(tmp_path: Path) -> None:
    """The control for the test above: the same client resumes against a default server context."""
    cred = create_self_signed(["127.0.0.1"])
    cert, key = key_files(cred, tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.options |= ssl.OP_NO_TICKET
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            listener.settimeout(20)
            for _ in range(2):
                conn, _ = listener.accept()
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
                    tls.sendall(b"x")
                    tls.unwrap()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cadata=cred.cert_pem().decode())
    client.maximum_version = TLS12

    def once(session: ssl.SSLSession | None) -> tuple[bool, ssl.SSLSession | None]:
        with socket.create_connection(("127.0.0.1", listener.getsockname()[1]), timeout=20) as raw:
            with client.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls:
                tls.sendall(b"x")
                tls.recv(1)
                result = (tls.session_reused, tls.session)
                tls.unwrap()
                return result

    _, session = await asyncio.to_thread(once, None)
    reused, _ = await asyncio.to_thread(once, session)
    thread.join(20)
    assert reused is True


# --- Root store edits ---------------------------------------------------------------------------


async def test_a_root_certificate_added_by_the_api_and_deleted_by_hand_is_refused(tmp_path: Path) -> None:
    async with running_master(tmp_path) as (mh, server):
        newcomer = create_self_signed(["worker9", "127.0.0.1"])
        ctx = plain_client(mh, cert=key_files(newcomer, tmp_path / "clients"))
        assert await refused(server.port, ctx)

        async with ManagerClient.from_home(mh.home) as manager:
            await manager.add_worker(newcomer.cert_pem().decode())  # Root store + reload, at once
        assert not await refused(server.port, ctx)

        # By hand, before the watcher's next tick: the files are back to what the watcher last saw
        # itself, but not to what the last reload loaded.
        CertStore(mh.home, "Root").delete(newcomer.thumbprint)
        await server.watch_once()
        assert await refused(server.port, ctx)
