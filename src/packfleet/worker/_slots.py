"""The slots of MaxTaskCount, and how many tasks a busy worker leases ahead of its free slots.

A busy worker's report asks for the next tasks when the last ones have ended, so with short tasks
every slot sat free for the report's round trip (make bench, a pooled run: each worker had no task
in flight 53 % of the time, waiting 8 ms p50 for the answer that held its next ten tasks). Leased
ahead, the next tasks are already here when a slot frees. A task leased ahead is *picked up* at the
master and waits here for a slot; at most MaxTaskCount attempts run at once all the same.

How many: as many as the slots end during one ask's round trip (:class:`LeaseAhead`), so a task
held here waits about one round trip for its slot. Tasks long enough that the slots stay busy
through a round trip get none leased ahead: with ten slots and a round trip of 8 ms, tasks of 80 ms
and more. Only while the master has more ready than it gave (the lease loop's ``drained`` is false),
so a task is not held here while another worker waits for one.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import deque
from collections.abc import Callable

#: How many of the last attempts, and of the last asks' round trips, the estimate looks at.
RECENT = 16


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
        self._hand_on()  # slots a reload added go to those waiting first
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


class LeaseAhead:
    """How many tasks to lease ahead of the free slots, from this worker's last attempts and asks.

    The slots end ``slots / length`` tasks per second (the median length of the last attempts,
    from their slot to their end), so during an ask's round trip (the median of the last asks a
    report carried) they end ``slots * trip / length``: that many, rounded down, at most
    ``per_slot`` times the slots. None until both are known.
    """

    def __init__(self, per_slot: int) -> None:
        self.per_slot = per_slot
        self._lengths: deque[float] = deque(maxlen=RECENT)
        self._trips: deque[float] = deque(maxlen=RECENT)

    def attempt(self, seconds: float) -> None:
        """An attempt took ``seconds`` from its slot to its end."""
        self._lengths.append(seconds)

    def trip(self, seconds: float) -> None:
        """An ask that a report carried was answered ``seconds`` after it was sent."""
        self._trips.append(seconds)

    def tasks(self, slots: int) -> int:
        """Tasks to lease ahead of ``slots`` slots (MaxTaskCount), busy or not."""
        most = self.per_slot * slots
        if most <= 0 or len(self._lengths) < RECENT or not self._trips:
            return 0
        length = statistics.median(self._lengths)
        trip = statistics.median(self._trips)
        if length <= 0.0:
            return most
        return min(most, int(slots * trip / length))
