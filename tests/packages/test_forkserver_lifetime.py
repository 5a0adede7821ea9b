"""Tasks die with their fork server, even one killed with SIGKILL and a task that ignores SIGTERM."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal

import psutil
import pytest

from packfleet.packages import PackageRunner, Project

from .conftest import launch


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("isolation", ["fresh", "pooled"])
async def test_a_task_does_not_outlive_a_killed_fork_server(
    runner: PackageRunner,
    probe_dir: Path,
    probe: Project,
    tmp_path: Path,
    isolation: Literal["fresh", "pooled"],
) -> None:
    spec = replace(probe.packages["stubborn"], isolation=isolation)
    run = await launch(runner, probe_dir, probe, spec, tmp_path)
    deadline = time.monotonic() + 10
    while "ignoring SIGTERM" not in run.messages("stdout"):
        assert time.monotonic() < deadline, run.events
        await asyncio.sleep(0.01)
    [server] = [p for p in psutil.Process().children() if "_forkserver" in " ".join(p.cmdline())]
    task = run.handle.pid
    assert task in {child.pid for child in server.children()}

    server.kill()  # no shutdown runs: only the kernel's parent-death signal can end the task
    server.wait(5)

    deadline = time.monotonic() + 5
    while not gone(task):
        assert time.monotonic() < deadline, f"task {task} outlived its fork server"
        await asyncio.sleep(0.01)
