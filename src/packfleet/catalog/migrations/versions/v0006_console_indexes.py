"""Indexes for the web console's pages over a large catalog.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

``executions (status, id)``: a status filter pages newest first without sorting every match.
``tasks (agent_id)``: a worker's executions (its page, a drain's progress) without a scan of every
task. ``audit_log (target, id)``: a worker's audit trail and the audit page's target filter. The
dashboard's sums read an index alone, not every row: ``tasks (status, created_at)`` the queue and its
oldest task, ``executions (status, created_at)`` the last 24 hours by status. Indexes only: no row
is rewritten.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_executions_status_id", "executions", ["status", "id"])
    op.create_index("ix_tasks_agent_id", "tasks", ["agent_id"])
    op.create_index("ix_audit_log_target_id", "audit_log", ["target", "id"])
    op.create_index("ix_tasks_status_created_at", "tasks", ["status", "created_at"])
    op.create_index("ix_executions_status_created_at", "executions", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_executions_status_created_at", table_name="executions")
    op.drop_index("ix_tasks_status_created_at", table_name="tasks")
    op.drop_index("ix_audit_log_target_id", table_name="audit_log")
    op.drop_index("ix_tasks_agent_id", table_name="tasks")
    op.drop_index("ix_executions_status_id", table_name="executions")
