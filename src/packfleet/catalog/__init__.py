"""The master's database: projects, executions, tasks, event messages, workers, trust and audit.

SQLAlchemy 2 and Alembic on SQLite (WAL; the default ``sqlite:///<home>/catalog.db``) or PostgreSQL
(``postgresql+psycopg://...``, several masters sharing one database). The schema follows SSIS's
catalog (``SSISDB``): its status codes, the ``worker_agents`` columns, the event message types.
A typical round trip, as the master's handlers make it::

    catalog = Catalog.open(settings.catalog_url, connect_timeout=15)   # migrates to the newest schema
    pinned = CertStore(home, "Root").contains      # only a certificate itself in Root registers
    catalog.worker_heartbeat(thumbprint, WorkerInfo(agent_id, "etl-1", "etl-1", "svc"), pinned=pinned)
    catalog.set_worker_enabled(agent_id, True, actor="admin")
    catalog.create_execution("default", "etl", "load", parameters={}, actor="admin")
    [task] = catalog.lease_tasks(agent_id, capacity=10, lease_seconds=60)
    catalog.complete_task(agent_id, task.task_id, task.attempt, "succeeded", exit_code=0)
"""

from packfleet.catalog._base import TASKS_CHANNEL, Clock, canonical_agent_id, utc_now
from packfleet.catalog._catalog import Catalog
from packfleet.catalog._console import EVENT_SOURCE_MAX, WORKER_SORTS, WORKER_STATES, WorkerPage
from packfleet.catalog._handoff import LeaseAsk
from packfleet.catalog._joins import ConnectOutcome, JoinOutcome, TokenBinding
from packfleet.catalog._mastercert import (
    CUTOFF_CHANNEL,
    ROTATION_CHANNEL,
    TRUST_CHANNEL,
    MasterRotationRecord,
)
from packfleet.catalog._records import (
    CONSOLE_ROLES,
    AuditRecord,
    CertificateRecord,
    CompletionReport,
    CompletionResult,
    ConsoleRole,
    ConsoleUserRecord,
    EventInput,
    EventRecord,
    ExecutionRecord,
    ExecutionRequest,
    FollowPage,
    HeartbeatOutcome,
    JoinTokenRecord,
    LeaseStatus,
    PackageRecord,
    Principal,
    PrincipalCertificate,
    PrincipalRecord,
    ProjectVersionRecord,
    ReportOutcome,
    SweepResult,
    TaskAssignment,
    TaskRecord,
    WorkerCertificate,
    WorkerInfo,
    WorkerRecord,
)
from packfleet.catalog._reports import Follow
from packfleet.catalog._sealed import SecretKeyRotation, rotate_secrets_key
from packfleet.protocol import ExecutionStatus, MessageType, TaskStatus

__all__ = [
    "EVENT_SOURCE_MAX",
    "CONSOLE_ROLES",
    "CUTOFF_CHANNEL",
    "ROTATION_CHANNEL",
    "TRUST_CHANNEL",
    "TASKS_CHANNEL",
    "WORKER_SORTS",
    "WORKER_STATES",
    "AuditRecord",
    "Catalog",
    "CertificateRecord",
    "Clock",
    "ConnectOutcome",
    "CompletionReport",
    "CompletionResult",
    "ConsoleRole",
    "ConsoleUserRecord",
    "EventInput",
    "EventRecord",
    "ExecutionRecord",
    "ExecutionRequest",
    "Follow",
    "FollowPage",
    "ExecutionStatus",
    "HeartbeatOutcome",
    "JoinOutcome",
    "JoinTokenRecord",
    "LeaseAsk",
    "LeaseStatus",
    "MasterRotationRecord",
    "MessageType",
    "PackageRecord",
    "Principal",
    "PrincipalCertificate",
    "PrincipalRecord",
    "ProjectVersionRecord",
    "ReportOutcome",
    "SecretKeyRotation",
    "SweepResult",
    "TaskAssignment",
    "TaskRecord",
    "TaskStatus",
    "TokenBinding",
    "WorkerCertificate",
    "WorkerInfo",
    "WorkerPage",
    "WorkerRecord",
    "canonical_agent_id",
    "rotate_secrets_key",
    "utc_now",
]
