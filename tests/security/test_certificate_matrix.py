"""The bad-certificate matrix against a real master over real TLS.

Each bad kind is tried two ways: through ``manager worker add`` (refused up front, with the reason),
and put in the master's Root store by hand (the master warns about it naming the file, and refuses
it at the handshake or at registration, with the reason). Then the states a good certificate can
lose its standing by: none, unknown, disabled, deleted, revoked (also on an open keep-alive
connection), and certificates of one kind on the routes of the other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable

import aiohttp
import pytest

from master.support import MasterHome
from packfleet.catalog import Catalog
from packfleet.errors import BadRequest
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.pki import CertStore, Credential
from packfleet.protocol import routes
from security.conftest import CertFactory, Peer, lease_body, new_agent

#: kind -> (how to make it, the words its refusal must contain)
BAD: dict[str, tuple[Callable[[CertFactory, MasterHome], Credential], str]] = {
    "expired": (lambda f, _mh: f.expired(), "expired on"),
    "not-yet-valid": (lambda f, _mh: f.not_yet_valid(), "is not valid before"),
    "ca-true": (lambda f, _mh: f.ca_true(), "CA certificate (CA:TRUE)"),
    "no-basic-constraints": (lambda f, _mh: f.ca_like(), "has no BasicConstraints"),
    "eku-server-only": (lambda f, _mh: f.server_only(), "serverAuth without clientAuth"),
    "rsa-1024": (lambda f, _mh: f.rsa1024(), "RSA-1024"),
    "sha-1": (lambda f, _mh: f.sha1(), "signed with SHA1"),
    "chain-to-pinned": (lambda f, mh: f.chained(mh.worker), "is not self-signed"),
}


def _catalog(mh: MasterHome) -> Catalog:
    return Catalog.open(mh.catalog_url, upgrade=False)


@pytest.mark.parametrize("kind", list(BAD))
async def test_worker_add_refuses_a_bad_certificate_with_its_reason(
    mh: MasterHome, manager: ManagerClient, certs: CertFactory, kind: str
) -> None:
    make, says = BAD[kind]
    cred = make(certs, mh)
    with pytest.raises(BadRequest) as caught:
        await manager.add_worker(cred.cert_pem().decode(), enable=True)
    assert caught.value.status == 400
    assert says in str(caught.value) and cred.thumbprint in str(caught.value)
    assert caught.value.fix  # and the command that makes a good one
    assert not CertStore(mh.home, "Root").contains(cred.thumbprint)


@pytest.mark.parametrize("kind", list(BAD))
async def test_a_bad_certificate_put_in_root_by_hand_is_named_and_never_accepted(
    mh: MasterHome,
    master: MasterServer,
    peer: Peer,
    certs: CertFactory,
    master_log: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    make, says = BAD[kind]
    cred = make(certs, mh)
    root = CertStore(mh.home, "Root")
    if kind != "chain-to-pinned":  # that one's point is to be trusted only through its issuer
        root.add(Credential(cred.certificate))
    master_log.clear()
    await master.reload()
    if kind != "chain-to-pinned":
        warned = [r.getMessage() for r in master_log.records if r.levelno == logging.WARNING]
        assert any(str(root.cert_path(cred.thumbprint)) in m and says in m for m in warned), warned
    try:
        answer = await peer.heartbeat(cred, new_agent())
    except (aiohttp.ClientError, OSError):
        pass  # refused at the handshake
    else:
        assert answer.status == 403, answer.text
        assert says in answer.text and "cannot register a worker" in answer.text
    with _catalog(mh) as catalog:
        assert catalog.list_workers() == [] and catalog.authorize(cred.thumbprint) is None


async def test_a_leaf_of_a_ca_smuggled_into_root_is_refused_by_name(
    mh: MasterHome, master: MasterServer, manager: ManagerClient, peer: Peer, certs: CertFactory
) -> None:
    ca = certs.ca_true("smuggled-ca")
    CertStore(mh.home, "Root").add(Credential(ca.certificate))
    await master.reload()
    victim = new_agent()
    assert (await peer.heartbeat(mh.worker, victim)).status == 200
    await manager.enable_worker(victim)
    leaf = certs.chained(ca, "worker1")
    for claimed in (victim, new_agent()):
        try:
            answer = await peer.heartbeat(leaf, claimed)
        except (aiohttp.ClientError, OSError):
            continue
        assert answer.status == 409 and "is not itself in the master's Root store" in answer.text
    with _catalog(mh) as catalog:
        assert catalog.authorize(leaf.thumbprint) is None


@pytest.mark.parametrize(
    ("method", "route"),
    [("POST", routes.WORKER_LEASE), ("GET", routes.ADMIN_WORKERS)],
    ids=["worker-route", "admin-route"],
)
async def test_no_certificate_is_refused_and_told_so(peer: Peer, method: str, route: str) -> None:
    answer = await peer.request(
        None, method, route, body=lease_body(new_agent()) if method == "POST" else None
    )
    assert answer.status == 403 and "presented none" in answer.text


async def test_an_unknown_certificate_fails_the_handshake(peer: Peer, certs: CertFactory) -> None:
    await peer.refused_handshake(certs.good("stranger"))


async def _enabled_worker(peer: Peer, manager: ManagerClient, cred: Credential) -> str:
    agent = new_agent()
    assert (await peer.heartbeat(cred, agent)).status == 200
    await manager.enable_worker(agent)
    return agent


async def test_a_disabled_worker_may_not_lease(mh: MasterHome, manager: ManagerClient, peer: Peer) -> None:
    agent = await _enabled_worker(peer, manager, mh.worker)
    await manager.disable_worker(agent)
    answer = await peer.request(mh.worker, "POST", routes.WORKER_LEASE, body=lease_body(agent))
    assert answer.status == 403 and "is disabled" in answer.text
    assert f"packfleet manager worker enable {agent}" in answer.text


async def test_a_deleted_workers_certificate_is_refused_even_if_put_back_in_root(
    mh: MasterHome, master: MasterServer, manager: ManagerClient, peer: Peer
) -> None:
    agent = await _enabled_worker(peer, manager, mh.worker)
    await manager.delete_worker(agent)
    await peer.refused_handshake(mh.worker)  # it left the Root store
    CertStore(mh.home, "Root").add(Credential(mh.worker.certificate))
    await master.reload()
    answer = await peer.heartbeat(mh.worker, agent)
    assert answer.body["state"] == "deleted" and "was deleted" in answer.body["message"]
    lease = await peer.request(mh.worker, "POST", routes.WORKER_LEASE, body=lease_body(agent))
    assert lease.status == 403 and "was deleted" in lease.text and "worker add" in lease.text


async def test_a_revoked_certificate_is_refused_with_the_readmission_command(
    mh: MasterHome, manager: ManagerClient, peer: Peer
) -> None:
    agent = await _enabled_worker(peer, manager, mh.worker)
    await manager.revoke_certificate(mh.worker.thumbprint)
    answer = await peer.request(mh.worker, "POST", routes.WORKER_LEASE, body=lease_body(agent))
    assert answer.status == 403 and f"certificate {mh.worker.thumbprint}" in answer.text
    assert "was revoked" in answer.text and f"worker connect {agent} --token" in answer.text


@pytest.mark.parametrize("change", ["revoke", "disable"])
async def test_a_change_applies_to_an_already_open_keep_alive_connection(
    mh: MasterHome, manager: ManagerClient, peer: Peer, change: str
) -> None:
    agent = await _enabled_worker(peer, manager, mh.worker)
    async with peer.session(mh.worker) as session:
        first = await peer.send(session, "POST", routes.WORKER_LEASE, body=lease_body(agent))
        assert first.status == 200
        if change == "revoke":
            await manager.revoke_certificate(mh.worker.thumbprint)
        else:
            await manager.disable_worker(agent)
        try:
            answer = await peer.send(session, "POST", routes.WORKER_LEASE, body=lease_body(agent))
        except (aiohttp.ClientError, OSError):
            return  # the master closed the open connection
        assert answer.status == 403
        assert ("was revoked" if change == "revoke" else "is disabled") in answer.text


def _exchange(tls: ssl.SSLSocket, path: str, body: dict[str, object]) -> int | None:
    """One HTTP/1.1 request on an open connection; its status, or None if the master closed it."""
    payload = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: master\r\nContent-Type: application/json\r\n"
    tls.sendall(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = tls.recv(65536)
        if not chunk:
            return None
        received += chunk
    header, _, rest = received.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", header)
    assert length, header  # read the whole body, so the next request starts on a clean stream
    while len(rest) < int(length.group(1)):
        chunk = tls.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(header.split()[1])


async def test_a_revocation_reaches_the_very_same_open_connection_within_a_second(
    mh: MasterHome, manager: ManagerClient, peer: Peer
) -> None:
    """One socket, kept alive by hand (no client library that could reconnect behind the test)."""
    agent = await _enabled_worker(peer, manager, mh.worker)
    context = peer.context(mh.worker)
    raw = socket.create_connection(("127.0.0.1", peer.server.port), timeout=15)
    tls = await asyncio.to_thread(context.wrap_socket, raw)
    try:
        assert await asyncio.to_thread(_exchange, tls, routes.WORKER_LEASE, lease_body(agent)) == 200
        await manager.revoke_certificate(mh.worker.thumbprint)
        tls.settimeout(1.0)
        started = time.monotonic()
        try:
            status = await asyncio.to_thread(_exchange, tls, routes.WORKER_LEASE, lease_body(agent))
        except TimeoutError:
            pytest.fail("the open connection was neither refused nor closed within 1 s of the revocation")
        except (OSError, ssl.SSLError):
            status = None  # reset by the master: closed
        assert time.monotonic() - started < 1.0
        assert status in (403, None), status
    finally:
        tls.close()


async def test_a_worker_certificate_is_refused_on_admin_routes(
    mh: MasterHome, manager: ManagerClient, peer: Peer
) -> None:
    await _enabled_worker(peer, manager, mh.worker)
    answer = await peer.request(mh.worker, "GET", routes.ADMIN_WORKERS)
    assert answer.status == 403 and "never accepted on admin routes" in answer.text
    assert mh.worker.thumbprint in answer.text


async def test_the_admin_certificate_is_refused_on_worker_routes(mh: MasterHome, peer: Peer) -> None:
    answer = await peer.request(mh.admin, "POST", routes.WORKER_LEASE, body=lease_body(new_agent()))
    assert answer.status == 403 and "is for workers" in answer.text and mh.admin.thumbprint in answer.text
