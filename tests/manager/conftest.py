"""The manager tests run against the same in-process master as tests/master (see master.support)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from master.support import FakeClock, MasterHome, build_master_home, write_manager_settings
from packfleet.manager import ManagerClient
from packfleet.master import MasterServer


@pytest.fixture
def mh(tmp_path: Path) -> MasterHome:
    return build_master_home(tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def server(mh: MasterHome, clock: FakeClock) -> AsyncIterator[MasterServer]:
    async with MasterServer(mh.home, host="127.0.0.1", port=0, clock=clock, watch_interval=0) as master:
        write_manager_settings(mh, master)
        yield master


@pytest.fixture
async def manager(mh: MasterHome, server: MasterServer) -> AsyncIterator[ManagerClient]:
    async with ManagerClient.from_home(mh.home) as client:
        yield client
