"""Identity certificates every master of a shared catalog trusts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

A new table, so existing rows are untouched: identities added before it have no PEM in the catalog
and stay valid on the masters that already trust them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from packfleet.catalog._schema import UtcDateTime

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "principal_certificates",
        sa.Column("thumbprint", sa.String(40)),
        sa.Column("principal", sa.String(256), nullable=False),
        sa.Column("pem", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("revoked_at", UtcDateTime),
        sa.PrimaryKeyConstraint("thumbprint", name="pk_principal_certificates"),
    )


def downgrade() -> None:
    op.drop_table("principal_certificates")
