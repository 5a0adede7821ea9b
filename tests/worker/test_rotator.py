"""``worker rotate-cert`` as a library (:class:`WorkerCertRotator`) against a real in-process master:
the next certificate is registered over the current one, the old one retired on both sides, and a
rotation the running agent did not finish is resumed by the next run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from master.support import (
    FakeClock,
    MasterHome,
    build_master_home,
    client_for,
    heartbeat_body,
    new_agent_id,
    public,
    write_manager_settings,
)
from packfleet.catalog import Catalog
from packfleet.config import WorkerSettings, load_worker_settings, save_worker_settings
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.pki import CertStore
from packfleet.protocol import routes
from packfleet.worker import WorkerCertRotator, read_pending
from packfleet.worker._renewal import PID_FILE, _start_time


@pytest.fixture
def mh(tmp_path: Path) -> MasterHome:
    return build_master_home(tmp_path)


@pytest.fixture
async def server(mh: MasterHome) -> AsyncIterator[MasterServer]:
    async with MasterServer(mh.home, host="127.0.0.1", port=0, clock=FakeClock(), watch_interval=0) as master:
        write_manager_settings(mh, master)
        yield master


@pytest.fixture
async def worker_home(mh: MasterHome, server: MasterServer, tmp_path: Path) -> Path:
    """A worker home as `worker init` leaves it, its worker registered with the master and enabled."""
    home = tmp_path / "worker"
    CertStore(home, "My").add(mh.worker)
    CertStore(home, "Root").add(public(mh.master))
    agent = new_agent_id()
    save_worker_settings(
        home,
        WorkerSettings(
            display_name="worker1",
            master_endpoint=f"https://127.0.0.1:{server.port}",
            master_https_cert_thumbprint=mh.master.thumbprint,
            worker_https_cert_thumbprint=mh.worker.thumbprint,
            agent_id=agent,
        ),
    )
    beat = client_for(mh.worker, mh, server, tmp_path / "clients")
    try:
        await beat.request("POST", routes.WORKER_HEARTBEAT, json_body=heartbeat_body(agent))
    finally:
        await beat.close()
    async with ManagerClient.from_home(mh.home) as manager:
        await manager.enable_worker(agent)
    return home


def _statuses(mh: MasterHome, agent: str) -> dict[str, str]:
    with Catalog.open(mh.catalog_url) as catalog:
        return {c.thumbprint: c.status for c in catalog.get_worker(agent).certificates}


@pytest.fixture
def stubborn_agent(worker_home: Path) -> Iterator[subprocess.Popen[str]]:
    """A process named by ``worker.pid`` that ignores SIGHUP: an agent that never switches."""
    code = (
        "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        (worker_home / PID_FILE).write_text(f"{process.pid} {_start_time(process.pid)}\n")
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


async def test_with_no_agent_running_the_old_certificate_is_retired_here(
    mh: MasterHome, worker_home: Path
) -> None:
    old = mh.worker.thumbprint
    notes: list[str] = []
    result = await WorkerCertRotator(worker_home, note=notes.append, timeout=5).run()

    assert (result.old, result.agent_pid, result.retired, result.resumed) == (old, None, True, False)
    assert result.new != old
    assert result.to_dict() == {"old": old, "new": result.new, "agent_pid": None, "retired": True}
    settings = load_worker_settings(worker_home)
    assert settings.worker_https_cert_thumbprint == result.new
    assert read_pending(worker_home) is None
    assert not CertStore(worker_home, "My").contains(old)
    assert CertStore(worker_home, "My").get(result.new).private_key is not None
    assert (worker_home / "worker.cer").exists()
    master_root = CertStore(mh.home, "Root")
    assert master_root.contains(result.new) and not master_root.contains(old)
    assert _statuses(mh, settings.agent_id) == {old: "retired", result.new: "active"}
    assert notes == [f"the master trusts the new certificate {result.new}"]


async def test_an_agent_that_does_not_switch_leaves_the_retirement_to_the_next_run(
    mh: MasterHome, worker_home: Path, stubborn_agent: subprocess.Popen[str]
) -> None:
    old = mh.worker.thumbprint
    notes: list[str] = []
    told = await WorkerCertRotator(worker_home, note=notes.append, timeout=0.2, poll=0.05).run()

    assert (told.old, told.agent_pid, told.retired) == (old, stubborn_agent.pid, False)
    assert notes[-1] == f"told the running worker (pid {stubborn_agent.pid}) to switch to {told.new}"
    pending = read_pending(worker_home)
    assert pending is not None and (pending.retire, pending.new) == (old, told.new)
    agent = load_worker_settings(worker_home).agent_id
    assert _statuses(mh, agent) == {old: "active", told.new: "active"}

    stubborn_agent.kill()
    stubborn_agent.wait(timeout=10)
    notes.clear()
    resumed = await WorkerCertRotator(worker_home, note=notes.append, timeout=5).run()

    assert (resumed.old, resumed.new, resumed.agent_pid) == (old, told.new, None)
    assert resumed.retired and resumed.resumed
    assert notes == [f"resuming: {told.new} is in use, {old} still has to be retired"]
    assert read_pending(worker_home) is None
    assert _statuses(mh, agent) == {old: "retired", told.new: "active"}
    assert not CertStore(mh.home, "Root").contains(old)
