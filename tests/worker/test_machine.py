"""The live machine probe and the local task log."""

from __future__ import annotations

import ipaddress
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from packfleet.worker import PsutilProbe
from packfleet.worker._tasklog import TaskLog, ssis_level_bit

from .conftest import DemoProject, MakeAgent, Pki, write_home
from .helpers import FakeClock
from .stubmaster import StubMaster


def test_psutil_probe_reads_this_machine_and_samples_cpu_over_a_window() -> None:
    clock = FakeClock()
    probe = PsutilProbe(clock=clock)
    first = probe.cpu_percent()
    assert 0.0 <= first <= 100.0
    assert probe.cpu_percent() == first  # within the window: the same sample, not a 0/100 flicker
    clock.now += probe.window
    assert 0.0 <= probe.cpu_percent() <= 100.0
    assert probe.memory_free_mb() > 0
    for ip in probe.ips():
        assert not ipaddress.ip_address(ip).is_loopback
    assert probe.machine_name() and probe.user_account()


@pytest.mark.parametrize(
    ("level", "bit"),
    [(logging.DEBUG, 0x01), (logging.INFO, 0x02), (logging.WARNING, 0x04), (logging.ERROR, 0x08), (50, 0x20)],
)
def test_logging_levels_map_onto_ssis_task_log_bits(level: int, bit: int) -> None:
    assert ssis_level_bit(level) == bit


def test_a_disabled_task_log_writes_no_file(tmp_path: Path) -> None:
    task_log = TaskLog(tmp_path / "task.log", enabled=False, mask=126)
    task_log.write(datetime.now(UTC), logging.ERROR, "stderr", "lost on purpose")
    task_log.close()
    assert not (tmp_path / "task.log").exists()


def test_the_task_log_and_its_private_folder_appear_with_the_first_line_kept(tmp_path: Path) -> None:
    path = tmp_path / "tasks" / "7-1" / "task.log"
    task_log = TaskLog(path, enabled=True, mask=0x04)  # Warning only
    task_log.write(datetime.now(UTC), logging.INFO, "stdout", "not kept")
    assert not path.parent.exists()

    task_log.write(datetime.now(UTC), logging.WARNING, "stderr", "kept")
    task_log.write(datetime.now(UTC), logging.WARNING, "stderr", "and appended")
    task_log.close()

    assert [line.split(maxsplit=3)[3] for line in path.read_text().splitlines()] == ["kept", "and appended"]
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_the_task_log_joins_a_folder_the_package_made_first(tmp_path: Path) -> None:
    folder = tmp_path / "7-1"
    folder.mkdir()
    (folder / "output.csv").write_text("the package's own file\n")
    task_log = TaskLog(folder / "task.log", enabled=True, mask=126)
    task_log.write(datetime.now(UTC), logging.INFO, "system", "started")
    task_log.close()
    assert sorted(p.name for p in folder.iterdir()) == ["output.csv", "task.log"]


async def test_the_task_log_keeps_the_levels_of_task_log_level(
    tmp_path: Path, pki: Pki, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    home = write_home(tmp_path / "w", pki, stub.endpoint, task_log_level=0x04)  # Warning only
    stub.add(demo.task(1, "hello", lines=2))
    agent = await make_agent(home)
    await agent.run(burst=True)

    lines = (home / "tasks" / "1001-1" / "task.log").read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("WARNING  log    done with 2 lines")
    assert len(stub.lines(1)) > 1  # the master gets every event whatever the mask
