"""``idle``: an enabled worker's heartbeats and an admin's requests while strangers hold connections.

A client without a certificate can open a connection to the master and hold it: finish the TLS
handshake and send nothing, or trickle the bytes of a request header. This scenario measures a worker
heartbeat (an enabled worker's certificate, a keep-alive connection) and an admin request (``GET
/api/v1/workers`` with the admin certificate) first on a quiet master, then while a separate process
keeps ``connections`` such connections open — half silent after the handshake, half sending one
header byte a second — spread over several loopback addresses so that each address stays under
``MaxConnectionsPerAddress``, and reopening each one the master closes at its header deadline, as a
persistent attacker would.

The holder is :mod:`packfleet.bench._holder`, in a process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from packfleet.bench._cluster import BenchCluster
from packfleet.bench._stats import Result, load_average, percentile

#: Connections per loopback source address in the holder (see packfleet.bench._holder).
PER_SOURCE = 50


@contextlib.contextmanager
def holder(
    host: str, port: int, master_pem: Path, connections: int, *, wait_open: float = 0.9
) -> Iterator[Callable[[], dict[str, int]]]:
    """Run the holder in its own process; wait until ``wait_open`` of the connections are open.

    Yields a function returning the holder's latest counters.
    """
    argv = [
        sys.executable, "-m", "packfleet.bench._holder",
        "--host", host, "--port", str(port),
        "--master-pem", str(master_pem), "--connections", str(connections),
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # noqa: S603
    latest: dict[str, int] = {}

    def read_latest() -> dict[str, int]:
        return dict(latest)

    def pump() -> None:
        assert process.stdout is not None  # noqa: S101 - PIPE above
        for line in process.stdout:
            with contextlib.suppress(ValueError):
                latest.update(json.loads(line))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while latest.get("open", 0) < connections * wait_open:
            if process.poll() is not None:
                raise RuntimeError(f"the connection holder exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {latest.get('open', 0)} of {connections} idle connections opened")
            time.sleep(0.2)
        yield read_latest
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


@dataclass
class Latencies:
    heartbeat_ms: list[float] = field(default_factory=list)
    admin_ms: list[float] = field(default_factory=list)

    def summary(self, suffix: str) -> dict[str, float]:
        return {
            f"heartbeat_p50_ms{suffix}": percentile(self.heartbeat_ms, 50),
            f"heartbeat_p99_ms{suffix}": percentile(self.heartbeat_ms, 99),
            f"admin_p50_ms{suffix}": percentile(self.admin_ms, 50),
            f"admin_p99_ms{suffix}": percentile(self.admin_ms, 99),
        }


async def measure(
    endpoint: str,
    master_pem: str,
    master_thumbprint: str,
    worker: tuple[Path, Path, str],
    manager_home: Path,
    n: int,
    pause: float = 0.05,
) -> Latencies:
    """``n`` worker heartbeats and ``n`` admin requests, alternating, each on its keep-alive connection."""
    from packfleet import __version__
    from packfleet.manager import ManagerClient
    from packfleet.protocol import Heartbeat, encode, routes
    from packfleet.transport import MasterClient, client_context

    cert, key, agent_id = worker
    beat = Heartbeat(
        agent_id=agent_id,
        display_name="idle-bench",
        machine_name="bench",
        user_account="bench",
        ips=["127.0.0.1"],
        cpu_percent=1.0,
        memory_free_mb=1024.0,
        running_tasks=0,
        max_tasks=1,
        version=__version__,
    )
    body = encode(beat)
    result = Latencies()
    context = client_context(cert, key, master_pem)
    async with (
        MasterClient(endpoint, context, role="worker", pins=[master_thumbprint], connections=1) as client,
        ManagerClient.from_home(manager_home) as manager,
    ):
        # Warm-up: handshakes and the first catalog reads are not what is measured.
        await client.request("POST", routes.WORKER_HEARTBEAT, json_body=body, timeout=60)
        await manager.list_workers()
        for _ in range(n):
            began = time.perf_counter()
            await client.request("POST", routes.WORKER_HEARTBEAT, json_body=body, timeout=60)
            result.heartbeat_ms.append((time.perf_counter() - began) * 1000.0)
            began = time.perf_counter()
            await manager.list_workers()
            result.admin_ms.append((time.perf_counter() - began) * 1000.0)
            await asyncio.sleep(pause)
    return result


async def enabled_worker(manager_home: Path, folder: Path) -> tuple[Path, Path, str]:
    """A worker certificate trusted and enabled by the admin (``manager worker add --enable``)."""
    from packfleet.manager import ManagerClient
    from packfleet.pki import CertStore, create_self_signed

    cred = create_self_signed(["idle-bench-worker", "127.0.0.1"])
    store = CertStore(folder, "My")
    store.add(cred)
    async with ManagerClient.from_home(manager_home) as manager:
        await manager.add_worker(cred.cert_pem().decode(), display_name="idle-bench", enable=True)
    return store.cert_path(cred.thumbprint), store.key_path(cred.thumbprint), str(uuid.uuid4())


def run(bench: BenchCluster, *, connections: int, n: int, runs: int) -> Result:
    """Heartbeat and admin latency without, then with, ``connections`` idle connections held open."""
    from packfleet.pki import load_credential

    assert bench.cluster is not None  # noqa: S101 - built by BenchCluster
    cluster = bench.cluster
    result = Result("idle", "ms (heartbeat p99, idle connections open)", catalog=bench.catalog)
    result.notes.update(connections=connections, samples=n, sources=-(-connections // PER_SOURCE))
    master = load_credential(bench.master_home / "master.cer")
    endpoint = f"https://{cluster.host}:{cluster.port}"
    worker = asyncio.run(enabled_worker(bench.master_home, bench.root / "idle"))

    def sample() -> Latencies:
        return asyncio.run(
            measure(endpoint, master.cert_pem().decode(), master.thumbprint, worker, bench.master_home, n)
        )

    for _ in range(runs):
        result.loads.append(load_average())
        quiet = sample()
        with holder(cluster.host, cluster.port, cluster.master_pem(), connections) as latest:
            loaded = sample()
            counters = latest()
        result.add_run(
            percentile(loaded.heartbeat_ms, 99),
            **quiet.summary(""),
            **loaded.summary("_idle"),
            idle_open=float(counters.get("open", 0)),
            idle_closed_by_master=float(counters.get("closed_by_master", 0)),
        )
        result.loads.append(load_average())
    return result
