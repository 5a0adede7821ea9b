"""The :class:`Catalog` facade: opening, migrating and closing the master's database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import URL, Engine, text

from packfleet.catalog import _engine
from packfleet.catalog._admin import AdminCatalog
from packfleet.catalog._base import Clock, utc_now
from packfleet.catalog._console import ConsoleCatalog
from packfleet.catalog._handoff import HandoffCatalog
from packfleet.catalog._joins import JoinCatalog
from packfleet.catalog._mastercert import MasterCertCatalog
from packfleet.catalog._projects import ProjectCatalog
from packfleet.catalog._reports import ReportCatalog
from packfleet.catalog._rotation import RotationCatalog
from packfleet.catalog._sealed import SealedValuesCatalog, open_sealed_catalog
from packfleet.catalog._users import UserCatalog
from packfleet.catalog._workers import WorkerCatalog
from packfleet.secretbox import LiveKeyring, SecretKeyring


class Catalog(
    JoinCatalog,
    WorkerCatalog,
    ProjectCatalog,
    ReportCatalog,
    HandoffCatalog,
    AdminCatalog,
    RotationCatalog,
    MasterCertCatalog,
    UserCatalog,
    SealedValuesCatalog,
    ConsoleCatalog,
):
    """The master's database: projects, executions and tasks, workers and trust, audit.

    Synchronous and thread-safe: every method is its own transaction on a pooled connection and
    returns frozen records, never live database objects. Time comes from ``clock`` (aware UTC), so
    tests drive lease expiry and retention without waiting::

        catalog = Catalog.open("sqlite:///var/lib/packfleet/catalog.db")
        execution = catalog.create_execution("etl", "sales", "load", parameters={}, actor="admin")
        [task] = catalog.lease_tasks(agent_id, capacity=4, lease_seconds=60)
        catalog.complete_task(agent_id, task.task_id, task.attempt, "succeeded", exit_code=0)
    """

    def __init__(self, engine: Engine, url: URL, *, clock: Clock = utc_now) -> None:
        super().__init__(engine, url, clock=clock)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        connect_timeout: float = 15,
        upgrade: bool = True,
        clock: Clock = utc_now,
        keyring: Callable[[], SecretKeyring] | None = None,
    ) -> Catalog:
        """Connect to the catalog at ``url`` and (by default) migrate it to the current schema.

        ``connect_timeout`` is MasterSettings.config's ``SqlConnectionTimeoutInSecs``. An unreachable
        database or a failed migration raises :class:`~packfleet.errors.CatalogError` naming the URL
        (password masked) and what to check. ``keyring`` gives the master's secrets key to the
        migration that seals sensitive values stored in plaintext by older versions; it is called only
        when there are such values.
        """
        parsed = _engine.parse_url(url)
        engine = _engine.make_engine(parsed, connect_timeout)
        catalog = cls(engine, parsed, clock=clock)
        try:
            if upgrade:
                catalog.upgrade(keyring)
            else:
                catalog.ping()
        except BaseException:
            engine.dispose()
            raise
        return catalog

    @classmethod
    def open_sealed(cls, url: str, key_file: Path, **options: Any) -> tuple[Catalog, LiveKeyring]:
        """:meth:`open` together with the master's secrets key file (see :func:`open_sealed_catalog`)."""
        return open_sealed_catalog(lambda keyring: cls.open(url, keyring=keyring, **options), key_file)

    def upgrade(self, keyring: Callable[[], SecretKeyring] | None = None) -> None:
        """Migrate the schema to the newest revision; a no-op when it is already current."""
        _engine.upgrade(self._engine, self._url, keyring)

    def ping(self) -> None:
        """Check that the database answers; CatalogError (with the fix) when it does not."""
        with self._read() as conn:
            conn.execute(text("SELECT 1"))

    def close(self) -> None:
        """Close every pooled connection. The catalog must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({self.url!r})"
