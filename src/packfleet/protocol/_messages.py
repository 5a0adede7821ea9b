"""The messages master and workers exchange under ``/api/v1/worker/``.

These dataclasses are the whole contract between :mod:`packfleet.master` and
:mod:`packfleet.worker`, which never import each other. Times on the wire are ISO 8601 UTC text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

WorkerState = Literal["enabled", "disabled", "revoked", "conflict", "deleted"]
Outcome = Literal["succeeded", "failed", "canceled"]
EventSource = Literal["stdout", "stderr", "log", "system"]


@dataclass(frozen=True)
class Heartbeat:
    """What a worker says of itself every AgentHeartbeatInterval (SSIS: the agent's machine info)."""

    agent_id: str
    display_name: str
    machine_name: str
    user_account: str
    ips: list[str]
    cpu_percent: float
    memory_free_mb: float
    running_tasks: int
    max_tasks: int
    version: str
    cert_not_after: str = ""


@dataclass(frozen=True)
class HeartbeatReply:
    """The master's view of the worker; ``state`` other than enabled means: do not ask for tasks."""

    state: WorkerState
    message: str
    master_time: str
    agent_id: str
    #: During a master certificate rotation: the PEM of the certificate the master will serve next,
    #: which the worker adds to its Root store and accepts alongside the pinned one.
    next_master_cert_pem: str = ""


@dataclass(frozen=True)
class LeaseRequest:
    """Ask for up to ``capacity`` tasks, waiting up to ``wait_seconds`` for one to be ready (long-poll)."""

    agent_id: str
    capacity: int
    wait_seconds: float
    lease_seconds: float


@dataclass(frozen=True)
class TaskAssignment:
    """One leased task: what to run, with which parameters, from which project archive."""

    execution_id: int
    task_id: int
    attempt: int
    folder: str
    project: str
    package: str
    package_spec: dict[str, Any]
    parameters: dict[str, Any]
    project_sha256: str
    lease_expires_at: str


@dataclass(frozen=True)
class LeaseReply:
    tasks: list[TaskAssignment]


@dataclass(frozen=True)
class LeaseRef:
    """A lease is a task and the attempt it was leased for; reports of older attempts are stale."""

    task_id: int
    attempt: int


@dataclass(frozen=True)
class TaskHeartbeat:
    agent_id: str
    leases: list[LeaseRef]
    lease_seconds: float


@dataclass(frozen=True)
class TaskHeartbeatReply:
    extended: list[int]
    cancel: list[int]
    lost: list[int]


@dataclass(frozen=True)
class EventMessage:
    """One line of a task's output; ``seq`` numbers the lines of one task attempt from 1."""

    execution_id: int
    task_id: int
    attempt: int
    seq: int
    time: str
    level: int
    source: EventSource
    message: str


@dataclass(frozen=True)
class EventBatch:
    agent_id: str
    events: list[EventMessage]


@dataclass(frozen=True)
class EventAck:
    acknowledged: int
    stored: int


@dataclass(frozen=True)
class CompletionReport:
    task_id: int
    attempt: int
    outcome: Outcome
    exit_code: int | None = None
    message: str = ""


@dataclass(frozen=True)
class CompletionBatch:
    agent_id: str
    reports: list[CompletionReport]


@dataclass(frozen=True)
class CompletionResult:
    task_id: int
    accepted: bool
    stale: bool


@dataclass(frozen=True)
class CompletionReply:
    results: list[CompletionResult] = field(default_factory=list)
