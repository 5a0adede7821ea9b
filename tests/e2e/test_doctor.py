"""The seed's manual certificate procedures on a running cluster, and ``doctor`` reporting each
misconfiguration they can leave behind; ``manager certs`` and ``/metrics`` on the same cluster."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import wait_until
from packfleet.config import load_worker_settings
from packfleet.localcluster import LocalCluster
from packfleet.manager import ManagerClient
from packfleet.pki import create_self_signed

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("doctor")
    with LocalCluster(root) as cluster:
        cluster.init_master()
        cluster.start_master()
        cluster.add_worker("worker1", "127.0.0.2")
        cluster.start_worker("worker1")
        cluster.wait_for_workers(["worker1"])
        yield cluster


def doctor(cluster: LocalCluster, home: Path) -> dict[str, dict[str, Any]]:
    """Findings that are not ok, by check."""
    done = cluster.cli(home, "doctor", "--json", check=False)
    import json

    findings = json.loads(done.stdout)
    assert (done.returncode == 1) == any(f["severity"] == "error" for f in findings)
    return {f["check"]: f for f in findings if f["severity"] != "ok"}


def pk(cluster: LocalCluster, home: Path, *args: str) -> Any:
    return cluster.cli(home, *args, as_json=True)


def test_change_the_worker_certificate(one: LocalCluster) -> None:
    m, w = one.master.home, one.workers["worker1"].home
    assert doctor(one, w) == {}
    # 1. MakeCert -n "CN=worker1;CN=127.0.0.2" -ss My   2. into the worker's own Root too
    new = pk(
        one,
        w,
        "cert",
        "create",
        "-n",
        "CN=worker1;CN=127.0.0.2",
        "--store",
        "My",
        "--out",
        str(w / "new.cer"),
    )
    thumbprint = new["thumbprint"]
    pk(one, w, "cert", "import", str(w / "new.cer"), "--store", "Root")
    # 4. WorkerHttpsCertThumbprint; step 5 (the master's Root) not done yet
    pk(one, w, "settings", "set", "worker", "WorkerHttpsCertThumbprint", thumbprint)
    found = doctor(one, w)
    assert found["worker.tls"]["severity"] == "error"
    assert thumbprint in found["worker.tls"]["message"]
    # 5. install the client certificate into the master's Root store: the master notices the edit
    pk(one, m, "cert", "import", str(w / "new.cer"), "--store", "Root")
    wait_until(
        lambda: set(doctor(one, w)) == {"worker.master_view"},
        timeout=20,
        what="the master to trust the new worker cert",
    )
    # Trusted, but no worker's until the worker sends a heartbeat with it (step 6): doctor says so.
    view = doctor(one, w)["worker.master_view"]
    assert "no worker has it yet" in view["message"] and view["fix"].startswith("packfleet worker run")
    audit = pk(one, m, "manager", "audit", "--action", "store.change")
    assert any(thumbprint in row["details"].get("added", []) for row in audit)
    # 6. restart the worker service: the master refuses to bind the new thumbprint to the existing
    # AgentId by itself (a trusted certificate must not take a worker over); doctor on both sides
    # names the command that confirms it
    one.stop(one.workers["worker1"])
    one.start_worker("worker1")
    agent_id = load_worker_settings(w).agent_id
    confirm = f"packfleet manager worker connect {agent_id} --cert {thumbprint}"
    refused = wait_until(
        lambda: doctor(one, w).get("worker.binding"), timeout=30, what="the worker to be refused"
    )
    assert refused["severity"] == "error" and confirm in refused["fix"]
    assert thumbprint in refused["message"] and agent_id in refused["message"]
    on_master = doctor(one, m)["master.bindings"]
    assert on_master["severity"] == "warning" and confirm in on_master["fix"]
    audit = pk(one, m, "manager", "audit", "--action", "certificate.bind-refused")
    assert any(row["target"] == thumbprint and row["details"]["agent_id"] == agent_id for row in audit)
    # 7. the one confirmation the procedure now needs
    pk(one, m, "manager", "worker", "connect", agent_id, "--cert", thumbprint)

    def bound() -> bool:
        [row] = pk(one, m, "manager", "worker", "list")
        return any(c["thumbprint"] == thumbprint and c["status"] == "active" for c in row["certificates"])

    wait_until(bound, timeout=30, what="the new worker certificate to be bound")
    wait_until(lambda: doctor(one, w) == {}, timeout=30, what="doctor on the worker to be content")


def test_change_the_master_certificate(one: LocalCluster) -> None:
    m, w = one.master.home, one.workers["worker1"].home
    old = pk(one, m, "settings", "show", "master")["settings"]["SSLCertThumbprint"]
    # 1. MakeCert -n CN=127.0.0.1 -r -ss Root
    new = pk(one, m, "cert", "create", "-n", f"CN={one.host}", "--store", "Root", "--out", str(m / "new.cer"))
    thumbprint = new["thumbprint"]
    # 2. netsh http delete sslcert / add sslcert with the original appid; 3. not done yet
    removed = pk(one, m, "binding", "delete", "--port", str(one.port))
    pk(one, m, "binding", "add", "--port", str(one.port), "--certhash", thumbprint, "--store", "Root",
       "--appid", removed["appid"])  # fmt: skip
    found = doctor(one, m)
    assert thumbprint in found["master.binding"]["message"] and old in found["master.binding"]["message"]
    assert found["master.binding"]["fix"].startswith(
        f"packfleet settings set master SSLCertThumbprint {thumbprint}"
    )
    # 3. SSLCertThumbprint: the master reloads and serves the new certificate
    pk(one, m, "settings", "set", "master", "SSLCertThumbprint", thumbprint)
    wait_until(lambda: "master.serving" not in doctor(one, m), timeout=20, what="the master to serve it")
    # The worker has not done step 5: doctor names the thumbprint mismatch
    found = doctor(one, w)
    assert "thumbprint mismatch" in found["worker.master-served"]["message"]
    assert thumbprint in found["worker.master-served"]["fix"]
    # 5.2 done before 5.1: the pin names a certificate that is not in Root
    pk(one, w, "settings", "set", "worker", "MasterHttpsCertThumbprint", thumbprint)
    found = doctor(one, w)
    assert found["worker.master-pin"]["message"].startswith("cert not in Root")
    # 5.1: the certificate into the worker's Root store; doctor is content
    pk(one, w, "cert", "import", str(m / "new.cer"), "--store", "Root")
    assert doctor(one, w) == {}
    # the manager pins the master too: point it at the new certificate (as a worker's 5.2)
    pk(one, m, "settings", "set", "manager", "MasterHttpsCertThumbprint", thumbprint)
    assert doctor(one, m) == {}


def test_manager_certs_days_left_and_warnings(one: LocalCluster, tmp_path: Path) -> None:
    m = one.master.home
    short = {}
    for days in (20, 5):
        cred = create_self_signed([f"short{days}"], days=days)
        path = tmp_path / f"short{days}.cer"
        path.write_bytes(cred.cert_pem())
        pk(one, m, "manager", "worker", "add", "--cert", str(path))
        short[days] = cred.thumbprint
    entries = {e["thumbprint"]: e for e in pk(one, m, "manager", "certs")}
    assert entries[short[20]]["warning"] == "30d" and 19 < entries[short[20]]["days_left"] < 20.1
    assert entries[short[5]]["warning"] == "7d"
    roles = {e["role"] for e in entries.values()}
    assert {"master", "admin", "worker"} <= roles
    served = [e for e in entries.values() if e["role"] == "master" and e["status"] == "serving"]
    assert len(served) == 1 and served[0]["warning"] is None
    text = one.cli(m, "manager", "certs").stdout.decode()
    assert "(30d)" in text and "(7d)" in text


def test_metrics_count_handshake_failures(one: LocalCluster) -> None:
    async def scrape() -> str:
        async with ManagerClient.from_home(one.master.home) as manager:
            return await manager.metrics()

    def counter(text: str, name: str) -> float:
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        assert match, name
        return float(match.group(1))

    before = asyncio.run(scrape())
    assert "packfleet_certificate_days_left{" in before
    # A client certificate that is not in the master's Root store: the handshake fails.
    stranger = create_self_signed(["stranger"])
    folder = one.root / "stranger"
    folder.mkdir(exist_ok=True)
    (folder / "c.pem").write_bytes(stranger.cert_pem())
    (folder / "k.pem").write_bytes(stranger.key_pem())
    ctx = ssl.create_default_context(cafile=str(one.master_pem()))
    ctx.load_cert_chain(folder / "c.pem", folder / "k.pem")
    import http.client

    conn = http.client.HTTPSConnection(one.host, one.port, context=ctx, timeout=5)
    with contextlib.suppress(OSError, http.client.HTTPException):
        conn.request("GET", "/api/v1/health")
        conn.getresponse()
    conn.close()

    def failed() -> bool:
        text = asyncio.run(scrape())
        return counter(text, "packfleet_tls_handshake_failures_total") > counter(
            before, "packfleet_tls_handshake_failures_total"
        )

    wait_until(failed, timeout=10, what="the failed handshake to be counted")
    after = asyncio.run(scrape())
    assert counter(after, "packfleet_tls_handshakes_completed_total") > 0
    assert 'packfleet_workers{state="online"} 1.0' in after
