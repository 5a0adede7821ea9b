"""``limit``: the raw keep-alive mTLS request rate of this master against its trivial health route.

The same aiohttp server, TLS policy, access guard and client as every other figure; nothing behind
the route. A control-plane figure divided by this one says how much of the machine's raw request
capacity is left for everything else (catalog, JSON, logging). Two client processes, each with a few
keep-alive connections, so the client is not the bottleneck alone on a 2-core machine.
"""

from __future__ import annotations

import time

from packfleet.bench._cluster import BenchCluster
from packfleet.bench._cpu import CpuMeter
from packfleet.bench._load import health_load, run_processes
from packfleet.bench._stats import Result, load_average

CLIENT_PROCESSES = 2
CONNECTIONS_PER_PROCESS = 8


def run(bench: BenchCluster, *, seconds: float, runs: int) -> Result:
    result = Result("limit", "requests/s", catalog=bench.catalog)
    result.notes["seconds"] = seconds
    for _ in range(runs):
        result.loads.append(load_average())
        # The master and the (reaped) client processes: CPU per request on both ends of the wire.
        meter = CpuMeter([bench.master_pid()])
        meter.start()
        start_at = time.time() + 4.0  # time for the spawned clients to import and connect
        args = [(str(bench.master_home), CONNECTIONS_PER_PROCESS, start_at, seconds)] * CLIENT_PROCESSES
        counts = run_processes(health_load, args, timeout=seconds + 60)
        cpu = meter.stop()
        total = sum(counts)
        result.add_run(total / seconds, cpu_ms_per_request=cpu * 1000.0 / max(1, total))
        result.loads.append(load_average())
    return result
