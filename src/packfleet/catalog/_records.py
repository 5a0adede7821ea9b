"""What the catalog hands out and takes in: status codes and frozen records.

Records are plain frozen dataclasses, never ORM rows, so callers on other threads (the master's
aiohttp handlers, the CLI) cannot lazily load or mutate database state by accident. ``to_dict()`` gives
the JSON-ready form used on the wire: times as ISO 8601 with offset, status codes as their SSIS
number plus a ``*_name``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar, Literal

from packfleet.protocol import (
    EVENT_SOURCES,
    EventSource,
    ExecutionStatus,
    MessageType,
    Outcome,
    TaskStatus,
    WorkerState,
)

#: The codes are the protocol's (one definition for the catalog, the wire and every client).
MessageSource = EventSource
MESSAGE_SOURCES = EVENT_SOURCES
Role = Literal["admin", "executor", "viewer", "worker"]
ROLES: frozenset[str] = frozenset({"admin", "executor", "viewer", "worker"})
CertificateStatus = Literal["active", "revoked", "retired"]
ConsoleRole = Literal["viewer", "operator", "admin"]
CONSOLE_ROLES: tuple[str, ...] = ("viewer", "operator", "admin")  # each may do what the ones before may
HeartbeatState = WorkerState


#: Types that are JSON-ready as they are (exact types: an IntEnum is an int but needs its number).
_AS_IS = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """Turn a record field into JSON-ready data (ISO times, enum numbers, lists, nested records)."""
    if type(value) in _AS_IS:
        return value
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [plain(v) for v in value]
    return value


class _Record:
    """Mixin giving frozen dataclasses ``to_dict()``; ``_hidden`` names fields kept off the wire."""

    __slots__ = ()
    _hidden: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data; enum fields gain a ``<field>_name`` beside the code."""
        out: dict[str, Any] = {}
        for name in _shown(type(self)):
            value = getattr(self, name)
            if type(value) in _AS_IS:
                out[name] = value
                continue
            out[name] = plain(value)
            if isinstance(value, ExecutionStatus | TaskStatus | MessageType):
                out[f"{name}_name"] = getattr(value, "label", value.name.lower())
        return out


#: The fields of each record type that go on the wire, looked up once per type: every leased task,
#: report answer and execution a follower reads is a ``to_dict`` on the master (make bench), and
#: asking ``dataclasses.fields`` each time was most of what it cost.
_SHOWN: dict[type, tuple[str, ...]] = {}


def _shown(kind: type[_Record]) -> tuple[str, ...]:
    names = _SHOWN.get(kind)
    if names is None:
        fields = dataclasses.fields(kind)  # type: ignore[arg-type]
        names = _SHOWN[kind] = tuple(f.name for f in fields if f.name not in kind._hidden)
    return names


# --- workers, certificates, principals -------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerInfo(_Record):
    """What a worker says about itself in each heartbeat (SSIS ``worker_agents`` + machine facts)."""

    agent_id: str
    display_name: str
    machine_name: str
    user_account: str
    ips: tuple[str, ...] = ()
    cpu_percent: float = 0.0
    memory_free_mb: float = 0.0
    running_tasks: int = 0
    version: str = ""
    #: The worker's MaxTaskCount (0: not reported).
    max_tasks: int = 0
    #: The worker's clock minus the master's when the heartbeat arrived (None: the worker did not say).
    clock_skew_seconds: float | None = None
    #: Why the worker asks for no tasks ("" when it asks): kept in the catalog, so that whichever
    #: master explains a pending execution knows it, not only the master that got the heartbeat.
    lease_gate: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerCertificate(_Record):
    """One certificate of a worker, as ``list_workers`` shows it."""

    thumbprint: str
    sha256: str | None
    not_after: datetime | None
    status: CertificateStatus


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerRecord(_Record):
    """A worker agent: the columns of SSIS ``catalog.worker_agents`` plus its certificates."""

    agent_id: str
    display_name: str
    description: str
    machine_name: str
    tags: str
    user_account: str
    is_enabled: bool
    last_online_time: datetime | None
    machine_info: Mapping[str, Any]
    created_at: datetime
    certificates: tuple[WorkerCertificate, ...]
    #: The worker's clock minus the master's at its last heartbeat (None: not measured yet).
    clock_skew_seconds: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CertificateRecord(_Record):
    """A worker certificate the master knows; ``agent_id`` is None while pending or once retired."""

    thumbprint: str
    sha256: str | None
    agent_id: str | None
    display_name: str | None
    enable_on_bind: bool
    subject: str | None
    not_before: datetime | None
    not_after: datetime | None
    status: CertificateStatus
    created_at: datetime
    pem: str | None

    _hidden: ClassVar[frozenset[str]] = frozenset({"pem"})

    @property
    def pending(self) -> bool:
        """Added by an administrator, waiting for its worker's first heartbeat."""
        return self.agent_id is None and self.status == "active"


@dataclasses.dataclass(frozen=True, slots=True)
class HeartbeatOutcome(_Record):
    """The master's verdict on a worker heartbeat; ``message`` says why and what fixes it."""

    state: HeartbeatState
    worker: WorkerRecord | None
    message: str
    #: For a refusal (``conflict``): the command that lifts it, as the master's 409 problem shows it.
    fix: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Principal(_Record):
    """Who a client certificate belongs to, as the master's authorization sees it."""

    kind: Role
    name: str
    agent_id: str | None
    enabled: bool
    thumbprint: str
    cert_status: CertificateStatus


@dataclasses.dataclass(frozen=True, slots=True)
class PrincipalRecord(_Record):
    """A row of ``principals``: an admin or executor identity (certificate and/or password)."""

    id: int
    name: str
    role: Role
    thumbprint: str | None
    password_hash: str | None
    created_at: datetime

    _hidden: ClassVar[frozenset[str]] = frozenset({"password_hash"})


@dataclasses.dataclass(frozen=True, slots=True)
class PrincipalCertificate(_Record):
    """An identity's certificate as the catalog shares it with every master (PEM, never a key)."""

    thumbprint: str
    principal: str
    pem: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclasses.dataclass(frozen=True, slots=True)
class ConsoleUserRecord(_Record):
    """A web console user; the argon2id hash stays off ``to_dict``."""

    id: int
    name: str
    role: ConsoleRole
    password_hash: str
    created_at: datetime
    updated_at: datetime

    _hidden: ClassVar[frozenset[str]] = frozenset({"password_hash"})


# --- projects ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PackageRecord(_Record):
    """A package of a deployed project version."""

    name: str
    kind: str
    spec: Mapping[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class ProjectVersionRecord(_Record):
    """One deployed version of a project; the archive itself is fetched by ``sha256``."""

    id: int
    folder: str
    project: str
    version: int
    description: str
    sha256: str
    size: int
    manifest: Mapping[str, Any]
    packages: tuple[PackageRecord, ...]
    deployed_at: datetime
    deployed_by: str


# --- executions, tasks, events ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ExecutionRequest(_Record):
    """One execution to create with :meth:`Catalog.create_executions`.

    ``project_version_id`` pins the version the parameters were checked against (it must be a
    version of ``folder/project``); None takes the newest at creation.
    """

    folder: str
    project: str
    package: str
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    allowed_workers: tuple[str, ...] = ()
    retry_count: int = 0
    project_version_id: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TaskRecord(_Record):
    """The task of an execution: who runs it, which attempt, until when the lease holds."""

    task_id: int
    status: TaskStatus
    attempt: int
    agent_id: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    message: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class ExecutionRecord(_Record):
    """An execution (SSIS ``catalog.executions``) with its task and allowed workers."""

    execution_id: int
    folder: str
    project: str
    package: str
    project_version_id: int
    status: ExecutionStatus
    parameters: Mapping[str, Any]
    retry_count: int
    created_by: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    allowed_workers: tuple[str, ...]
    task: TaskRecord | None
    #: The key the submit carried (None: none), so a client can match executions to its submits.
    idempotency_key: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TaskAssignment(_Record):
    """A leased task, with everything a worker needs to run it."""

    execution_id: int
    task_id: int
    attempt: int
    folder: str
    project: str
    package: str
    package_spec: Mapping[str, Any]
    parameters: Mapping[str, Any]
    project_sha256: str
    lease_expires_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseStatus(_Record):
    """Answer to a task heartbeat. ``cancel`` leases are also extended, so the worker has time to
    stop the package and report ``canceled``; ``lost`` leases must be abandoned."""

    extended: list[int]
    cancel: list[int]
    lost: list[int]


@dataclasses.dataclass(frozen=True, slots=True)
class CompletionReport(_Record):
    """A worker's report that the task of lease ``(task_id, attempt)`` finished."""

    task_id: int
    attempt: int
    outcome: Outcome
    exit_code: int | None = None
    message: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class CompletionResult(_Record):
    """``accepted`` when the report belongs to the current lease (also on a repeat);
    ``stale`` when it names an older attempt or another worker's lease."""

    task_id: int
    accepted: bool
    stale: bool


@dataclasses.dataclass(frozen=True, slots=True)
class ReportOutcome(_Record):
    """What :meth:`~packfleet.catalog.Catalog.store_report` did: how many events were new, and one
    result per completion report (as :meth:`~packfleet.catalog.Catalog.complete_tasks` answers).

    ``pages``: one per follow the report was given, what that follower's read would find right
    after the report (its execution, and its events after the follow's id), or None when the
    report did not touch its execution (or the execution is gone). ``leased``: the tasks leased
    in the same transaction, when the report asked for some.
    """

    stored: int
    results: list[CompletionResult]
    pages: list[FollowPage | None] = dataclasses.field(default_factory=list)
    leased: list[TaskAssignment] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class EventInput(_Record):
    """An event message as a worker sends it; ``(task_id, attempt, seq)`` makes resends harmless."""

    execution_id: int
    task_id: int
    attempt: int
    seq: int
    time: datetime
    level: int
    source: MessageSource
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class EventRecord(_Record):
    """A stored event message (SSIS ``catalog.event_messages``)."""

    id: int
    execution_id: int
    task_id: int
    attempt: int
    seq: int
    message_time: datetime
    message_type: MessageType
    message_source: MessageSource
    message: str
    #: When the master stored it; ``message_time`` is the worker's clock, this is the master's.
    received_at: datetime | None = None


#: What a follower reads of an execution: its record and its events after the follower's id.
FollowPage = tuple[ExecutionRecord, list[EventRecord]]


@dataclasses.dataclass(frozen=True, slots=True)
class SweepResult(_Record):
    """Execution ids the lease sweep requeued, ended unexpectedly, or finished canceling."""

    requeued: list[int]
    ended: list[int]
    canceled: list[int] = dataclasses.field(default_factory=list)


# --- audit, tokens -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class AuditRecord(_Record):
    """One row of the audit log: who changed what, when."""

    id: int
    time: datetime
    actor: str
    action: str
    target: str
    details: Mapping[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class JoinTokenRecord(_Record):
    """A join token; the secret itself is never stored, only its hash (kept off ``to_dict``)."""

    id: int
    token_id: str
    secret_hash: str
    expires_at: datetime
    uses_left: int
    enable: bool
    endpoint: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None

    _hidden: ClassVar[frozenset[str]] = frozenset({"secret_hash"})
