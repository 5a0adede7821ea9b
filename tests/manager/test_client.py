"""ManagerClient against a real master: one method per admin route, settings and pins from the home."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from master.support import (
    FakeClock,
    MasterHome,
    client_for,
    heartbeat_body,
    new_agent_id,
    project_archive,
    public,
)
from packfleet.config import ManagerSettings, load_manager_settings, save_manager_settings
from packfleet.errors import BadRequest, CertificateNotFound, SettingsError, TlsError
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.pki import CertStore, create_self_signed
from packfleet.protocol import routes


async def register(mh: MasterHome, server: MasterServer, tmp_path: Path) -> str:
    agent = new_agent_id()
    async with client_for(mh.worker, mh, server, tmp_path / "w") as worker:
        await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    return agent


async def test_worker_administration_round_trip(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    agent = await register(mh, server, tmp_path)
    assert (await manager.get_worker(agent))["is_enabled"] is False
    assert (await manager.enable_worker(agent))["is_enabled"] is True
    updated = await manager.update_worker(agent, description="rack 4", tags="etl,fast", display_name="w-one")
    assert (updated["description"], updated["tags"], updated["display_name"]) == (
        "rack 4",
        "etl,fast",
        "w-one",
    )
    assert (await manager.get_worker("w-one"))["agent_id"] == agent  # by display name too
    assert (await manager.disable_worker(agent))["is_enabled"] is False
    revoked = await manager.revoke_certificate(mh.worker.thumbprint)
    assert revoked["status"] == "revoked"
    deleted = await manager.delete_worker(agent)
    assert deleted["agent_id"] == agent
    assert await manager.list_workers() == []
    actions = [entry["action"] for entry in await manager.audit(limit=100)]
    for action in ("worker.enable", "worker.update", "worker.disable", "certificate.revoke", "worker.delete"):
        assert action in actions


async def test_projects_and_executions(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path, clock: FakeClock
) -> None:
    deployed = await manager.deploy("default", project_archive(tmp_path))
    assert (deployed["folder"], deployed["project"], deployed["version"]) == ("default", "etl", 1)
    assert [p["project"] for p in await manager.list_projects()] == ["etl"]
    assert await manager.list_projects("elsewhere") == []
    agent = await register(mh, server, tmp_path)
    first = await manager.run("default", "etl", "load", {"rows": "3"}, workers=[agent], retry_count=2)
    assert first["parameters"] == {"rows": 3, "password": "********"}
    assert first["allowed_workers"] == [agent] and first["retry_count"] == 2
    second = await manager.run("default", "etl", "load")
    assert [e["execution_id"] for e in await manager.list_executions()] == [
        second["execution_id"],
        first["execution_id"],
    ]
    canceled = await manager.cancel(second["execution_id"])
    assert canceled["status_name"] == "canceled"
    assert [e["execution_id"] for e in await manager.list_executions(status=3)] == [second["execution_id"]]
    follow = await manager.events(second["execution_id"], wait=10)
    assert follow["finished"] is True  # an ended execution answers at once, without waiting
    with pytest.raises(BadRequest, match="rows") as caught:
        await manager.run("default", "etl", "load", {"rows": "many"})
    assert caught.value.status == 400
    with pytest.raises(BadRequest) as caught:
        await manager.run("default", "etl", "load", workers=["not-a-uuid"])
    assert caught.value.status == 400 and caught.value.fix


async def test_health_and_openapi(manager: ManagerClient) -> None:
    assert (await manager.health())["status"] == "ok"
    assert routes.ADMIN_WORKERS in (await manager.openapi())["paths"]


def test_from_home_without_manager_settings_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        ManagerClient.from_home(tmp_path)
    assert caught.value.fix


def test_from_home_with_empty_keys_names_them(mh: MasterHome, tmp_path: Path) -> None:
    save_manager_settings(mh.home, ManagerSettings(master_endpoint="https://127.0.0.1:8391"))
    with pytest.raises(SettingsError, match="no pinned master certificate") as caught:
        ManagerClient.from_home(mh.home)
    assert caught.value.fix is not None and "--master-cert" in caught.value.fix


async def test_a_pin_missing_from_root_is_named(mh: MasterHome, server: MasterServer) -> None:
    other = create_self_signed(["elsewhere"])
    settings = load_manager_settings(mh.home)
    save_manager_settings(
        mh.home, dataclasses.replace(settings, master_https_cert_thumbprint=other.thumbprint)
    )
    with pytest.raises(CertificateNotFound, match=other.thumbprint):
        ManagerClient.from_home(mh.home)


async def test_a_master_serving_another_certificate_fails_the_pin(
    mh: MasterHome, server: MasterServer
) -> None:
    impostor = create_self_signed(["127.0.0.1"])
    CertStore(mh.home, "Root").add(public(impostor))
    settings = load_manager_settings(mh.home)
    save_manager_settings(
        mh.home, dataclasses.replace(settings, master_https_cert_thumbprint=impostor.thumbprint)
    )
    async with ManagerClient.from_home(mh.home) as manager:
        with pytest.raises(TlsError, match=mh.master.thumbprint):
            await manager.list_workers()


def test_an_admin_certificate_without_its_key_is_refused(mh: MasterHome, server: MasterServer) -> None:
    CertStore(mh.home, "My").key_path(mh.admin.thumbprint).unlink()
    with pytest.raises(SettingsError, match="no private key"):
        ManagerClient.from_home(mh.home)
