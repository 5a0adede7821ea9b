"""bench-peers' harness at a tiny N, so it cannot rot: every system starts over mutual TLS, runs,
and is measured; the table names the best peer and every ratio.

Real parts throughout: packfleet's bench cluster (master and two workers), a private redis-server
with TLS and a Celery prefork worker, a Dask scheduler and two workers.
"""

from __future__ import annotations

import json
import math
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from packfleet.bench import _main
from packfleet.bench._celery_peer import CeleryPeer
from packfleet.bench._dask_peer import DaskPeer
from packfleet.bench._peer_tls import PeerTls, make_peer_tls
from packfleet.errors import ClusterError

pytestmark = pytest.mark.e2e


@pytest.fixture
def tls(tmp_path: Path) -> PeerTls:
    return make_peer_tls(tmp_path / "tls")


@pytest.fixture
def celery(tmp_path: Path, tls: PeerTls) -> Iterator[CeleryPeer]:
    with CeleryPeer(tmp_path / "celery", tls) as peer:
        yield peer


def test_the_private_redis_refuses_a_client_without_a_certificate(celery: CeleryPeer, tls: PeerTls) -> None:
    import redis

    from packfleet.bench import _peer_tasks

    url = _peer_tasks.app.conf.broker_url
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    anonymous = redis.Redis(
        host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(tls.ca), ssl_cert_reqs=ssl.CERT_REQUIRED
    )
    with pytest.raises(redis.exceptions.ConnectionError):
        anonymous.ping()
    anonymous.close()
    trusted = redis.Redis(
        host="127.0.0.1",
        port=port,
        ssl=True,
        ssl_ca_certs=str(tls.ca),
        ssl_certfile=str(tls.client_cert),
        ssl_keyfile=str(tls.client_key),
    )
    assert trusted.ping()
    trusted.close()
    assert celery.roundtrips(2)[0] > 0


def test_dask_refuses_a_client_without_a_certificate(tmp_path: Path, tls: PeerTls) -> None:
    with DaskPeer(tmp_path / "dask", tls) as dask:
        port = int(dask.address.rsplit(":", 1)[1])
        context = ssl.create_default_context(cafile=str(tls.ca))
        # TLS 1.3: the server's "certificate required" alert arrives at the client's first read. A
        # scheduler that took the connection would wait for a message instead (a timeout: no pass).
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
            pytest.raises((ssl.SSLError, ConnectionResetError)),
        ):
            conn.recv(1)
        rate, cpu_ms = dask.throughput(10)
        assert rate > 0 and cpu_ms > 0


def test_a_dask_start_whose_client_times_out_is_tried_again_on_new_nodes(
    tmp_path: Path, tls: PeerTls, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = DaskPeer.client
    first: list[int] = []

    def client(self: DaskPeer, timeout: float = 30.0) -> Any:
        if not first:  # the first start's scheduler "does not answer"
            first.extend(self.pids())
            raise TimeoutError()
        return real(self, timeout)

    monkeypatch.setattr(DaskPeer, "client", client)
    with DaskPeer(tmp_path / "dask", tls) as dask:
        assert len(first) == 3 and not any(psutil.pid_exists(pid) for pid in first)
        assert set(dask.pids()).isdisjoint(first)
        rate, _cpu_ms = dask.throughput(5)
        assert rate > 0
    assert "dask: no scheduler with 2 workers (TimeoutError()); starting it again" in caplog.text


def test_a_dask_that_fails_to_start_twice_is_an_error_with_every_nodes_log(
    tmp_path: Path, tls: PeerTls, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []

    def client(self: DaskPeer, timeout: float = 30.0) -> Any:
        started.extend(self.pids())
        raise TimeoutError()

    monkeypatch.setattr(DaskPeer, "client", client)
    with (
        pytest.raises(ClusterError, match="dask did not start in 2 tries") as failed,
        DaskPeer(tmp_path / "dask", tls),
    ):
        pass
    for name in ("dask-scheduler", "dask-worker1", "dask-worker2"):
        assert f"--- {name}:" in str(failed.value)
    assert len(started) == 6 and not any(psutil.pid_exists(pid) for pid in started)


def test_bench_peers_prints_every_figure_and_ratio() -> None:
    lines: list[str] = []
    results = _main.main(
        ["--scenario", "peers", "--n", "20", "--fresh-n", "20", "--latency-n", "5", "--runs", "1"],
        emit=lines.append,
    )
    systems = [r.notes["system"] for r in results]
    assert systems == [
        "packfleet pooled",
        "celery",
        "dask",
        "packfleet fresh",
        "packfleet pooled PostgreSQL",
    ]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r["system"] for r in records] == systems
    for record in records:
        assert record["runs"] == 1 and record["median"] > 0
        for metric in ("cpu_ms_per_task", "roundtrip_p50_ms", "roundtrip_p99_ms"):
            value = record["metrics"][metric]["median"]
            assert value > 0 and not math.isnan(value), (record["system"], metric)
    for record in records:
        if record["system"].startswith("packfleet"):
            assert set(record["vs_best_peer"]) == {"tasks_per_s", "cpu_ms_per_task", "roundtrip_p50"}
    text = "\n".join(lines)
    assert "best peer:" in text
    assert text.count("target packfleet") == 6
    assert "target packfleet pooled PostgreSQL tasks_per_s >= 1.5x" in text
