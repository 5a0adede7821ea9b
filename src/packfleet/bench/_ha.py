"""``ha``: two masters on one PostgreSQL catalog against one, and the gap a master's death leaves.

The cluster: master A (127.0.0.1) set up as usual, master B (127.0.0.5) from A's node bundle, both
serving one certificate; two workers, worker1 listing A then B, worker2 B then A, so each master
serves one worker. Three figures:

- ``ha-throughput`` with ``masters=2``: N pooled no-op executions submitted in one bulk request,
  leased by both masters' long-polls (``FOR UPDATE SKIP LOCKED``), tasks/s as in ``throughput``.
- The same with ``masters=1``: B is stopped (SIGTERM), worker2 fails over to A, A serves both.
- ``ha-failover``: the failover gap, in seconds, over ``kills`` kills. B is back; every worker now
  uses the same master (a node does not fail back). A stream of executions runs; the master the
  workers use is killed with SIGKILL; the gap is the first completion the catalog records after the
  kill minus the last one before it (both on the masters' clock, on this machine). The killed master
  is started again, and the next kill takes the other one.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

from sqlalchemy import create_engine, text

from packfleet.bench._cluster import (
    FINISHED,
    PACKAGES,
    WORKER_SETTINGS,
    BenchCluster,
    epoch,
    pg_database,
    write_project,
)
from packfleet.bench._stats import Result, load_average
from packfleet.errors import ClusterError
from packfleet.localcluster import LocalCluster

#: The node bundle's password: a throwaway, for a bundle that lives as long as the bench run.
_BUNDLE_PASSWORD = "bench-ha-bundle"  # noqa: S105 - not a secret: a bench cluster's own throwaway
_HOST_A, _HOST_B = "127.0.0.1", "127.0.0.5"

#: Both masters sweep expired leases every 5 s instead of every 5 minutes (the SSIS default). A
#: kill can fall between a lease's commit and its answer: the task is picked up in the catalog and
#: its worker never hears of it, so it waits for its lease to expire (LeaseInterval, 1 minute) and
#: the next sweep. With the default that is up to 6 minutes, past a stream's wait; an HA
#: deployment that wants such a task back within about a minute sweeps this often too. The
#: failover gap does not depend on it. Set on A before its node bundle is exported: B takes it
#: from the bundle, as every shared setting.
_SWEEP_INTERVAL_MS = "5000"
#: The stream's executions may run twice: such a task's attempt ends with its lease, and a task
#: with no retry left would end "ended unexpectedly". ``requeued`` counts the second attempts.
_STREAM_RETRIES = 1


class HaBench(BenchCluster):
    """Two masters on one throwaway PostgreSQL database, two workers each preferring another master."""

    def __init__(self, *, keep: bool = False) -> None:
        super().__init__("postgresql", workers=2, keep=keep)
        self.b: LocalCluster | None = None

    def __enter__(self) -> HaBench:
        super().__enter__()
        return self

    @property
    def a(self) -> LocalCluster:
        assert self.cluster is not None  # noqa: S101 - set by __enter__
        return self.cluster

    @property
    def other(self) -> LocalCluster:
        assert self.b is not None  # noqa: S101 - set by __enter__
        return self.b

    def _start(self) -> None:
        url = self._stack.enter_context(pg_database())
        self.url = url
        a = self._stack.enter_context(
            LocalCluster(self.root / "a", catalog_url=url, host=_HOST_A, fast=False)
        )
        b = self._stack.enter_context(
            LocalCluster(self.root / "b", catalog_url=url, host=_HOST_B, fast=False)
        )
        self.cluster, self.b = a, b
        a.init_master("--cn", _HOST_B)  # one certificate naming both masters' addresses
        sweep = ("settings", "set", "master", "DealWithExpiredTasksIntervalInMs", _SWEEP_INTERVAL_MS)
        a.cli(a.master.home, *sweep, as_json=True)
        a.start_master()
        urls = [f"https://{a.host}:{a.port}", f"https://{b.host}:{b.port}"]
        a.add_worker("worker1", "127.0.0.2", settings=WORKER_SETTINGS, masters=urls)
        a.add_worker("worker2", "127.0.0.3", settings=WORKER_SETTINGS, masters=urls[::-1])
        bundle = self.root / "node.bundle"
        self._with_password(a, "master", "export-node", "--out", str(bundle))
        self._with_password(
            b,
            "master",
            "init",
            "--from-node",
            str(bundle),
            "--catalog",
            url,
            "--port",
            str(b.port),
            "--cn",
            b.host,
        )
        b.start_master()
        a.cli(a.master.home, "settings", "set", "manager", "MasterEndpoint", ",".join(urls), as_json=True)
        for name in a.workers:
            a.start_worker(name)
        a.wait_for_workers(list(a.workers))
        project = write_project(self.root / "project")
        a.cli(a.master.home, "deploy", str(project), as_json=True)
        self._engine = create_engine(url)

    @staticmethod
    def _with_password(cluster: LocalCluster, *args: str) -> None:
        done = subprocess.run(
            cluster.command(cluster.master.home, *args, "--password-stdin", "--json"),
            input=(_BUNDLE_PASSWORD + "\n").encode(),
            capture_output=True,
            env=cluster.env,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterError(
                f"`packfleet {' '.join(args)}` exited {done.returncode}\n{done.stderr.decode()}"
            )

    def pids(self) -> list[int]:
        return [p.pid for c in (self.a, self.other) for p in c.processes()]

    def completions_around(self, moment: float, first: int, last: int) -> tuple[float, float]:
        """The last completion at or before ``moment`` (POSIX s) and the first one after it."""
        ended = [
            epoch(v)
            for v in self._rows(
                "SELECT ended_at FROM tasks WHERE execution_id BETWEEN :a AND :b", a=first, b=last
            )
        ]
        before = [t for t in ended if t <= moment]
        after = [t for t in ended if t > moment]
        if not before or not after:
            raise ClusterError(
                f"the kill did not fall inside the stream ({len(before)} completions before it, "
                f"{len(after)} after): raise --n"
            )
        return max(before), min(after)

    def requeued_count(self, first: int, last: int) -> int:
        """Tasks leased more than once. With no retries and nothing failing, a second lease
        comes only from a sweep that put a task back after its lease expired."""
        sql = "SELECT count(*) FROM tasks WHERE execution_id BETWEEN :a AND :b AND attempt > 1"
        return int(self._scalar(sql, a=first, b=last))

    def ended_count(self, first: int, last: int) -> int:
        finished = ",".join(str(s) for s in FINISHED)
        sql = f"SELECT count(*) FROM executions WHERE id BETWEEN :a AND :b AND status IN ({finished})"  # noqa: S608 - constants
        return int(self._scalar(sql, a=first, b=last))

    def _rows(self, sql: str, **params: Any) -> list[Any]:
        assert self._engine is not None  # noqa: S101 - set by __enter__
        with self._engine.connect() as conn:
            return [row[0] for row in conn.execute(text(sql), params).all()]


async def _throughput_run(bench: HaBench, n: int) -> float:
    async with bench.manager() as manager:
        started = time.time()
        ids = await bench.submit_bulk(manager, PACKAGES["pooled"], n)
        await asyncio.to_thread(bench.wait_finished, ids[0], ids[-1], timeout=max(120.0, n / 20))
    return n / (bench.last_ended(ids[0], ids[-1]) - started)


def _throughput(bench: HaBench, masters: int, n: int, runs: int) -> Result:
    result = Result("ha-throughput", "tasks/s", catalog="postgresql", isolation="pooled")
    result.notes.update(n=n, masters=masters)
    asyncio.run(_throughput_run(bench, min(n, 200)))  # warm-up: pooled processes, caches, failover done
    for _ in range(runs):
        result.loads.append(load_average())
        result.add_run(asyncio.run(_throughput_run(bench, n)))
        result.loads.append(load_average())
    return result


async def _kill_during_stream(bench: HaBench, target: LocalCluster, n: int) -> tuple[float, int]:
    """Submit ``n`` executions, kill ``target`` once a tenth have ended; the completion gap, and how
    many tasks had to wait for their lease to expire (see :data:`_SWEEP_INTERVAL_MS`)."""
    async with bench.manager() as manager:
        ids = await bench.submit_bulk(manager, PACKAGES["pooled"], n, retry_count=_STREAM_RETRIES)
    first, last = ids[0], ids[-1]
    deadline = time.monotonic() + 120
    while bench.ended_count(first, last) < max(1, n // 10):
        if time.monotonic() > deadline:
            raise ClusterError("the stream did not start within 120 s")
        await asyncio.sleep(0.02)
    killed_at = time.time()
    target.stop(target.master, sig=signal.SIGKILL, timeout=10)
    await asyncio.to_thread(bench.wait_finished, first, last, timeout=max(120.0, n / 10))
    before, after = bench.completions_around(killed_at, first, last)
    return after - before, bench.requeued_count(first, last)


def run(bench: HaBench, *, n: int, runs: int, kills: int) -> list[Result]:
    """Two masters against one (``runs`` runs of N executions each), then ``kills`` failover gaps."""
    two = _throughput(bench, 2, n, runs)
    bench.other.stop(bench.other.master)  # SIGTERM: worker2 fails over to A
    one = _throughput(bench, 1, n, runs)
    bench.other.start_master()
    gap = Result("ha-failover", "s", catalog="postgresql", isolation="pooled")
    gap.notes.update(n=n, kills=kills, gap="first completion after kill -9 minus last before it")
    target, spare = bench.a, bench.other  # every worker is on A now: nodes do not fail back
    for _ in range(kills):
        gap.loads.append(load_average())
        seconds, requeued = asyncio.run(_kill_during_stream(bench, target, n))
        gap.add_run(seconds, requeued=requeued)
        gap.loads.append(load_average())
        target.start_master()  # raises, with its log's tail, if it does not come back
        target, spare = spare, target
    if two.values and one.values:
        two.notes["of_one_master"] = round(two.to_json()["median"] / one.to_json()["median"], 4)
    return [two, one, gap]
