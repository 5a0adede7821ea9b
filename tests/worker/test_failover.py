"""A worker with two master URLs: when the master it uses stops, the other one serves it.

Two stub masters over real TLS with the same master certificate, as two masters on one catalog
serve it; the worker agent is the real one, with MasterEndpoint listing both.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from packfleet.config import load_worker_settings
from packfleet.worker import WorkerAgent

from .conftest import DemoProject, MakeAgent, Pki, server_context, write_home
from .stubmaster import StubMaster, serve


async def serve_once(agent: WorkerAgent) -> None:
    """Heartbeat, lease what is queued, run it and deliver every event and completion."""
    await agent.heartbeat()
    leased = await agent.lease(wait_seconds=0)
    assert leased, "the master handed out no task"
    await asyncio.gather(*(agent.execute(task) for task in leased))
    assert await agent.report()
    assert agent.cache.idle


async def test_the_worker_keeps_being_served_by_the_second_master_when_the_first_stops(
    tmp_path: Path, pki: Pki, demo: DemoProject, make_agent: MakeAgent
) -> None:
    second = StubMaster(archives={demo.sha256: demo.archive})
    async with serve(second, server_context(pki)):
        first = StubMaster(archives={demo.sha256: demo.archive})
        async with serve(first, server_context(pki)):
            home = write_home(tmp_path / "worker", pki, f"{first.endpoint},{second.endpoint}")
            assert load_worker_settings(home).master_endpoint == f"{first.endpoint},{second.endpoint}"
            agent = await make_agent(home)
            first.add(demo.task(1, "hello", lines=5))
            await serve_once(agent)
            assert first.completion(1).outcome == "succeeded"
            assert agent.client.endpoint == first.endpoint
        # The first master is gone: its port refuses connections.
        second.add(demo.task(2, "hello", lines=5), demo.task(3, "fail"))
        started = time.monotonic()
        await agent.heartbeat()
        switched = time.monotonic() - started
        await serve_once(agent)
        # A reload (SIGHUP) with the same list keeps the client, and with it the master that works.
        client = agent.client
        assert agent.reload()
        assert agent.client is client and agent.client.endpoint == second.endpoint

    assert agent.client.endpoint == second.endpoint
    assert switched < 5.0, f"the heartbeat took {switched:.2f} s to reach the second master"
    assert second.completion(2).outcome == "succeeded"
    assert second.completion(3).outcome == "failed"
    assert [e.message for e in second.lines(2) if e.source == "stdout"] == [f"line {i}" for i in range(5)]
    assert len(second.heartbeats) >= 1 and len(first.heartbeats) >= 1
    assert first.completions and all(c.task_id == 1 for c in first.completions)
