"""Executions end to end: master and workers as real processes over real mutual TLS (issue 3).

One cluster per catalog backend serves the whole module; tests that stop or kill a node bring it back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from packfleet.config import load_worker_settings
from packfleet.errors import ApiError, TlsError
from packfleet.localcluster import LocalCluster
from packfleet.pki import CertStore, create_self_signed
from packfleet.protocol import LeaseRequest, encode, routes
from packfleet.transport import MasterClient, client_context

from .conftest import execution, logs, run, wait_finished, wait_until

pytestmark = pytest.mark.e2e

SUCCEEDED, FAILED, CANCELED, RUNNING, PENDING = 7, 4, 3, 2, 5


def _client_for(
    cluster: LocalCluster, name: str, *, cert_home: Path | None = None, thumbprint: str | None = None
) -> MasterClient:
    """A client holding worker ``name``'s certificate (or another one), pinned like the worker."""
    home = cluster.workers[name].home
    settings = load_worker_settings(home)
    own = thumbprint or settings.worker_https_cert_thumbprint
    my = CertStore(cert_home or home, "My")
    master_pem = CertStore(home, "Root").get(settings.master_https_cert_thumbprint).cert_pem().decode()
    ctx = client_context(my.cert_path(own), my.key_path(own), master_pem)
    return MasterClient(
        settings.master_endpoint,
        ctx,
        role="worker",
        pins=[settings.master_https_cert_thumbprint],
        own_thumbprint=own,
    )


async def _call(client: MasterClient, method: str, path: str, body: object = None) -> object:
    try:
        return await client.request(method, path, json_body=body, timeout=10)
    finally:
        await client.close()


def test_a_package_runs_and_its_logs_arrive(cluster: LocalCluster) -> None:
    record = run(cluster, "default/etl/load")
    done = wait_finished(cluster, record["execution_id"])
    assert done["status"] == SUCCEEDED, done
    events = logs(cluster, record["execution_id"])
    assert events, "no event messages arrived"
    sources = {e["message_source"] for e in events}
    assert "log" in sources and "stdout" in sources
    # Worker-sent events number 1..n per attempt; the master's own notes have negative numbers.
    seqs = [e["seq"] for e in events if e["attempt"] == done["task"]["attempt"] and e["seq"] > 0]
    assert sorted(seqs) == list(range(1, len(seqs) + 1)), "event sequence has gaps or duplicates"


def test_run_wait_exits_zero_only_on_success(cluster: LocalCluster) -> None:
    ok = cluster.cli(cluster.master.home, "run", "default/etl/load", "--wait", check=False)
    assert ok.returncode == 0, ok.stderr.decode()
    failed = cluster.cli(cluster.master.home, "run", "default/etl/fail", "--wait", check=False)
    assert failed.returncode != 0
    assert "failed" in failed.stderr.decode() + failed.stdout.decode()


def test_a_failing_package_fails_with_its_traceback_in_the_log(cluster: LocalCluster) -> None:
    record = run(cluster, "default/etl/fail", "--retry", "2")
    done = wait_finished(cluster, record["execution_id"])
    assert done["status"] == FAILED
    assert done["task"]["attempt"] == 1, "a package failure must not be retried (only worker loss is)"
    errors = [e for e in logs(cluster, record["execution_id"]) if e["message_type"] == 120]
    assert any("Traceback" in e["message"] or "Error" in e["message"] for e in errors), errors


def test_a_chosen_worker_runs_it(cluster: LocalCluster) -> None:
    worker2 = cluster.agent_id("worker2")
    for _ in range(3):
        record = run(cluster, "default/etl/load", "--worker", worker2)
        done = wait_finished(cluster, record["execution_id"])
        assert done["status"] == SUCCEEDED
        assert done["task"]["agent_id"] == worker2


def test_cancel_stops_a_running_package(cluster: LocalCluster) -> None:
    record = run(cluster, "default/etl/sleep", "--param", "seconds=120")
    eid = record["execution_id"]
    wait_until(lambda: logs(cluster, eid), what="the sleep package to print")
    started = time.monotonic()
    cluster.cli(cluster.master.home, "executions", "cancel", str(eid), as_json=True)
    done = wait_finished(cluster, eid, timeout=60)
    assert done["status"] == CANCELED
    # Far sooner than the package's 120 s, with room for a loaded machine's slow CLI calls.
    assert time.monotonic() - started < 60


def test_a_disabled_worker_gets_no_tasks_and_a_clear_refusal(cluster: LocalCluster) -> None:
    worker2 = cluster.agent_id("worker2")
    cluster.cli(cluster.master.home, "manager", "worker", "disable", worker2, as_json=True)
    try:
        record = run(cluster, "default/etl/load", "--worker", worker2)
        time.sleep(3)  # several heartbeats and long-polls of worker2
        assert execution(cluster, record["execution_id"])["status"] == PENDING

        request = encode(LeaseRequest(agent_id=worker2, capacity=1, wait_seconds=0, lease_seconds=5))
        with pytest.raises(ApiError) as refused:
            asyncio.run(_call(_client_for(cluster, "worker2"), "POST", routes.WORKER_LEASE, request))
        thumb = load_worker_settings(cluster.workers["worker2"].home).worker_https_cert_thumbprint
        assert refused.value.status == 403
        assert thumb in str(refused.value) and "enable" in str(refused.value)
    finally:
        cluster.cli(cluster.master.home, "manager", "worker", "enable", worker2, as_json=True)
    assert wait_finished(cluster, record["execution_id"])["status"] == SUCCEEDED


def test_a_certificate_the_master_does_not_trust_is_refused_in_plain_words(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    stranger = create_self_signed(["stranger", "127.0.0.9"])
    CertStore(tmp_path, "My").add(stranger)
    client = _client_for(cluster, "worker1", cert_home=tmp_path, thumbprint=stranger.thumbprint)
    with pytest.raises(TlsError) as refused:
        asyncio.run(_call(client, "POST", routes.WORKER_HEARTBEAT, {}))
    assert "Root store" in str(refused.value) and stranger.thumbprint in str(refused.value)


def test_a_worker_certificate_is_refused_on_admin_routes(cluster: LocalCluster) -> None:
    with pytest.raises(ApiError) as refused:
        asyncio.run(_call(_client_for(cluster, "worker1"), "GET", routes.ADMIN_WORKERS))
    assert refused.value.status == 403
    assert "worker" in str(refused.value).lower()


def _task_logs(cluster: LocalCluster, execution_id: int, attempt: int = 1) -> dict[str, Path]:
    """Worker name -> where that worker writes this attempt's task.log, whether it exists yet or not."""
    found = {}
    for name, node in cluster.workers.items():
        root = load_worker_settings(node.home).tasks_root(node.home)
        found[name] = root / f"{execution_id}-{attempt}" / "task.log"
    return found


def _task_log(path: Path) -> str:
    """A task.log's text so far ("" before it exists): the worker's own, written as events happen.

    Read from the worker's disk rather than through the master: a status poll is a CLI process,
    seconds apart on a loaded machine, long enough to miss a short package entirely.
    """
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _package_started(path: Path) -> bool:
    return "started in process" in _task_log(path)


def test_kill_9_mid_task_retries_on_the_other_worker(cluster: LocalCluster) -> None:
    record = run(cluster, "default/etl/sleep", "--param", "seconds=4", "--retry", "1")
    eid = record["execution_id"]
    task_logs = _task_logs(cluster, eid)
    # Killed the moment its package starts: the whole 4 s package is still ahead, however slow the
    # machine, so attempt 1 cannot finish on the victim first.
    victim = wait_until(
        lambda: next((name for name, path in task_logs.items() if _package_started(path)), None),
        interval=0.05,
        what="attempt 1's package to start on a worker",
    )
    first = cluster.agent_id(victim)
    cluster.kill(cluster.workers[victim])
    try:
        done = wait_finished(cluster, eid, timeout=90)
        assert done["status"] == SUCCEEDED, done
        assert done["task"]["agent_id"] != first
        assert done["task"]["attempt"] == 2
        events = logs(cluster, eid)
        printed = [e["message"] for e in events if e["message_source"] == "stdout" and e["attempt"] == 2]
        assert printed == [f"slept {n} s of 4" for n in (1, 2, 3, 4)]
    finally:
        cluster.start_worker(victim)
        cluster.wait_for_workers([victim])


def test_master_restart_mid_run_loses_nothing(cluster: LocalCluster) -> None:
    ids = [run(cluster, "default/etl/sleep", "--param", "seconds=3")["execution_id"] for _ in range(6)]
    task_logs = [path for eid in ids for path in _task_logs(cluster, eid).values()]

    def mid_run(path: Path) -> bool:
        text = _task_log(path)
        return "started in process" in text and "slept 3 s of 3" not in text

    # The master stops while a package runs: seen on the worker's disk, polled every 50 ms.
    wait_until(lambda: any(mid_run(p) for p in task_logs), interval=0.05, what="a package to be mid-run")
    cluster.stop(cluster.master)
    time.sleep(2)
    cluster.start_master()
    for eid in ids:
        done = wait_finished(cluster, eid, timeout=90)
        assert done["status"] == SUCCEEDED, done
        printed = [e["message"] for e in logs(cluster, eid) if e["message_source"] == "stdout"]
        assert printed == [f"slept {n} s of 3" for n in (1, 2, 3)], f"execution {eid} lost log lines"


def test_log_lines_all_arrive_after_the_master_was_away(cluster: LocalCluster) -> None:
    record = run(cluster, "default/etl/sleep", "--param", "seconds=6")
    eid = record["execution_id"]
    wait_until(lambda: logs(cluster, eid), what="the first line")
    cluster.stop(cluster.master)
    time.sleep(5)  # the package goes on printing into the worker's log cache
    cluster.start_master()
    done = wait_finished(cluster, eid, timeout=90)
    assert done["status"] == SUCCEEDED
    events = [e for e in logs(cluster, eid) if e["seq"] > 0]
    seqs = sorted(e["seq"] for e in events)
    assert seqs == list(range(1, len(seqs) + 1))
    # The package prints exactly six lines, most while the master is away: every one arrives, once,
    # in order.
    printed = [
        e["message"] for e in sorted(events, key=lambda e: e["seq"]) if e["message_source"] == "stdout"
    ]
    assert printed == [f"slept {n} s of 6" for n in range(1, 7)]
