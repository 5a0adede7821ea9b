"""bench-peers stops the systems not being measured: whole process trees, always continued after."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from packfleet.bench._alone import stopped
from packfleet.bench._peers import System, measure
from packfleet.bench._stats import Result

#: A parent that starts a child and waits for it, as a worker starts its package processes.
_TREE = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])"


@pytest.fixture
def tree() -> Iterator[psutil.Process]:
    parent = subprocess.Popen([sys.executable, "-c", _TREE])  # noqa: S603 - our own interpreter
    process = psutil.Process(parent.pid)
    try:
        deadline = time.monotonic() + 10
        while not process.children() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.children(), "the child process did not start"
        yield process
    finally:
        for child in process.children(recursive=True):
            child.resume()
            child.kill()
        parent.kill()
        parent.wait(timeout=10)


def _status(process: psutil.Process) -> str:
    return str(process.status())


def test_a_tree_is_stopped_in_the_block_and_running_after_it(tree: psutil.Process) -> None:
    child = tree.children()[0]
    with stopped([tree.pid]) as held:
        assert {p.pid for p in held} == {tree.pid, child.pid}
        assert _status(tree) == psutil.STATUS_STOPPED
        assert _status(child) == psutil.STATUS_STOPPED
    assert _status(tree) != psutil.STATUS_STOPPED
    assert _status(child) != psutil.STATUS_STOPPED


def test_a_failing_block_still_continues_every_process(tree: psutil.Process) -> None:
    child = tree.children()[0]
    with pytest.raises(RuntimeError, match="measurement failed"), stopped([tree.pid]):
        raise RuntimeError("measurement failed")
    assert _status(tree) != psutil.STATUS_STOPPED
    assert _status(child) != psutil.STATUS_STOPPED


def test_a_process_already_gone_is_skipped(tree: psutil.Process) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603 - our own interpreter
    gone.wait(timeout=10)
    with stopped([gone.pid, tree.pid]) as held:
        assert tree.pid in {p.pid for p in held}
        assert gone.pid not in {p.pid for p in held}
    assert _status(tree) != psutil.STATUS_STOPPED


def test_each_system_is_measured_with_every_other_one_stopped() -> None:
    """Three stand-in systems, one process each; two of them share it, as packfleet's pooled and
    fresh figures share one cluster. Each records which processes were stopped while it ran."""
    sleepers = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # noqa: S603
        for _ in range(2)
    ]
    seen: dict[str, list[set[int]]] = {}

    def system(name: str, process: subprocess.Popen[bytes]) -> System:
        def held() -> set[int]:
            return {s.pid for s in sleepers if _status(psutil.Process(s.pid)) == psutil.STATUS_STOPPED}

        def throughput(_n: int) -> tuple[float, dict[str, float]]:
            seen.setdefault(name, []).append(held())
            return 1.0, {"cpu_ms_per_task": 1.0}

        def roundtrip(_n: int) -> dict[str, float]:
            seen.setdefault(name, []).append(held())
            return {"roundtrip_p50_ms": 1.0}

        return System(
            name, 1, throughput, roundtrip, Result("peers", "tasks/s"), False, lambda: [process.pid]
        )

    try:
        systems = [
            system("a pooled", sleepers[0]),
            system("peer", sleepers[1]),
            system("a fresh", sleepers[0]),
        ]
        measure(systems, runs=2, latency_n=1, emit=lambda _line: None)
        assert all(_status(psutil.Process(s.pid)) != psutil.STATUS_STOPPED for s in sleepers)
    finally:
        for sleeper in sleepers:
            psutil.Process(sleeper.pid).resume()
            sleeper.kill()
            sleeper.wait(timeout=10)
    # Warm-up and two rounds, each a throughput and a round trip.
    assert seen == {
        "a pooled": [{sleepers[1].pid}] * 6,
        "a fresh": [{sleepers[1].pid}] * 6,
        "peer": [{sleepers[0].pid}] * 6,
    }
