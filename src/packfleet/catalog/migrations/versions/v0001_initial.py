"""The first catalog schema: projects, executions, tasks, events, workers, trust, audit.

Revision ID: 0001
Revises:
Create Date: 2024-06-01

Written out in full rather than generated from ``_schema.metadata``: a migration is history and must
keep creating this schema even after the metadata moves on. ``tests/catalog/test_migrations.py``
checks that head and the metadata agree.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from packfleet.catalog._schema import BigId, UtcDateTime

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "folders",
        sa.Column("id", sa.Integer),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_folders"),
        sa.UniqueConstraint("name", name="uq_folders_name"),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer),
        sa.Column("folder_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
        sa.ForeignKeyConstraint(
            ["folder_id"], ["folders.id"], name="fk_projects_folder_id_folders", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("folder_id", "name", name="uq_projects_folder_id_name"),
    )
    op.create_table(
        "project_versions",
        sa.Column("id", sa.Integer),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("archive", sa.LargeBinary, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("deployed_at", UtcDateTime, nullable=False),
        sa.Column("deployed_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_project_versions"),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_project_versions_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("project_id", "version", name="uq_project_versions_project_id_version"),
    )
    op.create_index("ix_project_versions_sha256", "project_versions", ["sha256"])
    op.create_table(
        "packages",
        sa.Column("id", sa.Integer),
        sa.Column("project_version_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_packages"),
        sa.ForeignKeyConstraint(
            ["project_version_id"],
            ["project_versions.id"],
            name="fk_packages_project_version_id_project_versions",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("project_version_id", "name", name="uq_packages_project_version_id_name"),
    )
    op.create_table(
        "executions",
        sa.Column("id", BigId),
        sa.Column("folder", sa.String(128), nullable=False),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("package", sa.String(256), nullable=False),
        sa.Column("project_version_id", sa.Integer, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("retry_count", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("started_at", UtcDateTime),
        sa.Column("ended_at", UtcDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_executions"),
        sa.ForeignKeyConstraint(
            ["project_version_id"],
            ["project_versions.id"],
            name="fk_executions_project_version_id_project_versions",
        ),
    )
    op.create_index("ix_executions_project_version_id", "executions", ["project_version_id"])
    op.create_index("ix_executions_status_ended_at", "executions", ["status", "ended_at"])
    op.create_table(
        "execution_workers",
        sa.Column("execution_id", BigId),
        sa.Column("agent_id", sa.String(36)),
        sa.PrimaryKeyConstraint("execution_id", "agent_id", name="pk_execution_workers"),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name="fk_execution_workers_execution_id_executions",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "tasks",
        sa.Column("id", BigId),
        sa.Column("execution_id", BigId, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("agent_id", sa.String(36)),
        sa.Column("lease_expires_at", UtcDateTime),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("started_at", UtcDateTime),
        sa.Column("ended_at", UtcDateTime),
        sa.Column("exit_code", sa.Integer),
        sa.Column("message", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name="fk_tasks_execution_id_executions",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("execution_id", name="uq_tasks_execution_id"),
    )
    op.create_index("ix_tasks_status_id", "tasks", ["status", "id"])
    op.create_index("ix_tasks_status_lease_expires_at", "tasks", ["status", "lease_expires_at"])
    op.create_table(
        "event_messages",
        sa.Column("id", BigId),
        sa.Column("execution_id", BigId, nullable=False),
        sa.Column("task_id", BigId, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("message_time", UtcDateTime, nullable=False),
        sa.Column("message_type", sa.Integer, nullable=False),
        sa.Column("message_source", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_messages"),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name="fk_event_messages_execution_id_executions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_event_messages_task_id_tasks", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("task_id", "attempt", "seq", name="uq_event_messages_task_id_attempt_seq"),
    )
    op.create_index("ix_event_messages_execution_id_id", "event_messages", ["execution_id", "id"])
    op.create_table(
        "worker_agents",
        sa.Column("agent_id", sa.String(36)),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("machine_name", sa.String(256), nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("user_account", sa.String(256), nullable=False),
        sa.Column("is_enabled", sa.Boolean, nullable=False),
        sa.Column("last_online_time", UtcDateTime),
        sa.Column("machine_info", sa.JSON, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("agent_id", name="pk_worker_agents"),
    )
    op.create_table(
        "worker_certificates",
        sa.Column("thumbprint", sa.String(40)),
        sa.Column("sha256", sa.String(64)),
        sa.Column("agent_id", sa.String(36)),
        sa.Column("display_name", sa.String(256)),
        sa.Column("enable_on_bind", sa.Boolean, nullable=False),
        sa.Column("pem", sa.Text),
        sa.Column("subject", sa.Text),
        sa.Column("not_before", UtcDateTime),
        sa.Column("not_after", UtcDateTime),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("thumbprint", name="pk_worker_certificates"),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["worker_agents.agent_id"],
            name="fk_worker_certificates_agent_id_worker_agents",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_worker_certificates_agent_id", "worker_certificates", ["agent_id"])
    op.create_table(
        "principals",
        sa.Column("id", sa.Integer),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("thumbprint", sa.String(40)),
        sa.Column("password_hash", sa.Text),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_principals"),
        sa.UniqueConstraint("name", name="uq_principals_name"),
        sa.UniqueConstraint("thumbprint", name="uq_principals_thumbprint"),
    )
    op.create_table(
        "join_tokens",
        sa.Column("id", sa.Integer),
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("uses_left", sa.Integer, nullable=False),
        sa.Column("enable", sa.Boolean, nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("revoked_at", UtcDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_join_tokens"),
        sa.UniqueConstraint("token_id", name="uq_join_tokens_token_id"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", BigId),
        sa.Column("time", UtcDateTime, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_table(
        "master_properties",
        sa.Column("key", sa.String(128)),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_master_properties"),
    )


def downgrade() -> None:
    for table in (
        "master_properties",
        "audit_log",
        "join_tokens",
        "principals",
        "worker_certificates",
        "worker_agents",
        "event_messages",
        "tasks",
        "execution_workers",
        "executions",
        "packages",
        "project_versions",
        "projects",
        "folders",
    ):
        op.drop_table(table)
