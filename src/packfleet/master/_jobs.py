"""The master's periodic jobs, each at the interval its MasterSettings.config key gives.

SSIS's master runs the same three on timers: DealWithExpiredTasks (requeue tasks whose worker stopped
renewing the lease), CleanupCompletedJobs (drop finished executions past the retention window) and
the master heartbeat (its online status in the catalog). A job that fails logs the traceback and
runs again at its next tick: one bad sweep must not stop leases from ever expiring.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("packfleet.master")


@dataclass(frozen=True)
class Job:
    """Run ``step`` every ``interval`` seconds (the first time after one interval)."""

    name: str
    interval: float
    step: Callable[[], Awaitable[None]]


class JobRunner:
    """Runs a set of :class:`Job` as asyncio tasks until :meth:`stop`."""

    def __init__(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._sleep = sleep
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._jobs: dict[str, Job] = {}

    @property
    def jobs(self) -> dict[str, Job]:
        return dict(self._jobs)

    def start(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._jobs[job.name] = job
            self._tasks[job.name] = asyncio.create_task(self._loop(job), name=f"packfleet-job-{job.name}")

    async def replace(self, jobs: list[Job]) -> None:
        """Restart the jobs whose interval changed (after a reload); leave the others running."""
        changed = [job for job in jobs if self._jobs.get(job.name, job).interval != job.interval]
        for job in changed:
            await self._cancel(job.name)
            log.info("job %s now runs every %.3f s", job.name, job.interval)
        self.start(changed)

    async def _cancel(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def stop(self) -> None:
        for name in list(self._tasks):
            await self._cancel(name)

    async def _loop(self, job: Job) -> None:
        while True:
            await self._sleep(job.interval)
            try:
                await job.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job %s failed; it runs again in %.3f s", job.name, job.interval)
