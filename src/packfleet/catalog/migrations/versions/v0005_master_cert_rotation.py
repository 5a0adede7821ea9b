"""Master certificate rotation shared by every master: its state and what each worker accepts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

Two new tables, so existing rows are untouched. A rotation under way in the old form (the master
property ``rotation.master_cert``) is carried over by the master at start, not here: its new key is
in that master's Root store, which a migration cannot read.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from packfleet.catalog._schema import UtcDateTime

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "master_cert_rotation",
        sa.Column("id", sa.Integer),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("old_thumbprint", sa.String(40), nullable=False),
        sa.Column("new_thumbprint", sa.String(40), nullable=False),
        sa.Column("new_cert_pem", sa.Text, nullable=False),
        sa.Column("new_key_sealed", sa.Text, nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("switched_at", UtcDateTime),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_master_cert_rotation"),
    )
    op.create_table(
        "master_cert_acceptances",
        sa.Column("agent_id", sa.String(36)),
        sa.Column("accepts", sa.JSON, nullable=False),
        sa.Column("heard_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("agent_id", name="pk_master_cert_acceptances"),
    )


def downgrade() -> None:
    op.drop_table("master_cert_acceptances")
    op.drop_table("master_cert_rotation")
