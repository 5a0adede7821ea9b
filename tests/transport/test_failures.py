"""How the transport fails: a body that is not JSON, a slow master, an endpoint from any setting.

Real TLS on 127.0.0.1 (port 0) with certificates made by ``create_self_signed``: an aiohttp server
with the master's context for the HTTP cases, a bare ``ssl`` socket for a master that never answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from packfleet.errors import ProtocolError, SettingsError, TlsError, TransportError
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.transport import (
    NEW_ADMIN_FIX,
    READMIT_FIX,
    MasterClient,
    PinnedConnection,
    client_context,
    explain_client_failure,
    master_server_context,
    parse_endpoint,
)
from packfleet.transport._explain import master_accepts_client_certificate
from packfleet.worker import readmit_fix

HOST = "127.0.0.1"
NOT_JSON = b"<html><body>502 Bad Gateway</body></html>"


@dataclass
class Pair:
    """A master identity and a client identity, each with its certificate and key files."""

    master: Credential
    client: Credential
    store: CertStore

    def files(self, cred: Credential) -> tuple[Path, Path]:
        return self.store.cert_path(cred.thumbprint), self.store.key_path(cred.thumbprint)

    def server_context(self) -> ssl.SSLContext:
        return master_server_context(*self.files(self.master), self.client.cert_pem().decode())

    def client_context(self) -> ssl.SSLContext:
        return client_context(*self.files(self.client), self.master.cert_pem().decode())

    def master_client(self, port: int, *, timeout: float = 10.0) -> MasterClient:
        return MasterClient(
            f"https://{HOST}:{port}",
            self.client_context(),
            role="worker",
            pins=[self.master.thumbprint],
            own_thumbprint=self.client.thumbprint,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    store = CertStore(tmp_path_factory.mktemp("transport"), "My")
    master, client = create_self_signed([HOST]), create_self_signed(["worker1", "127.0.0.2"])
    store.add(master)
    store.add(client)
    return Pair(master, client, store)


@pytest.fixture
async def server(pair: Pair) -> AsyncIterator[int]:
    """A master look-alike: /html answers 200 with a proxy's page, everything else sleeps."""
    release = asyncio.Event()

    async def html(_request: web.Request) -> web.Response:
        return web.Response(body=NOT_JSON, content_type="text/html")

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), timeout=10)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/html", html)
    app.router.add_route("*", "/{tail:.*}", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, ssl_context=pair.server_context())
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield int(port)
    finally:
        release.set()
        await runner.cleanup()


async def test_a_body_that_is_not_json_is_a_protocol_error_naming_the_route(pair: Pair, server: int) -> None:
    async with pair.master_client(server) as client:
        with pytest.raises(ProtocolError) as caught:
            await client.request("GET", "/html")
    assert isinstance(caught.value, TransportError)  # what every worker loop catches
    assert "GET /html" in caught.value.message
    assert f"{len(NOT_JSON)} bytes that are not JSON" in caught.value.message
    assert isinstance(caught.value.__cause__, ValueError)


async def test_the_pinned_join_connection_also_refuses_a_body_that_is_not_json(
    pair: Pair, server: int
) -> None:
    pin = hashlib.sha256(pair.master.cert_der()).hexdigest()

    def join() -> object:
        with PinnedConnection(f"https://{HOST}:{server}", pin, timeout=5) as conn:
            return conn.request_json("GET", "/html")

    with pytest.raises(ProtocolError, match="GET /html"):
        await asyncio.to_thread(join)


async def test_a_slow_master_is_a_timeout_not_a_refused_certificate(pair: Pair, server: int) -> None:
    async with pair.master_client(server, timeout=0.5) as client:
        with pytest.raises(TransportError) as caught:
            await client.request("GET", "/api/v1/health")
    assert not isinstance(caught.value, TlsError)
    assert (
        caught.value.message
        == f"the master at {HOST}:{server} did not answer GET /api/v1/health within 0.5 s"
    )


@pytest.fixture
def silent_master(pair: Pair) -> Iterator[int]:
    """A TLS server that completes handshakes and then never answers, until the test ends."""
    done = threading.Event()
    listener = socket.create_server((HOST, 0))
    context = pair.server_context()

    def serve() -> None:
        listener.settimeout(10)
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.settimeout(10)
        try:
            with context.wrap_socket(conn, server_side=True):
                done.wait(10)
        except (OSError, ssl.SSLError):
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        done.set()
        listener.close()
        thread.join(10)


def test_the_certificate_probe_says_unknown_when_the_master_is_slow(pair: Pair, silent_master: int) -> None:
    verdict = master_accepts_client_certificate(HOST, silent_master, pair.client_context(), timeout=0.5)
    assert verdict is None  # not False: a slow master says nothing about the certificate


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({}, "packfleet settings set worker MasterEndpoint https://MASTER:8391"),
        ({"kind": "manager"}, "packfleet settings set manager MasterEndpoint https://MASTER:8391"),
        (
            {"kind": "master", "key": "MasterAddress"},
            "packfleet settings set master MasterAddress https://MASTER:8391",
        ),
        ({"key": "--master", "fix": "pass --master URL"}, "pass --master URL"),
    ],
)
def test_parse_endpoint_names_the_setting_the_url_came_from(kwargs: dict[str, str], fix: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_endpoint("http://master:8391", **kwargs)
    assert caught.value.fix == fix
    assert caught.value.message.startswith(kwargs.get("key", "MasterEndpoint"))


@pytest.mark.parametrize("endpoint", ["https://master:port", "https://master:99999", "https://[::1"])
def test_parse_endpoint_refuses_a_malformed_authority_as_a_settings_error(endpoint: str) -> None:
    with pytest.raises(SettingsError):
        parse_endpoint(endpoint)


def test_a_manager_client_points_at_the_manager_settings(pair: Pair) -> None:
    with pytest.raises(SettingsError) as caught:
        MasterClient("master:8391", pair.client_context(), role="manager", pins=[])
    assert caught.value.fix is not None and "settings set manager MasterEndpoint" in caught.value.fix


def test_a_join_token_endpoint_is_mended_with_a_new_token() -> None:
    with pytest.raises(SettingsError) as caught:
        PinnedConnection("http://master:8391", "00" * 32)
    assert caught.value.fix is not None and "packfleet manager token create --endpoint" in caught.value.fix


@pytest.mark.parametrize(("role", "fix"), [("worker", READMIT_FIX), ("manager", NEW_ADMIN_FIX)])
def test_an_expired_client_certificate_gets_a_fix_that_can_work(role: str, fix: str) -> None:
    refusal = ssl.SSLError(1, "[SSL: SSLV3_ALERT_CERTIFICATE_EXPIRED] sslv3 alert certificate expired")
    error = explain_client_failure(refusal, role=role, host=HOST, port=8391, pins=[], own_thumbprint="AB")
    assert "has expired" in error.message
    assert error.fix == fix
    assert "rotate-cert" not in fix  # it signs the renewal with the expired certificate


def test_the_worker_and_the_transport_give_the_same_readmission_fix() -> None:
    assert readmit_fix() == READMIT_FIX
    assert "packfleet manager worker connect" in READMIT_FIX and "packfleet worker join" in READMIT_FIX
