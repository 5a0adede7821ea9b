"""Seal the sensitive parameter values that older versions stored in plaintext.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

A data migration: for each execution, the sensitive parameters of its package (from the manifest of
the project version it runs) whose stored value is not sealed yet are sealed with the master's
secrets key, which the caller hands over as a callable (``Catalog.open(url, keyring=...)``). The
callable is only called when there is something to seal; without one, the migration refuses and says
which command brings the key. The key id used is recorded as the master property
``secrets.key_ids``, in the same transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from packfleet.catalog._schema import UtcDateTime
from packfleet.errors import SecretsError
from packfleet.secretbox import is_sealed, seal_values, sensitive_names

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_KEY_IDS_PROPERTY = "secrets.key_ids"
_executions = sa.table(
    "executions",
    sa.column("id", sa.Integer),
    sa.column("package", sa.String),
    sa.column("project_version_id", sa.Integer),
    sa.column("parameters", sa.JSON),
)
_versions = sa.table("project_versions", sa.column("id", sa.Integer), sa.column("manifest", sa.JSON))
_properties = sa.table(
    "master_properties",
    sa.column("key", sa.String),
    sa.column("value", sa.Text),
    sa.column("updated_at", UtcDateTime),
)


def upgrade() -> None:
    conn = op.get_bind()
    manifests: dict[int, Any] = {row.id: row.manifest for row in conn.execute(sa.select(_versions))}
    pending: list[tuple[int, dict[str, Any], set[str]]] = []
    for row in conn.execute(sa.select(_executions).order_by(_executions.c.id)):
        parameters = dict(row.parameters)
        names = sensitive_names(manifests.get(row.project_version_id) or {}, row.package)
        plain = {n for n in names if n in parameters and not is_sealed(parameters[n])}
        if plain:
            pending.append((row.id, parameters, plain))
    if not pending:
        return
    provide = context.config.attributes.get("packfleet_keyring")
    if provide is None:
        raise SecretsError(
            f"the catalog holds sensitive parameter values of {len(pending)} execution(s) in plaintext; "
            "this upgrade seals them with the master's secrets key file (secrets.key in the master's "
            "home), and none was given",
            fix="upgrade by starting the master on its home (packfleet master run), which creates the "
            "key file when the catalog has none",
        )
    ring = provide()
    for execution_id, parameters, plain in pending:
        conn.execute(
            sa.update(_executions)
            .where(_executions.c.id == execution_id)
            .values(parameters=seal_values(ring, parameters, plain))
        )
    conn.execute(sa.delete(_properties).where(_properties.c.key == _KEY_IDS_PROPERTY))
    conn.execute(
        sa.insert(_properties).values(
            key=_KEY_IDS_PROPERTY,
            value=",".join(sorted(ring.keys)),
            updated_at=datetime.now(UTC),
        )
    )


def downgrade() -> None:
    raise NotImplementedError("sealed values are not unsealed in place: restore a catalog backup instead")
