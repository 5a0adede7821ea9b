"""The catalog's tables, as SQLAlchemy Core metadata.

The names follow SSIS's ``SSISDB`` catalog where it has one (``executions``, ``event_messages``,
``worker_agents`` with ``is_enabled``, ``machine_name``, ``last_online_time``...), so an administrator
who knows ``catalog.worker_agents`` finds the same columns here. The migrations in ``migrations/versions``
create exactly this schema; ``tests/catalog/test_migrations.py`` compares the two.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

# Constraint names are fixed so that later migrations can drop or alter them by name on both backends.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-numbers an ``INTEGER PRIMARY KEY`` (the rowid alias), not a ``BIGINT`` one.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC ``datetime`` on both backends.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so the value is stored as naive UTC
    text in SQLAlchemy's fixed-width format, which keeps ``<`` comparisons (lease expiry) correct.
    A naive ``datetime`` handed in is taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        """:meth:`process_bind_param`, then on SQLite the text of SQLAlchemy's ``DATETIME``, in one step.

        make bench: a report binds a few datetimes per event message, and the two steps (this type's,
        then ``DATETIME``'s ``%``-format of a dict) were a tenth of the catalog thread's work. The text
        is the same, ``YYYY-MM-DD HH:MM:SS.ffffff`` (tests/catalog/test_prepared.py compares them).
        """
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
            return value.isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


folders = Table(
    "folders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
)

projects = Table(
    "projects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("folder_id", ForeignKey("folders.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("folder_id", "name"),
)

project_versions = Table(
    "project_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project_id", ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("archive", LargeBinary, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("manifest", JSON, nullable=False),
    Column("deployed_at", UtcDateTime, nullable=False),
    Column("deployed_by", String(256), nullable=False),
    UniqueConstraint("project_id", "version"),
)

packages = Table(
    "packages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "project_version_id",
        ForeignKey("project_versions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(256), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("spec", JSON, nullable=False),
    UniqueConstraint("project_version_id", "name"),
)

executions = Table(
    "executions",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("folder", String(128), nullable=False),
    Column("project", String(128), nullable=False),
    Column("package", String(256), nullable=False),
    Column("project_version_id", ForeignKey("project_versions.id"), nullable=False, index=True),
    Column("status", Integer, nullable=False),
    Column("parameters", JSON, nullable=False),
    Column("retry_count", Integer, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("ended_at", UtcDateTime),
    # The key a client sent with the submit (`run` makes one): a repeated submit returns this row.
    Column("idempotency_key", String(128)),
    # cleanup_completed and list_executions(status=...) filter on these.
    Index(None, "status", "ended_at"),
    # NULLs are distinct on both backends: only submits that carry a key are deduplicated.
    Index(None, "created_by", "idempotency_key", unique=True),
    Index(None, "status", "id"),  # the console: a status filter pages newest first
    Index(None, "status", "created_at"),  # the dashboard: the last 24 hours by status
)

# SSIS's [catalog].[add_execution_worker]: no row means any worker may run the execution.
execution_workers = Table(
    "execution_workers",
    metadata,
    Column(
        "execution_id",
        ForeignKey("executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("agent_id", String(36), primary_key=True),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", BigId, primary_key=True),
    Column(
        "execution_id",
        ForeignKey("executions.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("status", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    # No foreign key: a deleted worker's leased tasks keep its id until the lease sweep requeues them.
    Column("agent_id", String(36)),
    Column("lease_expires_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("ended_at", UtcDateTime),
    Column("exit_code", Integer),
    Column("message", Text),
    # The worker whose lease last expired, and when: the lease goes to another live worker first,
    # and a late report of that worker is refused with this time in the execution's log.
    Column("lost_by", String(36)),
    Column("lost_at", UtcDateTime),
    Index(None, "status", "id"),  # lease_tasks: oldest READY first
    Index(None, "status", "lease_expires_at"),  # sweep_expired_leases
    Index(None, "agent_id"),  # the console: a worker's executions
    Index(None, "status", "created_at"),  # the dashboard: the queue and its oldest task
)

event_messages = Table(
    "event_messages",
    metadata,
    Column("id", BigId, primary_key=True),
    Column(
        "execution_id",
        ForeignKey("executions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("task_id", ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("message_time", UtcDateTime, nullable=False),
    Column("message_type", Integer, nullable=False),
    Column("message_source", String(16), nullable=False),
    Column("message", Text, nullable=False),
    # When the master stored it, beside the worker's own message_time (its clock may be off).
    Column("received_at", UtcDateTime),
    # The worker resends a batch it has no acknowledgement for; this makes the resend harmless.
    UniqueConstraint("task_id", "attempt", "seq"),
    Index(None, "execution_id", "id"),  # get_events pages by id within one execution
)

worker_agents = Table(
    "worker_agents",
    metadata,
    Column("agent_id", String(36), primary_key=True),
    Column("display_name", String(256), nullable=False),
    Column("description", Text, nullable=False),
    Column("machine_name", String(256), nullable=False),
    Column("tags", Text, nullable=False),
    Column("user_account", String(256), nullable=False),
    Column("is_enabled", Boolean, nullable=False),
    Column("last_online_time", UtcDateTime),
    # Worker clock minus master clock at its last heartbeat (positive: the worker is ahead).
    Column("clock_skew_seconds", Float),
    Column("machine_info", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

worker_certificates = Table(
    "worker_certificates",
    metadata,
    Column("thumbprint", String(40), primary_key=True),
    Column("sha256", String(64)),
    # NULL while pending (added by the manager, the worker has not said who it is yet) or retired.
    Column(
        "agent_id",
        ForeignKey("worker_agents.agent_id", ondelete="SET NULL"),
        index=True,
    ),
    Column("display_name", String(256)),
    Column("enable_on_bind", Boolean, nullable=False),
    Column("pem", Text),
    Column("subject", Text),
    Column("not_before", UtcDateTime),
    Column("not_after", UtcDateTime),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

principals = Table(
    "principals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("thumbprint", String(40), unique=True),
    Column("password_hash", Text),
    Column("created_at", UtcDateTime, nullable=False),
)

# The certificate (PEM, never a key) of each identity pinned through the admin API, so every master
# sharing the catalog trusts it. A row outlives its principal: ``revoked_at`` tells the other masters
# to drop the certificate from their Root stores. Identities without a row (older catalogs, console
# passwords) are simply not shared.
principal_certificates = Table(
    "principal_certificates",
    metadata,
    Column("thumbprint", String(40), primary_key=True),
    Column("principal", String(256), nullable=False),
    Column("pem", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
)

# Web console users: a name, a role (viewer, operator, admin) and an argon2id password hash. Kept apart
# from ``principals``, whose roles are those of client certificates on the admin API.
console_users = Table(
    "console_users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

join_tokens = Table(
    "join_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_id", String(64), nullable=False, unique=True),
    Column("secret_hash", Text, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("uses_left", Integer, nullable=False),
    Column("enable", Boolean, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("time", UtcDateTime, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(256), nullable=False),
    Column("details", JSON, nullable=False),
    Index(None, "target", "id"),  # the console: a worker's audit trail, the target filter
)

master_properties = Table(
    "master_properties",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# The master certificate rotation the masters sharing this catalog carry out together: one row (id 1),
# the last rotation. ``phase`` is announced, switched, finished or aborted; the new certificate and
# its key (sealed with the masters' shared secrets key) are here so that every master can serve it
# and any master can finish a rotation another one started.
master_cert_rotation = Table(
    "master_cert_rotation",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("phase", String(16), nullable=False),
    Column("old_thumbprint", String(40), nullable=False),
    Column("new_thumbprint", String(40), nullable=False),
    Column("new_cert_pem", Text, nullable=False),
    Column("new_key_sealed", Text, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("switched_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Which master certificates each worker said it accepts in its last heartbeat, whichever master
# received it: a rotation switches once every online worker accepts the new certificate.
master_cert_acceptances = Table(
    "master_cert_acceptances",
    metadata,
    Column("agent_id", String(36), primary_key=True),
    Column("accepts", JSON, nullable=False),
    Column("heard_at", UtcDateTime, nullable=False),
)
