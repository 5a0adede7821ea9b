"""The long-running loop: long-poll leases, graceful stop, signals, and the CLI around it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from packfleet.cli import main
from packfleet.errors import AgentFailed
from packfleet.worker import render_unit

from .conftest import FAST, DemoProject, FakeProbe, MakeAgent, Pki, write_home
from .helpers import eventually, journal
from .stubmaster import StubMaster


async def test_run_serves_until_stopped_and_gives_running_tasks_back(
    home: Path, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    # Real sleeps, so the stop's grace periods are real seconds: the package process must get the
    # time to end on SIGTERM and report "canceled" however loaded the machine (or measured) it is.
    timing = dataclasses.replace(FAST, stop_grace=0.5, cancel_grace=5.0)
    agent = await make_agent(home, sleep=asyncio.sleep, timing=timing)
    serving = asyncio.ensure_future(agent.run(install_signals=False))
    await eventually(lambda: stub.leases, what="a first lease request")
    stub.add(demo.task(1, "hello", lines=3), demo.task(2, "hello", lines=3))
    await eventually(lambda: len(stub.completions) == 2, what="two completions")
    stub.add(demo.task(3, "sleep", seconds=60))
    await eventually(lambda: any(e.message == "sleeping" for e in stub.lines(3)), what="task 3 runs")

    agent.stop()
    await asyncio.wait_for(serving, 20)

    # Tasks 1 and 2 ran side by side: either may finish first. Task 3 is requeued by the master, not failed.
    assert sorted(c.task_id for c in stub.completions) == [1, 2]
    assert any("canceled" in e.message for e in stub.lines(3))
    assert all(ask.wait_seconds == agent.timing.lease_wait for ask in stub.leases)
    assert len(stub.heartbeats) >= 1
    assert not journal(agent.cache.folder)


async def test_sighup_reloads_and_sigterm_stops(
    home: Path, stub: StubMaster, pki: Pki, make_agent: MakeAgent
) -> None:
    agent = await make_agent(home)
    serving = asyncio.ensure_future(agent.run())
    await eventually(lambda: stub.heartbeats, what="the first heartbeat (signal handlers are set)")
    write_home(home, pki, stub.endpoint, display_name="after-hup")
    os.kill(os.getpid(), signal.SIGHUP)
    await eventually(lambda: stub.heartbeats[-1].display_name == "after-hup", what="a reloaded heartbeat")
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(serving, 20)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or not serving.exception()


async def test_cli_burst_run_as_a_process(
    tmp_path: Path, pki: Pki, stub: StubMaster, demo: DemoProject
) -> None:
    # The process measures the real CPU, which parallel tests may keep busy: 100 lifts the limit.
    home = write_home(tmp_path / "w", pki, stub.endpoint, task_request_max_cpu=100.0)
    stub.add(demo.task(1, "hello", lines=4))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "packfleet", "--home", str(home), "worker", "run", "--burst",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert stub.completion(1).outcome == "succeeded"
    assert [e.message for e in stub.lines(1) if e.source == "stdout"] == [f"line {i}" for i in range(4)]
    assert "is enabled: asking the master for tasks" in err.decode()


def test_cli_run_reports_a_bad_home_with_its_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--home", str(tmp_path), "worker", "run", "--burst"])
    assert code == 3
    assert "WorkerSettings.config" in capsys.readouterr().err


def test_install_service_prints_or_writes_a_unit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "my home"
    assert (
        main(["--home", str(home), "worker", "install-service", "--user", "pfworker", "--output", "-"]) == 0
    )
    printed = capsys.readouterr().out
    assert printed == render_unit(home, user="pfworker")
    assert "User=pfworker\n" in printed
    assert f' --home "{home}" worker run\n' in printed
    assert "KillMode=mixed\n" in printed and "ExecReload=/bin/kill -HUP $MAINPID\n" in printed

    unit = tmp_path / "packfleet-worker.service"
    assert main(["--home", str(home), "worker", "install-service", "--output", str(unit)]) == 0
    assert unit.read_text().startswith("[Unit]\n")
    assert "systemctl enable --now packfleet-worker" in capsys.readouterr().out


async def test_cached_events_go_out_as_soon_as_the_master_answers_again(
    tmp_path: Path, pki: Pki, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    home = write_home(tmp_path / "w", pki, stub.endpoint, agent_heartbeat_interval=timedelta(seconds=0.05))
    # Four cut connections: the reporter's backoff alone (1 + 2 + 4 + 8 s) would take 15 s.
    stub.event_script = ["cut"] * 4
    agent = await make_agent(home, sleep=asyncio.sleep)
    serving = asyncio.ensure_future(agent.run(install_signals=False))
    try:
        await eventually(lambda: stub.heartbeats, what="the first heartbeat")
        started = time.monotonic()
        stub.add(demo.task(1, "hello", lines=3))
        await eventually(lambda: stub.completions, timeout=30, what="the completion")
        assert time.monotonic() - started < 5, "a heartbeat that reached the master woke the reporter"
    finally:
        agent.stop()
        await asyncio.wait_for(serving, 20)
    assert not stub.event_script
    assert [e.seq for e in stub.lines(1)] == list(range(1, len(stub.lines(1)) + 1))


class BrokenProbe(FakeProbe):
    """A machine probe that fails as a bug would: not a transport error any loop retries."""

    def machine_name(self) -> str:
        raise RuntimeError("disk on fire")


async def test_a_failed_loop_stops_the_agent_with_an_error_instead_of_hanging(
    home: Path, stub: StubMaster, make_agent: MakeAgent
) -> None:
    agent = await make_agent(home, probe=BrokenProbe())  # the heartbeat loop dies on its first beat
    with pytest.raises(AgentFailed) as stopped:
        await asyncio.wait_for(agent.run(install_signals=False), 20)
    assert "disk on fire" in str(stopped.value)
