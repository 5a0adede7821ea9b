"""The messages master and workers exchange under ``/api/v1/worker/``.

These dataclasses are the whole contract between :mod:`packfleet.master` and
:mod:`packfleet.worker`, which never import each other. Times on the wire are ISO 8601 UTC text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from packfleet.protocol._codes import EventSource, Outcome, WorkerState

#: Field metadata of every ``agent_id``: the OpenAPI document states what the master accepts (a UUID).
AGENT_ID = {"schema": {"format": "uuid"}}
#: A time field a sender may leave empty: "" or an RFC 3339 date-time (which always has an offset).
OPTIONAL_TIME = {"schema": {"anyOf": [{"const": ""}, {"format": "date-time"}]}}
#: A time field a sender must fill: an RFC 3339 date-time.
TIME = {"schema": {"format": "date-time"}}


@dataclass(frozen=True)
class Heartbeat:
    """What a worker says of itself every AgentHeartbeatInterval (SSIS: the agent's machine info)."""

    agent_id: str = field(metadata=AGENT_ID)
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
    #: The master certificate thumbprints this worker accepts (its pin, then the next one during a
    #: rotation): how the master learns that every worker is ready before it switches certificates.
    accepted_master_thumbprints: list[str] = field(default_factory=list)
    #: Why the worker asks for no tasks now, with the figures ("CPU use 93% is not below
    #: TaskRequestMaxCPU 70%"), or "" when it asks: how `run --wait` explains a pending execution.
    lease_gate: str = ""
    #: The worker's clock (ISO 8601, UTC) when it sent this: the master measures the skew from it.
    #: Empty (an older worker) or a time with its offset; the master answers 400 for anything else.
    time: str = field(default="", metadata=OPTIONAL_TIME)


@dataclass(frozen=True)
class HeartbeatReply:
    """The master's view of the worker; ``state`` other than enabled means: do not ask for tasks."""

    state: WorkerState
    message: str
    master_time: str
    agent_id: str = field(metadata=AGENT_ID)
    #: During a master certificate rotation: the PEM of the certificate the master will serve next,
    #: which the worker adds to its Root store and accepts alongside the pinned one.
    next_master_cert_pem: str = ""
    #: The certificate the master serves now: a worker whose NextMasterHttpsCertThumbprint names it
    #: promotes that pin; one that pins a next certificate no rotation announces drops it (aborted).
    master_cert_thumbprint: str = ""
    #: Set when the worker's clock is off the master's by more than a few seconds: what to fix.
    clock_warning: str = ""


@dataclass(frozen=True)
class LeaseRequest:
    """Ask for up to ``capacity`` tasks, waiting up to ``wait_seconds`` for one to be ready (long-poll)."""

    agent_id: str = field(metadata=AGENT_ID)
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
    #: Send a heartbeat now, not at the next AgentHeartbeatInterval: the master has news for this
    #: worker (a master certificate rotation step). Sent only when true, so older workers that
    #: refuse unknown fields keep working.
    heartbeat_now: bool = False


@dataclass(frozen=True)
class LeaseRef:
    """A lease is a task and the attempt it was leased for; reports of older attempts are stale."""

    task_id: int
    attempt: int


@dataclass(frozen=True)
class TaskHeartbeat:
    agent_id: str = field(metadata=AGENT_ID)
    leases: list[LeaseRef]
    lease_seconds: float


@dataclass(frozen=True)
class TaskHeartbeatReply:
    """The master's answer per lease, each named with its attempt.

    A worker may still run an old attempt of a task while it holds the next one (after a short
    partition the task came back to it): an answer naming only the task would make it kill or
    clean up the wrong attempt, so every list names leases, never bare task ids.
    """

    extended: list[LeaseRef]
    cancel: list[LeaseRef]
    lost: list[LeaseRef]


@dataclass(frozen=True)
class EventMessage:
    """One line of a task's output; ``seq`` numbers the lines of one task attempt from 1."""

    execution_id: int
    task_id: int
    attempt: int
    seq: int = field(metadata={"schema": {"minimum": 1}})
    time: str = field(metadata=TIME)
    level: int
    source: EventSource
    message: str


@dataclass(frozen=True)
class EventBatch:
    agent_id: str = field(metadata=AGENT_ID)
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
    agent_id: str = field(metadata=AGENT_ID)
    reports: list[CompletionReport]


@dataclass(frozen=True)
class CompletionResult:
    task_id: int
    accepted: bool
    stale: bool


@dataclass(frozen=True)
class CompletionReply:
    results: list[CompletionResult] = field(default_factory=list)


@dataclass(frozen=True)
class ReportBatch:
    """Event messages and the completion reports they unblock, in one request (``/worker/report``).

    A report goes with or after every event of its attempt, and the master stores both in one
    transaction, events first: it never closes an execution whose log is still on its way, and a
    follower sees the last lines and the end together. Masters before this message answer the
    route 404; a worker then sends :class:`EventBatch` and :class:`CompletionBatch` apart.

    A busy worker also asks for up to ``lease_capacity`` tasks (its free slots and those it leases
    ahead of them), leased for ``lease_seconds`` in the same transaction, with no wait: what a
    :class:`LeaseRequest` with ``wait_seconds`` 0 would get. The two fields are sent only when it
    asks: masters before them refuse unknown fields (400), and the worker then asks with
    :class:`LeaseRequest` alone.
    """

    agent_id: str = field(metadata=AGENT_ID)
    events: list[EventMessage] = field(default_factory=list)
    reports: list[CompletionReport] = field(default_factory=list)
    lease_capacity: int = 0
    lease_seconds: float = 0.0


@dataclass(frozen=True)
class ReportReply:
    """:class:`EventAck` and :class:`CompletionReply` of a :class:`ReportBatch`, in one answer."""

    acknowledged: int
    stored: int
    results: list[CompletionResult] = field(default_factory=list)
    #: The tasks leased for ``ReportBatch.lease_capacity``; sent only when the batch asked, as is
    #: ``heartbeat_now`` (see :class:`LeaseReply`), so older workers that refuse unknown fields
    #: never see them.
    tasks: list[TaskAssignment] = field(default_factory=list)
    heartbeat_now: bool = False


@dataclass(frozen=True)
class CertificateRenewal:
    """A worker's new certificate, sent over a connection authenticated by its current one.

    ``proof`` is the new key's signature (base64) over :func:`renewal_proof_message`: only the
    holder of the new private key can produce it, so nobody can bind a certificate they merely copied.
    """

    agent_id: str = field(metadata=AGENT_ID)
    cert_pem: str
    signed_at: str
    proof: str


@dataclass(frozen=True)
class CertificateRenewalReply:
    thumbprint: str
    agent_id: str = field(metadata=AGENT_ID)
    not_after: str


@dataclass(frozen=True)
class CertificateRetirement:
    """Sent with the new certificate: the old one (of the same worker) may be retired."""

    agent_id: str = field(metadata=AGENT_ID)
    thumbprint: str


@dataclass(frozen=True)
class CertificateRetirementReply:
    thumbprint: str
    removed_from_root: bool


def renewal_proof_message(agent_id: str, new_thumbprint: str, old_thumbprint: str, signed_at: str) -> bytes:
    """The bytes a worker signs with its new key; they name both certificates and the time, so a
    proof cannot be replayed for another worker, another pair of certificates or much later."""
    lines = ["packfleet worker certificate renewal", agent_id, new_thumbprint, old_thumbprint, signed_at]
    return "".join(f"{line}\n" for line in lines).encode("ascii")


@dataclass(frozen=True)
class JoinChallenge:
    """``GET /api/v1/join``: the master's time, which the joining worker signs (freshness of its proof).

    Signing the master's own clock reading rather than the worker's spares a new machine whose clock
    is off by more than the master's window a refusal it could not understand.
    """

    issued_at: str


@dataclass(frozen=True)
class JoinRequest:
    """``POST /api/v1/join``: a worker enrolls its certificate with a join token.

    ``signature`` (base64) is the worker key's signature over
    :func:`~packfleet.protocol.join_proof_message` of ``token_id``, ``issued_at``, the SHA-256 of
    ``cert_pem`` and ``agent_id``: proof that the caller holds the private key of what it enrolls.
    """

    token_id: str
    secret: str = field(repr=False)  # never in a traceback or a log line
    cert_pem: str = field(metadata={"schema": {"format": "pem-certificate"}})
    agent_id: str = field(metadata={"schema": {"format": "uuid"}})
    display_name: str
    issued_at: str
    signature: str


@dataclass(frozen=True)
class JoinReply:
    """The enrolled worker: the AgentId to use (a token bound to a worker imposes its own), and state."""

    agent_id: str = field(metadata=AGENT_ID)
    display_name: str
    worker_thumbprint: str
    master_thumbprint: str
    enabled: bool
    #: True when this was a retry of a join that had already succeeded (no token use was spent).
    repeated: bool
    message: str
