"""A whole cluster on one machine, in real processes: the demo, the end-to-end tests and the benchmarks."""

from packfleet.errors import ClusterError
from packfleet.localcluster._cluster import (
    FAST_MASTER_SETTINGS,
    FAST_WORKER_SETTINGS,
    LocalCluster,
    Node,
    free_port,
    sigterm_exits,
)
from packfleet.localcluster._dev import READY, DevOptions, run_dev, sample_project

__all__ = [
    "FAST_MASTER_SETTINGS",
    "FAST_WORKER_SETTINGS",
    "READY",
    "ClusterError",
    "DevOptions",
    "LocalCluster",
    "Node",
    "free_port",
    "run_dev",
    "sample_project",
    "sigterm_exits",
]
