"""Engines, migrations and the one place database errors become :class:`CatalogError`.

Two backends: SQLite (the default ``sqlite:///<home>/catalog.db``, one master) and PostgreSQL
(``postgresql+psycopg://...``, several masters sharing one database). ``SqlConnectionTimeoutInSecs``
from MasterSettings.config becomes libpq's ``connect_timeout`` on PostgreSQL and SQLite's
``busy_timeout`` (how long a writer waits for the lock) on SQLite.
"""

from __future__ import annotations

import math
import os
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import URL, Connection, Engine, create_engine, event, exc, make_url, text
from sqlalchemy.pool import ConnectionPoolEntry

from packfleet.errors import CatalogError, CatalogUnavailable, Conflict

MIGRATIONS = "packfleet.catalog:migrations"
SUPPORTED_DIALECTS = ("sqlite", "postgresql")
# Execution option that asks for a write transaction (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "packfleet_write"
# pg_advisory_xact_lock key serializing schema upgrades when several masters start at once.
_UPGRADE_LOCK_KEY = 0x7061636B666C6565  # "packflee"
# A pooled PostgreSQL connection idle longer than this is pinged before use (make_engine, checkout).
PING_AFTER_IDLE = 1.0
# Where a pooled connection's record keeps when it was last returned to the pool.
_CHECKED_IN_AT = "packfleet_checked_in_at"


def parse_url(url: str) -> URL:
    """Parse a catalog URL, defaulting bare ``postgresql://`` to the psycopg 3 driver.

    SQLAlchemy's default PostgreSQL driver is psycopg2, which packfleet does not install; a user who
    copies a plain ``postgresql://`` URL from their DBA should not have to know that.
    """
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError) as error:
        # Neither the text nor SQLAlchemy's message (which quotes it) is shown: a malformed URL
        # still holds the real password (`packfleet settings show master` shows it masked).
        # ValueError: a port that is not a number.
        raise CatalogError(
            "the catalog URL is not a database URL that SQLAlchemy can parse "
            "(dialect+driver://user:password@host:port/dbname)",
            fix="set CatalogUrl to sqlite:///<path>/catalog.db or postgresql+psycopg://user@host:5432/dbname",
        ) from error
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in SUPPORTED_DIALECTS:
        raise CatalogError(
            f"catalog URL {mask(parsed)} uses {parsed.get_backend_name()!r}; "
            "packfleet supports sqlite and postgresql",
            fix="set CatalogUrl to sqlite:///<path>/catalog.db or postgresql+psycopg://user@host:5432/dbname",
        )
    return parsed


def mask(url: URL) -> str:
    """The URL as it may appear in logs and error messages: password replaced by ``***``.

    >>> mask(parse_url("postgresql://packfleet:s3cret@db:5432/catalog"))
    'postgresql+psycopg://packfleet:***@db:5432/catalog'
    """
    return url.render_as_string(hide_password=True)


def require_postgresql_driver() -> None:
    """Raise a plain error when psycopg 3, the ``postgresql`` extra, is not installed.

    SQLite needs nothing beyond the standard library, so psycopg is optional; without this check a
    PostgreSQL URL would fail deep inside SQLAlchemy with "No module named 'psycopg'".
    """
    try:
        import psycopg  # noqa: F401
    except ImportError as error:
        raise CatalogError(
            "the catalog URL names PostgreSQL, but psycopg 3 "
            "(packfleet's `postgresql` extra) is not installed",
            fix="pip install 'packfleet[postgresql]'",
        ) from error


def make_engine(url: URL, connect_timeout: float) -> Engine:
    """Create the engine for ``url`` with packfleet's connection settings (see module docstring)."""
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, connect_timeout)
    require_postgresql_driver()
    engine = create_engine(
        url,
        # libpq takes whole seconds and treats values below 2 as 2.
        connect_args={"connect_timeout": max(2, math.ceil(connect_timeout))},
        pool_timeout=connect_timeout,
        # Last in, first out: a busy master keeps reusing its freshest connection, which needs no
        # ping (see _on_checkout), while the others age out into being pinged when next used.
        pool_use_lifo=True,
    )

    # A new connection counts as just checked in: it was proven alive by connecting.
    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        # A master outlives PostgreSQL restarts and failovers, so it hands out only live connections.
        # SQLAlchemy's pool_pre_ping costs a round trip on every checkout (one round trip in eight on a
        # busy master). A connection returned moments ago is tested locally instead: a server ending
        # a session (restart, failover, pg_terminate_backend) sends an error and closes the socket,
        # which then has input although nobody asked anything. Such a connection, or one idle longer
        # than PING_AFTER_IDLE, is pinged as before. (A peer gone without a word, its TCP state
        # lost, shows nothing locally: the first statement then fails once with CatalogUnavailable.)
        checked_in = record.info.get(_CHECKED_IN_AT)
        try:
            if (
                checked_in is not None
                and time.monotonic() - checked_in < PING_AFTER_IDLE
                and not dbapi_connection.closed
                and not _has_input(dbapi_connection.pgconn.socket)
            ):
                return
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # whatever failed, fresh connections are the remedy
            # As pool_pre_ping does: a dead connection means the server went away, so every pooled
            # connection is replaced, not only this one, and the caller gets a fresh connection.
            raise exc.InvalidatePoolError(f"the pooled catalog connection is dead: {error}") from error

    return engine


def _has_input(fd: int) -> bool:
    """Whether the socket ``fd`` can be read without blocking (a poll that does not wait)."""
    if hasattr(select, "poll"):  # not on Windows; select() cannot take descriptors above 1023
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


def _private_database_file(url: URL) -> None:
    """Create the SQLite file 0600 before SQLite does, whatever the umask.

    SQLite creates a new database file with mode 0644 less the umask, and its ``-wal`` and ``-shm``
    files with the mode of the database file (``findCreateFileMode`` in ``os_unix.c``): made private
    here, all three are private. The catalog holds audit records and sealed secrets.
    """
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # a missing folder: SQLite's own error names it on first use (see _fix_for)
    os.fchmod(fd, 0o600)
    os.close(fd)


def _sqlite_engine(url: URL, connect_timeout: float) -> Engine:
    _private_database_file(url)
    engine = create_engine(url, connect_args={"timeout": connect_timeout})
    busy_ms = max(1, int(connect_timeout * 1000))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module (it would BEGIN lazily, after the
        # first SELECT, and DEFERRED) so that _on_begin below decides how each transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # WAL: readers never block the writer nor the writer readers, which the master's long-polls
            # need. synchronous=NORMAL is durable across application crashes in WAL mode and loses at
            # most the last commits on power loss (https://sqlite.org/pragma.html#pragma_synchronous).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            # SQLite leaves foreign keys off by default; cascades (cleanup_completed) depend on them.
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A write takes the database lock up front: a DEFERRED transaction that reads then writes
        # fails with SQLITE_BUSY instead of waiting when another writer got in between
        # (https://sqlite.org/lang_transaction.html). That makes every writer one in a queue.
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def _fix_for(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return (
            "check that the directory of the catalog file exists and is writable by the master's "
            "service account, or set CatalogUrl in MasterSettings.config"
        )
    host = f"{url.host or 'localhost'}:{url.port or 5432}"
    return (
        f"check that PostgreSQL is running and accepts connections at {host} for user "
        f"{url.username!r} and database {url.database!r} (e.g. `pg_isready -h {url.host or ''} "
        f"-p {url.port or 5432}`), or set CatalogUrl in MasterSettings.config"
    )


def _first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


def translate(error: exc.SQLAlchemyError, url: URL) -> CatalogError:
    """Turn a SQLAlchemy error into a :class:`CatalogError` a person can act on."""
    if isinstance(error, exc.IntegrityError):
        return Conflict(f"the catalog refused the change: {_first_line(error)}")
    if isinstance(error, exc.OperationalError | exc.InterfaceError | exc.TimeoutError):
        return CatalogUnavailable(
            f"cannot use the catalog database {mask(url)}: {_first_line(error)}",
            fix=_fix_for(url),
        )
    return CatalogError(f"catalog database {mask(url)} failed: {_first_line(error)}")


@contextmanager
def translated(url: URL) -> Iterator[None]:
    """Re-raise any SQLAlchemy error in the block as a :class:`CatalogError` for ``url``."""
    try:
        yield
    except exc.SQLAlchemyError as error:
        raise translate(error, url) from error


#: Alembic config attribute through which a migration reaches the master's secrets key (a callable).
KEYRING_ATTRIBUTE = "packfleet_keyring"


def upgrade(engine: Engine, url: URL, keyring: Callable[[], Any] | None = None) -> None:
    """Migrate the catalog schema to the newest revision; a no-op when it is already there.

    Runs the packaged Alembic migrations from code, so no ``alembic.ini`` is needed. All of it is one
    transaction (SQLite and PostgreSQL both have transactional DDL), so a failed migration leaves the
    previous schema intact.
    """
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("path_separator", "os")
    config.attributes[KEYRING_ATTRIBUTE] = keyring
    sqlite = url.get_backend_name() == "sqlite"
    with translated(url), engine.execution_options(**{WRITE_OPTION: True}).connect() as conn:
        raw: Any = conn.connection.driver_connection  # sqlite3.Connection on SQLite
        if sqlite:
            # SQLite rebuilds a table to alter it (Alembic batch mode); with foreign keys on, dropping
            # the old copy would run ON DELETE CASCADE and empty the tables that point at it. SQLite's
            # procedure: keys off outside the transaction, check them before commit
            # (https://sqlite.org/lang_altertable.html#otheralter).
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                if not sqlite:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
                _run_migrations(config, conn, url)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise CatalogError(
                            f"migrating {mask(url)} would break {len(broken)} foreign key(s), "
                            f"first in table {broken[0][0]}; nothing was changed",
                            fix="report this to the packfleet maintainers with the table named",
                        )
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def _run_migrations(config: Config, conn: Connection, url: URL) -> None:
    config.attributes["connection"] = conn
    try:
        command.upgrade(config, "head")
    except CommandError as error:  # e.g. the database names a revision this code lacks
        raise CatalogError(
            f"cannot migrate the catalog database {mask(url)}: {error}",
            fix="the database holds a schema from a newer or foreign packfleet; point "
            "CatalogUrl at this packfleet's database or upgrade packfleet",
        ) from error
