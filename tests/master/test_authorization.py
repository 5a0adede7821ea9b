"""Each rule of DESIGN.md "Certificates and trust", over real mutual TLS on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from master.support import MasterHome, context_for, heartbeat_body, new_agent_id, public, raw
from packfleet.catalog import Catalog
from packfleet.errors import TransportError
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.protocol import routes
from packfleet.transport import MasterClient

Connect = Callable[[Credential | None], MasterClient]
PROBLEM = "application/problem+json"


async def test_without_a_certificate_only_health_and_openapi_answer(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    anonymous = context_for(None, mh, tmp_path)
    health = await raw(anonymous, server, "GET", routes.HEALTH)
    assert health.status == 200 and health.body["status"] == "ok"
    assert (await raw(anonymous, server, "GET", routes.OPENAPI)).body["openapi"] == "3.1.0"
    lease = {"agent_id": new_agent_id(), "capacity": 1, "wait_seconds": 0, "lease_seconds": 60}
    for method, path, body in [
        ("POST", routes.WORKER_LEASE, lease),
        ("POST", routes.WORKER_HEARTBEAT, heartbeat_body(new_agent_id())),
        ("GET", routes.ADMIN_WORKERS, None),
        ("GET", "/api/v1/no/such/route", None),
    ]:
        answer = await raw(anonymous, server, method, path, body=body)
        assert answer.status == 403, path
        assert answer.content_type == PROBLEM
        assert "presented none" in answer.body["detail"]
        assert answer.body["fix"]


async def test_an_unknown_certificate_in_root_registers_a_disabled_worker(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    agent = new_agent_id()
    reply = await connect(mh.worker).request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    assert reply["state"] == "disabled"
    assert f"packfleet manager worker enable {agent}" in reply["message"]
    [worker] = await manager.list_workers()
    assert worker["agent_id"] == agent and worker["is_enabled"] is False
    assert [c["thumbprint"] for c in worker["certificates"]] == [mh.worker.thumbprint]


async def test_a_disabled_workers_lease_is_refused_naming_thumbprint_worker_and_fix(
    mh: MasterHome, server: MasterServer, connect: Connect, tmp_path: Path
) -> None:
    agent = new_agent_id()
    await connect(mh.worker).request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    ask = {"agent_id": agent, "capacity": 1, "wait_seconds": 0, "lease_seconds": 60}
    answer = await raw(context_for(mh.worker, mh, tmp_path), server, "POST", routes.WORKER_LEASE, body=ask)
    assert answer.status == 403 and answer.content_type == PROBLEM
    doc = answer.body
    assert doc["thumbprint"] == mh.worker.thumbprint
    assert agent in doc["worker"] and "worker1" in doc["worker"]
    assert "disabled" in doc["detail"]
    assert doc["fix"] == f"packfleet manager worker enable {agent}"
    assert doc["type"].startswith("urn:packfleet:problem:") and doc["status"] == 403


async def test_an_enabled_worker_leases_and_may_not_speak_for_another_agent(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect
) -> None:
    agent = new_agent_id()
    worker = connect(mh.worker)
    await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    await manager.enable_worker(agent)
    ask = {"agent_id": agent, "capacity": 1, "wait_seconds": 0, "lease_seconds": 60}
    assert await worker.request("POST", routes.WORKER_LEASE, json_body=ask) == {"tasks": []}
    other = dict(ask, agent_id=new_agent_id())
    with pytest.raises(Exception, match="may not act for agent") as caught:
        await worker.request("POST", routes.WORKER_LEASE, json_body=other)
    assert getattr(caught.value, "status", None) == 403


async def test_a_worker_certificate_is_never_accepted_on_admin_routes(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    agent = new_agent_id()
    await connect(mh.worker).request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    await manager.enable_worker(agent)
    ctx = context_for(mh.worker, mh, tmp_path)
    for method, path in [("GET", routes.ADMIN_WORKERS), ("GET", routes.ADMIN_EXECUTIONS)]:
        answer = await raw(ctx, server, method, path)
        assert answer.status == 403
        assert "never accepted on admin routes" in answer.body["detail"]
        assert answer.body["thumbprint"] == mh.worker.thumbprint
        assert agent in answer.body["worker"]


async def test_an_admin_certificate_cannot_pose_as_a_worker(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    answer = await raw(
        context_for(mh.admin, mh, tmp_path),
        server,
        "POST",
        routes.WORKER_HEARTBEAT,
        body=heartbeat_body(new_agent_id()),
    )
    assert answer.status == 403 and "belongs to admin 'admin'" in answer.body["detail"]


async def test_a_trusted_certificate_that_is_nobodys_is_refused_on_admin_routes(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    answer = await raw(context_for(mh.worker, mh, tmp_path), server, "GET", routes.ADMIN_AUDIT)
    assert answer.status == 403
    assert "belongs to no admin, executor or viewer identity" in answer.body["detail"]


async def test_an_executor_may_run_and_watch_but_not_administer(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    executor = create_self_signed(["ops"])
    CertStore(mh.home, "Root").add(public(executor))
    with Catalog.open(mh.catalog_url) as catalog:
        catalog.add_principal("ops", "executor", actor="test", thumbprint=executor.thumbprint)
    await server.reload()
    ctx = context_for(executor, mh, tmp_path)
    assert (await raw(ctx, server, "GET", routes.ADMIN_EXECUTIONS)).status == 200
    assert (await raw(ctx, server, "GET", routes.ADMIN_WORKERS)).status == 200  # reads everything
    refused = await raw(ctx, server, "POST", routes.ADMIN_TOKENS, body={"ttl_seconds": 60})
    assert refused.status == 403 and "needs role admin" in refused.body["detail"]


async def test_a_viewer_reads_everything_and_changes_nothing(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> None:
    viewer = create_self_signed(["auditor"])
    CertStore(mh.home, "Root").add(public(viewer))
    with Catalog.open(mh.catalog_url) as catalog:
        catalog.add_principal("auditor", "viewer", actor="test", thumbprint=viewer.thumbprint)
    await server.reload()
    ctx = context_for(viewer, mh, tmp_path)
    for path in (routes.ADMIN_WORKERS, routes.ADMIN_AUDIT, routes.ADMIN_EXECUTIONS, routes.ADMIN_TOKENS):
        assert (await raw(ctx, server, "GET", path)).status == 200, path
    body = {"folder": "default", "project": "etl", "package": "load"}
    refused = await raw(ctx, server, "POST", routes.ADMIN_EXECUTIONS, body=body)
    assert refused.status == 403 and "needs role admin or executor" in refused.body["detail"]


async def _health_over_raw_tls(ctx: ssl.SSLContext, port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        writer.write(f"GET {routes.HEALTH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def test_a_certificate_not_in_root_fails_the_handshake(
    mh: MasterHome, server: MasterServer, connect: Connect, tmp_path: Path
) -> None:
    # The health route answers anyone, even without a certificate: an empty answer means the TLS
    # handshake itself refused the certificate. (CPython's asyncio server closes without flushing
    # the TLS alert, so the client sees the end of the stream, not "unknown ca".)
    trusted = await _health_over_raw_tls(context_for(mh.worker, mh, tmp_path), server.port)
    assert trusted.startswith(b"HTTP/1.1 200")
    stranger = create_self_signed(["stranger"])
    assert await _health_over_raw_tls(context_for(stranger, mh, tmp_path), server.port) == b""
    with pytest.raises(TransportError):
        await connect(stranger).request("GET", routes.HEALTH)


async def test_health_reads_refused_binds_only_for_a_certificate_bound_to_nobody(
    mh: MasterHome, server: MasterServer, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = server.state.catalog
    reads: list[str | None] = []
    refused_binds = catalog.refused_binds

    def counted(thumbprint: str | None = None) -> list[tuple[str, str, str]]:
        reads.append(thumbprint)
        return refused_binds(thumbprint)

    monkeypatch.setattr(catalog, "refused_binds", counted)
    admin = connect(mh.admin)
    for _ in range(3):
        assert (await admin.request("GET", routes.HEALTH))["status"] == "ok"
    assert reads == []  # a bound certificate: the principal cache says so, no catalog read

    unbound = create_self_signed(["unbound"])
    CertStore(mh.home, "Root").add(public(unbound))
    await server.reload()
    assert "refused_bind" not in await connect(unbound).request("GET", routes.HEALTH)
    assert reads == [unbound.thumbprint]
