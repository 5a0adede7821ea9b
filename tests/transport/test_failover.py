"""Several masters: the endpoint list's order, its preference for the last master that answered, and
the error that names every master when none answers; then a real TLS client failing over."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from packfleet.errors import ApiError, SettingsError, TlsError, TransportError
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.transport import (
    EndpointList,
    FailoverClient,
    MasterClient,
    client_context,
    connect_master,
    master_server_context,
)

A, B, C = "https://127.0.0.1:1001", "https://127.0.0.5:1002", "https://localhost:1003"


def test_the_list_keeps_the_configured_order_until_a_master_answers() -> None:
    urls = EndpointList([A, B, C])
    assert urls.order() == [A, B, C]
    assert urls.preferred == A


def test_the_master_that_answered_last_is_tried_first_then_the_others_in_order() -> None:
    urls = EndpointList([A, B, C])
    urls.succeeded(B)
    assert urls.order() == [B, A, C]
    urls.succeeded(C)
    assert urls.order() == [C, A, B]


def test_duplicates_and_trailing_slashes_collapse_and_an_empty_list_is_refused() -> None:
    assert EndpointList([A + "/", A, B]).urls == (A, B)
    with pytest.raises(SettingsError, match="no master URL"):
        EndpointList([" ", ""])
    with pytest.raises(ValueError, match="not one of"):
        EndpointList([A]).succeeded(B)


def test_when_every_master_fails_the_error_names_each_url_and_its_reason() -> None:
    urls = EndpointList([A, B, C])
    error = urls.all_failed(
        [
            (A, TransportError("connection refused")),
            (B, TransportError("timed out")),
            (C, TransportError("x")),
        ]
    )
    assert "3 tried" in error.message
    for url in (A, B, C):
        assert url in error.message
    assert "connection refused" in error.message and "timed out" in error.message
    assert error.fix is not None and "MasterEndpoint" in error.fix


def test_when_every_master_refuses_the_handshake_the_error_stays_a_tls_error() -> None:
    refused = [(A, TlsError("refused this worker's certificate", fix="readmit it")), (B, TlsError("same"))]
    error = EndpointList([A, B]).all_failed(refused)
    assert isinstance(error, TlsError) and error.fix == "readmit it"
    mixed = EndpointList([A, B]).all_failed([(A, TlsError("refused")), (B, TransportError("down"))])
    assert type(mixed) is TransportError


def test_one_master_keeps_its_own_precise_error() -> None:
    original = TransportError("cannot reach the master at 127.0.0.1:1001: refused", fix="start it")
    assert EndpointList([A]).all_failed([(A, original)]) is original


# -- real TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertStore, Credential, Credential]:
    store = CertStore(tmp_path_factory.mktemp("failover"), "My")
    master = create_self_signed(["127.0.0.1", "localhost"])
    client = create_self_signed(["worker1"])
    store.add(master)
    store.add(client)
    return store, master, client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Masters:
    """Masters on 127.0.0.1 (same certificate), each answering /who with its own name."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.runners: dict[str, web.AppRunner] = {}
        self.hits: dict[str, int] = {}

    async def start(self, name: str, status: int = 200) -> str:
        app = web.Application()

        async def who(_request: web.Request) -> web.Response:
            self.hits[name] = self.hits.get(name, 0) + 1
            if status != 200:
                return web.json_response({"title": "nope", "detail": f"{name} says no"}, status=status)
            return web.json_response({"master": name})

        app.router.add_get("/who", who)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.context)
        await site.start()
        self.runners[name] = runner
        return f"https://127.0.0.1:{runner.addresses[0][1]}"

    async def stop(self, name: str) -> None:
        await self.runners.pop(name).cleanup()


@pytest.fixture
async def masters(creds: tuple[CertStore, Credential, Credential]) -> AsyncIterator[Masters]:
    store, master, client = creds
    context = master_server_context(
        store.cert_path(master.thumbprint), store.key_path(master.thumbprint), client.cert_pem().decode()
    )
    running = Masters(context)
    try:
        yield running
    finally:
        for name in list(running.runners):
            await running.stop(name)


def _client(creds: tuple[CertStore, Credential, Credential], urls: list[str]) -> MasterClient:
    store, master, client = creds
    context = client_context(
        store.cert_path(client.thumbprint), store.key_path(client.thumbprint), master.cert_pem().decode()
    )
    return connect_master(
        ",".join(urls), context, role="worker", pins=[master.thumbprint], own_thumbprint=client.thumbprint
    )


async def test_one_url_gives_a_plain_client_and_several_a_failover_client(
    creds: tuple[CertStore, Credential, Credential],
) -> None:
    single, several = _client(creds, [A]), _client(creds, [A, B])
    try:
        assert type(single) is MasterClient
        assert isinstance(several, FailoverClient) and several.endpoints.urls == (A, B)
        assert several.serves(f"{A},{B}") and not several.serves(A)
        assert single.serves(A + "/")
    finally:
        await single.close()
        await several.close()


async def test_a_stopped_master_is_skipped_and_the_survivor_stays_preferred(
    creds: tuple[CertStore, Credential, Credential], masters: Masters
) -> None:
    first = await masters.start("first")
    second = await masters.start("second")
    client = _client(creds, [first, second])
    try:
        assert await client.request("GET", "/who") == {"master": "first"}
        await masters.stop("first")
        assert await client.request("GET", "/who") == {"master": "second"}
        assert client.endpoint == second and client.port == int(second.rsplit(":", 1)[1])
        # The next request goes straight to the survivor: the dead master is not tried first again.
        assert await client.request("GET", "/who") == {"master": "second"}
        assert masters.hits == {"first": 1, "second": 2}
    finally:
        await client.close()


async def test_a_master_that_answers_with_an_error_is_not_failed_over(
    creds: tuple[CertStore, Credential, Credential], masters: Masters
) -> None:
    refusing = await masters.start("refusing", status=403)
    other = await masters.start("other")
    client = _client(creds, [refusing, other])
    try:
        with pytest.raises(ApiError, match="refusing says no"):
            await client.request("GET", "/who")
        assert masters.hits == {"refusing": 1}
    finally:
        await client.close()


async def test_no_master_up_raises_one_error_naming_every_url(
    creds: tuple[CertStore, Credential, Credential],
) -> None:
    down = [f"https://127.0.0.1:{_free_port()}", f"https://localhost:{_free_port()}"]
    client = _client(creds, down)
    try:
        with pytest.raises(TransportError) as caught:
            await client.request("GET", "/who")
        assert not isinstance(caught.value, ApiError)
        assert all(url in caught.value.message for url in down)
        assert "2 tried" in caught.value.message
    finally:
        await client.close()
