"""Delivery of cached event messages and completion reports to the master.

Events go out in batches of at most ``ExecutionLogMaxBufferLogCount`` (and never more than
:data:`MAX_BATCH` per request, so one request stays small enough to be answered within its
timeout); a task's completion report goes out only with or after all of that task's events, so
the master never closes an execution whose log is still on its way. One request carries both
(``/worker/report``: the master stores the events, then the reports, in one transaction); a
master that does not know that route (404, an older version) gets them apart, events first
(``/worker/events``, then ``/worker/tasks/complete``), and is asked again after
:data:`REPROBE_SECONDS`.

Under load a report also asks for the tasks its pass frees slots for (see
:meth:`~packfleet.worker._leasing.LeaseLoop.ask_in_report`); the answer carries them.

While the master is away every send fails and the data waits in the cache. SSIS gives up on an
execution log after ``ExecutionLogRetryCount`` failed sends and ``ExecutionLogRetryTimeout``; here an
event is dropped (with a warning naming the task) only when both are exceeded, so a short outage
never loses a line and a week-long one does not fill the disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from packfleet.errors import ApiError, TransportError
from packfleet.protocol import (
    CompletionBatch,
    CompletionReply,
    CompletionReport,
    CompletionResult,
    EventAck,
    EventBatch,
    EventMessage,
    ReportBatch,
    ReportReply,
    TaskAssignment,
    decode,
    encode,
    routes,
)
from packfleet.worker._leasing import ReportAsk
from packfleet.worker._logcache import LogCache

log = logging.getLogger("packfleet.worker")

MAX_BATCH = 500
#: Bytes one events request may carry at most, estimated before encoding. The master refuses bodies
#: over 4 MiB (413); JSON escapes each non-ASCII character as six bytes, so a message may grow sixfold.
MAX_BATCH_BYTES = 1 << 20
_EVENT_OVERHEAD = 256  # field names, ids, timestamps
#: Send rounds in one :meth:`Reporter.report` pass at most.
MAX_ROUNDS = 100
#: Seconds a worker keeps sending events and reports apart after the master answered
#: ``/worker/report`` with 404 or 405: asking every pass would double an older master's requests,
#: never asking again would keep the slower path after that master (or a failover peer) is upgraded.
REPROBE_SECONDS = 600.0

Send = Callable[[str, Any], Awaitable[Any]]


class ReportAsks(Protocol):
    """Where a report pass gets its ask for tasks and hands their answer (the lease loop)."""

    async def ask_in_report(self) -> ReportAsk | None: ...

    def answered(self, ask: ReportAsk, leased: list[TaskAssignment], heartbeat_now: bool) -> None: ...

    def refused(self, ask: ReportAsk) -> None: ...

    def settle(self, ask: ReportAsk) -> None: ...


class Reporter:
    """Sends what :class:`LogCache` holds; :meth:`report` is one pass, safe to call at any time."""

    def __init__(
        self,
        cache: LogCache,
        send: Send,
        *,
        agent_id: str,
        max_buffer: int,
        retry_count: int,
        retry_timeout: float,
        clock: Callable[[], float],
        asks: ReportAsks | None = None,
    ) -> None:
        self.cache = cache
        #: Where reports ask for tasks (the lease loop); None: they never ask.
        self.asks = asks
        self._send = send
        self.agent_id = agent_id
        self.batch_size = max(1, min(MAX_BATCH, max_buffer))
        self.retry_count = retry_count
        self.retry_timeout = retry_timeout
        self._clock = clock
        self.failures = 0
        self._last_error = ""
        self.refused: ApiError | None = None
        #: Until when (``clock``) the master is taken not to know ``/worker/report``.
        self._apart_until = float("-inf")
        # One pass at a time: two concurrent passes would send the same events twice.
        self._lock = asyncio.Lock()

    async def report(self) -> bool:
        """Send pending events, then the completions they unblock; True when every request succeeded.

        A True pass left nothing behind that was written before it ended (when packages keep
        writing, what they write meanwhile goes in the next pass). Returns False after the first
        failed request: the caller backs off and calls again.
        """
        async with self._lock:
            return await self._report()

    async def _report(self) -> bool:
        # One group commit (one fsync) per pass, and rounds until what it covers is sent. The
        # rounds go while its fsync runs: the master keeps what it acknowledges, and the pass ends
        # only once the rest is durable here. What packages write meanwhile waits for the next
        # pass, after the caller's linger: under load that gathers many tasks' records into one
        # fsync and one request (make bench).
        committing = await self.cache.start_commit()
        try:
            return await self._rounds()
        finally:
            # Shielded: a cancelled pass still lets its fsync finish and close what it retired.
            await asyncio.shield(committing)

    async def _rounds(self) -> bool:
        for _ in range(MAX_ROUNDS):
            batch = _within_budget(self.cache.pending_events(self.batch_size))
            if self._clock() >= self._apart_until:
                sent = await self._round_together(batch)
            else:
                sent = await self._round_apart(batch)
            if sent is None:
                break
            if not sent:
                return False
        return True

    async def _round_together(self, batch: list[EventMessage]) -> bool | None:
        """Send ``batch`` and the reports it unblocks in one request; None: nothing to send."""
        reports = _reports_within(self.cache.completions_with(batch), _cost(batch))
        if not batch and not reports:
            return None
        asks = self.asks
        if asks is None or (ask := await asks.ask_in_report()) is None:
            return await self._send_together(batch, reports)
        try:
            return await self._send_together(batch, reports, ask)
        finally:
            asks.settle(ask)  # an ask the request did not answer gives its slots back

    async def _round_apart(self, batch: list[EventMessage]) -> bool | None:
        """Send ``batch``, then the reports it unblocked, in two requests; None: nothing to send."""
        sent_any = False
        if batch:
            if not await self._send_events(batch):
                return False
            sent_any = True
        reports = self.cache.pending_completions()
        if reports:
            if not await self._send_completions(reports):
                return False
            sent_any = True
        return True if sent_any else None

    async def _send_together(
        self, batch: list[EventMessage], reports: list[CompletionReport], ask: ReportAsk | None = None
    ) -> bool:
        body = _report_body(self.agent_id, batch, reports, ask)
        what = f"{len(batch)} event message(s) and {len(reports)} completion report(s)"
        try:
            reply = decode(ReportReply, await self._send(routes.WORKER_REPORT, body))
        except ApiError as exc:
            if ask is not None and exc.status == 400 and self.asks is not None:
                # A master before ReportBatch.lease_capacity refuses the unknown fields: the same
                # batch goes again without them (if the batch itself was refused, it is again).
                self.asks.refused(ask)
                return await self._send_together(batch, reports)
            if exc.status in (404, 405):
                return await self._fall_back(batch, exc)
            if exc.status in (400, 413) and batch:
                if reports:
                    # The reports may be what the master refuses: the events must not be dropped
                    # for them. They go alone (split if need be); the reports in a later round.
                    return await self._send_together(batch, [])
                return await self._split_refused(batch, exc, self._send_events_together)
            self._failed(exc, what)
            self._give_up_old(batch)
            return False
        except TransportError as exc:
            self._failed(exc, what)
            self._give_up_old(batch)
            return False
        self._recovered()
        if ask is not None and self.asks is not None:
            self.asks.answered(ask, reply.tasks, reply.heartbeat_now)
        # All of the batch in practice (one transaction stores it), as in _send_events.
        acknowledged = max(0, min(reply.acknowledged, len(batch)))
        self.cache.acknowledge(batch[:acknowledged])
        answered = self._settle(reports, reply.results)
        return (acknowledged > 0 or not batch) and (answered or not reports)

    async def _send_events_together(self, batch: list[EventMessage]) -> bool:
        """One half of a refused batch, with the reports that this half unblocks."""
        return await self._send_together(
            batch, _reports_within(self.cache.completions_with(batch), _cost(batch))
        )

    async def _fall_back(self, batch: list[EventMessage], exc: ApiError) -> bool:
        """The master has no ``/worker/report`` (an older version): send apart for a while."""
        log.info(
            "the master does not know %s (%s): sending event messages and completion reports in "
            "separate requests, asking again in %.0f s",
            routes.WORKER_REPORT,
            exc.status,
            REPROBE_SECONDS,
        )
        self._apart_until = self._clock() + REPROBE_SECONDS
        # This round's batch and reports go now, apart: nothing is lost to the probe.
        return await self._round_apart(batch) is not False

    async def _send_events(self, batch: list[EventMessage]) -> bool:
        body = encode(EventBatch(agent_id=self.agent_id, events=batch))
        try:
            ack = decode(EventAck, await self._send(routes.WORKER_EVENTS, body))
        except ApiError as exc:
            if exc.status in (400, 413):
                return await self._split_refused(batch, exc, self._send_events)
            self._failed(exc, f"{len(batch)} event message(s)")
            self._give_up_old(batch)
            return False
        except TransportError as exc:
            self._failed(exc, f"{len(batch)} event message(s)")
            self._give_up_old(batch)
            return False
        self._recovered()
        # The master acknowledges a prefix of the batch: all of it in practice, fewer only if it
        # stored part of it before failing. Duplicates count as acknowledged (idempotent seq).
        self.cache.acknowledge(batch[: max(0, min(ack.acknowledged, len(batch)))])
        return ack.acknowledged > 0

    async def _split_refused(
        self, batch: list[EventMessage], exc: ApiError, send: Callable[[list[EventMessage]], Awaitable[bool]]
    ) -> bool:
        """Send a batch the master refused as a whole (too large, or one event it cannot take) in halves.

        Retrying the same batch would be refused forever and block every later event and report of
        this worker; an event the master refuses on its own can never be delivered, so it is dropped
        with a warning naming it.
        """
        if len(batch) == 1:
            event = batch[0]
            log.warning(
                "dropping event %s of task %s attempt %s (%d characters): the master refuses it: %s",
                event.seq,
                event.task_id,
                event.attempt,
                len(event.message),
                exc,
            )
            self.cache.acknowledge(batch)
            return True
        middle = len(batch) // 2
        return await send(batch[:middle]) and await send(batch[middle:])

    async def _send_completions(self, reports: list[CompletionReport]) -> bool:
        body = encode(CompletionBatch(agent_id=self.agent_id, reports=reports))
        try:
            reply = decode(CompletionReply, await self._send(routes.WORKER_COMPLETE, body))
        except TransportError as exc:
            self._failed(exc, f"{len(reports)} completion report(s)")
            return False
        self._recovered()
        return self._settle(reports, reply.results)

    def _settle(self, reports: list[CompletionReport], results: list[CompletionResult]) -> bool:
        """Forget the reports the master answered (accepted, or stale); False if it answered none."""
        answered = {result.task_id: result for result in results}
        for report in reports:
            result = answered.get(report.task_id)
            if result is None:
                continue
            if result.stale:
                log.info(
                    "the master called the report of task %s attempt %s stale (the task was leased "
                    "again elsewhere)",
                    report.task_id,
                    report.attempt,
                )
            self.cache.settle(report.task_id, report.attempt)
        return bool(answered)

    def _failed(self, exc: TransportError, what: str) -> None:
        self.failures += 1
        self.refused = exc if isinstance(exc, ApiError) and exc.status == 403 else None
        text = str(exc)
        if text != self._last_error:
            log.warning("cannot deliver %s; they stay in the log cache and are retried: %s", what, text)
            self._last_error = text

    def _recovered(self) -> None:
        if self.failures:
            log.info("the master takes event messages again after %d failed attempt(s)", self.failures)
        self.failures = 0
        self._last_error = ""
        self.refused = None

    def _give_up_old(self, batch: list[EventMessage]) -> None:
        """Drop events past both ExecutionLogRetryCount failures and ExecutionLogRetryTimeout of age."""
        if self.failures < max(1, self.retry_count):
            return
        now = self._clock()
        # The cache acknowledges in journal order, so what is dropped is the oldest run of events,
        # up to the first that is still young.
        expired: list[EventMessage] = []
        for event in batch:
            if now - _timestamp(event.time, now) <= self.retry_timeout:
                break
            expired.append(event)
        if expired:
            tasks = sorted({(e.task_id, e.attempt) for e in expired})
            log.warning(
                "dropping %d event message(s) of task(s) %s: not delivered within "
                "ExecutionLogRetryTimeout (%.0f s) after %d attempts",
                len(expired),
                ", ".join(f"{t}/{a}" for t, a in tasks),
                self.retry_timeout,
                self.failures,
            )
            self.cache.acknowledge(expired)


def _report_body(
    agent_id: str, batch: list[EventMessage], reports: list[CompletionReport], ask: ReportAsk | None
) -> Any:
    """A :class:`ReportBatch`'s wire form; the ask's fields only when it asks (older masters refuse them)."""
    if ask is None:
        return {"agent_id": agent_id, "events": encode(batch), "reports": encode(reports)}
    return encode(
        ReportBatch(
            agent_id=agent_id,
            events=batch,
            reports=reports,
            lease_capacity=ask.capacity,
            lease_seconds=ask.lease_seconds,
        )
    )


def _within_budget(batch: list[EventMessage]) -> list[EventMessage]:
    """The longest prefix of ``batch`` whose worst-case encoding fits :data:`MAX_BATCH_BYTES` (>= 1 event)."""
    total = 0
    for count, event in enumerate(batch):
        total += 6 * len(event.message) + _EVENT_OVERHEAD
        if total > MAX_BATCH_BYTES and count > 0:
            return batch[:count]
    return batch


def _cost(batch: list[EventMessage]) -> int:
    """The worst-case encoded size of ``batch``, as :func:`_within_budget` counts it."""
    return sum(6 * len(event.message) + _EVENT_OVERHEAD for event in batch)


def _reports_within(reports: list[CompletionReport], spent: int) -> list[CompletionReport]:
    """The reports that fit beside events of worst-case size ``spent`` (at least one with no events).

    At most :data:`MAX_BATCH`: after an outage thousands may wait, and one request must stay within
    the master's body limit and its timeout; the rest go in the next rounds.
    """
    total = spent
    for count, report in enumerate(reports[:MAX_BATCH]):
        total += 6 * len(report.message) + _EVENT_OVERHEAD
        if total > MAX_BATCH_BYTES and (count > 0 or spent > 0):
            return reports[:count]
    return reports[:MAX_BATCH]


def _timestamp(text: str, default: float) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return default
