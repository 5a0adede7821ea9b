"""Pooled PostgreSQL connections: checked without a round trip when just used, replaced when dead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from packfleet.catalog import Catalog, _engine

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_catalog(migrated_pg: str) -> Iterator[Catalog]:
    catalog = Catalog.open(migrated_pg)
    try:
        yield catalog
    finally:
        catalog.close()


def _backend_pid(catalog: Catalog) -> int:
    with catalog._engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _count_pings(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    dialect = catalog._engine.dialect
    real = dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(1)
        return bool(real(dbapi_connection))

    monkeypatch.setattr(dialect, "do_ping", counted)
    return pings


def test_a_connection_used_moments_ago_is_reused_without_a_ping(
    pg_catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_engine, "PING_AFTER_IDLE", 60.0)  # however slow this machine is right now
    first = _backend_pid(pg_catalog)
    pings = _count_pings(pg_catalog, monkeypatch)
    for _ in range(5):
        pg_catalog.list_workers()
    assert _backend_pid(pg_catalog) == first
    assert pings == []


def test_a_connection_idle_for_a_while_is_pinged_before_use(
    pg_catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _backend_pid(pg_catalog)
    pings = _count_pings(pg_catalog, monkeypatch)
    monkeypatch.setattr(_engine, "PING_AFTER_IDLE", 0.0)  # any idle time is a while
    pg_catalog.list_workers()
    assert pings == [1]
    assert _backend_pid(pg_catalog) == first


def test_a_connection_whose_server_session_ended_is_replaced_unseen(
    pg_catalog: Catalog, migrated_pg: str
) -> None:
    killed = _backend_pid(pg_catalog)
    admin = migrated_pg.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s, 5000)", (killed,))
    assert pg_catalog.list_workers() == []  # no CatalogUnavailable: the dead connection was replaced
    assert _backend_pid(pg_catalog) != killed
