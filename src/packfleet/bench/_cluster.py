"""The cluster every scenario stands on: a real master and workers, with a bench project deployed.

Built with :class:`~packfleet.localcluster.LocalCluster` exactly as an administrator would (every
step a ``packfleet`` command), on loopback, with mutual TLS. Workers run with SSIS's default
intervals, except ``TaskRequestMaxCPU`` 100: a benchmark saturates both cores on purpose, and the
default 70 % gate would make the workers stop asking for tasks — measuring the gate, not the
control plane.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, text

from packfleet.config import WorkerSettings
from packfleet.errors import ClusterError
from packfleet.localcluster import LocalCluster
from packfleet.manager import ManagerClient
from packfleet.protocol import FINISHED_EXECUTION, ExecutionStatus, routes

#: Where ``--catalog postgresql`` creates its throwaway database (override with PACKFLEET_BENCH_PG).
DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

#: The bench project: the same no-op package in both isolation modes.
PROJECT_TOML = """\
[project]
name = "bench"
version = "1.0.0"
description = "No-op packages for make bench"

[packages.noop]
kind = "python"
entry = "bench_tasks:noop"
isolation = "fresh"

[packages.noop_pooled]
kind = "python"
entry = "bench_tasks:noop"
isolation = "pooled"
max_tasks_per_process = 1000
"""
PROJECT_CODE = '''\
"""What a trivial package costs: nothing but the call."""


def noop(ctx):
    return None
'''
PACKAGES = {"fresh": "noop", "pooled": "noop_pooled"}
# The protocol's status codes, as numbers for the bench's SQL.
FINISHED = tuple(sorted(int(s) for s in FINISHED_EXECUTION))
UNFINISHED = tuple(sorted(int(s) for s in ExecutionStatus if s not in FINISHED_EXECUTION))
SUCCEEDED = int(ExecutionStatus.SUCCEEDED)
_UNFINISHED_SQL = ",".join(str(s) for s in UNFINISHED)

WORKER_SETTINGS = {"TaskRequestMaxCPU": "100", "TaskRequestMinMemory": "1"}


def fleet_settings(agents: int) -> dict[str, str]:
    """Master settings for ``agents`` simulated workers, which all connect from one loopback address.

    A real fleet's workers each come from their own address, under the default 128 per address;
    simulated ones share 127.0.0.1, so the per-address cap is raised to fit them (up to four
    connections each: a lease long-poll and a heartbeat, twice while a client that changed its
    trusted certificates lets its old connections finish), and the total one likewise.
    """
    room = str(4 * agents + 256)
    return {"MaxConnectionsPerAddress": room, "MaxConnections": room}


def write_project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "packfleet.toml").write_text(PROJECT_TOML)
    (folder / "bench_tasks.py").write_text(PROJECT_CODE)
    return folder


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database, dropped afterwards; yields its SQLAlchemy URL."""
    admin = os.environ.get("PACKFLEET_BENCH_PG", DEFAULT_PG_ADMIN)
    name = f"pf_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def epoch(value: Any) -> float:
    """A catalog timestamp as POSIX seconds (SQLite hands back naive UTC text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


class BenchCluster:
    """A master and ``workers`` workers (127.0.0.2, .3, ...) under a temporary folder."""

    def __init__(
        self,
        catalog: str = "sqlite",
        *,
        workers: int = 2,
        worker_settings: dict[str, str] | None = None,
        master_settings: dict[str, str] | None = None,
        keep: bool = False,
    ) -> None:
        self.catalog = catalog
        self.worker_count = workers
        self.worker_settings = {**WORKER_SETTINGS, **(worker_settings or {})}
        self.master_settings = dict(master_settings or {})
        self.keep = keep
        self._stack = contextlib.ExitStack()
        self.root = Path(tempfile.mkdtemp(prefix="packfleet-bench-"))
        self.url: str | None = None
        self.cluster: LocalCluster | None = None
        self._engine: Engine | None = None
        #: A warm-up has run the workers past their first TaskFolderKeepCount tasks.
        self.steady = False

    def __enter__(self) -> BenchCluster:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _start(self) -> None:
        if self.catalog == "postgresql":
            self.url = self._stack.enter_context(pg_database())
        cluster = self._stack.enter_context(
            LocalCluster(self.root / "cluster", catalog_url=self.url, fast=False)
        )
        self.cluster = cluster
        cluster.init_master()
        for key, value in self.master_settings.items():
            cluster.cli(cluster.master.home, "settings", "set", "master", key, value, as_json=True)
        cluster.start_master()
        names = [f"worker{i + 1}" for i in range(self.worker_count)]
        for i, name in enumerate(names):
            cluster.add_worker(name, f"127.0.0.{i + 2}", settings=self.worker_settings)
            cluster.start_worker(name)
        if names:
            cluster.wait_for_workers(names)
        project = write_project(self.root / "project")
        cluster.cli(cluster.master.home, "deploy", str(project), as_json=True)
        self.url = self.url or f"sqlite:///{cluster.master.home / 'catalog.db'}"
        self._engine = create_engine(self.url)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._stack.close()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- processes ---------------------------------------------------------------------------

    @property
    def master_home(self) -> Path:
        assert self.cluster is not None  # noqa: S101 - set by __enter__
        return self.cluster.master.home

    def tasks_to_steady_state(self) -> int:
        """Tasks after which every worker reuses its task folders, as a worker does for the rest of
        its life once it has run its first ``TaskFolderKeepCount`` tasks.

        A worker keeps the folders of its newest ``TaskFolderKeepCount`` attempts (1,000 by
        default) and, until it has ended that many, makes a new folder and ``task.log`` for each
        attempt: two new inodes, about 1 ms of CPU per task on this machine's disk. After that an
        ended folder is emptied and renamed for the next attempt, a few system calls. The margin
        covers an uneven split of the tasks between the workers.
        """
        settings = self.worker_settings
        keep = int(settings.get("TaskFolderKeepCount", WorkerSettings.task_folder_keep_count))
        slots = int(settings.get("MaxTaskCount", WorkerSettings.max_task_count))
        return int(self.worker_count * (keep + 2 * slots) * 1.15)

    def pids(self) -> list[int]:
        assert self.cluster is not None  # noqa: S101 - set by __enter__
        return [p.pid for p in self.cluster.processes()]

    def cpu_parts(self) -> dict[int, tuple[str, str]]:
        """The :class:`~packfleet.bench._cpu.CpuMeter` parts: the master, the workers and, under
        them, their package processes (fork servers, pooled and fresh task processes)."""
        parts = {pid: ("workers", "packages") for pid in self.pids()}
        parts[self.master_pid()] = ("master", "master")
        return parts

    def master_pid(self) -> int:
        assert self.cluster is not None and self.cluster.master.process is not None  # noqa: S101
        return self.cluster.master.process.pid

    # -- submitting and waiting -------------------------------------------------------------

    def manager(self) -> ManagerClient:
        return ManagerClient.from_home(self.master_home)

    @staticmethod
    async def submit_bulk(
        manager: ManagerClient, package: str, count: int, *, retry_count: int = 0
    ) -> list[int]:
        body = {"folder": "default", "project": "bench", "package": package, "count": count}
        if retry_count:
            body["retry_count"] = retry_count
        reply = await manager.client.request("POST", routes.ADMIN_EXECUTIONS_BULK, json_body=body)
        return [int(i) for i in reply["execution_ids"]]

    def _scalar(self, sql: str, **params: Any) -> Any:
        assert self._engine is not None  # noqa: S101 - set by __enter__
        with self._engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def wait_finished(self, first: int, last: int, *, timeout: float, poll: float = 0.05) -> None:
        """Wait until every execution with id in ``first..last`` has ended; raise if any failed.

        Polls read one row, the last execution's, until it has ended (they run about in order),
        and only then count the others not ended yet. Counting every poll read the whole range
        twenty times a second: work on the measured system (on PostgreSQL a server process's,
        which its CPU figure counts) that the peers' harnesses, told of each result, never ask.
        """
        deadline = time.monotonic() + timeout
        while self._last_runs(last) or self._left(first, last):
            if time.monotonic() > deadline:
                wanted = last - first + 1
                ended = wanted - self._left(first, last)
                raise ClusterError(f"only {ended} of {wanted} executions ended within {timeout:.0f} s")
            time.sleep(poll)
        failed = self._scalar(
            "SELECT count(*) FROM executions WHERE id BETWEEN :a AND :b AND status != :ok",
            a=first,
            b=last,
            ok=SUCCEEDED,
        )
        if failed:
            raise ClusterError(f"{failed} of {last - first + 1} bench executions did not succeed")

    def _last_runs(self, last: int) -> bool:
        """Whether execution ``last`` has not ended (one row read)."""
        return self._scalar("SELECT status FROM executions WHERE id = :b", b=last) not in FINISHED

    def _left(self, first: int, last: int) -> int:
        """How many executions in ``first..last`` have not ended."""
        return int(
            self._scalar(
                f"SELECT count(*) FROM executions WHERE status IN ({_UNFINISHED_SQL})"  # noqa: S608 - constants
                " AND id BETWEEN :a AND :b",
                a=first,
                b=last,
            )
        )

    def last_ended(self, first: int, last: int) -> float:
        return epoch(
            self._scalar(
                "SELECT max(ended_at) FROM tasks WHERE execution_id BETWEEN :a AND :b", a=first, b=last
            )
        )

    def timings(self, ids: Sequence[int]) -> list[tuple[float, float, float]]:
        """``(created, leased, ended)`` POSIX times of each execution, from the master's own clock."""
        assert self._engine is not None  # noqa: S101 - set by __enter__
        with self._engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT e.created_at, t.started_at, t.ended_at FROM executions e "
                    "JOIN tasks t ON t.execution_id = e.id WHERE e.id BETWEEN :a AND :b ORDER BY e.id"
                ),
                {"a": min(ids), "b": max(ids)},
            ).all()
        return [(epoch(c), epoch(s), epoch(e)) for c, s, e in rows]
