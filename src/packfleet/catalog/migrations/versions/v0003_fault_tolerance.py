"""Fault tolerance: submit idempotency keys, who lost a lease and when, receive times, clock skew.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

Only nullable columns and one index are added, so existing rows need no rewrite and SQLite needs no
table copy.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from packfleet.catalog._schema import UtcDateTime

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("executions", sa.Column("idempotency_key", sa.String(128)))
    op.create_index(
        "ix_executions_created_by_idempotency_key",
        "executions",
        ["created_by", "idempotency_key"],
        unique=True,
    )
    op.add_column("tasks", sa.Column("lost_by", sa.String(36)))
    op.add_column("tasks", sa.Column("lost_at", UtcDateTime))
    op.add_column("event_messages", sa.Column("received_at", UtcDateTime))
    op.add_column("worker_agents", sa.Column("clock_skew_seconds", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("worker_agents") as batch:
        batch.drop_column("clock_skew_seconds")
    with op.batch_alter_table("event_messages") as batch:
        batch.drop_column("received_at")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("lost_at")
        batch.drop_column("lost_by")
    op.drop_index("ix_executions_created_by_idempotency_key", table_name="executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("idempotency_key")
