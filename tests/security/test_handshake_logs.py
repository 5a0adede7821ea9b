"""Failed TLS handshakes leave one plain log line each (address, reason, presented thumbprint), a
flood of them a few lines and a count, and every one is counted in /metrics. Against a real master
over real TLS.
"""

from __future__ import annotations

import asyncio
import gc
import re
import socket
import ssl
import time
from collections.abc import Callable

import pytest

from master.support import MasterHome
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.master._limits import HANDSHAKE_BURST
from packfleet.pki import CertStore, Credential
from packfleet.protocol import routes
from security.conftest import CertFactory, Peer

HANDSHAKE = "TLS handshake with 127.0.0.1 failed"


async def eventually(check: Callable[[], bool], seconds: float = 15.0) -> bool:
    """Poll ``check`` until it holds or ``seconds`` pass: the client may see the close before the
    master's handshake task has logged it (both run on this event loop)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _one_connection(peer: Peer, cred: Credential) -> None:
    """Exactly one connection presenting ``cred`` (aiohttp would retry a GET on a second one)."""
    context = peer.context(cred)
    with socket.create_connection(("127.0.0.1", peer.server.port), timeout=15) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                # TLS 1.3: the client is done before the master has checked its certificate.
                tls.sendall(f"GET {routes.HEALTH} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n".encode())
                answer = tls.recv(12)
        except (OSError, ssl.SSLError):
            return
    assert not answer.startswith(b"HTTP/"), "the master completed the handshake and answered"


async def refused(peer: Peer, cred: Credential) -> None:
    await asyncio.to_thread(_one_connection, peer, cred)


def lines(log: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in log.records if text in r.getMessage()]


def failures_counted(text: str) -> float:
    found = re.search(r"^packfleet_tls_handshake_failures_total (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


async def test_an_unknown_certificate_leaves_one_line_with_address_reason_and_thumbprint(
    peer: Peer, certs: CertFactory, master_log: pytest.LogCaptureFixture
) -> None:
    stranger = certs.good("stranger")
    master_log.clear()
    await refused(peer, stranger)
    assert await eventually(lambda: bool(lines(master_log, HANDSHAKE))), master_log.text
    [line] = lines(master_log, HANDSHAKE)
    assert "is not in the master's Root store" in line and "packfleet manager worker add" in line
    assert f"presented certificate {stranger.thumbprint}" in line


async def test_an_expired_certificate_leaves_one_line_naming_expiry_and_the_fix(
    mh: MasterHome,
    master: MasterServer,
    peer: Peer,
    certs: CertFactory,
    master_log: pytest.LogCaptureFixture,
) -> None:
    # In the Root store (a worker whose certificate ran out), so the verdict is the expiry itself.
    old = certs.expired()
    CertStore(mh.home, "Root").add(Credential(old.certificate))
    await master.reload()
    master_log.clear()
    await refused(peer, old)
    assert await eventually(lambda: bool(lines(master_log, HANDSHAKE))), master_log.text
    [line] = lines(master_log, HANDSHAKE)
    assert "the client certificate has expired" in line and "packfleet worker join" in line
    assert f"presented certificate {old.thumbprint}" in line


def _distrusting_client(peer: Peer) -> None:
    """One connection from a client that does not trust the master's certificate (a wrong pin)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=CertFactory().good("other-master").cert_pem().decode())
    with socket.create_connection(("127.0.0.1", peer.server.port), timeout=15) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw)


async def test_a_client_refusing_the_masters_certificate_is_told_apart(
    peer: Peer, master_log: pytest.LogCaptureFixture
) -> None:
    master_log.clear()
    await asyncio.to_thread(_distrusting_client, peer)
    assert await eventually(lambda: bool(lines(master_log, HANDSHAKE))), master_log.text
    [line] = lines(master_log, HANDSHAKE)
    assert "the client refused the master's certificate" in line and "presented no certificate" in line


async def test_no_certificate_on_an_admin_route_leaves_one_refusal_line(
    peer: Peer, master_log: pytest.LogCaptureFixture
) -> None:
    master_log.clear()
    answer = await peer.request(None, "GET", routes.ADMIN_WORKERS)
    assert answer.status == 403
    # The handshake itself succeeds (join and health are open to anyone); the route refuses.
    assert await eventually(lambda: bool(lines(master_log, "from 127.0.0.1"))), master_log.text
    [line] = lines(master_log, "from 127.0.0.1")
    assert f"refused GET {routes.ADMIN_WORKERS} from 127.0.0.1 (no certificate): 403" in line
    assert "presented none" in line
    assert lines(master_log, HANDSHAKE) == []


async def test_a_burst_of_failures_leaves_the_burst_then_one_suppressed_count_and_all_are_counted(
    mh: MasterHome,
    master: MasterServer,
    peer: Peer,
    certs: CertFactory,
    master_log: pytest.LogCaptureFixture,
) -> None:
    stranger = certs.good("stranger")
    async with ManagerClient.from_home(mh.home) as manager:
        before = failures_counted(await manager.metrics())
    master_log.clear()
    burst = 50
    for _ in range(burst):
        await refused(peer, stranger)
    # A connection is released after its failure was logged: none left means all 50 were handled.
    assert await eventually(lambda: master.guard.total == 0), master.guard.total
    logged = lines(master_log, HANDSHAKE)
    assert len(logged) == HANDSHAKE_BURST, logged
    assert not any("suppressed" in line for line in logged)

    # The next line after the window says how many were left out.
    master.guard.handshake_log.window = 0.001
    await refused(peer, stranger)
    assert await eventually(lambda: len(lines(master_log, HANDSHAKE)) == HANDSHAKE_BURST + 1)
    logged = lines(master_log, HANDSHAKE)
    assert f"({burst - HANDSHAKE_BURST} similar line(s) suppressed)" in logged[-1], logged[-1]
    assert len(logged) <= HANDSHAKE_BURST + 1

    async with ManagerClient.from_home(mh.home) as manager:

        async def counted() -> float:
            gc.collect()  # a failure is counted when its connection's SSLObject is freed
            return failures_counted(await manager.metrics()) - before

        deadline = time.monotonic() + 15.0
        while (seen := await counted()) < burst + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert seen >= burst + 1, seen
