"""``rotation``: a master certificate rotation with a large fleet connected.

``agents`` simulated workers (own certificates, enabled) do what a worker does between tasks, with a
worker's default timing (AgentHeartbeatInterval 1 minute, 20 s long-polls): a
lease long-poll always open, and a heartbeat every ``interval`` seconds or at once when the lease
reply says ``heartbeat_now``. From a heartbeat reply each takes the announced certificate (trusts
it beside the current one, keeping its connections, and reports both in another heartbeat at once),
and when the master serves it, promotes it and says so at once: its client then trusts only the new
certificate, so its following requests are new TLS connections that succeed only against the new
certificate.

Measured: the wall time of ``packfleet manager rotate master-cert`` (the real command: announce,
wait until every online worker accepts, switch, wait until every one pins only the new one,
retire), how many agents ended on the new certificate, and every failed request of the agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import psutil

from packfleet.bench._agents import Agent, heartbeat_body, make_enabled_agents, master_identity, wait_online
from packfleet.bench._cluster import BenchCluster
from packfleet.bench._fleet import CLIENT_PROCESSES, _PeakRss
from packfleet.bench._load import run_processes
from packfleet.bench._stats import Result, load_average

#: Longest the agents keep going in one run (they stop earlier, when the bench says so).
RUN_LIMIT = 300.0
#: A worker's defaults: AgentHeartbeatInterval 1 minute, a lease long-poll held 20 s.
HEARTBEAT_INTERVAL = 60.0
LEASE_WAIT = 20.0
#: Seconds over which the agents send their first heartbeat.
STARTUP_SPREAD = 5.0


def rotation_load(
    queue: Queue[Any],
    endpoint: str,
    master_pem: str,
    master_thumbprint: str,
    agents: list[Agent],
    offset: int,
    total: int,
    interval: float,
    control: str,
) -> None:
    """Run the agents until ``control``/stop appears; put their counts."""
    from packfleet.pki import load_credential_bytes
    from packfleet.protocol import HeartbeatReply, LeaseRequest, decode, encode, routes
    from packfleet.transport import MasterClient, client_context

    stop_file = Path(control) / "stop"
    counts = {"requests": 0, "failed": 0, "promoted": 0, "accepted": 0, "heartbeat_now": 0}
    errors: list[str] = []
    by_route: dict[str, int] = {}

    async def agent(index: int, cert: str, key: str, agent_id: str, stopping: asyncio.Event) -> None:
        pems = {master_thumbprint: master_pem}

        def context() -> Any:
            return client_context(Path(cert), Path(key), "".join(pems.values()))

        client = MasterClient(endpoint, context(), role="worker", pins=list(pems), connections=2)
        beat_now = asyncio.Event()

        async def call(path: str, body: dict[str, Any], timeout: float) -> Any:
            counts["requests"] += 1
            by_route[path] = by_route.get(path, 0) + 1
            try:
                return await client.request("POST", path, json_body=body, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                counts["failed"] += 1
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)
                return None

        def retrust() -> None:
            client.replace_context(context(), pins=list(pems), own_thumbprint=None)

        async def heartbeat() -> bool:
            answer = await call(routes.WORKER_HEARTBEAT, heartbeat_body(index, agent_id, list(pems)), 60)
            if answer is None:
                return False
            reply = decode(HeartbeatReply, answer)
            if reply.next_master_cert_pem:
                new = load_credential_bytes(reply.next_master_cert_pem.encode())
                if new.thumbprint not in pems:
                    pems[new.thumbprint] = reply.next_master_cert_pem
                    counts["accepted"] += 1
                    # As the worker: trusted beside the current one, the open connections stay.
                    client.trust_also(reply.next_master_cert_pem, pins=list(pems))
                    beat_now.set()  # and the step is reported at once
            elif reply.master_cert_thumbprint in pems and len(pems) > 1:
                # Promote: trust only what the master serves; the old certificate is gone.
                kept = pems[reply.master_cert_thumbprint]
                pems.clear()
                pems[reply.master_cert_thumbprint] = kept
                counts["promoted"] += 1
                retrust()
                beat_now.set()
            return True

        async def beats() -> None:
            # Spread over the interval as real workers drift apart; a hint cuts any wait short.
            delay = interval * index / total
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(beat_now.wait(), delay)
                # Cleared before the heartbeat, as the worker does: a hint that arrives while it is
                # in flight asks for the next one.
                beat_now.clear()
                await heartbeat()
                delay = interval

        async def leases() -> None:
            ask = LeaseRequest(agent_id=agent_id, capacity=1, wait_seconds=LEASE_WAIT, lease_seconds=60)
            while not stopping.is_set():
                answer = await call(routes.WORKER_LEASE, encode(ask), LEASE_WAIT + 30)
                if answer and answer.get("heartbeat_now"):
                    counts["heartbeat_now"] += 1
                    beat_now.set()

        try:
            # Started over STARTUP_SPREAD seconds, as a fleet never starts in one instant; and like
            # a worker, no lease before a heartbeat got through (it binds the agent id).
            await asyncio.sleep(STARTUP_SPREAD * index / total)
            while not await heartbeat() and not stopping.is_set():
                await asyncio.sleep(1.0)
            tasks = [asyncio.create_task(beats()), asyncio.create_task(leases())]
            await stopping.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await client.close()

    async def main() -> dict[str, Any]:
        stopping = asyncio.Event()

        async def watch() -> None:
            deadline = time.monotonic() + RUN_LIMIT
            while not stop_file.exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            stopping.set()

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(agent(offset + i, c, k, a, stopping) for i, (c, k, a) in enumerate(agents)))
        await watcher
        return {**counts, "errors": errors, "by_route": by_route}

    try:
        queue.put(asyncio.run(main()))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        queue.put(f"{type(exc).__name__}: {exc}")


def _one_run(bench: BenchCluster, fleet: list[Agent], interval: float, control: Path) -> dict[str, float]:
    assert bench.cluster is not None  # noqa: S101 - built by BenchCluster
    control.mkdir(parents=True)
    endpoint, pem, thumbprint = master_identity(bench)
    per = -(-len(fleet) // CLIENT_PROCESSES)
    args = [
        (endpoint, pem, thumbprint, fleet[i : i + per], i, len(fleet), interval, str(control))
        for i in range(0, len(fleet), per)
    ]
    answers: list[Any] = []
    failure: list[BaseException] = []

    def load() -> None:
        try:
            answers.extend(run_processes(rotation_load, args, timeout=RUN_LIMIT + 60))
        except BaseException as exc:  # noqa: BLE001 - raised again in the bench's thread
            failure.append(exc)

    began = time.time()
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        wait_online(bench, len(fleet), began, timeout=120.0)
        master = psutil.Process(bench.master_pid())
        with _PeakRss(master) as peak:
            cpu_before = sum(master.cpu_times()[:2])
            started = time.monotonic()
            done = bench.cluster.cli(bench.master_home, "manager", "rotate", "master-cert", timeout=RUN_LIMIT)
            seconds = time.monotonic() - started
            # CPU seconds the master spent: unlike wall time, barely moved by other work on the machine.
            master_cpu = sum(master.cpu_times()[:2]) - cpu_before
        # The command's own progress lines (each step with its elapsed time) show where the time went.
        said = (done.stdout + done.stderr).decode().splitlines()
        for line in said:
            if "] " in line and not any(word in line for word in ("accepts", "now pins only", "awaited")):
                print(f"# rotation: {line.strip()}")  # noqa: T201
    finally:
        (control / "stop").touch()
        thread.join(RUN_LIMIT + 120)
    if failure:
        raise failure[0]
    total = {k: sum(a[k] for a in answers) for k in ("requests", "failed", "promoted", "accepted")}
    # Where the requests go (the whole run: the first heartbeat and lease of each agent included).
    sent: dict[str, int] = {"heartbeat_now": sum(a["heartbeat_now"] for a in answers)}
    for answer in answers:
        for path, n in answer["by_route"].items():
            sent[path.rsplit("/", 1)[-1]] = sent.get(path.rsplit("/", 1)[-1], 0) + n
    per_agent = ", ".join(f"{kind} {n / len(fleet):.1f}" for kind, n in sorted(sent.items()))
    print(f"# rotation: per agent: {per_agent}")  # noqa: T201
    if total["failed"]:
        errors = [e for a in answers for e in a["errors"]]
        print(f"# rotation: {total['failed']} failed requests, e.g. {errors[:3]}")  # noqa: T201
    return {
        "seconds": seconds,
        "failed_requests": float(total["failed"]),
        "agents_on_new_cert": float(total["promoted"]),
        "agents_accepted": float(total["accepted"]),
        "requests": float(total["requests"]),
        "master_rss_mb": peak.peak / 2**20,
        "master_cpu_s": master_cpu,
    }


def run(bench: BenchCluster, *, agents: int, runs: int, interval: float = HEARTBEAT_INTERVAL) -> Result:
    result = Result("rotation", "s (manager rotate master-cert)", catalog=bench.catalog)
    result.notes.update(agents=agents, interval_s=interval)
    fleet = make_enabled_agents(bench, agents, bench.root / "rotation")
    for r in range(runs):
        result.loads.append(load_average())
        figures = _one_run(bench, fleet, interval, bench.root / "rotation" / f"run{r}")
        result.add_run(figures.pop("seconds"), **figures)
        result.loads.append(load_average())
    return result
