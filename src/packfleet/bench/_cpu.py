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

The total is also split into *parts* (:attr:`CpuMeter.by_part`): the bench client, each root under
the name given to it and its descendants under another (a worker, and its package processes), and
PostgreSQL. That tells which process a change moved, where a total hides it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping

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


#: The parts of processes that ``parts`` does not name: the bench client, PostgreSQL, any other.
CLIENT, POSTGRESQL, OTHER = "client", "postgresql", "other"


class CpuMeter:
    """Seconds of CPU used by the trees under ``roots`` (and optionally PostgreSQL) between start and stop.

    A process that starts after :meth:`start` (a pooled package process, a fork server child still
    running) counts from zero; the bench client itself is one of the roots, so submission and polling
    are counted too. ``parts`` names roots by pid: ``(the root's part, its descendants' part)``;
    other roots and their trees count as ``"other"``.
    """

    def __init__(
        self,
        roots: Iterable[int],
        *,
        postgres: bool = False,
        parts: Mapping[int, tuple[str, str]] | None = None,
    ) -> None:
        self.roots = list(roots)
        self.postgres = postgres
        self.parts = dict(parts or {})
        self._start: dict[tuple[int, float], tuple[str, float]] = {}
        #: After :meth:`stop`: the seconds used, by part; they add up to the total. A process of
        #: one part reaped by a parent of another (none in packfleet's bench: a worker's package
        #: processes are reaped by its fork server) moves its whole life to the parent's part.
        self.by_part: dict[str, float] = {}

    def _snapshot(self) -> dict[tuple[int, float], tuple[str, float]]:
        # A process is counted once, in the first group it is found in: the cluster's processes are
        # the bench client's children too, so the client's tree comes last.
        groups = [(pid, self.parts[pid]) for pid in self.roots if pid in self.parts]
        groups += [(pid, (OTHER, OTHER)) for pid in self.roots if pid not in self.parts]
        if self.postgres:
            groups += [(pid, (POSTGRESQL, POSTGRESQL)) for pid in postgres_pids()]
        groups.append((os.getpid(), (CLIENT, OTHER)))
        sample: dict[tuple[int, float], tuple[str, float]] = {}
        for root, (own, descendants) in groups:
            for pid, process in _tree([root]).items():
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    # Keyed by (pid, start time): a recycled pid is another process and starts from zero.
                    part = own if pid == root else descendants
                    sample.setdefault((pid, process.create_time()), (part, _total(process)))
        return sample

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> float:
        """CPU seconds used since :meth:`start` by every process counted."""
        # A process that was alive at start and has been reaped since is in its parent's children
        # fields now with its whole life, so its start value is subtracted too: plain totals.
        by_part: dict[str, float] = {}
        for sample, sign in ((self._snapshot(), 1.0), (self._start, -1.0)):
            for part, seconds in sample.values():
                by_part[part] = by_part.get(part, 0.0) + sign * seconds
        self.by_part = dict(sorted(by_part.items()))
        return max(0.0, sum(by_part.values()))
