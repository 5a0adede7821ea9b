"""Leases are (task, attempt), end to end: a short partition never runs a package twice at once.

One master and one worker as real processes. While a package runs, the master's port is cut off
for 9 seconds (iptables DROP on that one port, both directions; root only): the master sees the
lease expire and requeues the task, then gives the next attempt back to the same worker. The
worker must stop the old attempt before it starts the new one, and a "lost" answer for the old
attempt must not kill the new one, so the execution still succeeds within its retries.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from packfleet.config import load_worker_settings
from packfleet.localcluster import LocalCluster

from .conftest import EXAMPLE, logs, run, wait_finished, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("iptables") is None, reason="needs root and iptables"
    ),
]

SUCCEEDED = 7
PARTITION = 9.0


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("attempts")) as cluster:
        cluster.init_master()
        cluster.start_master()
        cluster.add_worker("worker1", "127.0.0.2")
        cluster.start_worker("worker1")
        cluster.wait_for_workers(["worker1"])
        cluster.cli(cluster.master.home, "deploy", str(EXAMPLE), as_json=True)
        yield cluster


def _rules(port: int) -> list[list[str]]:
    """DROP both directions of the master's one port, and nothing else."""
    return [
        ["INPUT", "-i", "lo", "-p", "tcp", "-s", "127.0.0.1", "-d", "127.0.0.1", "--dport", str(port)],
        ["INPUT", "-i", "lo", "-p", "tcp", "-s", "127.0.0.1", "-d", "127.0.0.1", "--sport", str(port)],
    ]


@contextlib.contextmanager
def partition(port: int) -> Iterator[None]:
    added: list[list[str]] = []
    try:
        for rule in _rules(port):
            subprocess.run(["iptables", "-I", *rule, "-j", "DROP"], check=True)  # noqa: S607
            added.append(rule)
        yield
    finally:
        for rule in added:
            subprocess.run(["iptables", "-D", *rule, "-j", "DROP"], check=False)  # noqa: S607


class PackageCounter:
    """Counts, every 50 ms, the package processes the worker has running at once.

    A package process is one working in a task folder: under the fork server it is either a child
    of the fork server or of a warm server (the fork server's child for one project version).
    """

    def __init__(self, worker_pid: int, tasks_root: Path) -> None:
        self.worker = psutil.Process(worker_pid)
        self.tasks_root = str(tasks_root.resolve())
        self.peak = 0
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        deadline = time.monotonic() + 300  # bounded even if the test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(psutil.Error):
                packages = [
                    child.pid
                    for child in self.worker.children(recursive=True)
                    if child.status() != psutil.STATUS_ZOMBIE
                    and os.path.dirname(child.cwd()) == self.tasks_root
                ]
                self.pids.update(packages)
                self.peak = max(self.peak, len(packages))
            self._stop.wait(0.05)

    def __enter__(self) -> PackageCounter:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_a_9_second_partition_never_runs_the_package_twice_at_once(single: LocalCluster) -> None:
    worker = single.workers["worker1"].process
    assert worker is not None
    tasks_root = load_worker_settings(single.workers["worker1"].home).tasks_root(
        single.workers["worker1"].home
    )
    with PackageCounter(worker.pid, tasks_root) as counter:
        record = run(single, "default/etl/sleep", "--param", "seconds=15", "--retry", "3")
        execution_id = record["execution_id"]

        def ticking() -> bool:
            return any("slept 1 s" in str(e["message"]) for e in logs(single, execution_id))

        wait_until(ticking, timeout=60, what="the package to run")
        with partition(single.port):
            time.sleep(PARTITION)  # the fault itself: the master's port is unreachable meanwhile
        done = wait_finished(single, execution_id, timeout=120)

    assert done["status"] == SUCCEEDED, done
    assert done["task"]["attempt"] >= 2, "the partition did not make the master requeue the task"
    assert counter.peak == 1, f"{counter.peak} package processes of one worker ran at once"
    assert len(counter.pids) >= 2  # the old attempt's process was stopped, a new one ran
    worker_log = (single.root / "worker1.log").read_text(errors="replace")
    assert "stopping the old one first" in worker_log or "is no longer this worker's" in worker_log
