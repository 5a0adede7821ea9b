"""Joining with a token end to end: the master and workers as processes, every step a ``packfleet`` command.

One master serves the module; each test's workers join it with ``worker join TOKEN`` only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from packfleet.localcluster import LocalCluster
from packfleet.pki import CertStore
from packfleet.protocol import parse_join_token

from .conftest import EXAMPLE, run, wait_finished

pytestmark = pytest.mark.e2e

SUCCEEDED = 7


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A master with the sample project deployed, and no worker yet."""
    with LocalCluster(tmp_path_factory.mktemp("join")) as cluster:
        cluster.init_master()
        cluster.start_master()
        cluster.cli(cluster.master.home, "deploy", str(EXAMPLE), as_json=True)
        yield cluster


def token(cluster: LocalCluster, *args: str) -> str:
    created = cluster.cli(cluster.master.home, "manager", "token", "create", *args, as_json=True)
    assert created["uses"] >= 1 and created["token_id"] in created["token"]
    return str(created["token"])


def refused(cluster: LocalCluster, home: Path, text: str) -> str:
    """Run ``worker join`` expecting a refusal; return what it printed."""
    done = cluster.cli(home, "worker", "join", text, "--name", home.name, "--ip", "127.0.0.9", check=False)
    assert done.returncode != 0
    return str(done.stderr.decode() + done.stdout.decode())


def run_on(cluster: LocalCluster, name: str) -> None:
    record = run(cluster, "default/etl/load", "--worker", cluster.agent_id(name))
    done = wait_finished(cluster, record["execution_id"])
    assert done["status"] == SUCCEEDED, done


def test_a_home_made_only_by_worker_join_runs_a_package(master: LocalCluster) -> None:
    master.join_worker("joiner", "127.0.0.4", token(master, "--enable"))
    master.start_worker("joiner")
    master.wait_for_workers(["joiner"])
    run_on(master, "joiner")


def test_used_expired_revoked_and_mispinned_tokens_are_refused(master: LocalCluster, tmp_path: Path) -> None:
    used = token(master)
    master.join_worker("once", "127.0.0.5", used)
    assert "used up" in refused(master, tmp_path / "second", used)

    revoked = token(master)
    master.cli(master.master.home, "manager", "token", "revoke", parse_join_token(revoked).token_id)
    assert "revoked" in refused(master, tmp_path / "third", revoked)

    expired = token(master, "--ttl", "1s")
    time.sleep(1.5)  # the master's own clock has to pass the expiry; one second is the shortest TTL
    assert "expired" in refused(master, tmp_path / "fourth", expired)

    good = parse_join_token(token(master))
    mispinned = replace(good, master_sha256="00" * 32).encode()
    said = refused(master, tmp_path / "fifth", mispinned)
    assert "nothing was sent" in said and "00" * 32 in said
    assert not (tmp_path / "fifth").exists()
    assert "packfleet manager token create" in refused(master, tmp_path / "sixth", used)


def test_connect_token_readmits_a_worker_with_a_new_certificate(master: LocalCluster) -> None:
    if "joiner" not in master.workers:
        master.join_worker("joiner", "127.0.0.4", token(master, "--enable"))
    node = master.workers["joiner"]
    old = node.info["thumbprint"]
    agent = master.agent_id("joiner")
    master.stop(node)
    CertStore(node.home, "My").delete(old)  # as if it had expired: the worker needs a new certificate
    created = master.cli(
        master.master.home, "manager", "worker", "connect", "joiner", "--token", as_json=True
    )
    assert created["agent_id"] == agent
    master.join_worker("joiner", "127.0.0.4", created["token"])
    assert node.info["agent_id"] == agent and node.info["thumbprint"] != old
    worker = master.cli(master.master.home, "manager", "worker", "show", agent, as_json=True)
    states = {c["thumbprint"]: c["status"] for c in worker["certificates"]}
    assert states[old] == "retired" and states[node.info["thumbprint"]] == "active"
    assert worker["is_enabled"] is True
    master.start_worker("joiner")
    run_on(master, "joiner")
