"""Benchmarks of the control plane (``make bench``): throughput, latency, spawn, fleet, limit and idle.

Every scenario stands on real processes with real mutual TLS on loopback, built by
:class:`~packfleet.localcluster.LocalCluster`, and reports the median of several runs with the min,
the max and the machine's load. ``docs/performance.md`` holds the measured figures::

    python -m packfleet.bench                                    # everything, then a table
    python -m packfleet.bench --scenario throughput --catalog postgresql --isolation pooled --n 2000
"""

from packfleet.bench._cluster import BenchCluster
from packfleet.bench._cpu import CpuMeter
from packfleet.bench._idle import Latencies, enabled_worker, holder, measure
from packfleet.bench._main import SCENARIOS, main
from packfleet.bench._stats import Result, percentile, table

__all__ = [
    "SCENARIOS",
    "BenchCluster",
    "CpuMeter",
    "Latencies",
    "Result",
    "enabled_worker",
    "holder",
    "main",
    "measure",
    "percentile",
    "table",
]
