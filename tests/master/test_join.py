"""Join tokens, ``worker join`` and ``manager worker connect`` against an in-process master over real TLS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from master.support import FakeClock, MasterHome, context_for, heartbeat_body, raw
from packfleet.catalog import Catalog
from packfleet.config import load_worker_settings
from packfleet.errors import ApiError, BadRequest, JoinError, PinMismatch
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.pki import CertStore, Credential, create_self_signed, sign_proof
from packfleet.protocol import (
    JoinToken,
    JoinTokenView,
    hash_secret,
    join_proof_message,
    parse_join_token,
    routes,
    secret_matches,
)
from packfleet.provision import WorkerJoin, join_worker
from packfleet.transport import MasterClient, client_context


def endpoint(server: MasterServer) -> str:
    return f"https://127.0.0.1:{server.port}"


async def new_token(manager: ManagerClient, server: MasterServer, **options: Any) -> JoinTokenView:
    return await manager.create_token(endpoint=endpoint(server), **options)


async def join(home: Path, token: str, name: str = "worker1") -> WorkerJoin:
    return await asyncio.to_thread(join_worker, home, token, name=name, ip="127.0.0.1", timeout=10)


def worker_client(home: Path) -> MasterClient:
    """A client built from nothing but what ``worker join`` left in ``home``."""
    settings = load_worker_settings(home)
    my = CertStore(home, "My")
    own = settings.worker_https_cert_thumbprint
    master_pem = CertStore(home, "Root").get(settings.master_https_cert_thumbprint).cert_pem().decode()
    context = client_context(my.cert_path(own), my.key_path(own), master_pem)
    return MasterClient(
        settings.master_endpoint,
        context,
        role="worker",
        pins=[settings.master_https_cert_thumbprint],
        own_thumbprint=own,
        timeout=10,
    )


def catalog_of(mh: MasterHome) -> Catalog:
    return Catalog.open(mh.catalog_url, upgrade=False)


# --- the token format ---------------------------------------------------------------------------


def test_a_token_round_trips_and_survives_line_breaks_from_copying() -> None:
    token = JoinToken("https://master.example:8391", "0A" * 32, "0123456789ab", bytes(range(32)))
    text = token.encode()
    assert text.startswith("pfjoin1.0123456789ab.")
    assert set(text) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    wrapped = "  " + text[:40] + "\n  " + text[40:] + "\n"
    assert parse_join_token(wrapped) == token


@pytest.mark.parametrize(
    ("mangle", "says"),
    [
        (lambda t: t[:-12], "cut short"),
        (lambda t: t.replace("pfjoin1.", "pfjoin2."), "'pfjoin2'"),
        (lambda t: "hello", "should start with pfjoin1."),
        (lambda t: t[:30] + ("x" if t[30] != "x" else "y") + t[31:], "check digits do not match"),
    ],
)
def test_a_malformed_token_is_refused_with_the_command_that_makes_a_new_one(mangle: Any, says: str) -> None:
    text = JoinToken("https://127.0.0.1:8391", "0A" * 32, "0123456789ab", bytes(32)).encode()
    with pytest.raises(JoinError) as caught:
        parse_join_token(mangle(text))
    assert says in caught.value.message
    assert caught.value.fix is not None and "packfleet manager token create" in caught.value.fix


def test_only_a_hash_of_the_secret_is_kept_and_compared() -> None:
    secret = bytes(range(32))
    stored = hash_secret(secret)
    assert stored == "sha256:" + hashlib.sha256(secret).hexdigest()
    text = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    assert secret_matches(text, stored)
    assert not secret_matches(text[:-1] + ("A" if text[-1] != "A" else "B"), stored)
    assert not secret_matches("not base64 !", stored)


# --- tokens through the admin API ----------------------------------------------------------------


async def test_create_list_and_revoke_tokens_never_show_a_secret(
    mh: MasterHome, server: MasterServer, manager: ManagerClient
) -> None:
    created = await new_token(manager, server, ttl_seconds=7200, uses=3, enable=True)
    token = parse_join_token(created["token"])
    assert token.token_id == created["token_id"]
    assert token.endpoint == endpoint(server)
    assert token.master_sha256 == mh.master.sha256 == created["master_sha256"]
    assert created["uses"] == 3 and created["enable"] is True
    [listed] = await manager.list_tokens()
    assert listed["status"] == "usable" and listed["uses_left"] == 3
    shown = repr(listed)
    assert "secret" not in shown and token.secret_text not in shown and "sha256:" not in shown
    revoked = await manager.revoke_token(token.token_id)
    assert revoked["status"] == "revoked"
    actions = [(a["action"], a["target"]) for a in await manager.audit()]
    assert ("token.create", token.token_id) in actions
    assert ("token.revoke", token.token_id) in actions


async def test_the_endpoint_defaults_to_master_address(
    mh: MasterHome, server: MasterServer, manager: ManagerClient
) -> None:
    with pytest.raises(BadRequest) as caught:
        await manager.create_token()
    assert "MasterAddress" in caught.value.message
    from packfleet.config import load_master_settings, save_master_settings

    settings = load_master_settings(mh.home)
    save_master_settings(mh.home, replace(settings, master_address="https://localhost:8391"))
    created = await manager.create_token()
    assert parse_join_token(created["token"]).endpoint == "https://localhost:8391"


# --- worker join ---------------------------------------------------------------------------------


async def test_a_fresh_home_joins_with_one_call_and_the_master_trusts_it_without_restart(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    created = await new_token(manager, server, enable=True)
    home = tmp_path / "w1"
    result = await join(home, created["token"])
    settings = load_worker_settings(home)
    assert result.created_certificate and result.enabled and not result.repeated
    assert settings.master_endpoint == endpoint(server)
    assert settings.master_https_cert_thumbprint == mh.master.thumbprint == result.master_thumbprint
    assert settings.worker_https_cert_thumbprint == result.thumbprint
    assert settings.agent_id == result.agent_id
    assert CertStore(home, "Root").contains(mh.master.thumbprint)
    assert CertStore(mh.home, "Root").contains(result.thumbprint)
    worker = await manager.get_worker(result.agent_id)
    assert worker["is_enabled"] is True and worker["display_name"] == "worker1"
    assert [c["thumbprint"] for c in worker["certificates"]] == [result.thumbprint]
    async with worker_client(home) as client:
        beat = await client.request(
            "POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(result.agent_id)
        )
        assert beat["state"] == "enabled"
        lease = {"agent_id": result.agent_id, "capacity": 1, "wait_seconds": 0, "lease_seconds": 60}
        assert await client.request("POST", routes.WORKER_LEASE, json_body=lease) == {"tasks": []}
    joined = [a for a in await manager.audit() if a["action"] == "worker.join"]
    assert joined[-1]["target"] == result.agent_id
    assert joined[-1]["details"]["token_id"] == created["token_id"]


async def test_a_worker_joins_disabled_unless_the_token_says_enable(
    server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    created = await new_token(manager, server)
    result = await join(tmp_path / "w1", created["token"])
    assert result.enabled is False
    assert f"packfleet manager worker enable {result.agent_id}" in result.message
    assert (await manager.get_worker(result.agent_id))["is_enabled"] is False


async def test_a_retry_succeeds_without_spending_a_use_but_another_certificate_is_refused(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    created = await new_token(manager, server)
    first = await join(tmp_path / "w1", created["token"])
    again = await join(tmp_path / "w1", created["token"])  # the first answer "was lost"
    assert again.repeated and not again.created_certificate
    assert (again.agent_id, again.thumbprint) == (first.agent_id, first.thumbprint)
    [listed] = await manager.list_tokens()
    assert listed["uses_left"] == 0 and listed["admitted"] == 1
    with pytest.raises(ApiError) as caught:
        await join(tmp_path / "w2", created["token"], name="worker2")
    assert caught.value.status == 403
    assert "used up" in caught.value.message
    assert "packfleet manager token create" in (caught.value.fix or "")
    assert len(await manager.list_workers()) == 1


async def test_an_expired_token_is_refused(
    server: MasterServer, manager: ManagerClient, clock: FakeClock, tmp_path: Path
) -> None:
    created = await new_token(manager, server, ttl_seconds=60)
    clock.advance(61)
    with pytest.raises(ApiError) as caught:
        await join(tmp_path / "w1", created["token"])
    assert "expired" in caught.value.message
    assert "packfleet manager token create" in (caught.value.fix or "")
    assert await manager.list_workers() == []


async def test_a_revoked_token_is_refused(
    server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    created = await new_token(manager, server)
    await manager.revoke_token(created["token_id"])
    with pytest.raises(ApiError) as caught:
        await join(tmp_path / "w1", created["token"])
    assert "revoked" in caught.value.message
    assert "packfleet manager token create" in (caught.value.fix or "")


async def test_a_wrong_secret_is_refused_like_an_unknown_token(
    server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    token = parse_join_token((await new_token(manager, server))["token"])
    forged = replace(token, secret=bytes(32)).encode()
    unknown = replace(token, token_id="000000000000").encode()
    messages = []
    for text in (forged, unknown):
        with pytest.raises(ApiError) as caught:
            await join(tmp_path / "w1", text)
        messages.append(caught.value.message.replace(token.token_id, "ID").replace("000000000000", "ID"))
    assert messages[0] == messages[1]
    assert "not known to this master, or its secret is wrong" in messages[0]


async def test_a_certificate_whose_key_the_caller_lacks_is_refused(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    token = parse_join_token((await new_token(manager, server))["token"])
    stolen = Credential(mh.worker.certificate)  # a public certificate, as worker.cer is handed around
    mine = create_self_signed(["thief"])
    agent = "6f1c3d8e-0b2a-4c5d-9e8f-7a6b5c4d3e2f"
    challenge = await raw(context_for(None, mh, tmp_path), server, "GET", routes.JOIN)
    issued = challenge.body["issued_at"]
    proof = join_proof_message(token.token_id, issued, stolen.sha256, agent)
    assert mine.private_key is not None
    body = {
        "token_id": token.token_id,
        "secret": token.secret_text,
        "cert_pem": stolen.cert_pem().decode(),
        "agent_id": agent,
        "display_name": "thief",
        "issued_at": issued,
        "signature": base64.b64encode(sign_proof(mine.private_key, proof)).decode(),
    }
    answer = await raw(context_for(None, mh, tmp_path), server, "POST", routes.JOIN, body=body)
    assert answer.status == 403
    assert "does not prove possession" in answer.body["detail"]
    assert (await manager.list_tokens())[0]["uses_left"] == 1


async def test_a_stale_proof_is_refused(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, clock: FakeClock, tmp_path: Path
) -> None:
    token = parse_join_token((await new_token(manager, server, ttl_seconds=3600))["token"])
    worker = mh.worker
    agent = "6f1c3d8e-0b2a-4c5d-9e8f-7a6b5c4d3e2f"
    issued = clock().isoformat()
    clock.advance(600)
    assert worker.private_key is not None
    proof = join_proof_message(token.token_id, issued, worker.sha256, agent)
    body = {
        "token_id": token.token_id,
        "secret": token.secret_text,
        "cert_pem": worker.cert_pem().decode(),
        "agent_id": agent,
        "display_name": "w",
        "issued_at": issued,
        "signature": base64.b64encode(sign_proof(worker.private_key, proof)).decode(),
    }
    answer = await raw(context_for(None, mh, tmp_path), server, "POST", routes.JOIN, body=body)
    assert answer.status == 403
    assert "from the master's time" in answer.body["detail"]


async def test_a_wrong_pin_aborts_naming_both_fingerprints_and_changes_nothing(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    token = parse_join_token((await new_token(manager, server))["token"])
    wrong = replace(token, master_sha256="AB" * 32).encode()
    home = tmp_path / "w1"
    with pytest.raises(PinMismatch) as caught:
        await join(home, wrong)
    assert mh.master.sha256 in caught.value.message and "AB" * 32 in caught.value.message
    assert "nothing was sent" in caught.value.message
    assert not home.exists()
    assert (await manager.list_tokens())[0]["uses_left"] == 1


class RecordingTlsServer:
    """A TLS server on loopback that completes handshakes and records every application byte it gets."""

    def __init__(self, cred: Credential, folder: Path) -> None:
        store = CertStore(folder, "My")
        store.add(cred)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(store.cert_path(cred.thumbprint), store.key_path(cred.thumbprint))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.received = bytearray()
        self.handshakes = 0
        self.thread = threading.Thread(target=self._serve_one, daemon=True)
        self.thread.start()

    def _serve_one(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        with self.context.wrap_socket(conn, server_side=True) as tls:
            self.handshakes += 1
            while True:
                try:
                    chunk = tls.recv(4096)
                except (OSError, ssl.SSLError):
                    return
                if not chunk:
                    return
                self.received += chunk

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[RecordingTlsServer]:
    server = RecordingTlsServer(create_self_signed(["127.0.0.1"]), tmp_path / "impostor")
    yield server
    server.close()


def test_a_wrong_pin_sends_no_application_byte(impostor: RecordingTlsServer, tmp_path: Path) -> None:
    token = JoinToken(f"https://127.0.0.1:{impostor.port}", "CD" * 32, "0123456789ab", bytes(32))
    with pytest.raises(PinMismatch):
        join_worker(tmp_path / "w1", token.encode(), name="w1", ip="127.0.0.1", timeout=10)
    impostor.close()
    assert impostor.handshakes == 1, "the handshake happened, so the check had a certificate to compare"
    assert bytes(impostor.received) == b""


# --- re-admission: bound tokens and manager worker connect ---------------------------------------


async def test_a_bound_token_readmits_the_same_worker_and_retires_its_old_certificate(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    first = await join(tmp_path / "old", (await new_token(manager, server, enable=True))["token"])
    bound = await manager.create_token(endpoint=endpoint(server), worker=first.agent_id)
    assert bound["agent_id"] == first.agent_id
    again = await join(tmp_path / "new", bound["token"])  # a new home: its own AgentId, new certificate
    assert again.agent_id == first.agent_id
    assert again.thumbprint != first.thumbprint and again.enabled
    assert load_worker_settings(tmp_path / "new").agent_id == first.agent_id
    assert any("bound to worker" in w for w in again.warnings)
    worker = await manager.get_worker(first.agent_id)
    states = {c["thumbprint"]: c["status"] for c in worker["certificates"]}
    assert states == {first.thumbprint: "retired", again.thumbprint: "active"}
    assert not CertStore(mh.home, "Root").contains(first.thumbprint)
    assert CertStore(mh.home, "Root").contains(again.thumbprint)


async def test_an_unbound_token_cannot_take_over_an_existing_worker(
    server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    home = tmp_path / "w1"
    first = await join(home, (await new_token(manager, server))["token"])
    CertStore(home, "My").delete(first.thumbprint)  # force a new certificate under the same AgentId
    with pytest.raises(ApiError) as caught:
        await join(home, (await new_token(manager, server))["token"])
    assert f"packfleet manager worker connect {first.agent_id} --token" in (caught.value.fix or "")


async def test_connect_replaces_a_workers_certificates_and_keeps_it_enabled(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    first = await join(tmp_path / "w1", (await new_token(manager, server, enable=True))["token"])
    fresh = create_self_signed(["worker1", "127.0.0.1"])
    result = await manager.connect_worker("worker1", fresh.cert_pem().decode())
    assert result["agent_id"] == first.agent_id and result["enabled"] is True
    assert result["retired"] == [first.thumbprint] == result["removed_from_root"]
    root = CertStore(mh.home, "Root")
    assert root.contains(fresh.thumbprint) and not root.contains(first.thumbprint)
    worker = await manager.get_worker(first.agent_id)
    assert worker["is_enabled"] is True
    connects = [a for a in await manager.audit() if a["action"] == "worker.connect"]
    assert connects[-1]["details"]["retired"] == [first.thumbprint]
    with catalog_of(mh) as catalog:
        principal = catalog.authorize(first.thumbprint)
    assert principal is not None and principal.cert_status == "retired"


async def test_the_join_routes_are_open_and_in_the_openapi_document(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    document = await manager.openapi()
    assert document["paths"][routes.JOIN]["post"]["security"] == []
    assert "post" in document["paths"][routes.ADMIN_TOKENS]
    answer = await raw(context_for(None, mh, tmp_path), server, "GET", routes.JOIN)
    assert answer.status == 200 and "issued_at" in answer.body
    refused = await raw(context_for(None, mh, tmp_path), server, "GET", routes.ADMIN_TOKENS)
    assert refused.status == 403
