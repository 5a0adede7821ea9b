"""Both certificates rotated and one worker revoked under a steady stream of executions: nothing fails.

One cluster (master and three workers as real processes, SQLite catalog) runs ``default/etl/noop``
executions submitted every few hundred milliseconds from a background thread, while the test
rotates the master certificate, then each worker certificate, then revokes one worker's
certificate. Every execution must succeed (those the revoked worker held are retried elsewhere),
no submission may fail, and neither the master's log nor the other workers' logs may show a
refused request or a TLS error.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import pg_database
from e2e.conftest import EXAMPLE, wait_until
from packfleet.config import get_binding, load_master_settings, load_worker_settings
from packfleet.localcluster import LocalCluster
from packfleet.manager import ManagerClient
from packfleet.pki import CertStore

pytestmark = pytest.mark.e2e

WORKERS = (("worker1", "127.0.0.2"), ("worker2", "127.0.0.3"), ("worker3", "127.0.0.4"))
SUCCEEDED, FINISHED = 7, {3, 4, 6, 7, 9}


class Stream:
    """Submit ``default/etl/noop`` (retry 2) every ``interval`` seconds; keep every id and every error.

    Each submission opens a fresh :class:`ManagerClient` from the master's home, as a separate
    ``packfleet run`` would, so it reads the manager's pins as they are at that moment.
    """

    def __init__(self, home: Path, interval: float = 0.25) -> None:
        self.home = home
        self.interval = interval
        self.ids: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async with ManagerClient.from_home(self.home) as manager:
                    record = await manager.run("default", "etl", "noop", retry_count=2)
                self.ids.append(int(record["execution_id"]))
            except Exception as exc:  # noqa: BLE001 - every failure is what this test counts
                self.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.interval)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp(f"rotation-{request.param}")
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_database("pf_rot")) if request.param == "postgresql" else None
        cluster = stack.enter_context(LocalCluster(root, catalog_url=url))
        cluster.init_master()
        cluster.start_master()
        for name, ip in WORKERS:
            cluster.add_worker(name, ip)
            cluster.start_worker(name)
        cluster.wait_for_workers([name for name, _ip in WORKERS])
        cluster.cli(cluster.master.home, "deploy", str(EXAMPLE), as_json=True)
        yield cluster


def _statuses(cluster: LocalCluster) -> dict[int, int]:
    rows = cluster.cli(cluster.master.home, "executions", "list", "--limit", "10000", as_json=True)
    return {int(row["execution_id"]): int(row["status"]) for row in rows}


def _bad_lines(log: Path, *, allow: tuple[str, ...] = ()) -> list[str]:
    """Lines of a node log that report an error, a refusal or a TLS failure (minus allowed ones)."""
    pattern = re.compile(r" (ERROR|CRITICAL) |Traceback|refused|SSL|certificate verify failed", re.I)
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if pattern.search(line) and not any(a in line for a in allow)]


def test_rotations_and_a_revocation_lose_nothing(cluster: LocalCluster) -> None:
    master_home = cluster.master.home
    master_pid = cluster.master.process.pid if cluster.master.process else None
    old_master = load_master_settings(master_home).ssl_cert_thumbprint
    with Stream(master_home) as stream:
        wait_until(lambda: len(stream.ids) >= 5, timeout=30, what="the first executions")

        # 1. The master certificate, announced, switched and retired while the master keeps running.
        rotated = cluster.cli(
            master_home, "manager", "rotate", "master-cert", "--timeout", "30", as_json=True
        )
        new_master = rotated["new"]
        assert rotated["phase"] == "finished" and rotated["old"] == old_master != new_master
        assert rotated["behind"] == [] and all(w["promoted"] for w in rotated["workers"])
        assert load_master_settings(master_home).ssl_cert_thumbprint == new_master
        assert get_binding(master_home, f"0.0.0.0:{load_master_settings(master_home).port_number}")
        assert not CertStore(master_home, "Root").contains(old_master)
        assert cluster.master.process is not None and cluster.master.process.pid == master_pid
        for name, _ip in WORKERS:
            home = cluster.workers[name].home
            settings = load_worker_settings(home)
            assert settings.master_https_cert_thumbprint == new_master, name
            assert settings.next_master_https_cert_thumbprint == "", name
            assert not CertStore(home, "Root").contains(old_master), name

        # 2. Each worker certificate, registered over the old one, switched, the old one retired.
        for name, _ip in WORKERS:
            home = cluster.workers[name].home
            old = load_worker_settings(home).worker_https_cert_thumbprint
            result = cluster.cli(home, "worker", "rotate-cert", as_json=True)
            assert result["old"] == old != result["new"] and result["agent_pid"] is not None
            assert result["retired"], f"{name} did not retire {old}:\n{cluster.tail(cluster.workers[name])}"
            assert load_worker_settings(home).worker_https_cert_thumbprint == result["new"]
            assert not CertStore(home, "My").contains(old)
            assert not CertStore(master_home, "Root").contains(old)
            shown = cluster.cli(
                master_home, "manager", "worker", "show", cluster.agent_id(name), as_json=True
            )
            statuses = {c["thumbprint"]: c["status"] for c in shown["certificates"]}
            assert statuses == {old: "retired", result["new"]: "active"}
        count = len(stream.ids)
        wait_until(lambda: len(stream.ids) >= count + 5, timeout=30, what="executions after rotations")

        # 3. Revoke worker3's certificate: refused from its next request, its work goes elsewhere.
        revoked = load_worker_settings(cluster.workers["worker3"].home).worker_https_cert_thumbprint
        record = cluster.cli(master_home, "manager", "worker", "revoke-cert", revoked, as_json=True)
        assert record["status"] == "revoked"
        count = len(stream.ids)
        wait_until(lambda: len(stream.ids) >= count + 8, timeout=30, what="executions after the revocation")

    assert stream.errors == []
    submitted = set(stream.ids)

    def all_finished() -> dict[int, int] | None:
        statuses = _statuses(cluster)
        return statuses if all(statuses.get(i) in FINISHED for i in submitted) else None

    statuses = wait_until(all_finished, timeout=60, what="every execution to finish")
    failed = {i: statuses[i] for i in submitted if statuses[i] != SUCCEEDED}
    assert failed == {}, f"executions that did not succeed: {failed}"

    master_log = cluster.master.log_path
    assert master_log is not None
    assert _bad_lines(master_log, allow=(revoked,)) == []
    for name in ("worker1", "worker2"):
        log = cluster.workers[name].log_path
        assert log is not None
        assert _bad_lines(log) == [], name
    worker3 = cluster.workers["worker3"].log_path
    assert worker3 is not None
    assert f"certificate {revoked} was revoked" in worker3.read_text(errors="replace")
