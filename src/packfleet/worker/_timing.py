"""The agent's durations that are not in WorkerSettings.config, each default with its reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AgentTiming:
    """Durations that are not in WorkerSettings.config, with the reason for each default."""

    #: How long a lease request may wait for a task (long-poll); the master answers at once when one
    #: is ready, so this only bounds how long an idle connection stays open.
    lease_wait: float = 20.0
    #: SIGTERM/SIGINT: how long running tasks may go on before they are cancelled (systemd's
    #: default TimeoutStopSec is 90 s, so 30 s leaves time to cancel and flush).
    stop_grace: float = 30.0
    #: Between a package's SIGTERM and SIGKILL when a task is cancelled.
    cancel_grace: float = 10.0
    #: How long the reporter lets events accumulate before sending them as one batch. Short: while
    #: one request is in flight the next batch accumulates anyway, and every millisecond here is
    #: added to each execution's submit->finished time (make bench: 0.1 s made it ~118 ms). Only
    #: while attempts still run: the last one ending cuts it short (``ReportLoop.linger``).
    report_linger: float = 0.005
    #: How long a busy worker waits after a slot frees for more to free before it leases, so one
    #: lease request fills several slots (make bench: leasing each freed slot alone cost a request
    #: and a catalog transaction per task; 8 ms against 3 ms: 14 alternating pairs of 3,000 pooled
    #: tasks, 12 with less CPU per task, 5-8 % less, and 5-9 % more tasks/s). An idle worker
    #: leases at once.
    lease_linger: float = 0.008
    #: After an answer that emptied the master's queue: how long the next (long-poll) request waits
    #: for the tasks just started to end (see ``LeaseLoop._hold_back``). Short: a request still held
    #: back when the client submits its next run misses the submit's hand-over (make bench,
    #: latency: 8 ms here made the fresh round trip 2 ms longer than 3 ms).
    hold_back: float = 0.003
    #: A busy worker leases ahead of its free slots as many tasks as they end during a report's round
    #: trip, up to this many times MaxTaskCount (see ``_slots``); 0 turns it off. Celery prefetches
    #: four tasks per process by default. make bench, one cluster, workers restarted on the other
    #: code before each run, pooled no-ops, medians of alternating runs (tasks/s, CPU ms per task):
    #: SQLite none 1,633 at 1.02, a fixed 2x MaxTaskCount 2,359 at 0.71, up to 3x 2,554 at 0.65 (4
    #: rounds); PostgreSQL none 925 at 1.78, up to 3x 1,734 at 0.96 (3 pairs). Fresh: 613 -> 633
    #: tasks/s (4 pairs, within the noise: a fork, not the wait, bounds it).
    lease_ahead_per_slot: int = 3
    #: How often a closed lease gate (CPU, memory, capacity) is looked at again.
    gate_poll: float = 5.0
    #: How long stopping may spend delivering what the cache holds before leaving it for next time.
    flush_timeout: float = 10.0
    #: How long a package may wait on its pipe while the log cache cannot be written (a full disk)
    #: before its attempt fails with that reason. Space usually returns within seconds, as the
    #: master acknowledges events and their journal segments are deleted; a master that is away
    #: as well leaves the disk full, and by 5 minutes an operator has been told in the worker log.
    log_stall_limit: float = 300.0
    #: How often a stalled attempt tries the log cache again.
    log_stall_poll: float = 0.5
