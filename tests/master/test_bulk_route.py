"""POST /api/v1/admin/executions/bulk: many executions in one request and one transaction."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from master.support import MasterHome, project_archive
from master.test_worker_routes import enabled_worker, lease_body
from packfleet.errors import ApiError
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.pki import Credential
from packfleet.protocol import routes
from packfleet.transport import MasterClient

Connect = Callable[[Credential | None], MasterClient]


async def test_bulk_creates_ready_executions_that_workers_lease(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    worker, agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    body = {"folder": "default", "project": "etl", "package": "load", "count": 5, "parameters": {"rows": "7"}}
    reply = await manager.client.request("POST", routes.ADMIN_EXECUTIONS_BULK, json_body=body)
    ids = reply["execution_ids"]
    assert len(ids) == 5 and ids == sorted(ids)
    leased = await worker.request("POST", routes.WORKER_LEASE, json_body=lease_body(agent, capacity=10))
    assert [t["execution_id"] for t in leased["tasks"]] == ids
    assert all(t["parameters"]["rows"] == 7 for t in leased["tasks"])  # typed against the manifest


@pytest.mark.parametrize(
    ("change", "words"),
    [({"count": 0}, "count must be 1..10000"), ({"package": "nope"}, "has no package 'nope'")],
)
async def test_bulk_refuses_a_bad_request_and_creates_nothing(
    server: MasterServer,
    manager: ManagerClient,
    tmp_path: Path,
    change: dict[str, object],
    words: str,
) -> None:
    await manager.deploy("default", project_archive(tmp_path))
    body = {"folder": "default", "project": "etl", "package": "load", "count": 3, **change}
    with pytest.raises(ApiError) as caught:
        await manager.client.request("POST", routes.ADMIN_EXECUTIONS_BULK, json_body=body)
    assert words in str(caught.value)
    assert await manager.list_executions() == []


async def test_a_worker_certificate_may_not_bulk_create(
    mh: MasterHome, server: MasterServer, manager: ManagerClient, connect: Connect, tmp_path: Path
) -> None:
    worker, _agent = await enabled_worker(mh, manager, connect)
    await manager.deploy("default", project_archive(tmp_path))
    body = {"folder": "default", "project": "etl", "package": "load", "count": 2}
    with pytest.raises(ApiError) as caught:
        await worker.request("POST", routes.ADMIN_EXECUTIONS_BULK, json_body=body)
    assert caught.value.status == 403
