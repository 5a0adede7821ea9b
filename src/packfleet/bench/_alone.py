"""One system at a time: while one is measured, the others' processes are stopped (``SIGSTOP``).

``bench-peers`` keeps every system running for the whole comparison, so that runs can alternate
without restarts; but an idle system is not free for the one measured beside it. Measured on this
machine: an idle Dask (scheduler and two workers) takes about 12% of a core in wake-ups several
times a second, and beside it packfleet's pooled throughput ran 17% slower at 20% more CPU per task
than with the same Dask processes stopped (8 alternating pairs of 3,000 tasks). An idle packfleet
cluster or Celery takes under 0.5% of a core. Stopping the others gives each system the machine to
itself, as when each was measured alone, and the same treatment for all.

A stopped process keeps its sockets and its state; it only does not run, so its timers fire late
once continued. Every system here tolerates a pause of a run's length: nothing in them times a
peer out within minutes (packfleet's workers heartbeat every minute, Dask's ``worker-ttl`` is five
minutes, and Celery's Redis transport has no heartbeat).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator

import psutil

#: How long :func:`stopped` waits for its processes to have stopped: a signal takes effect when its
#: process is next scheduled, a moment after ``kill`` returns.
SETTLE_TIMEOUT = 2.0


def _trees(pids: Iterable[int]) -> list[psutil.Process]:
    """The processes ``pids`` and all their descendants (a worker's package processes too)."""
    found: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):  # ended already: nothing to stop
            root = psutil.Process(pid)
            found += [root, *root.children(recursive=True)]
    return found


@contextlib.contextmanager
def stopped(pids: Iterable[int]) -> Iterator[list[psutil.Process]]:
    """Stop the process trees of ``pids`` for the block; continue every one of them after it,
    whatever the block raised (a stopped process leaves the ``SIGTERM`` that ends it pending)."""
    held: list[psutil.Process] = []
    try:
        for process in _trees(pids):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.suspend()
                held.append(process)
        _settle(held)
        yield held
    finally:
        for process in held:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.resume()


def _settle(processes: list[psutil.Process]) -> None:
    """Return once every one of ``processes`` is stopped (or gone), or after :data:`SETTLE_TIMEOUT`."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    waiting = list(processes)
    while waiting and time.monotonic() < deadline:
        waiting = [p for p in waiting if _running(p)]
        if waiting:
            time.sleep(0.001)


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
