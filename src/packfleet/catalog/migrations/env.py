"""Alembic environment: runs on the connection :func:`packfleet.catalog._engine.upgrade` hands over.

packfleet never runs Alembic from an ``alembic.ini``; the caller owns the connection and its
transaction (and, on PostgreSQL, the advisory lock that keeps two masters from migrating at once).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from packfleet.catalog._schema import metadata
from packfleet.errors import CatalogError


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most of a table; batch mode copies it, as later migrations will need.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise CatalogError(
        "the catalog migrations run only through packfleet",
        fix="call packfleet.catalog.Catalog.open(url) or Catalog.upgrade()",
    )
_run(_connection)
