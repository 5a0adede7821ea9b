"""Health carries the master's time, /metrics is per master, Root store edits are audited on reload;
a fleet's heartbeats cost the master one catalog call each and a log line per change."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from master.support import FakeClock, MasterHome, context_for, heartbeat_body, new_agent_id, raw
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.protocol import routes
from packfleet.transport import MasterClient


async def test_health_reports_the_master_time(
    mh: MasterHome, server: MasterServer, clock: FakeClock, tmp_path: Path
) -> None:
    answer = await raw(context_for(None, mh, tmp_path), server, "GET", routes.HEALTH)
    assert answer.body["time"] == clock().isoformat()


async def test_metrics_need_a_certificate_and_count_refusals(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    anonymous = await raw(context_for(None, mh, tmp_path), server, "GET", routes.METRICS)
    assert anonymous.status == 403
    text = await manager.metrics()
    assert 'packfleet_requests_refused_total{reason="forbidden"} 1.0' in text
    assert 'packfleet_certificate_days_left{role="master"' in text
    assert 'packfleet_certificate_days_left{role="admin"' in text
    assert "packfleet_tls_handshakes_completed_total" in text
    assert 'packfleet_executions{status="succeeded"} 0.0' in text


async def test_certificates_inventory_has_days_left(server: MasterServer, manager: ManagerClient) -> None:
    entries = await manager.certificates()
    served = [e for e in entries if e["status"] == "serving"]
    assert [e["thumbprint"] for e in served] == [server.serving_thumbprint]
    assert all(e["warning"] is None and e["days_left"] > 300 for e in entries)


async def test_root_store_edits_are_audited_on_reload(
    mh: MasterHome, server: MasterServer, manager: ManagerClient
) -> None:
    added = CertStore(mh.home, "Root").add(Credential(create_self_signed(["w9"]).certificate)).thumbprint
    await server.reload()
    rows = [r for r in await manager.audit(limit=1000) if r["action"] == "store.change"]
    assert rows[-1]["details"] == {"store": "Root", "added": [added], "removed": []}
    CertStore(mh.home, "Root").delete(added)
    await server.reload()
    rows = [r for r in await manager.audit(limit=1000) if r["action"] == "store.change"]
    assert rows[-1]["details"]["removed"] == [added]


def _count_calls(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> list[Any]:
    """Record each call of ``target.name`` (its first argument), calling through."""
    calls: list[Any] = []
    real = getattr(target, name)

    def counted(first: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(first)
        return real(first, *args, **kwargs)

    monkeypatch.setattr(target, name, counted)
    return calls


async def test_a_bound_workers_heartbeat_takes_one_catalog_call_and_no_lookup(
    mh: MasterHome,
    server: MasterServer,
    connect: Callable[[Credential | None], MasterClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = new_agent_id()
    worker = connect(mh.worker)
    registered = await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    assert registered["state"] == "disabled"
    catalog = server.state.catalog
    lookups = _count_calls(monkeypatch, catalog, "authorize_many")
    writes = _count_calls(monkeypatch, catalog, "bound_heartbeats")
    full = _count_calls(monkeypatch, catalog, "worker_heartbeats")
    server.state.principals.invalidate()  # as long after the last heartbeat as a 10 s interval is
    beat = await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    assert beat["state"] == "disabled" and beat["agent_id"] == agent
    assert (len(lookups), len(writes), len(full)) == (0, 1, 0)
    # What the heartbeat read is kept for the worker's next requests (its lease long-poll).
    remembered = await server.state.principals.get(mh.worker.thumbprint)
    assert remembered is not None and remembered.agent_id == agent and not remembered.enabled
    assert lookups == []


async def test_an_identity_certificate_is_still_refused_the_heartbeat_route(
    mh: MasterHome, server: MasterServer, connect: Callable[[Credential | None], MasterClient]
) -> None:
    answer = await raw(
        context_for(mh.admin, mh, server.home / "clients"),
        server,
        "POST",
        routes.WORKER_HEARTBEAT,
        body=heartbeat_body(new_agent_id()),
    )
    assert answer.status == 403
    assert "not to a worker" in answer.body["detail"]
    assert server.state.catalog.list_workers() == []


async def test_a_waiting_workers_answer_is_logged_when_it_changes_not_at_every_heartbeat(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Callable[[Credential | None], MasterClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = new_agent_id()
    worker = connect(mh.worker)
    with caplog.at_level(logging.INFO, logger="packfleet.master"):
        for _ in range(3):
            await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
        await manager.enable_worker(agent)
        await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
        await manager.disable_worker(agent)
        for _ in range(2):
            await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("heartbeat of")]
    # Registered (disabled), then disabled again after being enabled: two lines, not five.
    assert len(lines) == 2, lines
    assert all("disabled" in line for line in lines)
