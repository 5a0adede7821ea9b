"""Sensitive parameter values at rest: sealed in the catalog, opened only for the worker that leased them.

The catalog is read the way an attacker with a copy of it would: the database file and its WAL as
bytes, and the rows through sqlite3, never through packfleet.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from master.support import (
    FakeClock,
    MasterHome,
    build_master_home,
    heartbeat_body,
    new_agent_id,
    project_archive,
    write_manager_settings,
)
from packfleet.catalog import Catalog
from packfleet.cli import main
from packfleet.errors import InvalidValue, SecretsError
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.packages import inspect_archive
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.protocol import routes
from packfleet.secretbox import SecretKeyring, is_sealed, sealed_key_id, secrets_key_path
from packfleet.transport import MasterClient

Connect = Callable[[Credential | None], MasterClient]
SECRET = "hunter2-Qx7-unlikely-text"


def _db_path(mh: MasterHome) -> Path:
    return Path(mh.catalog_url.removeprefix("sqlite:///"))


def _stored_parameters(mh: MasterHome) -> dict[int, dict[str, Any]]:
    with sqlite3.connect(_db_path(mh)) as db:
        rows = db.execute("SELECT id, parameters FROM executions ORDER BY id").fetchall()
    return {row[0]: json.loads(row[1]) for row in rows}


def _catalog_bytes(mh: MasterHome) -> bytes:
    path = _db_path(mh)
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


async def _enabled(worker: MasterClient, manager: ManagerClient, name: str) -> str:
    agent = new_agent_id()
    await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent, name))
    await manager.enable_worker(agent)
    return agent


async def _lease(worker: MasterClient, agent: str) -> list[dict[str, Any]]:
    ask = {"agent_id": agent, "capacity": 10, "wait_seconds": 0, "lease_seconds": 60}
    reply = await worker.request("POST", routes.WORKER_LEASE, json_body=ask)
    tasks: list[dict[str, Any]] = reply["tasks"]
    return tasks


async def test_sensitive_values_are_sealed_in_the_rows_and_absent_from_the_file(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    await manager.deploy("default", project_archive(tmp_path))
    run = await manager.run("default", "etl", "load", parameters={"password": SECRET, "rows": "7"})
    ask = {"folder": "default", "project": "etl", "package": "load", "count": 3}
    bulk = await manager._call(
        "POST", routes.ADMIN_EXECUTIONS_BULK, json_body={**ask, "parameters": {"password": SECRET}}
    )
    assert run["parameters"] == {"rows": 7, "password": "********"}
    stored = _stored_parameters(mh)
    assert len(stored) == 4 and len(bulk["execution_ids"]) == 3
    ring = SecretKeyring.load(secrets_key_path(mh.home))
    for parameters in stored.values():
        assert is_sealed(parameters["password"])
        assert sealed_key_id(parameters["password"]) == ring.current
        assert ring.open("password", parameters["password"]) == SECRET
        assert not is_sealed(parameters["rows"])  # only what the manifest marks sensitive
    await server.state.db(server.state.catalog.ping)
    assert SECRET.encode() not in _catalog_bytes(mh)


async def test_a_value_that_looks_sealed_is_refused_for_a_plain_parameter_and_kept_for_a_sensitive_one(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    worker = connect(mh.worker)
    agent = await _enabled(worker, manager, "worker1")
    await manager.deploy("default", project_archive(tmp_path))
    fake = "pfsealed:1:0000000000000000:AAAA"
    manifest = {"parameters": [{"name": "label", "sensitive": False}], "packages": []}
    with pytest.raises(InvalidValue, match="may not begin with"):  # a 400 for the caller
        server.state.seal(manifest, "load", {"label": fake})
    await manager.run("default", "etl", "load", parameters={"password": fake})
    [task] = await _lease(worker, agent)
    assert task["parameters"]["password"] == fake  # given text, sealed, opened: the same text


async def test_catalog_and_key_files_are_private_to_the_service_account(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, tmp_path: Path
) -> None:
    await manager.deploy("default", project_archive(tmp_path))  # a write: the WAL exists now
    path = _db_path(mh)
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), secrets_key_path(mh.home)):
        assert file.exists(), file
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


async def test_a_worker_receives_only_the_values_of_its_own_tasks(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    other_cred = create_self_signed(["worker2", "127.0.0.1"])
    CertStore(mh.home, "Root").add(Credential(other_cred.certificate))
    await server.reload()
    first, second = connect(mh.worker), connect(other_cred)
    first_agent = await _enabled(first, manager, "worker1")
    second_agent = await _enabled(second, manager, "worker2")
    await manager.deploy("default", project_archive(tmp_path))
    for agent, secret in ((first_agent, "first-secret-A1"), (second_agent, "second-secret-B2")):
        await manager.run("default", "etl", "load", parameters={"password": secret}, workers=[agent])
    mine = await _lease(first, first_agent)
    theirs = await _lease(second, second_agent)
    assert [t["parameters"]["password"] for t in mine] == ["first-secret-A1"]
    assert [t["parameters"]["password"] for t in theirs] == ["second-secret-B2"]
    assert "second-secret-B2" not in json.dumps(mine) and "first-secret-A1" not in json.dumps(theirs)
    # Nothing further: a lease again hands out no task, and so no value, of the other worker.
    assert await _lease(first, first_agent) == []


async def test_a_master_without_the_key_refuses_to_start_naming_the_file_and_the_fix(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, clock: FakeClock, tmp_path: Path
) -> None:
    await manager.deploy("default", project_archive(tmp_path))
    await manager.run("default", "etl", "load", parameters={"password": SECRET})
    await server.stop()
    key_file = secrets_key_path(mh.home)
    kept = key_file.read_bytes()
    key_file.unlink()
    again = MasterServer(mh.home, host="127.0.0.1", port=0, clock=clock, watch_interval=0)
    with pytest.raises(SecretsError) as caught:
        await again.start()
    assert str(key_file) in caught.value.message and "does not exist" in caught.value.message
    assert "copy secrets.key" in (caught.value.fix or "")
    assert not key_file.exists()  # no stray key made that would then have to be replaced
    # Another master's key is no better.
    SecretKeyring.generate(key_file).save()
    with pytest.raises(SecretsError, match="holds only"):
        await again.start()
    key_file.write_bytes(kept)
    await again.start()
    await again.stop()


async def test_rotation_reseals_every_value_retires_the_old_key_and_leases_still_open(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    worker = connect(mh.worker)
    agent = await _enabled(worker, manager, "worker1")
    await manager.deploy("default", project_archive(tmp_path))
    await manager.run("default", "etl", "load", parameters={"password": SECRET})
    old = SecretKeyring.load(secrets_key_path(mh.home)).current

    assert main(["--home", str(mh.home), "master", "rotate-secrets-key", "--json"]) == 0

    ring = SecretKeyring.load(secrets_key_path(mh.home))
    assert ring.current != old and list(ring.keys) == [ring.current]
    assert stat.S_IMODE(secrets_key_path(mh.home).stat().st_mode) == 0o600
    [stored] = _stored_parameters(mh).values()
    assert sealed_key_id(stored["password"]) == ring.current
    # The running master read the rewritten key file: it opens the re-sealed value and seals new ones.
    [task] = await _lease(worker, agent)
    assert task["parameters"]["password"] == SECRET
    await manager.run("default", "etl", "load", parameters={"password": "after"})
    assert {sealed_key_id(p["password"]) for p in _stored_parameters(mh).values()} == {ring.current}
    with Catalog.open(mh.catalog_url) as catalog:
        assert catalog.secret_key_ids() == {ring.current}
        actions = [a.action for a in catalog.list_audit(newest=True)]
    assert "secrets.rotated" in actions


async def test_an_upgrade_seals_values_an_older_version_stored_in_plaintext(
    mh: MasterHome, clock: FakeClock, connect: Connect, tmp_path: Path
) -> None:
    # An older catalog: plaintext sensitive values, schema at revision 0003 (before sealing), no key anywhere.
    with Catalog.open(mh.catalog_url) as catalog:
        archive = project_archive(tmp_path)
        catalog.deploy_project("default", inspect_archive(archive).to_dict(), archive, actor="test")
        plain = {"password": SECRET, "rows": 1}
        catalog.create_execution("default", "etl", "load", parameters=plain, actor="test")
    with sqlite3.connect(_db_path(mh)) as db:
        db.execute("UPDATE alembic_version SET version_num = '0003'")
        # ...and without what later revisions add (0005: the shared master certificate rotation;
        # 0006: the console's indexes).
        db.execute("DROP TABLE master_cert_rotation")
        db.execute("DROP TABLE master_cert_acceptances")
        for index in (
            "ix_executions_status_id",
            "ix_tasks_agent_id",
            "ix_audit_log_target_id",
            "ix_tasks_status_created_at",
            "ix_executions_status_created_at",
        ):
            db.execute(f"DROP INDEX {index}")
    assert _stored_parameters(mh)[1]["password"] == SECRET

    # Without the key the upgrade refuses, and says how to get one.
    with pytest.raises(SecretsError, match="plaintext") as caught:
        Catalog.open(mh.catalog_url)
    assert "packfleet master run" in (caught.value.fix or "")

    master = MasterServer(mh.home, host="127.0.0.1", port=0, clock=clock, watch_interval=0)
    await master.start()
    try:
        stored = _stored_parameters(mh)[1]
        ring = SecretKeyring.load(secrets_key_path(mh.home))
        assert is_sealed(stored["password"]) and stored["rows"] == 1
        assert ring.open("password", stored["password"]) == SECRET
        with Catalog.open(mh.catalog_url) as catalog:
            assert catalog.secret_key_ids() == {ring.current}
    finally:
        await master.stop()
    # Not even in free pages or old WAL frames: the upgrade compacts an SQLite catalog it sealed.
    assert SECRET.encode() not in _catalog_bytes(mh)


@pytest.mark.postgres
async def test_on_postgresql_the_rows_hold_sealed_values_and_a_second_master_needs_the_key(
    pg_url: str, tmp_path: Path
) -> None:
    mh = build_master_home(tmp_path, catalog_url=pg_url)
    async with MasterServer(mh.home, host="127.0.0.1", port=0, clock=FakeClock(), watch_interval=0) as server:
        write_manager_settings(mh, server)
        async with ManagerClient.from_home(mh.home) as manager:
            await manager.deploy("default", project_archive(tmp_path))
            await manager.run("default", "etl", "load", parameters={"password": SECRET})
    url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as db:
        [(text,)] = db.execute("SELECT parameters::text FROM executions").fetchall()
        dump = "".join(str(row) for row in db.execute("SELECT * FROM executions").fetchall())
    assert SECRET not in dump
    assert is_sealed(json.loads(text)["password"])
    # A second master on the same database, its home copied without the key file: refused.
    other = tmp_path / "second"
    shutil.copytree(mh.home, other)
    secrets_key_path(other).unlink()
    with pytest.raises(SecretsError, match="secrets.key") as caught:
        await MasterServer(other, host="127.0.0.1", port=0, watch_interval=0).start()
    assert str(secrets_key_path(other)) in caught.value.message and "does not exist" in caught.value.message
