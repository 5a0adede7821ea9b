"""CPU time spent by every process a scenario involves, including processes that came and went.

A fresh-isolation task lives a few milliseconds: no sampler would see it. The kernel keeps its CPU
time anyway: when a parent reaps a child, the child's time (and that of the children it reaped) is
added to the parent's ``cutime``/``cstime`` (``children_user``/``children_system`` in psutil, see
getrusage(2) ``RUSAGE_CHILDREN``). So summing, over every *live* process of the tree,
``user + system + children_user + children_system`` at the end, minus the same sum at the start,
counts every process that ran in between, reaped or not, as long as the tree's roots are still alive
at the end (take :meth:`CpuMeter.stop` before stopping the cluster).

The PostgreSQL server is not our child (it runs as its own service); its backends and helper
processes are counted by name and owner, which also counts any other client of the same server
during the run: the load column shows whether anything else was busy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

import psutil


def _total(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def _tree(roots: Iterable[int]) -> dict[int, psutil.Process]:
    found: dict[int, psutil.Process] = {}
    for pid in roots:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            root = psutil.Process(pid)
            found[pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
    return found


def postgres_pids() -> list[int]:
    """The PostgreSQL server's processes on this machine (postmaster, backends, writers)."""
    pids = []
    for process in psutil.process_iter(["name", "cmdline"]):
        name = process.info.get("name") or ""
        cmdline = process.info.get("cmdline") or []
        if name == "postgres" or (cmdline and cmdline[0].startswith("postgres")):
            pids.append(process.pid)
    return pids


class CpuMeter:
    """Seconds of CPU used by the trees under ``roots`` (and optionally PostgreSQL) between start and stop.

    A process that starts after :meth:`start` (a pooled package process, a fork server child still
    running) counts from zero; the bench client itself is one of the roots, so submission and polling
    are counted too.
    """

    def __init__(self, roots: Iterable[int], *, postgres: bool = False) -> None:
        self.roots = [os.getpid(), *roots]
        self.postgres = postgres
        self._start: dict[tuple[int, float], float] = {}

    def _snapshot(self) -> dict[tuple[int, float], float]:
        pids = list(self.roots)
        if self.postgres:
            pids += postgres_pids()
        sample: dict[tuple[int, float], float] = {}
        for pid, process in _tree(pids).items():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                # Keyed by (pid, start time): a recycled pid is another process and starts from zero.
                sample[(pid, process.create_time())] = _total(process)
        return sample

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> float:
        """CPU seconds used since :meth:`start` by every process counted."""
        # A process that was alive at start and has been reaped since is in its parent's children
        # fields now with its whole life, so its start value is subtracted too: plain totals.
        return max(0.0, sum(self._snapshot().values()) - sum(self._start.values()))
