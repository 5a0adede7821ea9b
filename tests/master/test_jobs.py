"""Periodic jobs: lease sweep, cleanup of finished executions, master heartbeat; failures keep going."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from master.support import FakeClock, MasterHome, heartbeat_body, new_agent_id, project_archive
from packfleet.catalog import Catalog, SweepResult
from packfleet.config import load_master_settings, save_master_settings
from packfleet.errors import RemoteNotFound
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.master._jobs import Job, JobRunner
from packfleet.pki import Credential
from packfleet.protocol import routes
from packfleet.transport import MasterClient

Connect = Callable[[Credential | None], MasterClient]


async def test_a_failing_job_logs_and_runs_again(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    again = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("catalog hiccup")
        again.set()

    jobs = JobRunner()
    with caplog.at_level(logging.ERROR, "packfleet.master"):
        jobs.start([Job("flaky", 0.01, flaky)])
        try:
            await asyncio.wait_for(again.wait(), 5)
        finally:
            await jobs.stop()
    assert len(runs) >= 2
    assert any("job flaky failed" in r.getMessage() for r in caplog.records)


async def test_the_master_heartbeat_job_writes_its_last_online_time(mh: MasterHome, clock: FakeClock) -> None:
    settings = load_master_settings(mh.home)
    save_master_settings(mh.home, dataclasses.replace(settings, master_heartbeat_interval_ms=20))
    async with MasterServer(mh.home, host="127.0.0.1", port=0, clock=clock, watch_interval=0) as server:
        key = f"master.{socket.gethostname()}:{server.port}.last_online"
        catalog = Catalog.open(mh.catalog_url, upgrade=False)
        try:
            for _ in range(250):  # bounded: the job ticks every 20 ms
                value = await asyncio.to_thread(catalog.get_property, key)
                if value is not None:
                    break
                await asyncio.sleep(0.02)
        finally:
            catalog.close()
    assert value == clock().isoformat()


async def test_the_sweep_job_runs_on_its_interval(
    mh: MasterHome, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_master_settings(mh.home)
    save_master_settings(mh.home, dataclasses.replace(settings, deal_with_expired_tasks_interval_ms=20))
    async with MasterServer(mh.home, host="127.0.0.1", port=0, clock=clock, watch_interval=0) as server:
        loop = asyncio.get_running_loop()
        swept = asyncio.Event()
        catalog = server.state.catalog
        original = catalog.sweep_expired_leases

        def observed() -> SweepResult:
            result = original()
            loop.call_soon_threadsafe(swept.set)  # the catalog runs on the executor's thread
            return result

        monkeypatch.setattr(catalog, "sweep_expired_leases", observed)
        await asyncio.wait_for(swept.wait(), 5)


async def test_cleanup_removes_finished_executions_past_the_retention_window(
    mh: MasterHome,
    server: MasterServer,
    manager: ManagerClient,
    connect: Connect,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    agent = new_agent_id()
    worker = connect(mh.worker)
    await worker.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    await manager.enable_worker(agent)
    await manager.deploy("default", project_archive(tmp_path))
    execution = await manager.run("default", "etl", "load")
    ask = {"agent_id": agent, "capacity": 1, "wait_seconds": 0, "lease_seconds": 60}
    [task] = (await worker.request("POST", routes.WORKER_LEASE, json_body=ask))["tasks"]
    report = {"task_id": task["task_id"], "attempt": task["attempt"], "outcome": "failed", "exit_code": 1}
    await worker.request("POST", routes.WORKER_COMPLETE, json_body={"agent_id": agent, "reports": [report]})
    await server.cleanup_once()
    assert (await manager.get_execution(execution["execution_id"]))["status_name"] == "failed"
    clock.advance(8 * 86400)  # RetentionWindowInDays defaults to 7
    await server.cleanup_once()
    with pytest.raises(RemoteNotFound) as caught:
        await manager.get_execution(execution["execution_id"])
    assert caught.value.status == 404
