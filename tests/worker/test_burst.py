"""Burst runs against the stub master: registration states, events in order, completions, projects."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from packfleet.errors import ApiError
from packfleet.worker._leasing import BURST_LEASE_ATTEMPTS

from .conftest import DemoProject, MakeAgent, Pki
from .helpers import journal
from .stubmaster import StubMaster


async def test_burst_runs_tasks_and_reports_every_event_in_order(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent, pki: Pki
) -> None:
    stub.add(demo.task(1, "hello", lines=20), demo.task(2, "fail"), demo.task(3, "hello", lines=3))
    agent = await make_agent(home)
    await agent.run(burst=True)

    for task_id in (1, 2, 3):
        lines = stub.lines(task_id)
        assert [e.seq for e in lines] == list(range(1, len(lines) + 1))
        assert {e.execution_id for e in lines} == {1000 + task_id}
    printed = [e.message for e in stub.lines(1) if e.source == "stdout"]
    assert printed == [f"line {i}" for i in range(20)]
    assert any(e.source == "log" and e.level == logging.WARNING for e in stub.lines(1))
    assert stub.completion(1).outcome == "succeeded"
    assert stub.completion(1).exit_code == 0
    assert stub.completion(2).outcome == "failed"
    assert "boom" in stub.completion(2).message
    assert stub.completion(3).outcome == "succeeded"
    assert stub.peers == {pki.worker.thumbprint}
    assert agent.cache.idle
    beat = stub.heartbeats[0]
    assert (beat.agent_id, beat.machine_name, beat.max_tasks) == (agent.settings.agent_id, "testbox", 4)
    await agent.close()  # stopping with nothing pending deletes the journal
    assert not journal(agent.cache.folder)


async def test_project_is_downloaded_once_for_many_tasks(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    stub.add(*(demo.task(i, "hello", lines=1) for i in range(1, 7)))
    agent = await make_agent(home)
    await agent.run(burst=True)

    assert stub.downloads[demo.sha256] == 1
    assert (home / "projects" / demo.sha256 / "packfleet.toml").is_file()
    assert [c.outcome for c in stub.completions] == ["succeeded"] * 6
    # A second burst (a new agent on the same home) reuses the extracted project.
    stub.add(demo.task(7, "hello", lines=1))
    again = await make_agent(home)
    await again.run(burst=True)
    assert stub.downloads[demo.sha256] == 1
    assert stub.completion(7).outcome == "succeeded"


async def test_archive_with_another_sha256_is_refused(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    stub.tampered.add(demo.sha256)
    stub.add(demo.task(1, "hello"), demo.task(2, "hello"))
    agent = await make_agent(home)
    await agent.run(burst=True)

    for task_id in (1, 2):
        report = stub.completion(task_id)
        assert report.outcome == "failed"
        assert f"project archive {demo.sha256}" in report.message
        assert "refusing to run them" in report.message
        assert any("refused the project" in e.message for e in stub.lines(task_id))
    assert not (home / "projects" / demo.sha256).exists()


@pytest.mark.parametrize("state", ["disabled", "revoked", "conflict", "deleted"])
async def test_a_worker_that_is_not_enabled_never_asks_for_tasks(
    home: Path,
    stub: StubMaster,
    demo: DemoProject,
    make_agent: MakeAgent,
    state: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stub.state = state
    stub.message = f"worker certificate is {state}: packfleet manager worker show"
    stub.add(demo.task(1, "hello"))
    agent = await make_agent(home)
    with caplog.at_level(logging.INFO, logger="packfleet.worker"):
        await agent.run(burst=True)

    assert len(stub.heartbeats) == 1
    assert stub.leases == []
    assert stub.queue  # the task is still waiting for an enabled worker
    agent_id = agent.settings.agent_id
    if state == "disabled":
        assert (
            f"worker {agent_id} (worker1) is registered and waits to be enabled: "
            f"packfleet manager worker enable {agent_id}" in caplog.text
        )
    else:
        assert stub.message in caplog.text


async def test_a_403_on_lease_stops_leasing_until_the_master_enables_the_worker(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    stub.forbid_lease = True
    stub.add(demo.task(1, "hello"))
    agent = await make_agent(home)
    await agent.heartbeat()
    assert agent.state == "enabled"
    with pytest.raises(ApiError, match="is enabled") as raised:
        await agent.lease()
    assert raised.value.status == 403
    assert agent.state == "refused"
    assert await agent.lease() == []  # no second request while refused
    assert len(stub.leases) == 1
    assert "packfleet manager worker enable" in caplog.text
    stub.forbid_lease = False
    await agent.heartbeat()
    assert [t.task_id for t in await agent.lease(wait_seconds=0)] == [1]


async def test_a_package_spec_the_worker_cannot_read_fails_the_task(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    task = demo.task(1, "hello")
    stub.add(dataclasses.replace(task, package_spec={**task.package_spec, "kind": "cobol"}))
    agent = await make_agent(home)
    await agent.run(burst=True)

    report = stub.completion(1)
    assert report.outcome == "failed"
    assert "cobol" in report.message
    assert any("could not start the package" in e.message for e in stub.lines(1))


async def test_a_burst_retries_a_failing_lease_with_backoff_then_runs_the_task(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    stub.lease_script = ["503", "503", "503"]
    stub.add(demo.task(1, "hello", lines=2))
    agent = await make_agent(home)
    await agent.run(burst=True)
    assert stub.completion(1).outcome == "succeeded"
    assert len(stub.leases) >= 4 and not stub.lease_script


async def test_a_burst_gives_up_on_a_master_that_keeps_failing_its_leases(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    stub.lease_script = ["503"] * 20
    stub.add(demo.task(1, "hello"))
    agent = await make_agent(home)
    with pytest.raises(ApiError) as raised:
        await agent.run(burst=True)
    assert raised.value.status == 503
    assert len(stub.leases) == BURST_LEASE_ATTEMPTS  # bounded in count, each after a backoff
    assert stub.queue  # the task waits for a worker that can lease it
