"""A master home per test and a MasterServer running in-process on an ephemeral loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from master.support import FakeClock, MasterHome, build_master_home, client_for, write_manager_settings
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer
from packfleet.pki import Credential
from packfleet.transport import MasterClient


@pytest.fixture
def mh(tmp_path: Path) -> MasterHome:
    return build_master_home(tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def server(mh: MasterHome, clock: FakeClock) -> AsyncIterator[MasterServer]:
    # watch_interval=0: tests reload explicitly, so no file watcher races them.
    master = MasterServer(mh.home, host="127.0.0.1", port=0, clock=clock, watch_interval=0)
    await master.start()
    write_manager_settings(mh, master)
    try:
        yield master
    finally:
        await master.stop()


@pytest.fixture
async def manager(mh: MasterHome, server: MasterServer) -> AsyncIterator[ManagerClient]:
    async with ManagerClient.from_home(mh.home) as client:
        yield client


@pytest.fixture
async def connect(
    mh: MasterHome, server: MasterServer, tmp_path: Path
) -> AsyncIterator[Callable[[Credential | None], MasterClient]]:
    """Make MasterClients presenting a given certificate (or none); all closed afterwards."""
    made: list[MasterClient] = []

    def make(cred: Credential | None) -> MasterClient:
        client = client_for(cred, mh, server, tmp_path / "clients")
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()
