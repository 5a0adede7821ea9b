"""``latency``: sequential executions with idle workers (each submitted after the previous ended).

submit->start is the execution's creation to its task's lease (``tasks.started_at``), and
submit->finished its creation to the completion the worker reported (``tasks.ended_at``): both from
the master's own clock, so no client polling interval is inside them. ``roundtrip`` is what the
client saw: from sending the run request to holding every event of the ended execution, the way
``packfleet run --wait`` gets there (comparable to the peers' "round trip"): a run request with
``wait`` whose answer is the first page of events, then the follow long-poll only while the
execution has not ended.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from packfleet.bench._cluster import PACKAGES, BenchCluster
from packfleet.bench._stats import Result, load_average, percentile
from packfleet.manager import ManagerClient
from packfleet.protocol import ExecutionStatus

#: What ``run --wait`` asks first: its first page's wait (the CLI's ``_EXPLAIN_EVERY``), and the
#: follow's wait once the execution is running.
_FIRST_WAIT = 3.0
_FOLLOW_WAIT = 15.0
_WAITING = (ExecutionStatus.CREATED, ExecutionStatus.PENDING)


async def _run_waiting(manager: ManagerClient, package: str) -> int:
    """One ``packfleet run --wait``'s requests (output aside): the run with wait and an idempotency
    key, then the follow until every event of the ended execution is in hand. Its execution id."""
    page = await manager.run_waiting(
        "default", "bench", package, idempotency_key=str(uuid.uuid4()), wait=_FIRST_WAIT
    )
    execution_id = page.execution.execution_id
    after = 0
    deadline = time.monotonic() + 60.0
    while not page.complete:
        after = max([after, *(e.id for e in page.events)])
        if time.monotonic() > deadline:
            raise TimeoutError(f"execution {execution_id} did not end within 60 s")
        waiting = page.execution.code in _WAITING
        if waiting:  # the CLI says why a run is pending, between its follow requests
            await manager.pending(execution_id)
        page = await manager.events(
            execution_id, after_id=after, wait=_FIRST_WAIT if waiting else _FOLLOW_WAIT
        )
    return execution_id


async def _one_run(bench: BenchCluster, package: str, n: int) -> dict[str, float]:
    ids: list[int] = []
    trips: list[float] = []
    async with bench.manager() as manager:
        for _ in range(n):
            sent = time.perf_counter()
            ids.append(await _run_waiting(manager, package))
            trips.append((time.perf_counter() - sent) * 1000.0)
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
