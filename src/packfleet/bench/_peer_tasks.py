"""The peers' no-op tasks: what ``bench-peers`` runs on Celery and on Dask.

Imported by the Celery worker (``celery -A packfleet.bench._peer_tasks worker``), by the Dask workers
(the function is pickled by reference) and by the bench. The Celery app reads its broker and TLS
files from the environment :class:`~packfleet.bench._celery_peer.CeleryPeer` sets, so the worker
and the bench talk to the same private Redis.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from celery import Celery

#: Set by CeleryPeer for itself and its worker: ``rediss://127.0.0.1:PORT/0``.
REDIS_URL_ENV = "PACKFLEET_PEER_REDIS_URL"
#: The folder of :class:`~packfleet.bench._peer_tls.PeerTls` (ca.pem, client.crt, client.key).
TLS_DIR_ENV = "PACKFLEET_PEER_TLS_DIR"


def _tls() -> dict[str, Any]:
    folder = os.environ.get(TLS_DIR_ENV, "")
    return {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": os.path.join(folder, "ca.pem"),
        "ssl_certfile": os.path.join(folder, "client.crt"),
        "ssl_keyfile": os.path.join(folder, "client.key"),
    }


_url = os.environ.get(REDIS_URL_ENV, "rediss://127.0.0.1:6380/0")
app = Celery("packfleet_bench_peer", broker=_url, backend=_url)
app.conf.update(
    broker_use_ssl=_tls(),
    redis_backend_use_ssl=_tls(),
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")  # type: ignore[untyped-decorator]
def celery_noop() -> None:
    """What a trivial task costs on Celery: nothing but the call."""
    return None


def dask_noop(i: int) -> None:
    """What a trivial task costs on Dask (``i`` makes each call its own task)."""
    return None
