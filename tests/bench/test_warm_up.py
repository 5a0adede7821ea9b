"""The throughput warm-up: small runs warm up small; measured runs first take the workers past
their first TaskFolderKeepCount tasks, once per cluster."""

from __future__ import annotations

from typing import Any

import pytest

from packfleet.bench import _throughput
from packfleet.bench._cluster import BenchCluster


class Cluster:
    """What warm_up reads of a BenchCluster, with its steady-state count as the real one computes it."""

    catalog = "sqlite"

    def __init__(self, **settings: str) -> None:
        self.worker_count = 2
        self.worker_settings = settings
        self.steady = False

    tasks_to_steady_state = BenchCluster.tasks_to_steady_state


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    counts: list[int] = []

    async def one_run(_bench: Any, _package: str, n: int, _postgres: bool) -> tuple[float, dict[str, float]]:
        counts.append(n)
        return 1.0, {"cpu_ms_per_task": 1.0}

    monkeypatch.setattr(_throughput, "_one_run", one_run)
    return counts


def test_steady_state_is_past_every_workers_kept_folders() -> None:
    cluster: Any = Cluster()
    default = cluster.tasks_to_steady_state()
    assert default > 2 * (1000 + 10)  # TaskFolderKeepCount and MaxTaskCount defaults, per worker
    assert default < 3 * (1000 + 10)
    smaller: Any = Cluster(TaskFolderKeepCount="100", MaxTaskCount="4")
    small = smaller.tasks_to_steady_state()
    assert 2 * 104 < small < 3 * 104


def test_a_measured_run_warms_up_to_the_steady_state_once(runs: list[int]) -> None:
    bench: Any = Cluster()
    _throughput.warm_up(bench, "noop", 3000)
    _throughput.warm_up(bench, "noop_fresh", 1000)  # same cluster, same workers: already steady
    assert runs == [bench.tasks_to_steady_state(), _throughput.WARM_UP] and bench.steady


def test_a_small_run_warms_up_small(runs: list[int]) -> None:
    bench: Any = Cluster()
    _throughput.warm_up(bench, "noop", 20)
    _throughput.warm_up(bench, "noop", 500)
    assert runs == [20, _throughput.WARM_UP] and not bench.steady
