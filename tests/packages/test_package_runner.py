"""The runner with real processes: fresh and pooled tasks of the sample and probe projects."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import psutil
import pytest

from packfleet.errors import PackageError
from packfleet.packages import PackageRunner, Project, _runner, load_project
from packfleet.packages._runner import START_LINE_DELAY

from .conftest import Run, launch

Isolation = Literal["fresh", "pooled"]


def gone(pid: int) -> bool:
    """Whether ``pid`` has ended (reaped, or a zombie not yet reaped); it may end while we look."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def grandchild_ends(tmp_path: Path) -> None:
    """Wait (5 s at most) for the process the ``spawner`` package left behind to end with its task."""
    [pid_file] = (tmp_path / "tasks").glob("*/grandchild.pid")
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not gone(grandchild):
        assert time.monotonic() < deadline, "the grandchild outlived its task"
        await asyncio.sleep(0.01)


async def first_event(run: Run, source: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not run.messages(source):
        assert time.monotonic() < deadline, f"no {source} event within {timeout} s: {run.events}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("isolation", ["fresh", "pooled"])
async def test_load_succeeds_with_log_and_stdout_events_in_order(
    runner: PackageRunner, etl_dir: Path, etl: Project, tmp_path: Path, isolation: Isolation
) -> None:
    database = tmp_path / "orders.db"
    spec = replace(etl.packages["load"], isolation=isolation)
    run = await launch(runner, etl_dir, etl, spec, tmp_path, {"target_db": f"sqlite:///{database}"})

    result = await run.wait()

    assert (result.outcome, result.exit_code) == ("succeeded", 0)
    assert [(e.source, e.level, e.message.split(" ")[0]) for e in run.events] == [
        ("system", logging.INFO, "package"),
        ("log", logging.INFO, "reading"),
        ("log", logging.WARNING, "line"),
        ("log", logging.WARNING, "line"),
        ("log", logging.INFO, "committed"),
        ("stdout", logging.INFO, "loaded"),
        ("system", logging.INFO, "package"),
    ]
    assert f"started in process {run.handle.pid} ({isolation})" in run.events[0].message
    assert run.messages("stdout") == ["loaded 38 orders, skipped 2, revenue 2590.27"]
    assert all(e.time.tzinfo is UTC for e in run.events)
    with sqlite3.connect(database) as db:
        assert db.execute("select count(*), sum(quantity) from orders").fetchone()[0] == 38


@pytest.mark.parametrize("isolation", ["fresh", "pooled"])
async def test_a_quick_silent_task_has_one_line_that_says_where_it_ran_and_how_it_ended(
    runner: PackageRunner,
    etl_dir: Path,
    etl: Project,
    tmp_path: Path,
    isolation: Isolation,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "Quick" is what ends within the delay: a long one, so a loaded machine cannot make it slow.
    monkeypatch.setattr(_runner, "START_LINE_DELAY", 30.0)
    spec = replace(etl.packages["noop"], isolation=isolation)
    before = datetime.now(UTC)
    run = await launch(runner, etl_dir, etl, spec, tmp_path)

    result = await run.wait()
    assert result.outcome == "succeeded"
    [line] = run.events
    assert (line.source, line.level) == ("system", logging.INFO)
    started = f"package 'noop' started in process {run.handle.pid} ({isolation})"
    assert line.message == f"{started}; {result.message}"
    assert before <= line.time <= datetime.now(UTC)  # when the process started


@pytest.mark.parametrize("isolation", ["fresh", "pooled"])
async def test_a_running_silent_task_shows_where_it_runs_before_it_ends(
    runner: PackageRunner, etl_dir: Path, etl: Project, tmp_path: Path, isolation: Isolation
) -> None:
    spec = replace(etl.packages["sleep"], isolation=isolation)
    run = await launch(runner, etl_dir, etl, spec, tmp_path, {"seconds": 5 * START_LINE_DELAY})
    deadline = time.monotonic() + 10.0
    while not run.events:
        assert not run.handle.done, "the task ended before its start line was passed on"
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert run.events[0].message == f"package 'sleep' started in process {run.handle.pid} ({isolation})"

    result = await run.wait()
    assert result.outcome == "succeeded"
    assert [e.message for e in run.events[1:]] == [f"slept 1 s of {5 * START_LINE_DELAY:g}", result.message]


async def test_default_database_lands_in_the_task_folder(
    runner: PackageRunner, etl_dir: Path, etl: Project, tmp_path: Path
) -> None:
    run = await launch(runner, etl_dir, etl, "load", tmp_path)
    assert (await run.wait()).outcome == "succeeded"
    assert list((tmp_path / "tasks").glob("*/orders.db"))


@pytest.mark.parametrize("isolation", ["fresh", "pooled"])
async def test_print_log_and_stderr_keep_their_order(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path, isolation: Isolation
) -> None:
    spec = replace(probe.packages["order"], isolation=isolation)
    run = await launch(runner, probe_dir, probe, spec, tmp_path, {"rounds": 40})

    assert (await run.wait()).outcome == "succeeded"

    body = [(e.source, e.message) for e in run.events[1:-1]]
    expected = []
    for i in range(40):
        expected += [("stdout", f"out {i}"), ("log", f"log {i}"), ("stderr", f"err {i}")]
    assert body == expected
    assert {e.level for e in run.events if e.source == "stderr"} == {logging.WARNING}


@pytest.mark.parametrize("isolation", ["fresh", "pooled"])
async def test_context_holds_parameters_folders_and_ids(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path, isolation: Isolation
) -> None:
    spec = replace(probe.packages["context"], isolation=isolation)
    run = await launch(runner, probe_dir, probe, spec, tmp_path, {"dsn": "sqlite:///x.db"})
    assert (await run.wait()).outcome == "succeeded"

    seen = json.loads(run.messages("stdout")[0])
    task_dir = str((tmp_path / "tasks").resolve() / str(seen["ids"][1]))
    assert seen["parameters"] == {"dsn": "sqlite:///x.db"}
    assert seen["dsn"] == "sqlite:///x.db"
    assert seen["task_dir"] == seen["cwd"] == task_dir
    assert seen["project_dir"] == seen["path0"] == str(probe_dir.resolve())
    assert seen["ids"] == [100 + seen["ids"][1], seen["ids"][1], 1]
    assert seen["session_leader"] is True
    assert seen["stdin"] == "/dev/null"  # the server's, inherited: nothing to read from
    assert run.messages("log") == []  # DEBUG is below the default log_level


async def test_log_level_debug_lets_debug_records_through(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path
) -> None:
    run = await launch(runner, probe_dir, probe, "context", tmp_path, log_level=logging.DEBUG)
    assert (await run.wait()).outcome == "succeeded"
    assert run.messages("log") == ["debug is shown only at log_level DEBUG"]


@pytest.mark.parametrize("isolation", ["fresh", "pooled"])
async def test_failure_reports_the_traceback_and_exit_code_1(
    runner: PackageRunner, etl_dir: Path, etl: Project, tmp_path: Path, isolation: Isolation
) -> None:
    spec = replace(etl.packages["fail"], isolation=isolation)
    run = await launch(runner, etl_dir, etl, spec, tmp_path, {"reason": "bad input"})

    result = await run.wait()

    assert (result.outcome, result.exit_code) == ("failed", 1)
    assert "RuntimeError: fail: bad input" in result.message
    [traceback] = [e for e in run.events if e.source == "stderr"]
    assert traceback.level == logging.ERROR
    assert traceback.message.startswith("Traceback (most recent call last):")
    assert str(etl_dir / "etl" / "demo.py") in traceback.message
    assert "_child.py" not in traceback.message  # the runner's own frames are trimmed
    assert run.events[-1].source == "system" and run.events[-1].level == logging.ERROR


async def test_sys_exit_code_is_the_exit_code(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path
) -> None:
    result = await (await launch(runner, probe_dir, probe, "exit3", tmp_path)).wait()
    assert (result.outcome, result.exit_code) == ("failed", 3)


@pytest.mark.parametrize("isolation", ["fresh", "pooled"])
async def test_cancel_ends_sleep_within_the_grace_period(
    runner: PackageRunner, etl_dir: Path, etl: Project, tmp_path: Path, isolation: Isolation
) -> None:
    spec = replace(etl.packages["sleep"], isolation=isolation)
    run = await launch(runner, etl_dir, etl, spec, tmp_path, {"seconds": "30"})
    await first_event(run, "stdout")

    started = time.monotonic()
    await run.handle.cancel(grace=5.0)
    result = await asyncio.wait_for(run.wait(), 1)

    assert time.monotonic() - started < 5.0
    assert result.outcome == "canceled"
    assert "stopped by SIGTERM" in result.message
    assert run.messages("stdout")[0] == "slept 1 s of 30"
    assert gone(run.handle.pid)


async def test_cancel_kills_a_package_that_ignores_sigterm(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path
) -> None:
    run = await launch(runner, probe_dir, probe, "stubborn", tmp_path)
    await first_event(run, "stdout")

    started = time.monotonic()
    await run.handle.cancel(grace=0.3)
    result = await run.wait()

    assert 0.3 <= time.monotonic() - started < 5.0
    assert (result.outcome, result.exit_code) == ("canceled", -9)
    assert "killed after the grace period" in result.message
    assert gone(run.handle.pid)


async def test_processes_left_behind_by_a_package_end_with_its_task(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path
) -> None:
    run = await launch(runner, probe_dir, probe, "spawner", tmp_path)
    assert (await run.wait()).outcome == "succeeded"
    await grandchild_ends(tmp_path)


async def test_pooled_process_is_recycled_after_max_tasks(
    runner: PackageRunner, etl_dir: Path, etl: Project, tmp_path: Path
) -> None:
    spec = replace(etl.packages["noop"], max_tasks_per_process=3)
    pids = []
    for _ in range(7):
        run = await launch(runner, etl_dir, etl, spec, tmp_path)
        assert (await run.wait()).outcome == "succeeded"
        pids.append(run.handle.pid)

    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4] == pids[5] != pids[6]
    assert len(set(pids)) == 3
    for retired in (pids[0], pids[3]):
        deadline = time.monotonic() + 5
        while not gone(retired):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)


async def test_a_pooled_process_keeps_each_tasks_output_to_that_task(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path
) -> None:
    first = await launch(
        runner, probe_dir, probe, replace(probe.packages["partial"], isolation="pooled"), tmp_path
    )
    assert (await first.wait()).outcome == "succeeded"
    second = await launch(
        runner, probe_dir, probe, replace(probe.packages["order"], isolation="pooled"), tmp_path
    )
    assert (await second.wait()).outcome == "succeeded"

    assert second.handle.pid == first.handle.pid
    assert first.messages("stdout") == ["raw line without its newline"]
    assert [(e.source, e.message) for e in second.events[1:-1]] == [
        (source, f"{kind} {i}")
        for i in range(40)
        for source, kind in (("stdout", "out"), ("log", "log"), ("stderr", "err"))
    ]


@pytest.mark.parametrize("reading", ["read before the end", "paused until after the end"])
async def test_a_pooled_tasks_unfinished_last_line_is_its_own_however_its_pipe_was_read(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path, reading: str
) -> None:
    # Read while the task runs, the line waits in the runner until the task's end mark follows
    # it. Paused, line and mark wait in the pipe, and the task ends only once reading resumes.
    late = await launch(
        runner, probe_dir, probe, replace(probe.packages["late"], isolation="pooled"), tmp_path
    )
    if reading == "paused until after the end":
        late.handle.pause()
        await asyncio.sleep(0.8)
        assert not late.handle.done, "a pooled task ended with its output still unread"
        assert late.messages("stdout") == []
        late.handle.resume()
    assert (await asyncio.wait_for(late.wait(), 10)).outcome == "succeeded"
    after = await launch(
        runner, probe_dir, probe, replace(probe.packages["order"], isolation="pooled"), tmp_path
    )
    assert (await asyncio.wait_for(after.wait(), 10)).outcome == "succeeded"

    assert after.handle.pid == late.handle.pid
    assert late.messages("stdout") == ["late line without its newline"]
    assert after.messages("stdout") == [f"out {i}" for i in range(40)]


COUNTER_TOML = """
[project]
name = "counter"
version = "{version}"

[packages.count]
kind = "python"
entry = "counter:count"
isolation = "pooled"
"""
COUNTER_MODULE = """
RUNS = []


def count(ctx):
    RUNS.append(ctx.task_id)
    print("{version}", len(RUNS))
"""


def counter_project(root: Path, version: str) -> Path:
    folder = root / "projects" / f"counter-{version}"
    folder.mkdir(parents=True)
    (folder / "packfleet.toml").write_text(COUNTER_TOML.format(version=version))
    (folder / "counter.py").write_text(COUNTER_MODULE.format(version=version))
    return folder


async def test_a_pooled_process_keeps_a_versions_modules_and_never_runs_another_versions(
    runner: PackageRunner, tmp_path: Path
) -> None:
    one, two = counter_project(tmp_path, "1"), counter_project(tmp_path, "2")
    projects = {one: load_project(one), two: load_project(two)}
    runs = []
    for folder in (one, one, two, two, one):
        run = await launch(runner, folder, projects[folder], "count", tmp_path)
        assert (await run.wait()).outcome == "succeeded"
        runs.append(run)

    assert len({run.handle.pid for run in runs}) == 1
    # Module-level state survives between tasks of one version; another version's task finds
    # its own module, imported afresh, and so does the first version's after it.
    assert [run.messages("stdout") for run in runs] == [["1 1"], ["1 2"], ["2 1"], ["2 2"], ["1 1"]]


CLOSER_TOML = """
[project]
name = "closer"
version = "1"

[packages.close]
kind = "python"
entry = "closer:close"
isolation = "pooled"

[packages.speak]
kind = "python"
entry = "closer:speak"
isolation = "pooled"
"""
CLOSER_MODULE = """
import logging
import sys


def close(ctx):
    print("closing")
    logging.getLogger().handlers.clear()
    sys.stdout.close()


def speak(ctx):
    print("printed")
    ctx.log.info("logged")
"""


async def test_a_pooled_task_has_working_streams_and_logging_whatever_the_last_one_did(
    runner: PackageRunner, tmp_path: Path
) -> None:
    folder = tmp_path / "projects" / "closer"
    folder.mkdir(parents=True)
    (folder / "packfleet.toml").write_text(CLOSER_TOML)
    (folder / "closer.py").write_text(CLOSER_MODULE)
    project = load_project(folder)
    runs = []
    for package in ("speak", "close", "speak"):
        run = await launch(runner, folder, project, package, tmp_path)
        assert (await run.wait()).outcome == "succeeded"
        runs.append(run)

    assert len({run.handle.pid for run in runs}) == 1
    assert [(e.source, e.message) for e in runs[2].events[1:-1]] == [("stdout", "printed"), ("log", "logged")]
    assert runs[1].messages("stdout") == ["closing"]


@pytest.mark.parametrize("bad", ["fail", "sleep"])
async def test_pooled_process_is_replaced_after_a_failure_or_cancel(
    runner: PackageRunner, etl_dir: Path, etl: Project, tmp_path: Path, bad: str
) -> None:
    first = await launch(runner, etl_dir, etl, "noop", tmp_path)
    await first.wait()
    spec = replace(etl.packages[bad], isolation="pooled")
    run = await launch(runner, etl_dir, etl, spec, tmp_path)
    assert run.handle.pid == first.handle.pid
    if bad == "sleep":
        await first_event(run, "stdout")
        await run.handle.cancel(grace=5)
    assert (await run.wait()).outcome in ("failed", "canceled")

    after = await launch(runner, etl_dir, etl, "noop", tmp_path)

    assert (await after.wait()).outcome == "succeeded"
    assert after.handle.pid != first.handle.pid


async def test_pooled_task_runs_fresh_when_every_slot_is_busy(
    etl_dir: Path, etl: Project, tmp_path: Path
) -> None:
    runner = PackageRunner(pool_size=1)
    await runner.start()
    try:
        sleeper = replace(etl.packages["sleep"], isolation="pooled")
        busy = await launch(runner, etl_dir, etl, sleeper, tmp_path, {"seconds": 0.5})
        extra = await launch(runner, etl_dir, etl, "noop", tmp_path)

        assert (await extra.wait()).outcome == "succeeded"
        assert (await busy.wait()).outcome == "succeeded"
        assert "(fresh)" in extra.events[0].message and "(pooled)" in busy.events[0].message
    finally:
        await runner.close()


async def test_a_cancelled_waiter_leaves_the_task_and_other_waiters_alone(
    runner: PackageRunner, etl_dir: Path, etl: Project, tmp_path: Path
) -> None:
    run = await launch(runner, etl_dir, etl, "sleep", tmp_path, {"seconds": 0.2})
    impatient = asyncio.ensure_future(run.wait())
    patient = asyncio.ensure_future(run.wait())
    await asyncio.sleep(0)
    impatient.cancel()

    assert (await patient).outcome == "succeeded"
    assert impatient.cancelled()
    assert (await run.wait()).outcome == "succeeded"  # once ended, at once
    assert not run.handle._task.waiters


async def test_fifty_concurrent_fresh_tasks_all_succeed(
    runner: PackageRunner, etl_dir: Path, etl: Project, tmp_path: Path
) -> None:
    spec = replace(etl.packages["noop"], isolation="fresh")
    runs = await asyncio.gather(*(launch(runner, etl_dir, etl, spec, tmp_path) for _ in range(50)))

    results = await asyncio.gather(*(r.wait() for r in runs))

    assert {r.outcome for r in results} == {"succeeded"}
    assert len({r.handle.pid for r in runs}) == 50
    assert all(r.events[-1].source == "system" for r in runs)


async def test_fork_server_stays_lean(runner: PackageRunner) -> None:
    [server] = [p for p in psutil.Process().children() if "_forkserver" in " ".join(p.cmdline())]
    assert server.memory_info().rss < 30 * 1024 * 1024


async def test_close_cancels_running_tasks_and_stops_the_fork_server(
    etl_dir: Path, etl: Project, tmp_path: Path
) -> None:
    runner = PackageRunner()
    await runner.start()
    run = await launch(runner, etl_dir, etl, "sleep", tmp_path, {"seconds": 30})
    await first_event(run, "system")
    servers = [p for p in psutil.Process().children() if "_forkserver" in " ".join(p.cmdline())]

    await runner.close()

    assert (await run.wait()).outcome == "canceled"
    assert gone(run.handle.pid)
    assert all(gone(p.pid) for p in servers)
    with pytest.raises(PackageError, match="closed"):
        await launch(runner, etl_dir, etl, "noop", tmp_path)


async def test_non_json_parameters_are_refused_before_any_fork(
    runner: PackageRunner, etl_dir: Path, etl: Project, tmp_path: Path
) -> None:
    from packfleet.packages import RunSpec

    spec = RunSpec(1, 1, 1, etl_dir, etl.packages["noop"], {"x": object()}, tmp_path / "t")
    with pytest.raises(PackageError, match="not JSON values"):
        await runner.launch(spec, lambda event: None)


def test_the_request_text_is_the_request_with_the_package_encoded_once(
    etl_dir: Path, etl: Project, tmp_path: Path
) -> None:
    from packfleet.packages import RunSpec

    load = etl.packages["load"]
    specs = [
        RunSpec(1, 10, 1, etl_dir, load, {"batch_size": 5}, tmp_path / "a"),
        RunSpec(2, 11, 3, etl_dir, load, {"batch_size": 7, "note": 'say "hi"'}, tmp_path / "b"),
        RunSpec(3, 12, 1, etl_dir, etl.packages["noop"], {}, tmp_path / "c"),
    ]

    assert [json.loads(s.request_json()) for s in specs] == [s.request() for s in specs]


async def test_a_cancel_sent_while_the_child_starts_is_not_lost(
    runner: PackageRunner, etl_dir: Path, etl: Project, tmp_path: Path
) -> None:
    runs = [await launch(runner, etl_dir, etl, "sleep", tmp_path, {"seconds": 30}) for _ in range(10)]
    started = time.monotonic()

    await asyncio.gather(*(r.handle.cancel(grace=5.0) for r in runs))

    assert time.monotonic() - started < 4.0  # every SIGTERM landed; no grace period ran out
    assert {(await r.wait()).outcome for r in runs} == {"canceled"}
    assert all(gone(r.handle.pid) for r in runs)


async def test_a_lost_fork_server_is_replaced_on_the_next_launch(
    runner: PackageRunner, etl_dir: Path, etl: Project, tmp_path: Path
) -> None:
    [server] = [p for p in psutil.Process().children() if "_forkserver" in " ".join(p.cmdline())]
    server.kill()
    server.wait(5)
    await asyncio.sleep(0.1)  # let the runner read the end of its socket

    run = await launch(runner, etl_dir, etl, replace(etl.packages["noop"], isolation="fresh"), tmp_path)

    assert (await run.wait()).outcome == "succeeded"
    [replacement] = [p for p in psutil.Process().children() if "_forkserver" in " ".join(p.cmdline())]
    assert replacement.pid != server.pid


def test_the_fork_server_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = "import sys; from packfleet.packages import _forkserver; print(' '.join(sys.modules))"
    # Without coverage's start-up hook (`make test` measures subprocesses): it loads modules of its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS_")}
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, check=True, text=True, env=env
        ).stdout.split()
    )

    assert "packfleet.packages._child" in loaded
    assert not loaded & {"asyncio", "zipfile", "tomllib", "sqlalchemy", "aiohttp", "cryptography"}
