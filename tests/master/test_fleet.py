"""Health carries the master's time, /metrics is per master, Root store edits are audited on reload."""

from __future__ import annotations

from pathlib import Path

from master.support import FakeClock, MasterHome, context_for, raw
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.protocol import routes


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
