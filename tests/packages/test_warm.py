"""Warm servers: a project version's fresh tasks fork from a process that imported its modules once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import psutil

from packfleet.packages import PackageRunner, Project, RunSpec, _child

from .conftest import launch
from .test_package_runner import first_event, gone, grandchild_ends


def _spec(project_dir: Path, project: Project, package: str, task_root: Path) -> RunSpec:
    return RunSpec(1, 1, 1, project_dir, project.packages[package], {}, task_root / "tasks" / "warm")


def _fork_server() -> psutil.Process:
    [server] = [p for p in psutil.Process().children() if "_forkserver" in " ".join(p.cmdline())]
    return server


async def test_fresh_tasks_start_warm_and_each_still_runs_alone(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path
) -> None:
    assert await runner.warm(_spec(probe_dir, probe, "warmth", tmp_path))

    runs = [await launch(runner, probe_dir, probe, "warmth", tmp_path) for _ in range(3)]
    results = [await run.wait() for run in runs]

    assert {r.outcome for r in results} == {"succeeded"}
    seen = [json.loads(run.messages("stdout")[0]) for run in runs]
    assert all(s["imported_ahead"] and s["thread_ran"] for s in seen)
    assert len({s["random"] for s in seen}) == 3  # the generator is reseeded in every process
    assert {str(Path(s["cwd"]).parent) for s in seen} == {str((tmp_path / "tasks").resolve())}
    assert len({s["cwd"] for s in seen}) == 3  # each in its own task folder, created by the task
    assert len({run.handle.pid for run in runs}) == 3
    assert all("(fresh)" in run.events[0].message for run in runs)
    assert all(gone(run.handle.pid) for run in runs)


async def test_a_warm_task_logs_through_its_package_logger_made_once_in_the_warm_server(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path
) -> None:
    assert await runner.warm(_spec(probe_dir, probe, "warmth", tmp_path))

    runs = [await launch(runner, probe_dir, probe, "warmth", tmp_path) for _ in range(2)]
    for run in runs:
        assert (await run.wait()).outcome == "succeeded"

    seen = [json.loads(run.messages("stdout")[0]) for run in runs]
    assert {s["logger"] for s in seen} == {"package.warmth"}
    assert {s["stdin"] for s in seen} == {"/dev/null"}
    # Made by the process that imported the module (the warm server), not by each task's process.
    warm_server = {s["logger_made_in"] for s in seen}
    assert len(warm_server) == 1 and warm_server.isdisjoint(run.handle.pid for run in runs)


def test_a_request_a_warm_server_cannot_make_a_context_from_is_left_to_its_task() -> None:
    # The task's process meets the same error and reports it as the task's (as a cold task does).
    assert _child.warm_context({"package": {"name": "noop"}}) is None


async def test_a_warm_task_is_a_child_of_the_warm_server_and_dies_with_it(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path
) -> None:
    assert await runner.warm(_spec(probe_dir, probe, "stubborn", tmp_path))
    run = await launch(runner, probe_dir, probe, "stubborn", tmp_path)
    await first_event(run, "stdout")
    task = psutil.Process(run.handle.pid)
    warm_server = task.parent()
    assert warm_server is not None and warm_server.pid != _fork_server().pid

    warm_server.kill()  # no shutdown runs: the kernel's parent-death signal ends the task

    result = await asyncio.wait_for(run.wait(), 10)
    assert (result.outcome, result.exit_code) == ("failed", None)
    deadline = time.monotonic() + 5
    while not gone(task.pid):
        assert time.monotonic() < deadline, "the task outlived its warm server"
        await asyncio.sleep(0.01)
    after = await launch(runner, probe_dir, probe, "warmth", tmp_path)  # runs, warm again or cold
    assert (await after.wait()).outcome == "succeeded"


async def test_cancel_ends_a_warm_task_and_what_it_left_behind(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path
) -> None:
    assert await runner.warm(_spec(probe_dir, probe, "stubborn", tmp_path))
    run = await launch(runner, probe_dir, probe, "stubborn", tmp_path)
    await first_event(run, "stdout")

    await run.handle.cancel(grace=0.3)

    result = await run.wait()
    assert (result.outcome, result.exit_code) == ("canceled", -9)
    assert gone(run.handle.pid)

    assert await runner.warm(_spec(probe_dir, probe, "spawner", tmp_path))
    spawner = await launch(runner, probe_dir, probe, "spawner", tmp_path)
    assert (await spawner.wait()).outcome == "succeeded"
    await grandchild_ends(tmp_path)


async def test_a_module_that_keeps_a_file_open_at_import_runs_cold(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path
) -> None:
    assert not await runner.warm(_spec(probe_dir, probe, "opener", tmp_path))

    run = await launch(runner, probe_dir, probe, "opener", tmp_path)

    assert (await run.wait()).outcome == "succeeded"
    assert run.messages("stdout") == ["ran"]


async def test_an_import_error_is_reported_by_every_task_as_before(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path
) -> None:
    assert not await runner.warm(_spec(probe_dir, probe, "badimport", tmp_path))

    for _ in range(2):
        run = await launch(runner, probe_dir, probe, "badimport", tmp_path)
        result = await run.wait()
        assert (result.outcome, result.exit_code) == ("failed", 1)
        assert "RuntimeError: broken at import" in result.message
