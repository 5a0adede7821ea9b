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


#: Marks of the tests that start real processes (masters, workers, Chromium): each module of them
#: runs for minutes where most modules take seconds.
_SLOW_MARKS = ("e2e", "browser")
#: The longest of those (most of a run's minutes each), handed out before the rest.
_LONGEST = ("tests/faults/test_faults.py", "tests/e2e/test_executions.py", "tests/e2e/test_failover.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the modules that start real processes first.

    Collected alphabetically, the longest modules (the fault suite above all) came last and ran one
    beside the other at the end while the other worker sat idle; handed out first, the short
    modules fill the gaps. The order within a module is kept. ``make test`` (``--dist loadscope``)
    runs under pytest-xdist 3.5 or later, which hands out the modules with the most tests first
    instead; keeping this order there (``--no-loadscope-reorder``) was measured no quicker (692 s
    against 647 s for the whole suite), so this order is what a serial run or ``--dist load`` uses.
    """
    slow_modules = {
        item.nodeid.split("::", 1)[0]
        for item in items
        if any(item.get_closest_marker(mark) for mark in _SLOW_MARKS)
    }

    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        if module in _LONGEST:
            return _LONGEST.index(module)
        return len(_LONGEST) if module in slow_modules else len(_LONGEST) + 1

    items.sort(key=rank)
