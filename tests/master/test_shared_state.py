"""Two masters in this process on one PostgreSQL catalog: what one does, the other knows at once.

A master certificate rotation started on one and finished on the other after the first stopped;
both switching together; a worker certificate added through one trusted by the other; an identity
pinned on one calling the admin API on the other, and refused there once revoked; a revocation and a
disabling on one closing the connection on the other within a second.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from master.support import (
    FakeClock,
    MasterHome,
    build_master_home,
    client_for,
    context_for,
    heartbeat_body,
    new_agent_id,
    public,
    raw,
    write_manager_settings,
)
from master.test_connections import KeepAlive
from packfleet import protocol
from packfleet.catalog import Catalog
from packfleet.config import load_master_settings
from packfleet.errors import TransportError
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.master._rotation import MasterCertRotation
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.protocol import routes
from packfleet.transport import MasterClient

pytestmark = pytest.mark.postgres

#: What "at once" means for a change made on the other master (a NOTIFY round trip, then the work).
AT_ONCE = 1.0


@dataclass
class Pair:
    mh: MasterHome
    home_b: Path
    a: MasterServer
    b: MasterServer
    clock: FakeClock
    root: Path

    def rotation(self, server: MasterServer) -> MasterCertRotation:
        assert server.services is not None
        rotation = server.services.require_rotation().rotation
        assert isinstance(rotation, MasterCertRotation)
        return rotation

    def worker_on(self, server: MasterServer) -> MasterClient:
        home = self.mh if server is self.a else replace(self.mh, home=self.home_b)
        return client_for(self.mh.worker, home, server, self.root / f"client-{server.port}")

    def start(self, home: Path) -> MasterServer:
        return MasterServer(home, host="127.0.0.1", port=0, clock=self.clock, watch_interval=0)


@pytest.fixture
async def pair(pg_url: str, tmp_path: Path) -> AsyncIterator[Pair]:
    mh = build_master_home(tmp_path / "a", catalog_url=pg_url)
    clock = FakeClock()
    a = MasterServer(mh.home, host="127.0.0.1", port=0, clock=clock, watch_interval=0)
    await a.start()  # makes secrets.key, which the second master needs too (the node bundle's part)
    home_b = tmp_path / "b" / "master"
    shutil.copytree(mh.home, home_b, ignore=shutil.ignore_patterns("listening*"))
    b = MasterServer(home_b, host="127.0.0.1", port=0, clock=clock, watch_interval=0)
    await b.start()
    write_manager_settings(mh, a)
    pair = Pair(mh, home_b, a, b, clock, tmp_path)
    try:
        yield pair
    finally:
        await pair.b.stop()
        await pair.a.stop()


T = TypeVar("T")


async def _until(what: str, check: Callable[[], Any], timeout: float = 10.0) -> float:
    """Wait for ``check()`` to hold; return how long it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def _beat(worker: MasterClient, agent: str, accepts: list[str]) -> protocol.HeartbeatReply:
    body = heartbeat_body(agent) | {"accepted_master_thumbprints": accepts}
    reply = await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=body)
    return protocol.decode(protocol.HeartbeatReply, reply)


async def _enabled_worker(pair: Pair) -> str:
    agent = new_agent_id()
    worker = pair.worker_on(pair.a)
    try:
        await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    finally:
        await worker.close()
    with Catalog.open(pair.mh.catalog_url) as catalog:
        catalog.set_worker_enabled(agent, True, actor="test")
    return agent


async def test_a_rotation_started_on_one_master_is_finished_on_the_other(pair: Pair) -> None:
    agent = await _enabled_worker(pair)
    old = pair.mh.master.thumbprint
    started = await pair.rotation(pair.a).start(cns=[], days=30, actor="test")
    new = started["new"]
    # B hears of it (NOTIFY) and holds the new certificate with its key, from the catalog.
    await _until("B to hold the new certificate", lambda: CertStore(pair.home_b, "Root").contains(new))
    assert CertStore(pair.home_b, "Root").get(new).private_key is not None
    on_b = pair.worker_on(pair.b)
    try:
        assert (await _beat(on_b, agent, [old])).next_master_cert_pem  # B announces A's rotation
    finally:
        await on_b.close()
    on_a = pair.worker_on(pair.a)
    try:
        await _beat(on_a, agent, [old, new])  # the worker's acceptance reaches A only...
    finally:
        await on_a.close()
    with Catalog.open(pair.mh.catalog_url, upgrade=False) as catalog:
        await _until("A to record it", lambda: catalog.master_cert_accepts().get(agent) == [old, new])
    await pair.a.stop()  # ...and A goes away mid-rotation

    b = pair.rotation(pair.b)
    switched = await b.switch(actor="test", force=False)  # ...yet B knows it from the catalog
    assert switched["phase"] == "switched" and pair.b.serving_thumbprint == new
    finished = await b.finish(actor="test")
    assert finished["phase"] == "finished" and not CertStore(pair.home_b, "Root").contains(old)

    again = pair.start(pair.mh.home)  # A, back, serves what the catalog says
    await again.start()
    try:
        assert again.serving_thumbprint == new
        assert load_master_settings(pair.mh.home).ssl_cert_thumbprint == new
        assert not CertStore(pair.mh.home, "Root").contains(old)
        assert pair.rotation(again).record is None
    finally:
        pair.a = again  # stopped by the fixture


async def test_every_master_switches_when_one_does(pair: Pair) -> None:
    await _enabled_worker(pair)
    new = (await pair.rotation(pair.a).start(cns=[], days=30, actor="test"))["new"]
    await _until("B to hold the new certificate", lambda: CertStore(pair.home_b, "Root").contains(new))
    await pair.rotation(pair.a).switch(actor="test", force=True)
    assert pair.a.serving_thumbprint == new
    took = await _until("B to serve the new certificate", lambda: pair.b.serving_thumbprint == new)
    assert took < AT_ONCE
    assert load_master_settings(pair.home_b).ssl_cert_thumbprint == new
    await pair.rotation(pair.b).finish(actor="test")
    old = pair.mh.master.thumbprint
    await _until("A to retire the old certificate", lambda: not CertStore(pair.mh.home, "Root").contains(old))


async def test_abort_on_one_master_drops_the_new_certificate_from_every_root_store(pair: Pair) -> None:
    new = (await pair.rotation(pair.a).start(cns=[], days=30, actor="test"))["new"]
    await _until("B to hold the new certificate", lambda: CertStore(pair.home_b, "Root").contains(new))
    aborted = await pair.rotation(pair.b).abort(actor="test")
    assert aborted["phase"] == "aborted"
    await _until("A to drop it", lambda: not CertStore(pair.mh.home, "Root").contains(new))
    assert pair.rotation(pair.a).record is None


async def test_a_worker_certificate_added_through_one_master_is_trusted_by_the_other(pair: Pair) -> None:
    late = create_self_signed(["worker9", "127.0.0.1"])
    async with ManagerClient.from_home(pair.mh.home) as manager:
        await manager.add_worker(late.cert_pem().decode(), "worker9", enable=True)
    took = await _until("B to trust it", lambda: CertStore(pair.home_b, "Root").contains(late.thumbprint))
    assert took < AT_ONCE
    home_b = replace(pair.mh, home=pair.home_b)
    # B writes its Root store, then serves the new trust: a handshake in between is refused.
    reply = await _first_heartbeat(late, home_b, pair.b, pair.root / "late", within=AT_ONCE)
    assert reply["state"] == "enabled"


async def _retried(call: Callable[[int], Awaitable[T]], accept: Callable[[T], bool], *, within: float) -> T:
    """``call(attempt)`` again until ``accept`` takes its answer, for up to ``within`` seconds.

    A master writes its Root store first and serves the new trust after, so a handshake in between
    sees the old trust; each attempt makes a new connection. After ``within`` the last answer (or
    the refused handshake's error) stands.
    """
    started = time.monotonic()
    for attempt in range(200):
        try:
            answer = await call(attempt)
        except TransportError:
            if time.monotonic() - started > within:
                raise
        else:
            if accept(answer) or time.monotonic() - started > within:
                return answer
        await asyncio.sleep(0.02)
    raise AssertionError(f"no accepted answer in 200 attempts within {within} s")


async def _first_heartbeat(
    cred: Credential, home: MasterHome, server: MasterServer, folder: Path, *, within: float
) -> dict[str, Any]:
    """A new worker's first heartbeat on ``server``: its handshake passes, and it registers."""

    async def beat(attempt: int) -> dict[str, Any]:
        worker = client_for(cred, home, server, folder / str(attempt))
        try:
            reply: dict[str, Any] = await worker.request(
                "POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(new_agent_id())
            )
        finally:
            await worker.close()
        return reply

    return await _retried(beat, lambda _: True, within=within)


async def _admin_call_on(pair: Pair, server: MasterServer, cred: Credential, folder: str) -> int | None:
    """The status of an admin-only request with ``cred`` on ``server``; None if the handshake refuses it."""
    home = pair.mh if server is pair.a else replace(pair.mh, home=pair.home_b)
    try:
        answer = await raw(
            context_for(cred, home, pair.root / folder), server, "GET", routes.ADMIN_IDENTITIES
        )
    except aiohttp.ClientError:  # the master's Root store does not hold it: TLS ends the connection
        return None
    return answer.status


async def _admin_call_until(
    pair: Pair, server: MasterServer, cred: Credential, folder: str, wanted: int | None
) -> int | None:
    """:func:`_admin_call_on` again until it answers ``wanted``, for up to AT_ONCE seconds."""
    return await _retried(
        lambda attempt: _admin_call_on(pair, server, cred, f"{folder}-{attempt}"),
        lambda status: status == wanted,
        within=AT_ONCE,
    )


async def test_an_identity_pinned_on_one_master_administers_the_other_until_revoked(pair: Pair) -> None:
    alice = create_self_signed(["alice"])
    assert not CertStore(pair.home_b, "Root").contains(alice.thumbprint)
    async with ManagerClient.from_home(pair.mh.home) as manager:  # talks to A
        await manager.create_identity("alice", "admin", public(alice).cert_pem().decode())
    took = await _until("B to trust it", lambda: CertStore(pair.home_b, "Root").contains(alice.thumbprint))
    assert took < AT_ONCE
    assert CertStore(pair.home_b, "Root").get(alice.thumbprint).private_key is None  # never a key
    assert await _admin_call_until(pair, pair.b, alice, "alice-1", 200) == 200

    async with ManagerClient.from_home(pair.mh.home) as manager:
        await manager.revoke_identity("alice")
    took = await _until("B to drop it", lambda: not CertStore(pair.home_b, "Root").contains(alice.thumbprint))
    assert took < AT_ONCE
    assert await _admin_call_until(pair, pair.b, alice, "alice-2", None) is None  # refused in the handshake
    with Catalog.open(pair.mh.catalog_url, upgrade=False) as catalog:
        audited = [(r.action, r.target) for r in catalog.list_audit(action="principal")]
    assert audited[-2:] == [("principal.add", "alice"), ("principal.remove", "alice")]


async def test_a_master_started_later_trusts_the_identities_and_not_the_revoked_ones(pair: Pair) -> None:
    kept, gone = create_self_signed(["kept"]), create_self_signed(["gone"])
    await pair.b.stop()
    async with ManagerClient.from_home(pair.mh.home) as manager:  # B hears no NOTIFY while stopped
        await manager.create_identity("kept", "viewer", public(kept).cert_pem().decode())
        await manager.create_identity("gone", "executor", public(gone).cert_pem().decode())
        await manager.revoke_identity("gone")
    CertStore(pair.home_b, "Root").add(public(gone))  # as if B had trusted it before
    pair.b = pair.start(pair.home_b)
    await pair.b.start()  # the sync at start brings B's Root store in line
    b_root = CertStore(pair.home_b, "Root")
    await _until("B to trust kept", lambda: b_root.contains(kept.thumbprint))
    await _until("B to drop gone", lambda: not b_root.contains(gone.thumbprint))
    assert b_root.contains(pair.mh.admin.thumbprint)  # identities the catalog has no PEM of stay


@pytest.mark.parametrize("how", ["revoke", "disable"])
async def test_a_cut_off_on_one_master_closes_the_connection_on_the_other(pair: Pair, how: str) -> None:
    agent = await _enabled_worker(pair)
    home_b = replace(pair.mh, home=pair.home_b)
    held = await KeepAlive.open(context_for(pair.mh.worker, home_b, pair.root / "held"), pair.b.port)
    try:
        assert await held.post(routes.WORKER_HEARTBEAT, heartbeat_body(agent)) == 200
        started = time.monotonic()
        async with ManagerClient.from_home(pair.mh.home) as manager:  # talks to A
            if how == "revoke":
                await manager.revoke_certificate(pair.mh.worker.thumbprint)
            else:
                await manager.disable_worker(agent)
        assert await held.closed_by_peer(timeout=AT_ONCE)
        assert time.monotonic() - started < AT_ONCE + 0.5  # the request to A itself included
    finally:
        held.close()
