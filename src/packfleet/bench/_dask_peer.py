"""Dask distributed over mutual TLS: the second peer of ``bench-peers``.

One scheduler and two workers (one thread each, each under its nanny, as ``dask worker`` starts
them), all on ``tls://`` loopback addresses; every node and the client present a certificate and
require the other side's (:class:`distributed.security.Security` with a CA file). Dask keeps tasks
in memory only and runs them in the workers' own threads: no durability, no process isolation.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from packfleet.bench._cpu import CpuMeter
from packfleet.bench._peer_tls import PeerTls
from packfleet.bench._ports import free_port
from packfleet.bench._services import START_TIMEOUT, Service
from packfleet.errors import ClusterError

log = logging.getLogger("packfleet.bench")

WORKERS = 2
#: Starts of the scheduler and workers tried before the peer is given up.
START_TRIES = 2


class DaskPeer:
    name = "dask"

    def __init__(self, folder: Path, tls: PeerTls) -> None:
        self.folder = folder
        self.tls = tls
        self.services: list[Service] = []
        self.address = ""

    def __enter__(self) -> DaskPeer:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _node_tls(self) -> list[str]:
        tls = self.tls
        files = {"--tls-ca-file": tls.ca, "--tls-cert": tls.server_cert, "--tls-key": tls.server_key}
        return [part for option, path in files.items() for part in (option, str(path))]

    def _start(self) -> None:
        """Start the nodes and wait for both workers; on a new port once more if that fails.

        Under ``make test``'s load a client once connected to a scheduler that then did not answer
        its first request for the whole start timeout. The nodes are stopped and started again, with
        a warning naming what failed; a second failure is raised with every node's log.
        """
        for attempt in range(1, START_TRIES + 1):
            try:
                self._start_nodes(attempt)
                with self.client(timeout=START_TIMEOUT) as client:
                    client.wait_for_workers(WORKERS, timeout=START_TIMEOUT)
                return
            except OSError as exc:  # TimeoutError included: Dask's connect and wait raise them
                logs = "\n".join(f"--- {s.name}:\n{s.log_tail()}" for s in self.services)
                self.close()
                if attempt == START_TRIES:
                    raise ClusterError(
                        f"dask did not start in {START_TRIES} tries ({exc!r}); its logs:\n{logs}"
                    ) from exc
                log.warning("dask: no scheduler with %d workers (%r); starting it again", WORKERS, exc)

    def _start_nodes(self, attempt: int) -> None:
        folder = self.folder / f"start{attempt}"
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.address = f"tls://127.0.0.1:{port}"
        env = dict(os.environ)
        scheduler = Service(
            "dask-scheduler",
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--protocol",
                "tls",
                "--no-dashboard",
                *self._node_tls(),
            ],  # fmt: skip
            folder=folder,
            env=env,
        )
        self.services.append(scheduler)
        for i in range(WORKERS):
            self.services.append(
                Service(
                    f"dask-worker{i + 1}",
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        self.address,
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--no-dashboard",
                        "--local-directory",
                        str(folder / f"worker{i + 1}"),
                        *self._node_tls(),
                    ],  # fmt: skip
                    folder=folder,
                    env=env,
                )
            )

    def client(self, timeout: float = 30.0) -> Any:
        from distributed import Client
        from distributed.security import Security

        security = Security(
            tls_ca_file=str(self.tls.ca),
            tls_client_cert=str(self.tls.client_cert),
            tls_client_key=str(self.tls.client_key),
            require_encryption=True,
        )
        return Client(self.address, security=security, timeout=timeout)

    def close(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()

    def pids(self) -> list[int]:
        return [service.pid for service in self.services]

    def throughput(self, n: int) -> tuple[float, float]:
        """N no-ops submitted with one ``client.map``; timed until every one is finished."""
        from distributed import wait

        from packfleet.bench._peer_tasks import dask_noop

        with self.client() as client:
            meter = CpuMeter(self.pids())
            meter.start()
            started = time.perf_counter()
            futures = client.map(dask_noop, range(n), pure=False)
            wait(futures, timeout=max(120.0, n / 20))
            elapsed = time.perf_counter() - started
            cpu = meter.stop()
            del futures
        return n / elapsed, cpu * 1000.0 / n

    def roundtrips(self, n: int) -> list[float]:
        """``client.submit().result()`` one after another: ms from the submit to the result in hand."""
        from packfleet.bench._peer_tasks import dask_noop

        trips = []
        with self.client() as client:
            for i in range(n):
                sent = time.perf_counter()
                client.submit(dask_noop, i, pure=False).result(timeout=30)
                trips.append((time.perf_counter() - sent) * 1000.0)
        return trips
