"""A master certificate rotation with the default AgentHeartbeatInterval (1 minute) takes seconds.

The announcement and the switch reach the workers through the lease long-polls they already hold
(the master answers them at once with ``heartbeat_now``), not at their next heartbeat, so the
whole rotation of an online fleet needs no heartbeat interval at all. The test times
``packfleet manager rotate master-cert`` as a person runs it, and reads its progress lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from packfleet.config import load_worker_settings
from packfleet.localcluster import LocalCluster

pytestmark = pytest.mark.e2e

#: The issue's target is under 10 s; a shared CI machine gets twice that before the test fails.
LIMIT_SECONDS = 20.0
DEFAULT_HEARTBEAT = {"AgentHeartbeatInterval": "00:01:00"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("fast-rotation")) as cluster:
        cluster.init_master()
        cluster.start_master()
        for name, ip in (("worker1", "127.0.0.2"), ("worker2", "127.0.0.3")):
            cluster.add_worker(name, ip, settings=DEFAULT_HEARTBEAT)
            cluster.start_worker(name)
        cluster.wait_for_workers(["worker1", "worker2"], timeout=60)
        yield cluster


def test_rotation_with_the_default_heartbeat_interval_takes_seconds(fleet: LocalCluster) -> None:
    for name in fleet.workers:
        assert load_worker_settings(fleet.workers[name].home).agent_heartbeat_interval.total_seconds() == 60
    argv = fleet.command(fleet.master.home, "manager", "rotate", "master-cert", "--json")
    started = time.monotonic()
    done = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"}, timeout=300, check=False
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    print(
        f"\nmaster certificate rotation with AgentHeartbeatInterval 1 min: {elapsed:.1f} s", file=sys.stderr
    )
    print(done.stderr, file=sys.stderr)
    assert result["phase"] == "finished" and not result["behind"]
    assert all(row["promoted"] for row in result["workers"])
    assert elapsed < LIMIT_SECONDS, f"rotation took {elapsed:.1f} s:\n{done.stderr}"
    # Progress, per step and per worker, on stderr.
    for name in fleet.workers:
        assert f"{name} ({fleet.agent_id(name)}) accepts {result['new']}" in done.stderr
        assert f"{name} ({fleet.agent_id(name)}) now pins only {result['new']}" in done.stderr
    assert "the master now serves" in done.stderr and "retired" in done.stderr
    for name in fleet.workers:
        settings = load_worker_settings(fleet.workers[name].home)
        assert settings.master_https_cert_thumbprint == result["new"]
        assert settings.next_master_https_cert_thumbprint == ""
