"""Opening the catalog: migrations from empty to head, SQLite settings, errors a person can act on."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from packfleet.catalog import Catalog
from packfleet.catalog._schema import metadata
from packfleet.errors import CatalogError

from .conftest import FakeClock


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", "packfleet.catalog:migrations")
    config.set_main_option("path_separator", "os")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with nothing in it (a fresh PostgreSQL database per test module is migrated once
    by the first test that opens it, so this fixture drops the schema it finds)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/fresh.db"
    url: str = request.getfixturevalue("pg_url")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    return url


def test_open_migrates_an_empty_database_to_head(empty_url: str) -> None:
    assert _revision(empty_url) is None
    with Catalog.open(empty_url, connect_timeout=5):
        pass
    assert _revision(empty_url) == _head()
    engine = create_engine(empty_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables == {t.name for t in metadata.sorted_tables} | {"alembic_version"}


def test_upgrade_twice_is_a_no_op_and_keeps_data(empty_url: str) -> None:
    with Catalog.open(empty_url, connect_timeout=5, clock=FakeClock()) as catalog:
        catalog.set_property("MasterUrl", "https://master:8391")
        catalog.upgrade()
        catalog.upgrade()
        assert catalog.get_property("MasterUrl") == "https://master:8391"
    with Catalog.open(empty_url, connect_timeout=5) as again:
        assert again.get_property("MasterUrl") == "https://master:8391"
    assert _revision(empty_url) == _head()


def test_migrations_create_exactly_the_schema_the_code_uses(empty_url: str) -> None:
    Catalog.open(empty_url, connect_timeout=5).close()
    engine = create_engine(empty_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_open_without_upgrade_only_checks_the_connection(empty_url: str) -> None:
    with Catalog.open(empty_url, connect_timeout=5, upgrade=False) as catalog:
        catalog.ping()
    assert _revision(empty_url) is None


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    with Catalog.open(f"sqlite:///{path}", connect_timeout=7) as catalog:
        with catalog._read() as conn:
            pragmas = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    # synchronous: 1 is NORMAL (https://sqlite.org/pragma.html#pragma_synchronous).
    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": 7000}
    # WAL is a property of the file: another process opening it sees it too.
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_postgresql_is_a_plain_catalog_error_with_the_url_masked() -> None:
    port = _closed_port()
    url = f"postgresql+psycopg://packfleet:s3cret@127.0.0.1:{port}/catalog"
    started = time.monotonic()
    with pytest.raises(CatalogError) as caught:
        Catalog.open(url, connect_timeout=2)
    assert time.monotonic() - started < 15
    error = caught.value
    assert f"postgresql+psycopg://packfleet:***@127.0.0.1:{port}/catalog" in error.message
    assert "s3cret" not in str(error)
    assert error.fix is not None
    assert f"127.0.0.1:{port}" in error.fix and "CatalogUrl" in error.fix


@pytest.mark.postgres
def test_bare_postgresql_url_uses_psycopg(migrated_pg: str) -> None:
    bare = migrated_pg.replace("postgresql+psycopg://", "postgresql://")
    with Catalog.open(bare, connect_timeout=5) as catalog:
        assert catalog.dialect == "postgresql"
        assert catalog.url.startswith("postgresql+psycopg://")


def test_sqlite_file_in_a_missing_directory_says_which_and_how_to_fix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/catalog.db"
    with pytest.raises(CatalogError) as caught:
        Catalog.open(url)
    assert url in caught.value.message
    assert caught.value.fix is not None and "directory" in caught.value.fix


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://root@localhost/catalog", "supports sqlite and postgresql"),
        ("not a url", "is not a database URL"),
    ],
)
def test_unsupported_urls_are_refused(url: str, words: str) -> None:
    with pytest.raises(CatalogError, match=words):
        Catalog.open(url)


def test_a_database_from_a_newer_packfleet_fails_the_migration_plainly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/newer.db"
    Catalog.open(url).close()
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    finally:
        engine.dispose()
    with pytest.raises(CatalogError) as caught:
        Catalog.open(url)
    assert "cannot migrate the catalog database" in caught.value.message
    assert url in caught.value.message
    assert caught.value.fix is not None
