"""The master on a PostgreSQL catalog (the production/HA backend): the whole task round trip."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from master.support import (
    FakeClock,
    build_master_home,
    client_for,
    heartbeat_body,
    new_agent_id,
    project_archive,
    write_manager_settings,
)
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.protocol import routes

pytestmark = pytest.mark.postgres


async def test_a_long_polled_task_runs_to_completion_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    mh = build_master_home(tmp_path, catalog_url=pg_url)
    async with MasterServer(mh.home, host="127.0.0.1", port=0, clock=FakeClock(), watch_interval=0) as server:
        write_manager_settings(mh, server)
        async with (
            ManagerClient.from_home(mh.home) as manager,
            client_for(mh.worker, mh, server, tmp_path / "clients") as worker,
        ):
            agent = new_agent_id()
            first = await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
            assert first["state"] == "disabled"
            await manager.enable_worker(agent)
            await manager.deploy("default", project_archive(tmp_path))
            ask = {"agent_id": agent, "capacity": 4, "wait_seconds": 20, "lease_seconds": 60}
            waiting = asyncio.create_task(worker.request("POST", routes.WORKER_LEASE, json_body=ask))
            await asyncio.sleep(0.2)
            execution = await manager.run("default", "etl", "load", {"rows": "7"})
            [task] = (await asyncio.wait_for(waiting, 5))["tasks"]
            assert task["parameters"]["rows"] == 7
            report = {"task_id": task["task_id"], "attempt": task["attempt"], "outcome": "succeeded"}
            done = {"agent_id": agent, "reports": [report]}
            assert (await worker.request("POST", routes.WORKER_COMPLETE, json_body=done))["results"][0][
                "accepted"
            ]
            shown = await manager.get_execution(execution["execution_id"])
            assert shown["status_name"] == "succeeded"
