"""``console``: the web console's pages over a large catalog, and its live tail under load.

The catalog of a running master (SQLite by default) gets ``workers`` workers with a heartbeat and
``executions`` queued executions, written in bulk through the catalog facade from this process.
Each page is then fetched ``requests`` times over one keep-alive HTTPS connection with a session
cookie (a plain client, no browser), and its p95 is reported: as the client waited for it, and as
the console's ``Server-Timing`` header says it took to make (``<page>_server_p95_ms``). The live
tail: a simulated worker posts event messages through the worker API at ``rate`` lines/s for
``seconds`` seconds while an SSE client follows the execution; the figures are the lines/s it
received and how late they were.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import ssl
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from packfleet import __version__
from packfleet.bench._cluster import BenchCluster
from packfleet.bench._fleet import _wait_trusted
from packfleet.bench._stats import Result, load_average, percentile
from packfleet.catalog import Catalog, ExecutionRequest, WorkerInfo
from packfleet.console import hash_password
from packfleet.pki import CertStore, Credential, create_self_signed, load_credential

USER = "bench"
PASSWORD = "bench-console-password"  # noqa: S105 - a throwaway user of a throwaway master
CHUNK = 5000


@dataclass
class ConsoleClient:
    """One keep-alive HTTPS connection to the console, with the session cookie after sign-in."""

    host: str
    port: int
    master_pem: str
    cookies: dict[str, str] = field(default_factory=dict)
    conn: http.client.HTTPSConnection | None = None
    #: The console's own time for the last answer (its Server-Timing header), in milliseconds.
    server_ms: float | None = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self.conn is None:
            context = ssl.create_default_context(cadata=self.master_pem)
            self.conn = http.client.HTTPSConnection(self.host, self.port, context=context, timeout=120)
        return self.conn

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        conn = self._connection()
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
        timing = re.search(r"app;dur=([0-9.]+)", response.headers.get("Server-Timing") or "")
        self.server_ms = float(timing.group(1)) if timing else None
        for raw in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = raw.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response.status, text

    def sign_in(self) -> None:
        _, page = self.request("GET", "/login")
        found = re.search(r'name="csrf-token" content="([^"]*)"', page)
        if found is None:
            raise RuntimeError("the console's sign-in page carries no CSRF token")
        form = {"csrf_token": found.group(1), "username": USER, "password": PASSWORD, "next": "/"}
        status, text = self.request("POST", "/login", form)
        if status != 303:
            raise RuntimeError(f"signing in to the console answered {status}: {text[:300]}")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def fill(catalog: Catalog, workers: int, executions: int) -> list[str]:
    """``workers`` workers (nine in ten enabled, each with a fresh heartbeat) and ``executions``
    queued executions of default/bench/noop; the agent ids."""
    agents = []
    for i in range(workers):
        pem = create_self_signed([f"console-{i}"], days=365).cert_pem()
        cert = catalog.add_worker_certificate(pem, actor="bench", enable=i % 10 != 0)
        agent_id = str(uuid.uuid4())
        info = WorkerInfo(
            agent_id, f"console-{i}", f"host-{i}", "bench", ("127.0.0.1",), 3.0, 4096.0, i % 4, __version__, 4
        )
        catalog.worker_heartbeat(cert.thumbprint, info)
        agents.append(agent_id)
    request = ExecutionRequest("default", "bench", "noop")
    for first in range(0, executions, CHUNK):
        catalog.create_executions([request] * min(CHUNK, executions - first), actor="bench")
    catalog.add_user(USER, "admin", hash_password(PASSWORD), actor="bench")
    return agents


def pages(agent_id: str, execution_id: int) -> dict[str, str]:
    return {
        "dashboard": "/",
        "workers": "/workers",
        "workers_search": "/workers?q=console-99&state=enabled",
        "workers_last_page": "/workers?page=40&sort=heartbeat",
        "worker": f"/workers/{agent_id}",
        "executions": "/executions",
        "executions_page_2000": "/executions?page=2000",
        "executions_filtered": "/executions?status=5&package=noop",
        "execution": f"/executions/{execution_id}",
        "new_execution": "/executions/new?target=default/bench/noop",
        "certificates": "/certificates",
        "audit": "/audit",
    }


def time_pages(
    client: ConsoleClient, paths: dict[str, str], requests: int
) -> tuple[dict[str, float], dict[str, float]]:
    """p95 milliseconds of each page over ``requests`` fetches (after one warm-up): as the client
    waited for it, and as the console's Server-Timing header says it took to make."""
    p95: dict[str, float] = {}
    server_p95: dict[str, float] = {}
    for name, path in paths.items():
        status, text = client.request("GET", path)
        if status != 200:
            raise RuntimeError(f"console page {path} answered {status}: {text[:300]}")
        samples = []
        server = []
        for _ in range(requests):
            began = time.perf_counter()
            client.request("GET", path)
            samples.append((time.perf_counter() - began) * 1000.0)
            if client.server_ms is not None:
                server.append(client.server_ms)
        p95[name] = percentile(samples, 95)
        if server:
            server_p95[name] = percentile(server, 95)
    return p95, server_p95


# --- the live tail -------------------------------------------------------------------------------


def _tail_agent(bench: BenchCluster, catalog: Catalog) -> tuple[str, str, str]:
    """A worker certificate trusted by the master and enabled on first contact: (cert, key, agent)."""
    folder = bench.root / "console-tail"
    cred = create_self_signed(["console-tail", "127.0.0.1"])
    mine = CertStore(folder, "My")
    mine.add(cred)
    public = Credential(cred.certificate)
    CertStore(bench.master_home, "Root").add(public)
    catalog.add_worker_certificate(public.cert_pem(), actor="bench", enable=True)
    os.kill(bench.master_pid(), signal.SIGHUP)  # reload trust: the Root store changed
    agent = (str(mine.cert_path(cred.thumbprint)), str(mine.key_path(cred.thumbprint)), str(uuid.uuid4()))
    _wait_trusted(bench, agent)
    return agent


async def _produce(
    endpoint: str,
    master: Credential,
    agent: tuple[str, str, str],
    lease: tuple[int, int, int],
    rate: int,
    seconds: float,
) -> int:
    """Heartbeat once (registering the agent), then post ``rate`` lines/s in tenths of a second."""
    from packfleet.protocol import EventBatch, EventMessage, Heartbeat, encode, routes
    from packfleet.transport import MasterClient, client_context

    context = client_context(Path(agent[0]), Path(agent[1]), master.cert_pem().decode())
    execution_id, task_id, attempt = lease
    sent = 0
    async with MasterClient(
        endpoint, context, role="worker", pins=[master.thumbprint], connections=1
    ) as client:
        beat = Heartbeat(
            agent_id=agent[2],
            display_name="console-tail",
            machine_name="bench",
            user_account="bench",
            ips=["127.0.0.1"],
            cpu_percent=1.0,
            memory_free_mb=1024.0,
            running_tasks=1,
            max_tasks=10,
            version=__version__,
        )
        await client.request("POST", routes.WORKER_HEARTBEAT, json_body=encode(beat), timeout=60)
        per_tick = max(1, rate // 10)
        began = time.monotonic()
        ticks = int(seconds * 10)
        for tick in range(ticks):
            await asyncio.sleep(max(0.0, began + tick / 10 - time.monotonic()))
            now = datetime.now(UTC).isoformat()
            events = [
                EventMessage(
                    execution_id,
                    task_id,
                    attempt,
                    sent + i + 1,
                    now,
                    20,
                    "stdout",
                    f"t={time.time():.6f} n={sent + i}",
                )
                for i in range(per_tick)
            ]
            await client.request(
                "POST", routes.WORKER_EVENTS, json_body=encode(EventBatch(agent[2], events)), timeout=60
            )
            sent += per_tick
    return sent


def _follow(
    client: ConsoleClient,
    execution_id: int,
    expected: list[int],
    arrivals: list[tuple[float, float, int]],
    stop: threading.Event,
) -> None:
    """Read the SSE stream; for each line, (arrival time, the producer's send time, its number)."""
    context = ssl.create_default_context(cadata=client.master_pem)
    conn = http.client.HTTPSConnection(client.host, client.port, context=context, timeout=30)
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    conn.request(
        "GET", f"/executions/{execution_id}/events", headers={"Cookie": cookie, "Accept": "text/event-stream"}
    )
    response = conn.getresponse()
    try:
        while not stop.is_set() and len(arrivals) < expected[0]:
            line = response.readline()
            if not line:
                break
            if line.startswith(b"data: {"):
                message = json.loads(line[6:])["message"]
                if message.startswith("t="):
                    sent_at, number = message.split()
                    arrivals.append((time.time(), float(sent_at[2:]), int(number[2:])))
    finally:
        conn.close()


@dataclass(frozen=True)
class TailSetup:
    endpoint: str
    master: Credential
    agent: tuple[str, str, str]
    lease: tuple[int, int, int]


def prepare_tail(bench: BenchCluster, catalog: Catalog) -> TailSetup:
    """An agent that leased its own execution, made before the bulk fill so the lease finds it first."""
    assert bench.cluster is not None  # noqa: S101 - built by BenchCluster
    agent = _tail_agent(bench, catalog)
    master = load_credential(bench.master_home / "master.cer")
    endpoint = f"https://{bench.cluster.host}:{bench.cluster.port}"
    # Register the agent (first heartbeat) before leasing: the lease needs a known, enabled worker.
    asyncio.run(_produce(endpoint, master, agent, (0, 0, 0), 10, 0))
    execution = catalog.create_execution(
        "default", "bench", "noop", parameters={}, actor="bench", allowed_workers=(agent[2],)
    )
    leased = [t for t in catalog.lease_tasks(agent[2], 10, 3600) if t.execution_id == execution.execution_id]
    if not leased:
        raise RuntimeError("the tail agent could not lease its execution")
    return TailSetup(endpoint, master, agent, (leased[0].execution_id, leased[0].task_id, leased[0].attempt))


def tail(setup: TailSetup, client: ConsoleClient, *, rate: int, seconds: float) -> dict[str, float]:
    expected = [int(max(1, rate // 10) * int(seconds * 10))]
    arrivals: list[tuple[float, float, int]] = []
    stop = threading.Event()
    reader = threading.Thread(
        target=_follow, args=(client, setup.lease[0], expected, arrivals, stop), daemon=True
    )
    reader.start()
    time.sleep(1.0)  # the stream is open before the first line
    sent = asyncio.run(_produce(setup.endpoint, setup.master, setup.agent, setup.lease, rate, seconds))
    reader.join(timeout=seconds + 60)
    stop.set()
    if not arrivals:
        raise RuntimeError("the SSE client received no line")
    delays = [(arrived - sent_at) * 1000.0 for arrived, sent_at, _ in arrivals]
    span = arrivals[-1][0] - arrivals[0][1]
    return {
        "sent": float(sent),
        "received": float(len(arrivals)),
        "distinct": float(len({number for _, _, number in arrivals})),
        "lines_per_s": len(arrivals) / span if span > 0 else 0.0,
        "delay_p50_ms": percentile(delays, 50),
        "delay_p99_ms": percentile(delays, 99),
    }


def run(
    bench: BenchCluster,
    *,
    workers: int,
    executions: int,
    requests: int,
    rate: int,
    seconds: float,
    runs: int,
) -> list[Result]:
    """Two results: ``console`` (the slowest page's p95, every page's p95 as a metric) and
    ``console_tail`` (lines/s the SSE client received)."""
    assert bench.cluster is not None  # noqa: S101 - built by BenchCluster
    pages_result = Result("console", "ms (slowest page p95)", catalog=bench.catalog)
    tail_result = Result("console_tail", "lines/s received", catalog=bench.catalog)
    pages_result.notes.update(workers=workers, executions=executions, requests=requests)
    tail_result.notes.update(rate=rate, seconds=seconds)
    assert bench.url is not None  # noqa: S101 - set by BenchCluster
    catalog = Catalog.open(bench.url, upgrade=False)
    try:
        setups = [prepare_tail(bench, catalog) for _ in range(runs)]
        began = time.monotonic()
        agents = fill(catalog, workers, executions)
        pages_result.notes["fill_s"] = round(time.monotonic() - began, 1)
        if catalog.dialect == "postgresql":
            # The statistics autovacuum gathers soon after a bulk load, gathered now: without them
            # PostgreSQL plans the first minutes of a freshly filled catalog blind.
            engine = create_engine(bench.url)
            try:
                with engine.connect() as conn:
                    conn.execute(text("ANALYZE"))
                    conn.commit()
            finally:
                engine.dispose()
        newest = catalog.list_executions(limit=1)[0].execution_id
        master_pem = load_credential(bench.master_home / "master.cer").cert_pem().decode()
        client = ConsoleClient(bench.cluster.host, bench.cluster.console_port, master_pem)
        try:
            client.sign_in()
            for _ in range(runs):
                pages_result.loads.append(load_average())
                p95, server = time_pages(client, pages(agents[len(agents) // 2], newest), requests)
                metrics = {f"{k}_p95_ms": v for k, v in p95.items()}
                metrics |= {f"{k}_server_p95_ms": v for k, v in server.items()}
                pages_result.add_run(max(p95.values()), **metrics)
                pages_result.loads.append(load_average())
            for setup in setups:
                tail_result.loads.append(load_average())
                figures = tail(setup, client, rate=rate, seconds=seconds)
                tail_result.add_run(figures.pop("lines_per_s"), **figures)
                tail_result.loads.append(load_average())
        finally:
            client.close()
    finally:
        catalog.close()
    return [pages_result, tail_result]
