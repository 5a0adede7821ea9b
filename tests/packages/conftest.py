"""Fixtures: the sample project extracted as a worker would, a probe project, a started runner."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from packfleet.packages import (
    PackageEvent,
    PackageRunner,
    PackageSpec,
    Project,
    RunSpec,
    TaskHandle,
    TaskResult,
    build_archive,
    extract_archive,
    load_project,
    resolve_parameters,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "etl"

PROBE_MANIFEST = """
[project]
name = "probe"
version = "0.1"

[parameters.dsn]
type = "string"
default = "sqlite:///probe.db"

[packages.order]
kind = "python"
entry = "probe:interleave"
[packages.order.parameters.rounds]
type = "int"
default = 40

[packages.context]
kind = "python"
entry = "probe:context"

[packages.stubborn]
kind = "python"
entry = "probe:stubborn"

[packages.spawner]
kind = "python"
entry = "probe:spawner"

[packages.exit3]
kind = "python"
entry = "probe:exit3"

[packages.partial]
kind = "python"
entry = "probe:partial"

[packages.late]
kind = "python"
entry = "probe:late"

[packages.broken_sql]
kind = "sql"
file = "broken.sql"
connection = "dsn"

[packages.warmth]
kind = "python"
entry = "warmth:report"

[packages.opener]
kind = "python"
entry = "opener:main"

[packages.badimport]
kind = "python"
entry = "badimport:main"
"""

WARMTH_MODULE = """
import json
import logging
import os
import random
import threading

IMPORTED_IN = os.getpid()


class MadeIn(logging.Logger):
    def __init__(self, name, level=logging.NOTSET):
        super().__init__(name, level)
        self.made_in = os.getpid()


logging.setLoggerClass(MadeIn)  # loggers made from now on say which process made them


def report(ctx):
    seen = []
    thread = threading.Thread(target=lambda: seen.append(threading.get_ident()))
    thread.start()
    thread.join()
    print(json.dumps({
        "imported_ahead": IMPORTED_IN != os.getpid(),
        "random": random.random(),
        "thread_ran": bool(seen),
        "cwd": os.getcwd(),
        "logger": ctx.log.name,
        "logger_made_in": getattr(ctx.log, "made_in", None),
        "stdin": os.readlink("/proc/self/fd/0"),
    }))
"""

OPENER_MODULE = """
HELD = open(__file__)  # a descriptor kept from import: children must not share it


def main(ctx):
    print("ran")
"""

BADIMPORT_MODULE = """
raise RuntimeError("broken at import")
"""

PROBE_MODULE = """
import json
import logging
import os
import signal
import subprocess
import sys
import time


def interleave(ctx):
    for i in range(ctx.parameters["rounds"]):
        print(f"out {i}")
        ctx.log.warning("log %d", i)
        print(f"err {i}", file=sys.stderr)


def context(ctx):
    ctx.log.debug("debug is shown only at log_level DEBUG")
    print(json.dumps({
        "parameters": ctx.parameters,
        "task_dir": str(ctx.task_dir),
        "project_dir": str(ctx.project_dir),
        "ids": [ctx.execution_id, ctx.task_id, ctx.attempt],
        "dsn": ctx.connection("dsn"),
        "cwd": os.getcwd(),
        "path0": sys.path[0],
        "session_leader": os.getsid(0) == os.getpid(),
        "stdin": os.readlink("/proc/self/fd/0"),
    }))


def stubborn(ctx):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ignoring SIGTERM", flush=True)
    time.sleep(60)


def spawner(ctx):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (ctx.task_dir / "grandchild.pid").write_text(str(child.pid))
    print("left a grandchild behind")


def exit3(ctx):
    sys.exit(3)


def partial(ctx):
    os.write(1, b"raw line without its newline")
    os.close(1)  # a pooled process puts its pipes back before the next task


def late(ctx):
    time.sleep(0.2)  # long enough for a test to stop reading the pipes first
    os.write(1, b"late line without its newline")
    time.sleep(0.2)  # long enough for a runner still reading to read it before the task ends
"""

BROKEN_SQL = """
CREATE TABLE IF NOT EXISTS t (x INTEGER);
INSERT INTO t VALUES (1);
INSERT INTO no_such_table VALUES (2);
"""


@pytest.fixture(scope="session")
def etl_archive() -> bytes:
    return build_archive(EXAMPLE)


@pytest.fixture
def etl_dir(tmp_path: Path, etl_archive: bytes) -> Path:
    """The sample project as a worker holds it: extracted from its archive."""
    destination = tmp_path / "projects" / "etl"
    extract_archive(etl_archive, destination)
    return destination


@pytest.fixture
def etl(etl_dir: Path) -> Project:
    return load_project(etl_dir)


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    root = tmp_path / "projects" / "probe"
    root.mkdir(parents=True)
    (root / "packfleet.toml").write_text(PROBE_MANIFEST)
    (root / "probe.py").write_text(textwrap.dedent(PROBE_MODULE))
    (root / "broken.sql").write_text(BROKEN_SQL)
    (root / "warmth.py").write_text(WARMTH_MODULE)
    (root / "opener.py").write_text(OPENER_MODULE)
    (root / "badimport.py").write_text(BADIMPORT_MODULE)
    return root


@pytest.fixture
def probe(probe_dir: Path) -> Project:
    return load_project(probe_dir)


@pytest.fixture
async def runner() -> AsyncIterator[PackageRunner]:
    runner = PackageRunner(pool_size=4)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.close()


@dataclass
class Run:
    """A launched task and the events it delivered."""

    handle: TaskHandle
    events: list[PackageEvent] = field(default_factory=list)

    async def wait(self) -> TaskResult:
        return await self.handle.wait()

    def messages(self, source: str) -> list[str]:
        return [e.message for e in self.events if e.source == source]


_ids = iter(range(1, 1_000_000))


async def launch(
    runner: PackageRunner,
    project_dir: Path,
    project: Project,
    package: str | PackageSpec,
    task_root: Path,
    given: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Run:
    spec = project.packages[package] if isinstance(package, str) else package
    task_id = next(_ids)
    params = resolve_parameters(project, spec.name, given or {})
    run_spec = RunSpec(
        execution_id=100 + task_id,
        task_id=task_id,
        attempt=1,
        project_dir=project_dir,
        package=spec,
        parameters=params,
        task_dir=task_root / "tasks" / str(task_id),
        **kwargs,
    )
    events: list[PackageEvent] = []
    handle = await runner.launch(run_spec, events.append)
    return Run(handle, events)
