"""``reconnect``: a large fleet reconnects at once after a master restart.

``agents`` simulated workers (own certificates, enabled) heartbeat once, keeping their connections open.
The master is stopped and started again (same home, same catalog), which drops every connection
and forgets every TLS session. When it answers again, all agents send their heartbeat at the same
moment, each on a new connection with a new client context: a full mutual-TLS handshake each. An
agent whose attempt fails tries again after 200 ms, as a worker's retry would, until it is served.

Measured: from that moment to the last agent served (the headline), p50/p99 of the agents' time to
be served, failed attempts, and the restarted master's peak RSS (sampled twice a second).
"""

from __future__ import annotations

import asyncio
import threading
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import psutil

from packfleet.bench._agents import (
    Agent,
    heartbeat_body,
    make_enabled_agents,
    master_identity,
    wait_for_file,
    wait_online,
)
from packfleet.bench._cluster import BenchCluster
from packfleet.bench._fleet import CLIENT_PROCESSES, _PeakRss
from packfleet.bench._load import run_processes
from packfleet.bench._stats import Result, load_average, percentile
from packfleet.bench._waits import release, release_if_waiting

#: How long one run may take at most (connect, restart, storm).
RUN_LIMIT = 300.0
RETRY = 0.2


def reconnect_load(
    queue: Queue[Any],
    endpoint: str,
    master_pem: str,
    master_thumbprint: str,
    agents: list[Agent],
    offset: int,
    control: str,
) -> None:
    """Heartbeat once, wait for ``control``/go (its text: when), then all at once on new connections."""
    from packfleet.protocol import routes
    from packfleet.transport import MasterClient, client_context

    go_file = Path(control) / "go"
    served: list[float] = []
    counts = {"failed": 0, "unserved": 0}
    errors: list[str] = []

    def new_client(cert: str, key: str) -> MasterClient:
        context = client_context(Path(cert), Path(key), master_pem)
        return MasterClient(endpoint, context, role="worker", pins=[master_thumbprint], connections=1)

    async def agent(index: int, cert: str, key: str, agent_id: str, go: asyncio.Event) -> None:
        body = heartbeat_body(index, agent_id, [master_thumbprint])
        first = new_client(cert, key)
        try:
            # Connecting: 1,000 first handshakes at once on a loaded machine can outlast the
            # master's header deadline; like a worker, try again (not counted: not the storm).
            for _ in range(60):
                try:
                    await first.request("POST", routes.WORKER_HEARTBEAT, json_body=body, timeout=60)
                    break
                except Exception:  # noqa: BLE001 - retried, as a worker's first heartbeat is
                    await asyncio.sleep(1.0)
            # The context of the first attempt, built before the storm as a worker's is built at
            # start: what is timed is the reconnection, not this process reading key files.
            ready: MasterClient | None = new_client(cert, key)
            await go.wait()
        finally:
            await first.close()  # the master restarted: this connection is dead anyway
        at = float(go_file.read_text())
        deadline = at + 60.0
        await asyncio.sleep(max(0.0, at - time.time()))
        while time.time() < deadline:
            # A new context each attempt, never used before: a full handshake, no session resumed.
            client, ready = ready or new_client(cert, key), None
            try:
                await client.request("POST", routes.WORKER_HEARTBEAT, json_body=body, timeout=60)
                served.append(time.time() - at)
                return
            except Exception as exc:  # noqa: BLE001 - every failed attempt is counted and shown
                counts["failed"] += 1
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                await client.close()
            await asyncio.sleep(RETRY)
        counts["unserved"] += 1

    async def main() -> dict[str, Any]:
        go = asyncio.Event()

        async def watch() -> None:
            if await wait_for_file(go_file, time.time() + RUN_LIMIT):
                await asyncio.sleep(0.05)  # the parent writes the file whole, then it is read
            go.set()

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(agent(offset + i, c, k, a, go) for i, (c, k, a) in enumerate(agents)))
        await watcher
        return {"served": served, **counts, "errors": errors}

    try:
        queue.put(asyncio.run(main()))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        queue.put(f"{type(exc).__name__}: {exc}")


def _one_run(bench: BenchCluster, fleet: list[Agent], control: Path) -> dict[str, float]:
    cluster = bench.cluster
    assert cluster is not None  # noqa: S101 - built by BenchCluster
    control.mkdir(parents=True)
    endpoint, pem, thumbprint = master_identity(bench)
    per = -(-len(fleet) // CLIENT_PROCESSES)
    chunks = range(0, len(fleet), per)
    args = [(endpoint, pem, thumbprint, fleet[i : i + per], i, str(control)) for i in chunks]
    answers: list[Any] = []
    failure: list[BaseException] = []

    def load() -> None:
        try:
            answers.extend(run_processes(reconnect_load, args, timeout=RUN_LIMIT + 60))
        except BaseException as exc:  # noqa: BLE001 - raised again in the bench's thread
            failure.append(exc)

    began = time.time()
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    go = control / "go"
    try:
        wait_online(bench, len(fleet), began, timeout=120.0)
        cluster.stop(cluster.master)
        cluster.start_master(wait=60)
        master = psutil.Process(bench.master_pid())
        with _PeakRss(master) as peak:
            cpu_before = sum(master.cpu_times()[:2])
            at = time.time() + 1.0
            release(go, at)
            thread.join(RUN_LIMIT + 120)
            # CPU seconds the restarted master spent on the storm (and the agents' idle minute).
            master_cpu = sum(master.cpu_times()[:2]) - cpu_before
    finally:
        release_if_waiting(go)
        thread.join(RUN_LIMIT + 120)
    if failure:
        raise failure[0]
    served = [s * 1000.0 for a in answers for s in a["served"]]
    failed = sum(a["failed"] for a in answers)
    unserved = sum(a["unserved"] for a in answers)
    if failed or unserved:
        errors = [e for a in answers for e in a["errors"]]
        print(f"# reconnect: {failed} failed attempts, {unserved} unserved, e.g. {errors[:3]}")  # noqa: T201
    return {
        "all_served_s": max(served) / 1000.0 if served and not unserved else float("inf"),
        "served_p50_ms": percentile(served, 50),
        "served_p99_ms": percentile(served, 99),
        "served": float(len(served)),
        "failed_attempts": float(failed),
        "master_rss_mb": peak.peak / 2**20,
        "master_cpu_s": master_cpu,
    }


def run(bench: BenchCluster, *, agents: int, runs: int) -> Result:
    result = Result("reconnect", "s (all served after a restart)", catalog=bench.catalog)
    result.notes.update(agents=agents)
    # Enabled beforehand (as `manager worker add --enable` does): what reconnects is a known fleet.
    fleet = make_enabled_agents(bench, agents, bench.root / "reconnect")
    for r in range(runs):
        result.loads.append(load_average())
        figures = _one_run(bench, fleet, bench.root / "reconnect" / f"run{r}")
        result.add_run(figures.pop("all_served_s"), **figures)
        result.loads.append(load_average())
    return result
