"""Master certificate rotation (announce, switch, retire, resume, abort), worker certificate renewal
with proof of possession, and revocation cutting an open connection within a second."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from master.support import FakeClock, MasterHome, client_for, context_for, heartbeat_body, new_agent_id
from master.test_connections import KeepAlive
from packfleet import protocol
from packfleet.catalog import Catalog, canonical_agent_id
from packfleet.config import get_binding, load_master_settings
from packfleet.errors import ApiError, Conflict, RemoteConflict
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.master._rotation import MasterCertRotation
from packfleet.master._wakeup import worker_topic
from packfleet.pki import CertStore, Credential, create_self_signed, load_credential_bytes, sign_proof
from packfleet.protocol import routes
from packfleet.transport import MasterClient

Connect = Callable[[Credential | None], MasterClient]


async def _enabled_worker(manager: ManagerClient, worker: MasterClient) -> str:
    agent = new_agent_id()
    await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    await manager.enable_worker(agent)
    return agent


async def _beat(worker: MasterClient, agent: str, accepts: list[str]) -> protocol.HeartbeatReply:
    body = heartbeat_body(agent) | {"accepted_master_thumbprints": accepts}
    reply = await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=body)
    return protocol.decode(protocol.HeartbeatReply, reply)


def _actions(mh: MasterHome) -> list[str]:
    with Catalog.open(mh.catalog_url) as catalog:
        return [row.action for row in catalog.list_audit(limit=1000)]


async def test_a_rotation_waits_for_workers_survives_a_restart_switches_and_retires(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, clock: FakeClock
) -> None:
    worker = connect(mh.worker)
    agent = await _enabled_worker(manager, worker)
    old = mh.master.thumbprint

    started = await manager.rotate_master_cert("start", days=30)
    new = started["new"]
    assert started["phase"] == "announced" and started["old"] == old
    assert CertStore(mh.home, "Root").get(new).private_key is not None  # MakeCert -ss Root, with its key
    reply = await _beat(worker, agent, [old])
    assert reply.master_cert_thumbprint == old
    assert _thumbprint_of_pem(reply.next_master_cert_pem) == new
    with pytest.raises(RemoteConflict, match="do not accept certificate") as refused:
        await manager.rotate_master_cert("switch")
    assert refused.value.status == 409

    await server.stop()  # a restart mid-rotation goes on announcing the same certificate
    again = MasterServer(mh.home, host="127.0.0.1", port=0, clock=clock, watch_interval=0)
    await again.start()
    try:
        assert again.services is not None
        rotation = again.services.require_rotation().rotation
        assert isinstance(rotation, MasterCertRotation) and rotation.record is not None
        assert (rotation.record.phase, rotation.record.new) == ("announced", new)
        beat = client_for(mh.worker, mh, again, mh.home.parent / "again")
        try:
            assert _thumbprint_of_pem((await _beat(beat, agent, [old, new])).next_master_cert_pem) == new
            switched = await rotation.switch(actor="test", force=False)
            assert switched["phase"] == "switched" and again.serving_thumbprint == new
            settings = load_master_settings(mh.home)
            assert settings.ssl_cert_thumbprint == new
            binding = get_binding(mh.home, f"0.0.0.0:{settings.port_number}")
            assert binding is not None and binding.certhash == new
            assert (await _beat(beat, agent, [new])).master_cert_thumbprint == new
            finished = await rotation.finish(actor="test")
            assert finished["removed_from_root"] and not CertStore(mh.home, "Root").contains(old)
            assert rotation.record is None
        finally:
            await beat.close()
    finally:
        await again.stop()
    actions = _actions(mh)
    for action in ("master-cert.rotation.start", "master-cert.switch", "binding.apply", "master-cert.retire"):
        assert action in actions


async def test_a_status_long_poll_answers_once_the_awaited_workers_accept(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    worker = connect(mh.worker)
    agent = await _enabled_worker(manager, worker)
    old = mh.master.thumbprint
    new = (await manager.rotate_master_cert("start"))["new"]
    assert server.services is not None
    rotation = server.services.require_rotation().rotation
    assert isinstance(rotation, MasterCertRotation)

    params = {"wait_for": "confirmed", "wait": "20"}
    waiting = asyncio.create_task(
        manager.client.request("GET", routes.ADMIN_ROTATION_MASTER_CERT, params=params, timeout=60)
    )
    while rotation._news is None:  # the master holds the request, waiting for news of the workers
        await asyncio.sleep(0.01)
    assert not waiting.done()
    await _beat(worker, agent, [old])  # hears of the new certificate: not confirmed yet
    await _beat(worker, agent, [old, new])
    status = await waiting
    (row,) = [r for r in status["workers"] if r["agent_id"] == agent]
    assert row["confirmed"] and not row["promoted"]

    with pytest.raises(ApiError, match="wait_for"):
        await manager.client.request("GET", routes.ADMIN_ROTATION_MASTER_CERT, params={"wait_for": "soon"})


async def test_a_worker_told_a_step_is_asked_for_its_report_only_when_it_does_not_send_it(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("packfleet.master._rotation.REPORT_GRACE", 0.3)
    agent = await _enabled_worker(manager, connect(mh.worker))
    old = mh.master.thumbprint
    new = (await manager.rotate_master_cert("start"))["new"]
    assert server.services is not None
    rotation = server.services.require_rotation().rotation
    assert isinstance(rotation, MasterCertRotation)
    topic = worker_topic(canonical_agent_id(agent))
    blank = protocol.HeartbeatReply(state="enabled", message="", master_time="", agent_id=agent)

    asked = rotation.state.wakeups.ticket(topic)
    assert rotation.on_heartbeat(agent, [old], blank).next_master_cert_pem  # told the new certificate
    rotation.on_heartbeat(agent, [old, new], blank)  # and reports it at once, as a worker does
    await asyncio.sleep(0.6)
    assert not asked.notified  # so its lease long-poll is not answered for it

    await rotation.switch(actor="test", force=False)
    asked = rotation.state.wakeups.ticket(topic)
    assert rotation.on_heartbeat(agent, [old, new], blank).master_cert_thumbprint == new
    assert not asked.notified
    assert not rotation.needs_heartbeat(agent)  # a long-poll reopened meanwhile does not ask either
    await asyncio.sleep(0.6)
    # A worker that does not report (an older version) is asked once the grace is over.
    assert asked.notified and rotation.needs_heartbeat(agent)


def _thumbprint_of_pem(pem: str) -> str:
    return load_credential_bytes(pem.encode()).thumbprint if pem else ""


async def test_abort_drops_the_new_certificate_and_a_switched_rotation_cannot_abort(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    worker = connect(mh.worker)
    agent = await _enabled_worker(manager, worker)
    new = (await manager.rotate_master_cert("start"))["new"]
    aborted = await manager.rotate_master_cert("abort")
    assert aborted["phase"] == "aborted" and not CertStore(mh.home, "Root").contains(new)
    reply = await _beat(worker, agent, [mh.master.thumbprint, new])
    assert (reply.next_master_cert_pem, reply.master_cert_thumbprint) == ("", mh.master.thumbprint)
    assert (await manager.master_cert_rotation())["phase"] == "none"

    assert server.services is not None
    rotation = server.services.require_rotation().rotation
    assert isinstance(rotation, MasterCertRotation)
    await rotation.start(cns=["127.0.0.1"], days=10, actor="test")
    await rotation.switch(actor="test", force=True)  # no online worker accepts it: forced
    with pytest.raises(Conflict, match="cannot be undone"):
        await rotation.abort(actor="test")


def _renewal(agent: str, new: Credential, old: str, *, signer: Credential | None = None) -> dict[str, object]:
    signed_at = datetime.now(UTC).isoformat()
    message = protocol.renewal_proof_message(agent, new.thumbprint, old, signed_at)
    key = (signer or new).private_key
    assert key is not None
    body = protocol.CertificateRenewal(
        agent_id=agent,
        cert_pem=new.cert_pem().decode(),
        signed_at=signed_at,
        proof=base64.b64encode(sign_proof(key, message)).decode(),
    )
    return dict(protocol.encode(body))


async def test_a_worker_renews_over_its_old_certificate_and_retires_it(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    worker = connect(mh.worker)
    agent = await _enabled_worker(manager, worker)
    new = create_self_signed(["worker1", "127.0.0.1"])
    stranger = create_self_signed(["worker1", "127.0.0.1"])
    forged = _renewal(agent, new, mh.worker.thumbprint, signer=stranger)
    with pytest.raises(ApiError, match="not signed by its key") as refused:
        await worker.request("POST", routes.WORKER_CERTIFICATE, json_body=forged)
    assert refused.value.status == 403

    body = _renewal(agent, new, mh.worker.thumbprint)
    answer = await worker.request("POST", routes.WORKER_CERTIFICATE, json_body=body)
    assert answer["thumbprint"] == new.thumbprint and CertStore(mh.home, "Root").contains(new.thumbprint)

    renewed = client_for(new, mh, server, tmp_path / "renewed")
    try:
        retire = {"agent_id": agent, "thumbprint": mh.worker.thumbprint}
        done = await renewed.request("POST", routes.WORKER_CERTIFICATE_RETIRE, json_body=retire)
        assert done == {"thumbprint": mh.worker.thumbprint, "removed_from_root": True}
        lease = {"agent_id": agent, "capacity": 1, "wait_seconds": 0, "lease_seconds": 60}
        assert await renewed.request("POST", routes.WORKER_LEASE, json_body=lease) == {"tasks": []}
    finally:
        await renewed.close()
    shown = await manager.get_worker(agent)
    assert {c["thumbprint"]: c["status"] for c in shown["certificates"]} == {
        mh.worker.thumbprint: "retired",
        new.thumbprint: "active",
    }
    assert "certificate.renew" in _actions(mh) and "certificate.retire" in _actions(mh)


async def test_revoking_closes_an_open_keep_alive_connection_within_a_second(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    agent = await _enabled_worker(manager, connect(mh.worker))
    conn = await KeepAlive.open(context_for(mh.worker, mh, tmp_path), server.port)
    try:
        assert await conn.post(routes.WORKER_HEARTBEAT, heartbeat_body(agent)) == 200
        await manager.revoke_certificate(mh.worker.thumbprint)
        assert await conn.closed_by_peer(timeout=1.0)
    finally:
        conn.close()
    with pytest.raises(ApiError) as refused:
        lease = {"agent_id": agent, "capacity": 1, "wait_seconds": 0, "lease_seconds": 60}
        await connect(mh.worker).request("POST", routes.WORKER_LEASE, json_body=lease)
    assert refused.value.status == 403


async def test_a_rotation_kept_as_a_master_property_by_an_earlier_version_is_carried_over(
    mh: MasterHome, clock: FakeClock
) -> None:
    # What an earlier version left mid-rotation: the new certificate (with its key) in Root, and
    # the phase as the master property rotation.master_cert.
    new = create_self_signed(["127.0.0.1", "localhost"])
    CertStore(mh.home, "Root").add(new)
    legacy = {
        "phase": "announced",
        "old": mh.master.thumbprint,
        "new": new.thumbprint,
        "started_at": datetime.now(UTC).isoformat(),
        "actor": "admin:admin",
        "switched_at": "",
    }
    with Catalog.open(mh.catalog_url) as catalog:
        catalog.set_property("rotation.master_cert", json.dumps(legacy))
    server = MasterServer(mh.home, host="127.0.0.1", port=0, clock=clock, watch_interval=0)
    await server.start()
    try:
        assert server.services is not None
        rotation = server.services.require_rotation().rotation
        assert isinstance(rotation, MasterCertRotation) and rotation.record is not None
        assert (rotation.record.phase, rotation.record.new) == ("announced", new.thumbprint)
    finally:
        await server.stop()
    with Catalog.open(mh.catalog_url) as catalog:
        assert catalog.get_property("rotation.master_cert") == ""
        shared = catalog.master_rotation()
    assert shared is not None and shared.new == new.thumbprint and shared.new_cert_pem
