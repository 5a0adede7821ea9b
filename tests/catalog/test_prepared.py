"""Prepared statements: the same values in and out as SQLAlchemy's own execution, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, bindparam, exc, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.sqlite import DATETIME

from packfleet.catalog import Catalog
from packfleet.catalog._prepared import Prepared
from packfleet.catalog._schema import UtcDateTime, master_cert_acceptances

acceptances = master_cert_acceptances
TIMES = [
    datetime(2024, 6, 1, 12, 0, tzinfo=UTC),  # no microseconds: the text still carries six digits
    datetime(2024, 6, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2024, 12, 31, 23, 59, 59, 999999),  # naive: taken as UTC
    datetime(1, 1, 1, 0, 0, tzinfo=UTC),
]
ROWS: list[dict[str, Any]] = [
    {"agent_id": f"agent-{n}", "accepts": {"thumbprints": ["a" * n], "n": n}, "heard_at": time}
    for n, time in enumerate(TIMES)
]


@pytest.fixture
def conn(catalog: Catalog) -> Iterator[Connection]:
    with catalog._writer.begin() as connection:
        yield connection


def _insert(catalog: Catalog) -> Any:
    dialect = postgresql if catalog.dialect == "postgresql" else sqlite
    return dialect.insert(acceptances).on_conflict_do_nothing(index_elements=["agent_id"]).inline()


def _prepared_insert(catalog: Catalog) -> Prepared:
    return Prepared(
        _insert(catalog), catalog._engine.dialect, column_keys=["agent_id", "accepts", "heard_at"]
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _stored(conn: Connection) -> list[tuple[Any, ...]]:
    """The rows as the database holds them, without SQLAlchemy's type processing."""
    return [tuple(r) for r in conn.exec_driver_sql("SELECT agent_id, heard_at FROM master_cert_acceptances")]


@pytest.mark.parametrize(
    "value", [*TIMES, datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), None], ids=repr
)
def test_the_sqlite_datetime_text_is_sqlalchemys_datetime_text(value: datetime | None) -> None:
    dialect = sqlite.dialect()
    utc = UtcDateTime()
    theirs = DATETIME().bind_processor(dialect)
    assert theirs is not None
    process = utc.bind_processor(dialect)
    assert process is not None
    assert process(value) == theirs(utc.process_bind_param(value, dialect))


def test_values_are_stored_as_sqlalchemy_stores_them(catalog: Catalog, conn: Connection) -> None:
    conn.execute(_insert(catalog), ROWS)
    by_sqlalchemy = _stored(conn)
    conn.execute(acceptances.delete())
    assert _prepared_insert(catalog).run_many(conn, ROWS) == len(ROWS)
    assert _stored(conn) == by_sqlalchemy
    assert conn.execute(select(acceptances).order_by(acceptances.c.agent_id)).all() == [
        (r["agent_id"], r["accepts"], _utc(r["heard_at"])) for r in ROWS
    ]


@pytest.mark.parametrize("count", [0, 1, 3, len(ROWS)])
def test_rows_read_as_sqlalchemy_reads_them_for_any_length_of_list(
    catalog: Catalog, conn: Connection, count: int
) -> None:
    conn.execute(_insert(catalog), ROWS)
    query = (
        select(acceptances.c.agent_id, acceptances.c.accepts, acceptances.c.heard_at.label("heard"))
        .where(acceptances.c.agent_id.in_(bindparam("ids", expanding=True)))
        .order_by(acceptances.c.agent_id)
    )
    prepared = Prepared(query, catalog._engine.dialect)
    ids = [r["agent_id"] for r in ROWS[:count]]
    rows = prepared.rows(conn, {"ids": ids})
    assert rows == [tuple(r) for r in conn.execute(query, {"ids": ids})]
    assert [r.agent_id for r in rows] == ids
    assert all(r.heard.tzinfo == UTC for r in rows)
    # A second length, then the first again: each length has its own SQL.
    assert prepared.rows(conn, {"ids": ids[:1]}) == [tuple(r) for r in conn.execute(query, {"ids": ids[:1]})]
    assert prepared.rows(conn, {"ids": ids}) == rows


def test_fixed_values_of_the_statement_and_repeated_parameters_are_bound(
    catalog: Catalog, conn: Connection
) -> None:
    conn.execute(_insert(catalog), ROWS)
    when = bindparam("when", type_=UtcDateTime)
    touch = (
        update(acceptances)
        .where(acceptances.c.agent_id.in_(bindparam("ids", expanding=True)), acceptances.c.heard_at < when)
        .values(heard_at=when, accepts={"fixed": True})
    )
    later = datetime(2030, 1, 1, tzinfo=UTC)
    assert (
        Prepared(touch, catalog._engine.dialect).run(conn, {"ids": ["agent-0", "agent-2"], "when": later})
        == 2
    )
    touched = Prepared(
        select(func.count()).where(acceptances.c.heard_at == later, acceptances.c.accepts.is_not(None)),
        catalog._engine.dialect,
    )
    assert touched.scalar(conn, {}) == 2
    assert conn.execute(
        select(acceptances.c.accepts).where(acceptances.c.agent_id == "agent-2")
    ).scalar_one() == {"fixed": True}


def test_run_many_counts_only_the_rows_it_inserted(catalog: Catalog, conn: Connection) -> None:
    insert = _prepared_insert(catalog)
    assert insert.run_many(conn, ROWS[:2]) == 2
    assert insert.run_many(conn, ROWS) == len(ROWS) - 2  # the first two are there already


def test_a_driver_error_arrives_as_sqlalchemy_raises_it(catalog: Catalog) -> None:
    insert = Prepared(acceptances.insert(), catalog._engine.dialect, column_keys=["agent_id", "accepts"])
    with pytest.raises(exc.IntegrityError), catalog._writer.begin() as conn:
        insert.run_many(conn, [{"agent_id": "a", "accepts": []}])  # heard_at is NOT NULL
    with catalog._engine.begin() as conn:  # the failed transaction was rolled back and the connection works
        assert conn.execute(select(func.count()).select_from(acceptances)).scalar_one() == 0


def test_a_statement_outside_a_transaction_is_refused(catalog: Catalog) -> None:
    prepared = Prepared(select(acceptances.c.agent_id), catalog._engine.dialect)
    with catalog._engine.connect() as conn, pytest.raises(exc.InvalidRequestError):
        prepared.rows(conn, {})


def test_a_statement_that_needs_sqlalchemy_at_execution_is_refused(catalog: Catalog) -> None:
    literal = select(acceptances.c.agent_id).where(
        acceptances.c.agent_id == bindparam("id", literal_execute=True)
    )
    with pytest.raises(ValueError, match="need SQLAlchemy"):
        Prepared(literal, catalog._engine.dialect)


@pytest.mark.postgres
@pytest.mark.parametrize("through", ["sqlalchemy", "prepared"])
def test_a_lost_postgresql_session_invalidates_the_connection_as_sqlalchemy_does(
    migrated_pg: str, through: str
) -> None:
    catalog = Catalog.open(migrated_pg)
    query = select(acceptances.c.agent_id)
    prepared = Prepared(query, catalog._engine.dialect)
    admin = migrated_pg.replace("postgresql+psycopg://", "postgresql://")
    try:
        with catalog._engine.connect() as conn:
            conn.begin()
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with psycopg.connect(admin, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
            with pytest.raises(exc.OperationalError) as raised:
                conn.execute(query) if through == "sqlalchemy" else prepared.rows(conn, {})
            assert raised.value.connection_invalidated
            assert conn.invalidated
            conn.rollback()
        assert catalog.list_workers() == []  # a fresh connection serves the next call
    finally:
        catalog.close()
