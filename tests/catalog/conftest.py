"""Catalog fixtures: every test runs on SQLite (a file in tmp_path) and on PostgreSQL.

Each test module gets its own throwaway PostgreSQL database (``pf_<uuid>``), migrated once and
emptied before each test, so pytest-xdist workers never share one. PostgreSQL being unreachable
fails the tests: CI starts it, and a silent skip would hide the backend that runs production.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from conftest import pg_database
from packfleet.catalog import TASKS_CHANNEL, Catalog, WorkerInfo
from packfleet.catalog._schema import metadata
from packfleet.pki import create_self_signed

MANIFEST = {
    "name": "etl",
    "version": "1.0.0",
    "description": "nightly loads",
    "parameters": [{"name": "rows", "type": "int", "default": 10, "sensitive": False}],
    "packages": [
        {"name": "extract", "kind": "python", "entry": "etl.jobs:extract"},
        {"name": "load", "kind": "sql", "connection": "target", "statements": ["SELECT 1"]},
    ],
}


class FakeClock:
    """A clock the test moves by hand: lease expiry and retention without waiting."""

    def __init__(self) -> None:
        self.now = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test module, dropped afterwards."""
    with pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def migrated_pg(pg_url: str) -> str:
    Catalog.open(pg_url).close()
    return pg_url


@contextlib.contextmanager
def listening(url: str, clock: FakeClock) -> Iterator[tuple[Catalog, psycopg.Connection[tuple[object, ...]]]]:
    """The emptied PostgreSQL catalog at ``url``, and another connection (another master, for all
    the catalog can tell) LISTENing on its task notifications."""
    empty_database(url)
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with (
        Catalog.open(url, clock=clock, connect_timeout=5) as catalog,
        psycopg.connect(plain, autocommit=True, connect_timeout=5) as listener,
    ):
        listener.execute(f"LISTEN {TASKS_CHANNEL}")
        yield catalog, listener


def empty_database(url: str) -> None:
    tables = ", ".join(t.name for t in metadata.sorted_tables)
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """The URL of an empty catalog: a new SQLite file, or the module's emptied PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/catalog.db"
    url: str = request.getfixturevalue("migrated_pg")
    empty_database(url)
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def catalog(catalog_url: str, clock: FakeClock) -> Iterator[Catalog]:
    opened = Catalog.open(catalog_url, clock=clock, connect_timeout=5)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def make_cert() -> Callable[[str], bytes]:
    """A fresh self-signed worker certificate (PEM) for the given machine name."""

    def make(name: str = "worker1") -> bytes:
        return create_self_signed([name]).cert_pem()

    return make


def info(agent_id: str, name: str = "worker1") -> WorkerInfo:
    """What a worker's heartbeat says about itself."""
    return WorkerInfo(
        agent_id=agent_id,
        display_name=name,
        machine_name=f"{name}.example",
        user_account="packfleet",
        ips=("127.0.0.2",),
        cpu_percent=12.5,
        memory_free_mb=2048.0,
        running_tasks=0,
        version="0.1.0",
    )


def new_agent() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def worker(catalog: Catalog, make_cert: Callable[[str], bytes]) -> Callable[..., str]:
    """Register a worker through the manager's "worker add --enable" and its first heartbeat."""

    def register(name: str = "worker1", *, enabled: bool = True) -> str:
        agent_id = new_agent()
        cert = catalog.add_worker_certificate(make_cert(name), actor="admin", enable=enabled)
        outcome = catalog.worker_heartbeat(cert.thumbprint, info(agent_id, name))
        assert outcome.state == ("enabled" if enabled else "disabled")
        return agent_id

    return register


@pytest.fixture
def deployed(catalog: Catalog) -> Catalog:
    """The catalog with project default/etl (packages extract and load) deployed."""
    catalog.deploy_project("default", MANIFEST, b"PK\x05\x06" + bytes(18), actor="admin")
    return catalog
