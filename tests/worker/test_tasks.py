"""Running tasks: cancel and lost leases from task heartbeats, capacity, and the CPU/memory gate."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path

import pytest

from .conftest import DemoProject, FakeProbe, MakeAgent, Pki, write_home
from .helpers import eventually, journal
from .stubmaster import StubMaster


def started_pid(stub: StubMaster, task_id: int) -> int:
    for event in stub.lines(task_id):
        found = re.search(r"started in process (\d+)", event.message)
        if found:
            return int(found[1])
    raise AssertionError(f"task {task_id} reported no start")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_cancel_in_a_task_heartbeat_reply_stops_the_package(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    stub.add(demo.task(1, "sleep", seconds=60))
    agent = await make_agent(home)
    burst = asyncio.ensure_future(agent.run(burst=True))
    await eventually(lambda: any(e.message == "sleeping" for e in stub.lines(1)), what="the package runs")
    stub.cancel.add(1)
    await asyncio.wait_for(burst, 15)

    report = stub.completion(1)
    assert report.outcome == "canceled"
    assert "woke up" not in [e.message for e in stub.lines(1)]
    assert not alive(started_pid(stub, 1))
    assert [lease.task_id for lease in stub.task_beats[0].leases] == [1]


async def test_a_lost_lease_kills_the_package_without_a_report(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    stub.add(demo.task(1, "sleep", seconds=60))
    agent = await make_agent(home)
    burst = asyncio.ensure_future(agent.run(burst=True))
    await eventually(lambda: any(e.message == "sleeping" for e in stub.lines(1)), what="the package runs")
    stub.lost.add(1)
    await asyncio.wait_for(burst, 15)

    assert stub.completions == []
    assert not alive(started_pid(stub, 1))
    assert agent.cache.idle  # its events were delivered, and no report waits
    await agent.close()  # stopping with nothing pending deletes the journal
    assert not journal(agent.cache.folder)


def max_overlap(folder: Path) -> int:
    spans = [tuple(map(float, p.read_text().split())) for p in folder.glob("*.span")]
    points = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in points:
        running += step
        peak = max(peak, running)
    return peak


async def test_never_more_tasks_than_max_task_count(
    tmp_path: Path, pki: Pki, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent, span_folder: Path
) -> None:
    home = write_home(tmp_path / "w", pki, stub.endpoint, max_task_count=2)
    stub.add(*(demo.task(i, "hold", folder=str(span_folder), seconds=0.3) for i in range(1, 7)))
    agent = await make_agent(home)
    await agent.run(burst=True)

    assert len(list(span_folder.glob("*.span"))) == 6
    assert max_overlap(span_folder) == 2
    assert all(1 <= ask.capacity <= 2 for ask in stub.leases)
    assert [c.outcome for c in stub.completions] == ["succeeded"] * 6


async def test_tasks_beyond_the_capacity_asked_for_are_not_run(
    tmp_path: Path,
    pki: Pki,
    stub: StubMaster,
    demo: DemoProject,
    make_agent: MakeAgent,
    span_folder: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    home = write_home(tmp_path / "w", pki, stub.endpoint, max_task_count=2)
    stub.overgive = 3
    stub.add(*(demo.task(i, "hold", folder=str(span_folder), seconds=0.05) for i in range(1, 6)))
    agent = await make_agent(home)
    await agent.run(burst=True)

    assert sorted(c.task_id for c in stub.completions) == [1, 2]
    assert sorted(p.stem for p in span_folder.glob("*.span")) == ["1", "2"]
    assert "the master leased 5 tasks for 2 free slots" in caplog.text


@pytest.mark.parametrize(
    ("cpu", "memory", "reason"),
    [
        (70.0, 4096.0, "CPU use 70% is not below TaskRequestMaxCPU 70%"),
        (99.0, 4096.0, "CPU use 99% is not below TaskRequestMaxCPU 70%"),
        (5.0, 100.0, "free memory 100 MB is not above TaskRequestMinMemory 100 MB"),
        (5.0, 12.0, "free memory 12 MB is not above TaskRequestMinMemory 100 MB"),
    ],
)
async def test_a_busy_machine_does_not_ask_for_tasks(
    home: Path,
    stub: StubMaster,
    demo: DemoProject,
    make_agent: MakeAgent,
    cpu: float,
    memory: float,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stub.add(demo.task(1, "hello"))
    probe = FakeProbe(cpu=cpu, memory=memory)
    agent = await make_agent(home, probe=probe)
    with caplog.at_level(logging.INFO, logger="packfleet.worker"):
        await agent.run(burst=True)

    assert stub.leases == []
    assert f"not asking for tasks: {reason}" in caplog.text
    probe.cpu, probe.memory = 69.0, 101.0
    again = await make_agent(home, probe=probe)
    await again.run(burst=True)
    assert stub.completion(1).outcome == "succeeded"
