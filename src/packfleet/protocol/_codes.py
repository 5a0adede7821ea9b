"""The codes every part of the fleet speaks: SSIS status codes, outcomes, event sources, worker states.

Defined here, once: the catalog stores them, the master sends them, the manager client decodes them
and the CLI and the console print them, all by these names.

>>> ExecutionStatus(6).label, ExecutionStatus.SUCCEEDED.finished
('ended unexpectedly', True)
>>> ExecutionStatus.by_word("ended-unexpectedly")
<ExecutionStatus.ENDED_UNEXPECTEDLY: 6>
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Literal, get_args


class ExecutionStatus(IntEnum):
    """An execution's status, with the codes of SSIS ``catalog.executions.status``."""

    CREATED = 1
    RUNNING = 2
    CANCELED = 3
    FAILED = 4
    PENDING = 5
    ENDED_UNEXPECTEDLY = 6
    SUCCEEDED = 7
    STOPPING = 8
    COMPLETED = 9

    @property
    def finished(self) -> bool:
        """Whether the execution can no longer change (SSIS lets only these be cleaned up)."""
        return self in FINISHED_EXECUTION

    @property
    def label(self) -> str:
        """The status as SSIS's reports spell it: ``ended unexpectedly``."""
        return self.name.lower().replace("_", " ")

    @property
    def word(self) -> str:
        """The status as one command-line word: ``ended_unexpectedly``."""
        return self.name.lower()

    @classmethod
    def by_word(cls, text: str) -> ExecutionStatus:
        """The status a person typed: its code, or its name with ``_``, ``-`` or a space between words.

        Raises ``ValueError`` naming the choices for anything else.
        """
        cleaned = text.strip().lower().replace("-", "_").replace(" ", "_")
        if cleaned.isdigit() and int(cleaned) in cls._value2member_map_:
            return cls(int(cleaned))
        for status in cls:
            if status.word == cleaned:
                return status
        names = ", ".join(s.word.replace("_", "-") for s in cls)
        raise ValueError(f"{text!r} is not an execution status: one of {names}, or its code 1-9")


FINISHED_EXECUTION = frozenset(
    {
        ExecutionStatus.CANCELED,
        ExecutionStatus.FAILED,
        ExecutionStatus.ENDED_UNEXPECTEDLY,
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.COMPLETED,
    }
)


class TaskStatus(IntEnum):
    """A task's status, with the codes of SSIS Scale Out's ``[internal].[tasks]``."""

    READY = 1
    PICKED_UP = 2
    RUNNING = 3
    FAILED = 4
    SUCCEEDED = 5
    CANCELED = 6

    @property
    def label(self) -> str:
        """The status in words: ``picked up``."""
        return self.name.lower().replace("_", " ")


LEASED_TASK = (TaskStatus.PICKED_UP, TaskStatus.RUNNING)


class MessageType(IntEnum):
    """``catalog.event_messages.message_type`` codes, as SSIS numbers them."""

    PRE_VALIDATE = 10
    POST_VALIDATE = 20
    PRE_EXECUTE = 30
    POST_EXECUTE = 40
    STATUS_CHANGE = 50
    PROGRESS = 60
    INFORMATION = 70
    VARIABLE_VALUE_CHANGED = 80
    DIAGNOSTIC = 90
    QUERY_CANCEL = 100
    WARNING = 110
    ERROR = 120
    TASK_FAILED = 130
    CUSTOM = 200

    @classmethod
    def from_level(cls, level: int) -> MessageType:
        """Map a :mod:`logging` level to the SSIS type: ERROR and above 120, WARNING 110, else 70.

        >>> MessageType.from_level(logging.CRITICAL), MessageType.from_level(logging.DEBUG)
        (<MessageType.ERROR: 120>, <MessageType.INFORMATION: 70>)
        """
        if level >= logging.ERROR:
            return cls.ERROR
        if level >= logging.WARNING:
            return cls.WARNING
        return cls.INFORMATION


#: How a task attempt ended, as the worker reports it.
Outcome = Literal["succeeded", "failed", "canceled"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)

#: Where an event message came from: the package's output streams, its logging, or packfleet itself.
EventSource = Literal["stdout", "stderr", "log", "system"]
EVENT_SOURCES: frozenset[str] = frozenset(get_args(EventSource))

#: What the master tells a worker of itself in each heartbeat reply; anything but ``enabled``
#: means: ask for no tasks.
WorkerState = Literal["enabled", "disabled", "revoked", "conflict", "deleted"]

#: The master's verdict on a worker, for people: ``never`` is no heartbeat yet; ``revoked`` no usable
#: certificate left (at least one revoked); ``expired`` its certificates all expired.
Liveness = Literal["online", "offline", "never", "revoked", "expired"]
LIVENESS: tuple[str, ...] = get_args(Liveness)

#: A worker counts as online when its last heartbeat is this recent (three default
#: AgentHeartbeatIntervals). The master judges it, on its own clock, for every client.
ONLINE_WINDOW = timedelta(minutes=3)


def liveness(
    last_seen: datetime | None, certificates: Iterable[tuple[str, datetime | None]], now: datetime
) -> Liveness:
    """The master's verdict on a worker: the one rule every client shows.

    ``certificates`` are the worker's (status, not_after) pairs. A revoked or expired worker is never
    ``online``, even with a recent heartbeat: the master refuses it at its next request.

    >>> from datetime import UTC
    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> liveness(now - timedelta(minutes=1), [("active", None)], now)
    'online'
    >>> liveness(now - timedelta(minutes=1), [("revoked", None)], now)
    'revoked'
    """
    certs = list(certificates)
    active = [not_after for status, not_after in certs if status == "active"]
    if not active and any(status == "revoked" for status, _ in certs):
        return "revoked"
    if active and all(not_after is not None and not_after <= now for not_after in active):
        return "expired"
    if last_seen is None:
        return "never"
    return "online" if now - last_seen <= ONLINE_WINDOW else "offline"
