"""A real cluster per catalog backend: master and two workers as processes, connected by hand."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import pg_database
from packfleet.localcluster import LocalCluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "etl"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """Master + worker1 (127.0.0.2) + worker2 (127.0.0.3), both enabled, sample project deployed."""
    root = tmp_path_factory.mktemp(f"cluster-{request.param}")
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_database("pf_e2e")) if request.param == "postgresql" else None
        cluster = stack.enter_context(LocalCluster(root, catalog_url=url))
        cluster.init_master()
        cluster.start_master()
        for name, ip in (("worker1", "127.0.0.2"), ("worker2", "127.0.0.3")):
            cluster.add_worker(name, ip)
            cluster.start_worker(name)
        cluster.wait_for_workers(["worker1", "worker2"])
        cluster.cli(cluster.master.home, "deploy", str(EXAMPLE), as_json=True)
        yield cluster


def run(cluster: LocalCluster, target: str, *args: str) -> dict[str, Any]:
    """Submit an execution without waiting; return its record."""
    result = cluster.cli(cluster.master.home, "run", target, *args, as_json=True)
    assert isinstance(result, dict)
    return result


def execution(cluster: LocalCluster, execution_id: int) -> dict[str, Any]:
    result = cluster.cli(cluster.master.home, "executions", "show", str(execution_id), as_json=True)
    assert isinstance(result, dict)
    return result


def logs(cluster: LocalCluster, execution_id: int) -> list[dict[str, Any]]:
    result = cluster.cli(cluster.master.home, "executions", "logs", str(execution_id), as_json=True)
    assert isinstance(result, list)
    return result


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 60, interval: float = 0.25, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def wait_finished(cluster: LocalCluster, execution_id: int, *, timeout: float = 60) -> dict[str, Any]:
    finished = {3, 4, 6, 7, 9}

    def done() -> dict[str, Any] | None:
        record = execution(cluster, execution_id)
        return record if record["status"] in finished else None

    return wait_until(done, timeout=timeout, what=f"execution {execution_id} to finish")  # type: ignore[no-any-return]
