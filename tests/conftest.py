"""Fixtures shared by every test folder: a throwaway PostgreSQL database.

Each database gets a random name, so pytest-xdist workers and modules never share one, and is
dropped ``WITH (FORCE)`` afterwards, which ends any connection a failed test left open. PostgreSQL
being unreachable fails the test: CI starts it, and a silent skip would hide the backend that runs
production.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg
import pytest

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER} (CI starts it): {error}")


@contextlib.contextmanager
def pg_database(prefix: str = "pf") -> Iterator[str]:
    """Create the database ``<prefix>_<uuid>``, yield its SQLAlchemy URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (folders may override it with a wider scope)."""
    with pg_database() as url:
        yield url
