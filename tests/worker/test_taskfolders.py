"""Task folders: the newest TaskFolderKeepCount kept, older ones emptied and reused, never followed links."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from packfleet.worker._taskfolders import TaskFolders

from .conftest import DemoProject, MakeAgent, Pki, write_home
from .helpers import eventually
from .stubmaster import StubMaster
from .test_attempts import pid_of

Spawned = list[asyncio.Task[Any]]


def folders(root: Path, *, keep: int, spares: int = 2) -> tuple[TaskFolders, Spawned]:
    spawned: Spawned = []

    def spawn(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        spawned.append(task)
        return task

    return TaskFolders(root, keep=keep, spares=spares, spawn=spawn), spawned


def run_task(root: Path, name: str, line: str = "a line\n") -> Path:
    """What an attempt leaves: its folder and task.log (as the worker and its package make them)."""
    folder = root / name
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(folder / "task.log", "a") as log:
        log.write(line)
    return folder


def task_names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def reports(stub: StubMaster, count: int) -> Callable[[], bool]:
    return lambda: len(stub.completions) >= count


async def settle(spawned: Spawned) -> None:
    for _ in range(20):
        pending = [t for t in spawned if not t.done()]
        if not pending:
            return
        await asyncio.gather(*pending)
    raise AssertionError("the clean-up kept spawning")


async def test_the_newest_folders_are_kept_and_an_older_one_becomes_a_new_attempts_folder(
    tmp_path: Path,
) -> None:
    root = tmp_path / "tasks"
    tasks, spawned = folders(root, keep=2)
    assert not tasks.claim(root / "1-1", task_log=True), "nothing made ahead yet: made as before"
    first = run_task(root, "1-1", "task 1\n")
    inode = first.stat().st_ino
    tasks.ended(first)
    for n in (2, 3):
        tasks.ended(run_task(root, f"{n}-1", f"task {n}\n"))
    await settle(spawned)
    # Three ended, two kept: the oldest was emptied into a spare (the same inode, off the task's path).
    assert task_names(root) == ["2-1", "3-1"]
    assert inode in {spare.stat().st_ino for spare in tasks.spares}
    while tasks.spares[-1].stat().st_ino != inode:  # the spares made ahead go first
        tasks.spares.pop()

    assert tasks.claim(root / "4-1", task_log=True)
    new = root / "4-1"
    assert new.stat().st_ino == inode
    assert (new / "task.log").read_text() == "", "the reused task.log starts empty"
    assert os.stat(new).st_mode & 0o777 == 0o700
    assert task_names(root) == ["2-1", "3-1", "4-1"]
    assert (root / "3-1" / "task.log").read_text() == "task 3\n", "a kept folder is untouched"


async def test_a_new_worker_makes_its_spares_ahead_so_a_task_does_not_wait_for_its_folder(
    tmp_path: Path,
) -> None:
    root = tmp_path / "tasks"
    tasks, spawned = folders(root, keep=1000, spares=3)
    assert not tasks.claim(root / "1-1", task_log=True)
    await settle(spawned)
    assert len(tasks.spares) == 3
    assert tasks.claim(root / "2-1", task_log=True)
    assert [p.name for p in (root / "2-1").iterdir()] == ["task.log"]
    assert tasks.claim(root / "3-1", task_log=False)
    assert list((root / "3-1").iterdir()) == []
    await settle(spawned)
    assert len(tasks.spares) == 3, "made again as they are taken"


async def test_a_reused_folder_keeps_nothing_of_its_task_and_no_task_log_when_off(
    tmp_path: Path,
) -> None:
    root = tmp_path / "tasks"
    tasks, spawned = folders(root, keep=1)
    old = run_task(root, "1-1")
    (old / "out.csv").write_text("rows")
    (old / "deep" / "er").mkdir(parents=True)
    (old / "deep" / "er" / "x").write_text("x")
    old.chmod(0o755)
    tasks.ended(old)
    tasks.ended(run_task(root, "2-1"))
    await settle(spawned)  # not a bare task.log: emptied in a thread
    assert tasks.claim(root / "3-1", task_log=False)
    assert list((root / "3-1").iterdir()) == []
    assert os.stat(root / "3-1").st_mode & 0o777 == 0o700


async def test_a_task_log_planted_as_a_link_is_removed_and_its_target_never_truncated(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    tasks, spawned = folders(root, keep=1)
    old = root / "1-1"
    old.mkdir(parents=True)
    (old / "task.log").symlink_to(precious)
    tasks.ended(old)
    tasks.ended(run_task(root, "2-1"))
    await settle(spawned)
    assert precious.read_text() == "keep me"
    assert tasks.claim(root / "3-1", task_log=True)
    assert not (root / "3-1" / "task.log").is_symlink()
    assert not (root / "3-1" / "task.log").exists()


async def test_a_link_in_place_of_a_folder_is_deleted_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data").write_text("keep me")
    tasks, spawned = folders(root, keep=1)
    root.mkdir()
    (root / "1-1").symlink_to(outside, target_is_directory=True)
    tasks.ended(root / "1-1")
    tasks.ended(run_task(root, "2-1"))
    await settle(spawned)
    assert (outside / "data").read_text() == "keep me"
    assert not (root / "1-1").exists() and not (root / "1-1").is_symlink()
    assert not any(spare.is_symlink() for spare in tasks.spares)


async def test_beyond_the_spares_the_oldest_folders_are_deleted(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    tasks, spawned = folders(root, keep=2, spares=1)
    for n in range(1, 7):
        tasks.ended(run_task(root, f"{n}-1"))
    await settle(spawned)
    # keep 2, and a slack of one spare before deleting: the disk stays bounded.
    assert task_names(root) == ["4-1", "5-1", "6-1"]
    assert 1 <= len(tasks.spares) <= 2


async def test_nothing_is_reused_or_deleted_with_keep_zero(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    tasks, spawned = folders(root, keep=0)
    for n in range(1, 6):
        tasks.ended(run_task(root, f"{n}-1"))
    await settle(spawned)
    assert task_names(root) == [f"{n}-1" for n in range(1, 6)]
    inodes = {(root / f"{n}-1").stat().st_ino for n in range(1, 6)}
    assert tasks.claim(root / "6-1", task_log=True), "a spare made ahead, not a reused folder"
    assert (root / "6-1").stat().st_ino not in inodes


async def test_a_spare_whose_name_is_taken_is_kept_for_the_next_attempt(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    tasks, spawned = folders(root, keep=1)
    tasks.ended(run_task(root, "1-1"))
    tasks.ended(run_task(root, "2-1"))
    await settle(spawned)
    run_task(root, "3-1", "already here\n")  # made by an attempt run before
    spares = list(tasks.spares)
    assert not tasks.claim(root / "3-1", task_log=True)
    assert (root / "3-1" / "task.log").read_text() == "already here\n"
    assert tasks.spares == spares
    assert tasks.claim(root / "4-1", task_log=True)


async def test_a_restarted_worker_takes_in_the_folders_it_left_oldest_first(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    for age, name in enumerate(["9-1", "10-1", "2-1"]):  # by age, not by name
        folder = run_task(root, name)
        os.utime(folder, (1_000_000 + age, 1_000_000 + age))
    (root / ".spare-7").mkdir()
    (root / "notes.txt").write_text("not a task folder")
    tasks, spawned = folders(root, keep=2, spares=2)
    assert list(tasks.ended_folders) == [root / "9-1", root / "10-1", root / "2-1"]
    assert tasks.spares == [root / ".spare-7"]
    tasks.ended(run_task(root, "11-1"))
    await settle(spawned)
    # Over the keep count by one, within the slack of the spares: the oldest became a spare.
    assert task_names(root) == ["10-1", "11-1", "2-1", "notes.txt"]
    assert sorted(p.name for p in tasks.spares) == [".spare-7", ".spare-8"]


async def test_a_worker_past_its_keep_count_runs_its_tasks_in_reused_folders(
    tmp_path: Path, pki: Pki, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    home = write_home(tmp_path / "worker", pki, stub.endpoint, task_folder_keep_count=2, max_task_count=1)
    agent = await make_agent(home)
    root = agent.settings.tasks_root(home)
    serving = asyncio.ensure_future(agent.run(install_signals=False))
    inodes: dict[int, int] = {}
    try:
        for task_id in range(1, 7):
            stub.add(demo.task(task_id, "hello"))
            await eventually(reports(stub, task_id), what=f"task {task_id} reported")
            inodes[task_id] = (root / f"{1000 + task_id}-1").stat().st_ino
    finally:
        agent.stop()
        await asyncio.wait_for(serving, 30)

    assert [c.outcome for c in stub.completions] == ["succeeded"] * 6
    kept = task_names(root)
    assert len(kept) <= 2 + 1 + 1, kept  # keep, one spare (MaxTaskCount), one of slack
    assert "1006-1" in kept
    # The later tasks ran in the earlier tasks' folders, and each task.log has its own task only.
    assert len(set(inodes.values())) < len(inodes), "no folder was reused"
    log = (root / "1006-1" / "task.log").read_text()
    assert log.count("started in process") == 1
    assert f"started in process {pid_of(stub, 6, 1)} " in log
