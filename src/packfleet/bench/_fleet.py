"""``fleet``: many simulated workers heartbeating against one master.

Each simulated agent has its own ECDSA certificate (in the master's Root store, as the seed's
"install the worker certificate into Root" step puts it) and its own keep-alive TLS connection, and
heartbeats every ``interval`` seconds, spread evenly over the interval as real workers drift apart.
An agent's first heartbeat (handshake, registration; retried once a second if it fails, as a
worker's would be) is the warm-up and is not counted; the measured rounds start once every agent
is registered, so they measure the fleet's steady state, not the registration wave. Unknown
certificates register as disabled workers, as in SSIS; the heartbeat route and its catalog write are
the same for enabled ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import psutil

from packfleet.bench._cluster import BenchCluster
from packfleet.bench._load import run_processes
from packfleet.bench._stats import Result, load_average, percentile
from packfleet.pki import CertStore, create_self_signed, load_credential, load_credential_bytes

CLIENT_PROCESSES = 4
#: How many times an agent tries its first heartbeat (one a second), and the longest a run may take
#: beyond its rounds (seconds).
WARMUP_TRIES = 120
RUN_LIMIT = 300.0


def make_agents(bench: BenchCluster, count: int, folder: Path) -> list[tuple[str, str, str]]:
    """``count`` agent certificates, trusted by the master; ``(cert file, key file, agent id)`` each."""
    folder.mkdir(parents=True, exist_ok=True)
    root = CertStore(bench.master_home, "Root")
    # The agents' own My store: it writes each key 0600 from the start, never readable in between.
    mine = CertStore(folder, "My")
    agents = []
    for i in range(count):
        cred = create_self_signed([f"fleet-{i}"])
        mine.add(cred)
        root.add(load_credential_bytes(cred.cert_pem()))
        cert, key = mine.cert_path(cred.thumbprint), mine.key_path(cred.thumbprint)
        agents.append((str(cert), str(key), str(uuid.uuid4())))
    os.kill(bench.master_pid(), signal.SIGHUP)  # reload trust: the Root store changed
    return agents


def heartbeat_load(
    queue: Queue[Any],
    endpoint: str,
    master_pem: str,
    master_thumbprint: str,
    agents: list[tuple[str, str, str]],
    first_at: float,
    interval: float,
    rounds: int,
    offset: int,
    total: int,
    control: str,
) -> None:
    """Heartbeat once (the warm-up), then ``rounds`` times from the moment in ``control``/go; put the
    latencies (ms) of those rounds."""
    from packfleet import __version__
    from packfleet.bench._waits import wait_for_file
    from packfleet.protocol import Heartbeat, encode, routes
    from packfleet.transport import MasterClient, client_context

    go_file = Path(control) / "go"
    warmup_failures = [0]

    async def agent(
        index: int, cert: str, key: str, agent_id: str, samples: list[float], go: asyncio.Event
    ) -> None:
        context = client_context(Path(cert), Path(key), master_pem)
        client = MasterClient(endpoint, context, role="worker", pins=[master_thumbprint], connections=1)
        beat = Heartbeat(
            agent_id=agent_id,
            display_name=f"fleet-{index}",
            machine_name="fleet",
            user_account="bench",
            ips=["127.0.0.1"],
            cpu_percent=1.0,
            memory_free_mb=1024.0,
            running_tasks=0,
            max_tasks=10,
            version=__version__,
        )
        body = encode(beat)
        spread = interval * index / total
        try:
            # The warm-up: handshake and registration, spread over one interval. A worker whose
            # first heartbeat fails tries again; so does this one (counted, not measured).
            await asyncio.sleep(max(0.0, first_at + spread - time.time()))
            for _ in range(WARMUP_TRIES):
                try:
                    await client.request("POST", routes.WORKER_HEARTBEAT, json_body=body, timeout=60)
                    break
                except Exception:  # noqa: BLE001 - retried, as a worker's first heartbeat is
                    warmup_failures[0] += 1
                    await asyncio.sleep(1.0)
            await go.wait()
            start = float(go_file.read_text()) + spread
            for r in range(rounds):
                await asyncio.sleep(max(0.0, start + r * interval - time.time()))
                began = time.perf_counter()
                await client.request("POST", routes.WORKER_HEARTBEAT, json_body=body, timeout=60)
                samples.append((time.perf_counter() - began) * 1000.0)
        finally:
            await client.close()

    async def main() -> dict[str, Any]:
        samples: list[float] = []
        go = asyncio.Event()

        async def watch() -> None:
            if await wait_for_file(go_file, first_at + interval + RUN_LIMIT):
                await asyncio.sleep(0.05)  # the parent writes the file whole, then it is read
            go.set()

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(agent(offset + i, c, k, a, samples, go) for i, (c, k, a) in enumerate(agents)))
        await watcher
        return {"samples": samples, "warmup_failures": warmup_failures[0]}

    try:
        queue.put(asyncio.run(main()))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        queue.put(f"{type(exc).__name__}: {exc}")


def _wait_trusted(bench: BenchCluster, agent: tuple[str, str, str], timeout: float = 60.0) -> None:
    """Wait until the master's reload took the new Root store (a heartbeat of the last agent works)."""
    from packfleet.protocol import routes
    from packfleet.transport import MasterClient, client_context

    master = load_credential(bench.master_home / "master.cer")
    assert bench.cluster is not None  # noqa: S101 - built by BenchCluster
    endpoint = f"https://{bench.cluster.host}:{bench.cluster.port}"

    async def probe() -> bool:
        context = client_context(Path(agent[0]), Path(agent[1]), master.cert_pem().decode())
        async with MasterClient(endpoint, context, role="worker", pins=[master.thumbprint]) as client:
            try:
                await client.request("GET", routes.HEALTH)
                return True
            except Exception:  # noqa: BLE001 - not trusted yet: the handshake fails
                return False

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(probe()):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the master did not trust the fleet certificates within {timeout:.0f} s")


class _PeakRss:
    """The highest resident set size of a process, sampled twice a second in a thread."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _one_run(
    bench: BenchCluster, fleet: list[tuple[str, str, str]], interval: float, rounds: int, control: Path
) -> dict[str, float]:
    from packfleet.bench._waits import release, release_if_waiting, wait_online

    control.mkdir(parents=True)
    master = load_credential(bench.master_home / "master.cer")
    assert bench.cluster is not None  # noqa: S101 - built by BenchCluster
    endpoint = f"https://{bench.cluster.host}:{bench.cluster.port}"
    agents = len(fleet)
    per = -(-agents // CLIENT_PROCESSES)
    first_at = time.time() + 5.0
    pem = master.cert_pem().decode()
    args = [
        (
            endpoint,
            pem,
            master.thumbprint,
            fleet[i : i + per],
            first_at,
            interval,
            rounds,
            i,
            agents,
            str(control),
        )
        for i in range(0, agents, per)
    ]
    answers: list[Any] = []
    failure: list[BaseException] = []

    def load() -> None:
        try:
            answers.extend(
                run_processes(heartbeat_load, args, timeout=interval * (rounds + 1) + RUN_LIMIT + 60)
            )
        except BaseException as exc:  # noqa: BLE001 - raised again in the bench's thread
            failure.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    go = control / "go"
    try:
        # The measured rounds start once every agent is connected and registered (the warm-up).
        wait_online(bench, agents, first_at - 1.0, timeout=interval + RUN_LIMIT)
        warmed = time.time() - first_at
        master = psutil.Process(bench.master_pid())
        with _PeakRss(master) as peak:
            cpu_before = sum(master.cpu_times()[:2])
            release(go, time.time() + 2.0)
            thread.join(interval * (rounds + 1) + RUN_LIMIT + 120)
            master_cpu = sum(master.cpu_times()[:2]) - cpu_before
    finally:
        release_if_waiting(go)
        thread.join(RUN_LIMIT + 120)
    if failure:
        raise failure[0]
    samples = [s for answer in answers for s in answer["samples"]]
    return {
        "p99_ms": percentile(samples, 99),
        "p50_ms": percentile(samples, 50),
        "master_rss_mb": peak.peak / 2**20,
        "heartbeats_per_s": agents / interval,
        "warmup_s": warmed,
        "warmup_failures": float(sum(a["warmup_failures"] for a in answers)),
        # The master's CPU per measured heartbeat, in milliseconds.
        "master_cpu_ms_per_heartbeat": master_cpu * 1000.0 / max(1, len(samples)),
    }


def run(bench: BenchCluster, *, agents: int, interval: float, rounds: int, runs: int) -> Result:
    result = Result("fleet", "ms (heartbeat p99)", catalog=bench.catalog)
    result.notes.update(agents=agents, interval_s=interval, rounds=rounds)
    assert bench.cluster is not None  # noqa: S101 - built by BenchCluster
    fleet = make_agents(bench, agents, bench.root / "fleet")
    _wait_trusted(bench, fleet[-1])
    for r in range(runs):
        result.loads.append(load_average())
        figures = _one_run(bench, fleet, interval, rounds, bench.root / "fleet" / f"run{r}")
        result.add_run(figures.pop("p99_ms"), **figures)
        result.loads.append(load_average())
    return result
