"""Simulated workers for the scale scenarios: trusted, enabled identities and what they send.

Each simulated agent has its own ECDSA certificate (in the master's Root store, as
:func:`~packfleet.bench._fleet.make_agents` makes them), is enabled in the catalog beforehand (as
``manager worker add --enable`` would; its first heartbeat binds its agent id), and talks to the
master exactly as a worker does: the same :class:`~packfleet.transport.MasterClient`, TLS policy,
messages and routes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from packfleet.bench._cluster import BenchCluster
from packfleet.bench._fleet import _wait_trusted, make_agents
from packfleet.bench._waits import wait_for_file as wait_for_file
from packfleet.bench._waits import wait_online as wait_online
from packfleet.catalog import Catalog
from packfleet.pki import load_credential

#: (certificate file, key file, agent id) of one simulated agent.
Agent = tuple[str, str, str]


def make_enabled_agents(bench: BenchCluster, count: int, folder: Path) -> list[Agent]:
    """``count`` agents the master trusts (Root store, reloaded) and that are enabled on first contact."""
    agents = make_agents(bench, count, folder)
    assert bench.url is not None  # noqa: S101 - set by BenchCluster
    catalog = Catalog.open(bench.url, upgrade=False)
    try:
        for cert, _key, _agent in agents:
            catalog.add_worker_certificate(Path(cert).read_bytes(), actor="bench", enable=True)
    finally:
        catalog.close()
    _wait_trusted(bench, agents[-1])
    return agents


def master_identity(bench: BenchCluster) -> tuple[str, str, str]:
    """``(endpoint, certificate PEM, thumbprint)`` of the certificate the master serves now."""
    assert bench.cluster is not None  # noqa: S101 - built by BenchCluster
    master = load_credential(bench.master_home / "master.cer")
    endpoint = f"https://{bench.cluster.host}:{bench.cluster.port}"
    return endpoint, master.cert_pem().decode(), master.thumbprint


def heartbeat_body(index: int, agent_id: str, accepted: list[str]) -> dict[str, Any]:
    from packfleet import __version__
    from packfleet.protocol import Heartbeat, encode

    body: dict[str, Any] = encode(
        Heartbeat(
            agent_id=agent_id,
            display_name=f"sim-{index}",
            machine_name="sim",
            user_account="bench",
            ips=["127.0.0.1"],
            cpu_percent=1.0,
            memory_free_mb=1024.0,
            running_tasks=0,
            max_tasks=10,
            version=__version__,
            accepted_master_thumbprints=list(accepted),
        )
    )
    return body
