"""``throughput``: N no-op executions submitted in one bulk request, 1 master + 2 workers.

tasks/s is N over the time from just before the submit request to the last task's completion as
the master recorded it. CPU is every process involved (see :mod:`packfleet.bench._cpu`), divided
by N, and also given by part: ``cpu_ms_per_task_master``, ``_workers``, ``_packages`` (their
package processes), ``_client`` (the bench itself) and, on PostgreSQL, ``_postgresql``.
"""

from __future__ import annotations

import asyncio
import time

from packfleet.bench._cluster import PACKAGES, BenchCluster
from packfleet.bench._cpu import CpuMeter
from packfleet.bench._stats import Result, load_average


async def _one_run(
    bench: BenchCluster, package: str, n: int, postgres: bool
) -> tuple[float, dict[str, float]]:
    """tasks/s and the run's CPU figures: ``cpu_ms_per_task`` and its parts."""
    meter = CpuMeter(bench.pids(), postgres=postgres, parts=bench.cpu_parts())
    async with bench.manager() as manager:
        meter.start()
        started = time.time()
        ids = await bench.submit_bulk(manager, package, n)
        await asyncio.to_thread(bench.wait_finished, ids[0], ids[-1], timeout=max(120.0, n / 20))
        cpu = meter.stop()
    elapsed = bench.last_ended(ids[0], ids[-1]) - started
    figures = {"cpu_ms_per_task": cpu * 1000.0 / n}
    figures.update({f"cpu_ms_per_task_{part}": s * 1000.0 / n for part, s in meter.by_part.items()})
    return n / elapsed, figures


#: The usual warm-up: the workers download and unpack the project, the pooled processes start,
#: the catalog's caches fill.
WARM_UP = 200
#: Runs of at least this many tasks are measured in the workers' steady state (see :func:`warm_up`).
STEADY_FROM = 1000


def warm_up(bench: BenchCluster, package: str, n: int) -> None:
    """One warm-up run before runs of ``n`` tasks of ``package``.

    :data:`WARM_UP` tasks at most; before the first runs of :data:`STEADY_FROM` tasks or more on a
    cluster, enough for every worker to reuse its task folders
    (:meth:`BenchCluster.tasks_to_steady_state`): a new worker's first thousand tasks each make
    their folder, and the first measured run paid for it (761–954 against 1,425–1,599 tasks/s,
    about 1 ms of CPU per task more, in 3 pairs of new clusters). The peers' figures are
    steady-state too.
    """
    count = min(n, WARM_UP)
    if n >= STEADY_FROM and not bench.steady:
        count = max(count, bench.tasks_to_steady_state())
        bench.steady = True
    asyncio.run(_one_run(bench, package, count, bench.catalog == "postgresql"))


def run(bench: BenchCluster, *, n: int, runs: int, isolation: str) -> Result:
    """``runs`` runs of N executions of the ``isolation`` no-op package on an already-built cluster."""
    result = Result("throughput", "tasks/s", catalog=bench.catalog, isolation=isolation)
    result.notes["n"] = n
    package = PACKAGES[isolation]
    warm_up(bench, package, n)
    for _ in range(runs):
        result.loads.append(load_average())
        rate, figures = asyncio.run(_one_run(bench, package, n, bench.catalog == "postgresql"))
        result.add_run(rate, **figures)
        result.loads.append(load_average())
    return result
