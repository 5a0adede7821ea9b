"""Celery 5 on Redis, both over mutual TLS: the first peer of ``bench-peers``.

A private ``redis-server`` (never the system's) listens on a free loopback port with TLS only
(``--port 0``), requires a client certificate (``--tls-auth-clients yes``) and keeps nothing on disk.
One Celery worker runs the prefork pool with two processes (``-c 2``, one per core), with gossip,
mingle and worker heartbeats off, as a tuned production Redis deployment runs. Redis is the
broker and the result backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from packfleet.bench._cpu import CpuMeter
from packfleet.bench._peer_tls import PeerTls
from packfleet.bench._ports import free_port
from packfleet.bench._services import Service
from packfleet.errors import ClusterError

log = logging.getLogger("packfleet.bench")


class MissedResults(Exception):
    """Celery's native join waited past its timeout while every result was stored already."""


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise ClusterError(
            "bench-peers needs redis-server for the Celery peer", fix="apt-get install redis-server"
        )
    return found


class CeleryPeer:
    name = "celery"

    def __init__(self, folder: Path, tls: PeerTls) -> None:
        self.folder = folder
        self.tls = tls
        self.services: list[Service] = []
        self._tasks: ModuleType | None = None

    def __enter__(self) -> CeleryPeer:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        tls = self.tls
        redis = Service(
            "redis",
            [
                redis_server(),
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--tls-port",
                str(port),
                "--tls-cert-file",
                str(tls.server_cert),
                "--tls-key-file",
                str(tls.server_key),
                "--tls-ca-cert-file",
                str(tls.ca),
                "--tls-auth-clients",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],  # fmt: skip
            folder=self.folder,
            env=dict(os.environ),
        )
        self.services.append(redis)
        from packfleet.bench import _peer_tasks

        url = f"rediss://127.0.0.1:{port}/0"
        env = {**os.environ, _peer_tasks.REDIS_URL_ENV: url, _peer_tasks.TLS_DIR_ENV: str(tls.folder)}
        # The bench's own Celery client reads the same variables: reload the module with them set.
        os.environ.update({k: env[k] for k in (_peer_tasks.REDIS_URL_ENV, _peer_tasks.TLS_DIR_ENV)})
        import importlib

        self._tasks = importlib.reload(_peer_tasks)
        redis.wait_ready(self._redis_up)
        worker = Service(
            "celery-worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "packfleet.bench._peer_tasks",
                "worker",
                "-P",
                "prefork",
                "-c",
                "2",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "WARNING",
            ],  # fmt: skip
            folder=self.folder,
            env=env,
        )
        self.services.append(worker)
        first = self._tasks.celery_noop.delay()
        worker.wait_ready(first.ready)
        first.get(timeout=60)  # a prefork worker on a busy machine can take this long to warm

    def _redis_up(self) -> bool:
        assert self._tasks is not None  # noqa: S101 - set before the probe runs
        try:
            with self._tasks.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1)
            return True
        except Exception:  # noqa: BLE001 - not listening yet, or mid-start
            return False

    def close(self) -> None:
        if self._tasks is not None:
            with contextlib.suppress(Exception):
                self._tasks.app.close()
        for service in reversed(self.services):
            service.stop()
        self.services.clear()

    def pids(self) -> list[int]:
        return [service.pid for service in self.services]

    def throughput(self, n: int) -> tuple[float, float]:
        """N no-ops sent as one group (as packfleet's one bulk submit), timed until every result is read.

        Measured again, once, when Celery's native join missed results that were stored (see
        :func:`join`): that wait is a client's hang, not Celery's throughput.
        """
        try:
            return self._throughput(n)
        except MissedResults as exc:
            log.warning("celery: %s; measuring this round again", exc)
            return self._throughput(n)

    def _throughput(self, n: int) -> tuple[float, float]:
        assert self._tasks is not None  # noqa: S101 - started
        from celery import group

        noop: Any = self._tasks.celery_noop
        meter = CpuMeter(self.pids())
        meter.start()
        started = time.perf_counter()
        result = group(noop.s() for _ in range(n)).apply_async()
        join(result, timeout=max(60.0, n / 20), worker_log=self.services[-1].log_tail)
        elapsed = time.perf_counter() - started
        cpu = meter.stop()
        result.forget()
        return n / elapsed, cpu * 1000.0 / n

    def roundtrips(self, n: int) -> list[float]:
        """``apply_async().get()`` one after another: ms from the send to the answer in hand."""
        assert self._tasks is not None  # noqa: S101 - started
        noop: Any = self._tasks.celery_noop
        trips = []
        for _ in range(n):
            sent = time.perf_counter()
            noop.apply_async().get(timeout=30)
            trips.append((time.perf_counter() - sent) * 1000.0)
        return trips


def join(result: Any, *, timeout: float, worker_log: Callable[[], str]) -> None:
    """Wait for every result of a Celery ``GroupResult``, through its native join (Redis pub/sub).

    That join can miss results already stored and wait on (celery/celery#5359; seen once here, in
    ``make test`` under load): when it times out with every result stored, this raises
    :class:`MissedResults`; with some missing, Celery itself did not run them, and this says so.
    """
    from celery.exceptions import TimeoutError as CeleryTimeout

    try:
        result.get(timeout=timeout)
    except CeleryTimeout as exc:
        done, total = result.completed_count(), len(result)
        if done == total:
            raise MissedResults(
                f"its join waited {timeout:.0f} s for {total} results stored already"
            ) from exc
        raise ClusterError(
            f"Celery ran {done} of {total} no-op tasks in {timeout:.0f} s; its worker's log ends:\n"
            + worker_log()
        ) from exc
