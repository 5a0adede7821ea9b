"""``latency``: sequential executions with idle workers (each submitted after the previous ended).

submit->start is the execution's creation to its task's lease (``tasks.started_at``), and
submit->finished its creation to the completion the worker reported (``tasks.ended_at``): both from
the master's own clock, so no client polling interval is inside them. ``roundtrip`` is what the
client saw: from sending the run request to the follow long-poll saying the execution ended (what
``packfleet run --wait`` does; comparable to the peers' "round trip").
"""

from __future__ import annotations

import asyncio
import time

from packfleet.bench._cluster import PACKAGES, BenchCluster
from packfleet.bench._stats import Result, load_average, percentile
from packfleet.manager import ManagerClient


async def _wait(manager: ManagerClient, execution_id: int) -> None:
    after = 0
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        answer = await manager.events(execution_id, after_id=after, wait=10.0)
        if answer.finished:
            return
        after = answer.last_id
    raise TimeoutError(f"execution {execution_id} did not end within 60 s")


async def _one_run(bench: BenchCluster, package: str, n: int) -> dict[str, float]:
    ids: list[int] = []
    trips: list[float] = []
    async with bench.manager() as manager:
        for _ in range(n):
            sent = time.perf_counter()
            record = await manager.run("default", "bench", package)
            await _wait(manager, record.execution_id)
            trips.append((time.perf_counter() - sent) * 1000.0)
            ids.append(record.execution_id)
    rows = bench.timings(ids)
    start = [(s - c) * 1000.0 for c, s, _ in rows]
    done = [(e - c) * 1000.0 for c, _, e in rows]
    return {
        "submit_start_p50_ms": percentile(start, 50),
        "submit_start_p99_ms": percentile(start, 99),
        "submit_finished_p50_ms": percentile(done, 50),
        "submit_finished_p99_ms": percentile(done, 99),
        "roundtrip_p50_ms": percentile(trips, 50),
        "roundtrip_p99_ms": percentile(trips, 99),
    }


def run(bench: BenchCluster, *, n: int, runs: int, isolation: str) -> Result:
    result = Result("latency", "ms (submit->start p50)", catalog=bench.catalog, isolation=isolation)
    result.notes["n"] = n
    package = PACKAGES[isolation]
    asyncio.run(_one_run(bench, package, min(n, 20)))
    for _ in range(runs):
        result.loads.append(load_average())
        figures = asyncio.run(_one_run(bench, package, n))
        result.add_run(figures.pop("submit_start_p50_ms"), **figures)
        result.loads.append(load_average())
    return result
