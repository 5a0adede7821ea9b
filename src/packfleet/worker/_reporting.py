"""Reporting: the loop that delivers what the log cache holds, and the last delivery when stopping.

:class:`~packfleet.worker._reporter.Reporter` does one pass (events, then the completion reports they
unblock). :class:`ReportLoop` decides when passes run: soon after a task writes (while other tasks
still run, a short linger gathers several tasks' records into one request), with backoff while the
master is away or refuses them, and at once when a heartbeat shows the master is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from packfleet.worker._pacing import BACKOFF_CAP, AgentEvents, Backoff, Pause
from packfleet.worker._reporter import Reporter
from packfleet.worker._timing import AgentTiming

log = logging.getLogger("packfleet.worker")

#: The longest a busy worker's linger follows the last pass's duration (see ReportLoop.linger).
LINGER_CAP = 0.05


class ReportLoop:
    """When the :class:`Reporter` sends, and for how long stopping keeps trying."""

    def __init__(
        self,
        reporter: Reporter,
        *,
        events: AgentEvents,
        pause: Pause,
        timing: AgentTiming,
        clock: Callable[[], float],
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.reporter = reporter
        self._events = events
        self._pause = pause
        self.timing = timing
        self._clock = clock
        self._busy = busy
        #: How long the last successful pass took (its commit and request), in seconds.
        self.last_pass = 0.0

    async def report(self) -> bool:
        """Send cached events, then completion reports; True when everything has been delivered."""
        return await self.reporter.report()

    async def run(self) -> None:
        """Report whenever a task writes, until cancelled; back off while delivery fails."""
        backoff = Backoff()
        events = self._events
        while True:
            events.wake_report.clear()
            started = time.monotonic()
            if await self.report():
                self.last_pass = time.monotonic() - started
                backoff.reset()
                events.reported.set()
                await self._pause(self.timing.gate_poll, events.wake_report)
                await self.linger()
                continue
            # A master that refuses this worker (403) is asked again only at the cap: it will not
            # change its mind sooner, and the heartbeat notices when it does.
            delay = BACKOFF_CAP if self.reporter.refused else backoff.next()
            events.master_back.clear()
            await self._pause(delay, events.master_back)
            if events.master_back.is_set():
                backoff.reset()

    async def linger(self) -> None:
        """Let more records gather before a pass, but only while attempts still run on this worker.

        Under load the linger turns many tasks' records into one fsync and one request; on an idle
        worker nothing else is coming, and waiting would only add to the submit->finished time of
        the task that just ended. So the linger ends the moment no attempt runs any more
        (``tasks_idle``): a lone task's report goes out as soon as it is written.

        While busy it lasts as long as the last pass did (up to :data:`LINGER_CAP`): passes are
        self-clocked (what is written during one goes in the next), so a pass made shorter by
        sending events and reports in one request would otherwise only mean more passes of fewer
        tasks each, and as many fsyncs and requests per task as before (make bench, throughput).
        """
        if self.timing.report_linger <= 0:
            return
        self._events.tasks_idle.clear()
        if self._busy():
            seconds = max(self.timing.report_linger, min(self.last_pass, LINGER_CAP))
            await self._pause(seconds, self._events.tasks_idle)

    async def deliver(self, seconds: float) -> bool:
        """Report with backoff until everything is delivered or ``seconds`` have passed."""
        deadline = self._clock() + seconds
        backoff = Backoff()
        while not await self.report():
            if self._clock() >= deadline:
                return False
            await self._pause.sleep(min(backoff.next(), max(0.0, deadline - self._clock())))
        return True

    async def flush(self, seconds: float, *, why: str) -> None:
        """Deliver what can be delivered within ``seconds``; the rest waits in the cache for next time."""
        if not await self.deliver(seconds):
            log.warning(
                "%s; %d event message(s) stay in the log cache for the next start",
                why,
                self.reporter.cache.waiting_events,
            )
