"""Fixtures: certificates made by packfleet.pki, a worker home, a TLS stub master, a tiny project."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from packfleet.config import WorkerSettings, save_worker_settings
from packfleet.packages import Project, archive_sha256, build_archive, load_project
from packfleet.pki import CertStore, Credential, create_self_signed
from packfleet.protocol import TaskAssignment
from packfleet.transport import master_server_context
from packfleet.worker import AgentTiming, WorkerAgent

from .stubmaster import StubMaster, serve

JOBS = '''
import time
from pathlib import Path


def hello(ctx):
    for i in range(int(ctx.parameters.get("lines", 5))):
        print(f"line {i}")
    ctx.log.warning("done with %d lines", int(ctx.parameters.get("lines", 5)))


def fail(ctx):
    print("about to fail")
    raise RuntimeError("boom")


def sleep(ctx):
    print("sleeping", flush=True)
    time.sleep(float(ctx.parameters.get("seconds", 60)))
    print("woke up")


def slow_stop(ctx):
    """Takes ``linger`` seconds to end after SIGTERM, as a package that cleans up on the way out."""
    import signal

    def stopping(_signum, _frame):
        print("stopping", flush=True)
        time.sleep(float(ctx.parameters.get("linger", 0.5)))
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stopping)
    print("sleeping", flush=True)
    time.sleep(60)


def hold(ctx):
    """Record when it ran, so a test can count how many tasks ran at once."""
    folder = Path(ctx.parameters["folder"])
    start = time.monotonic()
    time.sleep(float(ctx.parameters.get("seconds", 0.3)))
    (folder / f"{ctx.task_id}.span").write_text(f"{start} {time.monotonic()}")
'''

MANIFEST = """
[project]
name = "demo"
version = "1.0.0"

[packages.hello]
kind = "python"
entry = "demo_jobs:hello"

[packages.fail]
kind = "python"
entry = "demo_jobs:fail"

[packages.sleep]
kind = "python"
entry = "demo_jobs:sleep"

[packages.slow_stop]
kind = "python"
entry = "demo_jobs:slow_stop"

[packages.hold]
kind = "python"
entry = "demo_jobs:hold"
"""


@dataclass
class DemoProject:
    project: Project
    archive: bytes
    sha256: str

    def task(self, task_id: int, package: str, attempt: int = 1, **parameters: Any) -> TaskAssignment:
        return TaskAssignment(
            execution_id=1000 + task_id,
            task_id=task_id,
            attempt=attempt,
            folder="default",
            project="demo",
            package=package,
            package_spec=self.project.packages[package].to_dict(),
            parameters=parameters,
            project_sha256=self.sha256,
            lease_expires_at="2030-01-01T00:00:00+00:00",
        )


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoProject:
    folder = tmp_path_factory.mktemp("demo")
    (folder / "packfleet.toml").write_text(MANIFEST)
    (folder / "demo_jobs.py").write_text(textwrap.dedent(JOBS))
    data = build_archive(folder)
    return DemoProject(load_project(folder), data, archive_sha256(data))


@dataclass
class Pki:
    master: Credential
    worker: Credential
    master_home: Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    master_home = tmp_path_factory.mktemp("master")
    master = create_self_signed(["127.0.0.1", "localhost"])
    CertStore(master_home, "My").add(master)
    return Pki(master=master, worker=create_self_signed(["worker1"]), master_home=master_home)


def server_context(pki: Pki, master: Credential | None = None) -> Any:
    master = master or pki.master
    store = CertStore(pki.master_home, "My")
    store.add(master)
    return master_server_context(
        store.cert_path(master.thumbprint),
        store.key_path(master.thumbprint),
        pki.worker.cert_pem().decode(),
    )


@pytest.fixture
async def stub(pki: Pki, demo: DemoProject) -> AsyncIterator[StubMaster]:
    master = StubMaster(archives={demo.sha256: demo.archive})
    async with serve(master, server_context(pki)) as running:
        yield running


def write_home(home: Path, pki: Pki, endpoint: str, **overrides: Any) -> Path:
    """A worker home as `packfleet worker init` leaves it: worker cert in My, master cert in Root."""
    CertStore(home, "My").add(pki.worker)
    CertStore(home, "Root").add(Credential(pki.master.certificate))
    values: dict[str, Any] = {
        "display_name": "worker1",
        "master_endpoint": endpoint,
        "master_https_cert_thumbprint": pki.master.thumbprint,
        "worker_https_cert_thumbprint": pki.worker.thumbprint,
        "agent_heartbeat_interval": timedelta(seconds=30),
        "task_heartbeat_interval": timedelta(seconds=0.1),
        "max_task_count": 4,
        "agent_id": "11111111-2222-3333-4444-555555555555",
    }
    values.update(overrides)
    save_worker_settings(home, WorkerSettings(**values))
    return home


@pytest.fixture
def home(tmp_path: Path, pki: Pki, stub: StubMaster) -> Path:
    return write_home(tmp_path / "worker", pki, stub.endpoint)


@dataclass
class FakeProbe:
    """Measurements the test chooses, instead of the test machine's load."""

    cpu: float = 5.0
    memory: float = 4096.0
    cpu_calls: int = 0
    readings: list[float] = field(default_factory=list)

    def cpu_percent(self) -> float:
        self.cpu_calls += 1
        return self.readings.pop(0) if self.readings else self.cpu

    def memory_free_mb(self) -> float:
        return self.memory

    def ips(self) -> list[str]:
        return ["192.0.2.10"]

    def machine_name(self) -> str:
        return "testbox"

    def user_account(self) -> str:
        return "tester"


async def fast_sleep(seconds: float) -> None:
    """Backoffs and intervals shrunk to a few milliseconds: nothing waits on real seconds."""
    await asyncio.sleep(min(seconds, 0.02))


FAST = AgentTiming(
    lease_wait=0.2, stop_grace=5.0, cancel_grace=2.0, report_linger=0.01, gate_poll=0.05, flush_timeout=5.0
)

MakeAgent = Callable[..., Awaitable[WorkerAgent]]


@pytest.fixture
async def make_agent() -> AsyncIterator[MakeAgent]:
    """Build started agents with a fake probe and fast sleeps; all are closed after the test."""
    agents: list[WorkerAgent] = []

    async def make(home: Path, **options: Any) -> WorkerAgent:
        options.setdefault("probe", FakeProbe())
        options.setdefault("sleep", fast_sleep)
        options.setdefault("timing", FAST)
        agent = WorkerAgent(home, **options)
        agents.append(agent)
        await agent.start()
        return agent

    yield make
    for agent in agents:
        await agent.close()


@pytest.fixture
def span_folder(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "spans"
    folder.mkdir()
    yield folder
