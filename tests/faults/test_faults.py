"""Short fault-injection runs on real processes; each ends with a clean ledger.

Bounds under test (docs/guarantees.md): a worker cut off or paused for up to 3 x LeaseInterval is
replaced and the execution succeeds on the other worker; restarts (kill -9) of the master or a
worker lose nothing and duplicate nothing; a catalog outage shorter than HeartbeatErrorTolerance
ends no healthy execution; a full disk fails submits visibly and loses nothing acknowledged; a
worker clock off by 30 s is reported.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import (
    ENDED_UNEXPECTEDLY,
    LEASE_SECONDS,
    SUCCEEDED,
    FaultCluster,
    Ledger,
    ThrowawayPostgres,
    faketime_env,
    fill,
    partition,
    paused,
    small_tmpfs,
    wait_until,
)

pytestmark = pytest.mark.e2e
ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultCluster]:
    with FaultCluster.running(tmp_path_factory.mktemp("faults")) as running:
        yield running


@pytest.mark.parametrize("fault", ["partition", "sigstop"])
def test_a_silent_worker_loses_its_task_to_the_other_one(faults: FaultCluster, fault: str) -> None:
    ledger = Ledger(faults)
    entry = ledger.submit(seconds=4 * LEASE_SECONDS)
    assert entry.outcome == "ok", entry
    assert entry.execution_id is not None
    victim = faults.running_on(entry.execution_id)
    other = next(n for n in faults.cluster.workers if n != victim)
    fault_ctx = partition(faults.proxies[victim]) if fault == "partition" else paused(faults.pid(victim))
    with fault_ctx:
        # Up to 3 x LeaseInterval silent: the lease expires, the sweep requeues, the other worker
        # (not the silent one, whose long-poll may still be open) takes the next attempt.
        moved = wait_until(
            lambda: (
                (faults.execution(entry.execution_id or 0).get("task") or {}).get("agent_id")
                == faults.cluster.agent_id(other)
            ),
            timeout=3 * LEASE_SECONDS + 20,
            what="the task to move to the other worker",
        )
        assert moved
        time.sleep(max(0.0, 3 * LEASE_SECONDS - 8))
    totals = ledger.settle(timeout=120)
    ledger.assert_clean()
    done = faults.execution(entry.execution_id)
    assert done["status"] == SUCCEEDED, done
    assert done["task"]["agent_id"] == faults.cluster.agent_id(other)
    assert totals["executions_succeeded"] == 1
    # The silent worker's late report (if it finished) was refused with a reason in the log, and it
    # did not start the package again for an execution that had ended.
    wait_until(lambda: faults.cluster.workers[victim].running, timeout=5, what="the victim alive")


def test_kill_9_of_a_worker_and_the_master_loses_nothing(faults: FaultCluster) -> None:
    ledger = Ledger(faults)
    first = ledger.submit(seconds=8)
    assert first.execution_id is not None
    victim = faults.running_on(first.execution_id)
    faults.cluster.kill(faults.cluster.workers[victim])
    ledger.submit(seconds=2)
    faults.restart_master(kill=True)
    ledger.submit(seconds=2)
    faults.start_worker(victim)
    totals = ledger.settle(timeout=120)
    ledger.assert_clean()
    assert totals["ok"] == 3 and totals["executions_succeeded"] == 3, totals


def test_run_wait_through_a_master_kill_creates_one_execution(faults: FaultCluster, tmp_path: Path) -> None:
    cluster = faults.cluster
    key = "wait-through-restart"
    argv = cluster.command(
        cluster.master.home, "run", "default/etl/sleep", "--param", "seconds=5", "--retry", "2",
        "--wait", "--idempotency-key", key, "--json",
    )  # fmt: skip
    out = (tmp_path / "run.out").open("wb")
    waiting = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=cluster.env)
    try:
        wait_until(
            lambda: any(
                r.get("idempotency_key") == key
                for r in cluster.cli(cluster.master.home, "executions", "list", as_json=True) or []
            ),
            what="the submit to arrive",
        )
        faults.restart_master(kill=True)
        assert waiting.wait(timeout=150) == 0, (tmp_path / "run.out").read_text()
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait(timeout=10)
        out.close()
    # The same key again (a resend after a lost answer) returns the same execution.
    again = cluster.cli(
        cluster.master.home, "run", "default/etl/sleep", "--idempotency-key", key, as_json=True
    )
    rows = [
        r
        for r in cluster.cli(cluster.master.home, "executions", "list", as_json=True)
        if r.get("idempotency_key") == key
    ]
    assert [r["execution_id"] for r in rows] == [again["execution_id"]]
    assert rows[0]["status"] == SUCCEEDED


@pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root")
def test_a_full_disk_fails_submits_visibly_and_loses_nothing(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", size="48m") as disk, FaultCluster.running(disk / "cluster") as faults:
        ledger = Ledger(faults)
        assert ledger.submit(seconds=2).outcome == "ok"
        filler = fill(disk)
        try:
            full = ledger.submit(seconds=2, timeout=20)
            assert full.outcome in ("failed", "indeterminate"), full
        finally:
            filler.unlink()
        assert ledger.submit(seconds=2).outcome == "ok"
        ledger.settle(timeout=120)
        ledger.assert_clean()


@pytest.mark.postgres
@pytest.mark.skipif(not ROOT, reason="pg_createcluster needs root")
def test_a_catalog_outage_shorter_than_the_tolerance_ends_no_healthy_execution(tmp_path: Path) -> None:
    with ThrowawayPostgres() as pg, FaultCluster.running(tmp_path / "cluster", catalog_url=pg.url) as faults:
        ledger = Ledger(faults)
        entries = [ledger.submit(seconds=6) for _ in range(2)]
        assert all(e.outcome == "ok" for e in entries), entries
        faults.running_on(entries[0].execution_id or 0)
        pg.crash()
        time.sleep(3 * LEASE_SECONDS)  # well past LeaseInterval, well within HeartbeatErrorTolerance
        pg.start()
        totals = ledger.settle(timeout=150)
        ledger.assert_clean()
        assert totals.get("executions_succeeded") == 2, (totals, faults.cluster.tail(faults.cluster.master))
        assert totals.get("executions_ended_unexpectedly", 0) == 0
        assert "extended" in faults.cluster.tail(faults.cluster.master, 400)


def test_a_skewed_worker_clock_is_reported(tmp_path: Path) -> None:
    env = faketime_env("+30s")
    with FaultCluster.running(tmp_path / "cluster", worker_env={"worker2": env}) as faults:
        cluster = faults.cluster
        rows = cluster.cli(cluster.master.home, "manager", "worker", "list", as_json=True)
        skew = {r["display_name"]: r.get("clock_skew_seconds") for r in rows}
        assert skew["worker2"] is not None and 25 < skew["worker2"] < 35, skew
        assert skew["worker1"] is not None and abs(skew["worker1"]) < 5, skew
        table = cluster.cli(cluster.master.home, "manager", "worker", "list").stdout.decode()
        assert "clock of worker worker2" in " ".join(table.split())
        wait_until(
            lambda: "ahead of the master" in cluster.tail(cluster.workers["worker2"], 200), what="warning"
        )
        ledger = Ledger(faults)
        ledger.submit(seconds=2)
        ledger.submit(seconds=2)
        ledger.settle()
        ledger.assert_clean()


def test_ended_unexpectedly_is_never_a_healthy_run(faults: FaultCluster) -> None:
    """Over the module's runs no execution of a live worker ended unexpectedly."""
    rows = faults.cluster.cli(
        faults.cluster.master.home, "executions", "list", "--limit", "1000", as_json=True
    )
    assert not [r for r in rows if r["status"] == ENDED_UNEXPECTEDLY]
