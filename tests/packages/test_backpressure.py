"""Back-pressure: a paused task is not read, so its package blocks on its pipe; nothing is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from packfleet.packages import PackageRunner, Project, _runner

from .conftest import launch
from .test_package_runner import gone


def _blocked_on_a_pipe(pid: int) -> bool:
    try:
        # The kernel function a process sleeps in: pipe_write (anon_pipe_write on newer kernels).
        return Path(f"/proc/{pid}/wchan").read_text().endswith("pipe_write")
    except OSError:
        return False


async def test_a_paused_package_waits_on_its_pipe_and_every_line_arrives_after_resume(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path
) -> None:
    rounds = 3000  # about 0.4 MB of output: far more than a 64 KiB pipe holds
    run = await launch(runner, probe_dir, probe, "order", tmp_path, {"rounds": rounds})
    run.handle.pause()
    deadline = time.monotonic() + 30
    while not _blocked_on_a_pipe(run.handle.pid):
        assert time.monotonic() < deadline, "the paused package never blocked on its pipe"
        await asyncio.sleep(0.02)
    assert not run.handle.done
    assert len(run.messages("stdout")) < rounds

    run.handle.resume()
    result = await asyncio.wait_for(run.wait(), 60)
    assert result.outcome == "succeeded"
    assert run.messages("stdout") == [f"out {i}" for i in range(rounds)]
    assert run.messages("log") == [f"log {i}" for i in range(rounds)]


async def test_output_left_in_the_pipes_of_an_ended_package_waits_for_resume(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_runner, "DRAIN_TIMEOUT", 0.1)  # it must not run while paused
    run = await launch(runner, probe_dir, probe, "order", tmp_path, {"rounds": 20})
    run.handle.pause()
    deadline = time.monotonic() + 30
    while not gone(run.handle.pid):
        assert time.monotonic() < deadline, "the package did not end"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)  # five drain periods: none may cut the output off while paused
    assert not run.handle.done

    run.handle.resume()
    result = await asyncio.wait_for(run.wait(), 30)
    assert result.outcome == "succeeded"
    assert run.messages("stdout") == [f"out {i}" for i in range(20)]
    assert not any("still open" in m for m in run.messages("system"))
