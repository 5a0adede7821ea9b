"""The worker's logs under stress, with real processes: a full log cache disk and a kill -9.

One master and one worker whose ExecutionLogCacheFolder is a 256 KiB tmpfs (so: root only). A
package prints 3,000 lines, which is more than twice what that disk holds: either every line
arrives, or the execution fails with the reason and carries an "N events lost" system event;
never "succeeded" with lines missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from packfleet.localcluster import LocalCluster

from .conftest import execution, logs, run, wait_finished, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
]

SUCCEEDED, FAILED = 7, 4
LINES = 3000

MANIFEST = """
[project]
name = "chatty"
version = "1.0.0"

[packages.lines]
kind = "python"
entry = "chatty_jobs:lines"
[packages.lines.parameters.count]
type = "int"
default = 3000
[packages.lines.parameters.then_sleep]
type = "float"
default = 0.0
"""

JOBS = """
import time


def lines(ctx):
    for i in range(ctx.parameters["count"]):
        print(f"line {i:05d} " + "x" * 40, flush=True)
    time.sleep(ctx.parameters["then_sleep"])
"""


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("smallcache")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], check=True)  # noqa: S607
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)  # noqa: S607


@pytest.fixture(scope="module")
def chatty(tmp_path_factory: pytest.TempPathFactory, small_cache: Path) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("backpressure")
    project = root / "project"
    project.mkdir()
    (project / "packfleet.toml").write_text(MANIFEST)
    (project / "chatty_jobs.py").write_text(textwrap.dedent(JOBS))
    with LocalCluster(root / "cluster") as cluster:
        cluster.init_master()
        cluster.start_master()
        cluster.add_worker("worker1", "127.0.0.2", settings={"ExecutionLogCacheFolder": str(small_cache)})
        cluster.start_worker("worker1")
        cluster.wait_for_workers(["worker1"])
        cluster.cli(cluster.master.home, "deploy", str(project), as_json=True)
        yield cluster


def stdout_lines(events: list[dict[str, object]]) -> list[str]:
    return [str(e["message"]) for e in events if e["message_source"] == "stdout"]


def test_3000_lines_through_a_full_cache_all_arrive_or_the_loss_is_visible(chatty: LocalCluster) -> None:
    record = run(chatty, "default/chatty/lines")
    # The worker waits up to 5 minutes for the cache before it gives up: allow for that.
    done = wait_finished(chatty, record["execution_id"], timeout=420)
    events = logs(chatty, record["execution_id"])
    printed = stdout_lines(events)
    expected = [f"line {i:05d} " + "x" * 40 for i in range(LINES)]
    system = [str(e["message"]) for e in events if e["message_source"] == "system"]
    if done["status"] == SUCCEEDED:
        assert printed == expected, f"succeeded with {len(printed)} of {LINES} lines"
        assert any(re.search(r"package 'lines' succeeded", m) for m in system), system
        assert not any("events lost" in m for m in system)
    else:
        assert done["status"] == FAILED, done
        assert any("could not be written" in m for m in system), system
        assert any(re.fullmatch(r"\d+ events lost", m) for m in system), system
        assert printed == expected[: len(printed)]  # what arrived has no hole
    worker_log = (chatty.root / "worker1.log").read_text(errors="replace")
    assert "an event message is lost" not in worker_log
    assert worker_log.count("event message(s) were lost") <= 1


def test_task_log_survives_kill_9_of_the_worker_mid_package(chatty: LocalCluster) -> None:
    record = run(chatty, "default/chatty/lines", "--param", "count=5", "--param", "then_sleep=60")
    execution_id = record["execution_id"]

    def printed_all() -> bool:
        return len(stdout_lines(logs(chatty, execution_id))) == 5

    wait_until(printed_all, timeout=60, what="the package's 5 lines at the master")
    started = [
        str(e["message"]) for e in logs(chatty, execution_id) if "started in process" in str(e["message"])
    ]
    package_pid = int(re.findall(r"started in process (\d+)", started[0])[0])
    attempt = execution(chatty, execution_id)["task"]["attempt"]
    chatty.kill(chatty.workers["worker1"])  # kill -9: nothing of the worker runs after this
    try:
        task_log = chatty.workers["worker1"].home / "tasks" / f"{execution_id}-{attempt}" / "task.log"
        text = task_log.read_text()
        for i in range(5):
            assert f"stdout line {i:05d} " in text, text
        assert "started in process" in text
    finally:
        # The package dies with the worker's fork server; end it by its PID if it has not yet.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(package_pid):
            time.sleep(0.1)
        if _alive(package_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(package_pid, signal.SIGKILL)
        chatty.cli(chatty.master.home, "executions", "cancel", str(execution_id), check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
