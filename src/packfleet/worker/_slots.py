"""The slots of MaxTaskCount, and when a busy worker may lease tasks ahead of its free slots.

A busy worker's report asks for the next tasks when the last ones have ended, so with short tasks
every slot sits free for the report's round trip (make bench, a pooled run: each worker had no task
in flight 53 % of the time, waiting 8 ms p50 for the answer that held its next ten tasks). Leased
ahead, the next tasks are already here when a slot frees. A task leased ahead is *picked up* at the
master and waits here for a slot; at most MaxTaskCount attempts run at once all the same.

Only while it costs nothing measurable: while the master has more tasks ready than it gave (the lease
loop's ``drained`` is false) and the tasks this worker ran last were short
(``AgentTiming.lease_ahead_below``), so a task held here waits about as long as a short task runs.
Tasks that turn long stop it within a few attempts (the median of the last ones), and a worker leases
ahead at most MaxTaskCount tasks.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import deque
from collections.abc import Callable

#: How many of the last attempts' lengths decide whether tasks are short.
RECENT_ATTEMPTS = 16


class Slots:
    """MaxTaskCount as a semaphore whose size is read at each use (a reload may change it).

    Attempts take a slot in the order they asked for one; a cancelled wait gives up its place (or
    the slot it was just handed).
    """

    def __init__(self, size: Callable[[], int]) -> None:
        self._size = size
        self.taken = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def take(self) -> None:
        """Until a slot is free; then it is this caller's until :meth:`give_back`."""
        if not self._waiting and self.taken < self._size():
            self.taken += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # handed a slot as it was cancelled: pass it on
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            raise

    def give_back(self) -> None:
        """Free a slot taken by :meth:`take`, handing it to the first attempt waiting, if any."""
        self.taken -= 1
        self._hand_on()

    def _hand_on(self) -> None:
        while self._waiting and self.taken < self._size():
            waiter = self._waiting.popleft()
            if not waiter.done():
                self.taken += 1
                waiter.set_result(None)


class AttemptLengths:
    """How long this worker's last attempts took, from their slot to their end."""

    def __init__(self, short_below: float) -> None:
        self.short_below = short_below
        self._recent: deque[float] = deque(maxlen=RECENT_ATTEMPTS)

    def add(self, seconds: float) -> None:
        self._recent.append(seconds)

    @property
    def short(self) -> bool:
        """The last :data:`RECENT_ATTEMPTS` attempts took under ``short_below`` seconds (median)."""
        if self.short_below <= 0 or len(self._recent) < RECENT_ATTEMPTS:
            return False
        return statistics.median(self._recent) < self.short_below
